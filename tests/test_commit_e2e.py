"""The commit gate and the crash-atomic commit, on the real `dvc repro` and `make update`.

A `dvc repro` is SIGKILLed in the middle of update's commit, after its k-th rename, by a
`sitecustomize` that this test puts on PYTHONPATH for that run only (nothing in the package
knows of it): it wraps os.replace and kills the process once the commit's journal exists and
k files were renamed. The next `make update`, as users type it (with `dvc pull` from a remote),
must start, and end with the dataset of the ground truth and each change logged once.

A mass removal (many window files gone from the bucket) is refused with one line, every file
byte-identical, and accepted for one run with ALLOW_REMOVALS=1.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import polars as pl
import pytest

from devtools.scratch import ScratchProject
from pipeline.dataset.changes import read_changes
from pipeline.dataset.commit import journal_path
from tests import e2e_support as e2e
from tests.e2e_support import AS_OF, NEXT_DAY, PLAIN, D, partition

pytestmark = pytest.mark.e2e

DATASET = Path("data/availability")
JOURNAL = journal_path(DATASET)
# LATEUSDT's 2024-05-30 file is published on NEXT_DAY: a change in the window's month.
LATER = e2e.universe().with_today(NEXT_DAY)
WINDOW = [AS_OF - e2e.ONE_DAY * n for n in range(1, 6)]  # update.lookback_days: 5

KILLER = textwrap.dedent(
    f"""
    # Test only: SIGKILL this process after the K-th rename of the dataset's commit.
    import os, signal
    _replace, _renamed = os.replace, [0]
    _after = int(os.environ["KILL_AFTER_COMMIT_RENAMES"])

    def _killing_replace(src, dst, *args, **kwargs):
        _replace(src, dst, *args, **kwargs)
        if os.path.exists({str(JOURNAL)!r}) and os.fspath(dst) != {str(JOURNAL)!r}:
            _renamed[0] += 1
            if _renamed[0] == _after:
                os.kill(os.getpid(), signal.SIGKILL)

    os.replace = _killing_replace
    """
)


def killed_repro(project: ScratchProject, hook: Path, renames: int) -> None:
    """`dvc repro`, with update killed after `renames` renames of its commit."""
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(KILLER, encoding="utf-8")
    env = {**project.env(), "PYTHONPATH": str(hook), "KILL_AFTER_COMMIT_RENAMES": str(renames)}
    result = subprocess.run(
        ["dvc", "repro"], cwd=project.root, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0, result.stdout
    assert (project.root / JOURNAL).exists(), result.stdout + result.stderr


def with_remote(project: ScratchProject, remote: Path) -> ScratchProject:
    """`project` with a local DVC remote holding what dvc.lock records (`make update` pulls)."""
    project.run("dvc", "remote", "add", "--default", "store", str(remote))
    project.run("dvc", "push", "--quiet")
    project.commit("a DVC remote")
    return project


def assert_recovered(project: ScratchProject, bucket: e2e.Universe) -> None:
    result = project.make("update")
    assert result.returncode == 0, result.stderr
    e2e.assert_matches_universe(project, bucket, AS_OF)
    log = read_changes(project.root / "data" / "changes.parquet")
    assert not log.select("date", "symbol").is_duplicated().any()
    assert not (project.root / JOURNAL).exists() and e2e.no_temporary_files(project)
    assert e2e.dvc_status_is_clean(project)


@pytest.mark.parametrize("renames", [1, 2])
def test_a_run_killed_at_each_rename_of_its_commit_is_recovered_by_make_update(
    tmp_path, built, emulator, renames
):
    project = with_remote(built.project.copy(tmp_path / "repo"), tmp_path / "remote")
    emulator.set_universe(LATER)
    committed = [partition("2024-05"), "data/changes.parquet"]  # in the commit's order
    before = e2e.snapshot(project)
    killed_repro(project, tmp_path / "hook", renames=renames)
    # Half committed (or wholly, the journal not yet removed); DVC recorded nothing of it.
    after = e2e.snapshot(project)
    assert [path for path in committed if before[path] != after[path]] == committed[:renames]
    assert after["dvc.lock"] == before["dvc.lock"]
    assert_recovered(project, LATER)
    log = read_changes(project.root / "data" / "changes.parquet")
    assert log.filter(pl.col("symbol") == "LATEUSDT").select("date", "kind").rows() == [
        (D("2024-05-30"), "appeared")
    ]


def test_a_first_run_killed_mid_commit_recovers_on_its_own(tmp_path, built, emulator):
    project = built.template.copy(tmp_path / "repo")
    killed_repro(project, tmp_path / "hook", renames=3)
    # A partial dataset: _dataset.json and two months, of the whole history's.
    assert len([p for p in (project.root / DATASET).iterdir() if p.name[0] != "."]) == 3
    assert_recovered(project, e2e.universe())


def test_a_mass_removal_is_refused_then_accepted_with_allow_removals(tmp_path, built, emulator):
    project = built.project.copy(tmp_path / "repo")
    gone = e2e.universe()
    removed = sorted(PLAIN)[:12]
    for symbol in removed:
        for day in WINDOW:
            gone = gone.without_file(symbol, day)
    emulator.set_universe(gone)
    before = e2e.snapshot(project, "params.yaml")
    old_log = read_changes(project.root / "data" / "changes.parquet")

    refused = project.make("update")
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if " ERROR " in line]
    assert len(lines) == 1, refused.stderr
    assert "update ERROR this run would turn 60 of the dataset's " in lines[0]
    assert lines[0].endswith(
        "accept it for one run with `make update ALLOW_REMOVALS=1` (or `make audit "
        "ALLOW_REMOVALS=1`)"
    )
    assert e2e.snapshot(project, "params.yaml") == before

    accepted = project.make("update", "ALLOW_REMOVALS=1")
    assert accepted.returncode == 0, accepted.stderr
    log = read_changes(project.root / "data" / "changes.parquet")
    logged = log.join(old_log, on=log.columns, how="anti")
    assert sorted(logged.select("date", "symbol", "kind").rows()) == sorted(
        (day, symbol, "removed") for symbol in removed for day in WINDOW
    )
    assert e2e.lock_params(project)["run.allow_removals"] is True
    assert project.params_path.read_bytes() == e2e.committed_params(project)
    e2e.assert_matches_universe(project, gone, AS_OF)
