"""The commit gate and the crash-atomic commit of the dataset, the change log and _dataset.json.

The gate: a damaged dataset (a partition holding another month's rows, a key in two partitions,
a stray file), a merge that breaks the rows' contract, or a run turning more available files
into unavailable than params allow is refused with one line, and no file is replaced.

The commit: a child process runs a merge and SIGKILLs itself after its k-th filesystem step
(fsync, rename, deletion), for every k; replay then leaves the old state or the new one, and
the next run ends in the new one with each change logged once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from devtools.scratch import ScratchProject
from pipeline.config import ConfigError, RemovalLimit, load_config
from pipeline.dataset.changes import merge_and_log, read_changes
from pipeline.dataset.commit import (
    CommitError,
    finish_interrupted_commit,
    journal_path,
    replay,
    staged_commit,
)
from pipeline.dataset.contract import GateError, check_removals
from pipeline.dataset.schema import month_of
from pipeline.dataset.store import read_months, summarize
from pipeline.entry import run_stage
from pipeline.ops import cli as ops_cli
from pipeline.ops.cli import overrides_of
from pipeline.ops.cli import parser as ops_parser
from pipeline.ops.one_off import journal_path as one_off_journal
from pipeline.stages import update
from tests.support import ROOT, D, days, frame, row, run_all, set_params, snapshot, write_params

DATASET = Path("data/availability")
DETECTED = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]


def refused(capsys: pytest.CaptureFixture[str], before: dict[str, bytes]) -> str:
    """update exits 1 with one error line, and no file under data/ changed; that line."""
    capsys.readouterr()
    assert run_stage("update", update.run) == 1
    lines = errors(capsys)
    assert len(lines) == 1
    assert snapshot() == before
    return lines[0]


# --- the gate: a damaged dataset is never merged -------------------------------------------


def test_a_partition_holding_another_months_rows_is_refused(workspace, bucket, capsys):
    assert run_all() == [0, 0, 0, 0]
    april = DATASET / "2024-04.parquet"
    rows = pl.read_parquet(april)
    last_day = pl.col("date") == D("2024-04-30")
    rows.with_columns(
        date=pl.when(last_day).then(pl.lit(D("2024-03-31"))).otherwise(pl.col("date"))
    ).write_parquet(april)
    line = refused(capsys, snapshot())
    assert f"{april} holds rows of another month (e.g. 2024-03-31 BTCUSDT" in line
    assert line.endswith("restore it with `dvc checkout` or `dvc pull`")


def test_a_key_in_two_partitions_is_refused_naming_the_file_that_should_not_hold_it(
    workspace, bucket, capsys
):
    assert run_all() == [0, 0, 0, 0]
    may, april = DATASET / "2024-05.parquet", DATASET / "2024-04.parquet"
    twice = pl.read_parquet(may).head(1)  # 2024-05-?? BTCUSDT stays in May too
    pl.concat([pl.read_parquet(april), twice]).write_parquet(april)
    line = refused(capsys, snapshot())
    day = twice["date"][0]
    assert f"{april} holds rows of another month (e.g. {day} BTCUSDT, which belongs in " in line
    assert "2024-05.parquet)" in line


@pytest.mark.parametrize("name", ["notes.txt", "2024-05 (copy).parquet", "2024-5.parquet", "sub"])
def test_a_file_the_dataset_does_not_expect_is_refused(workspace, bucket, capsys, name):
    assert run_all() == [0, 0, 0, 0]
    stray = DATASET / name
    if name == "sub":
        stray.mkdir()
    else:
        stray.write_bytes(b"not ours")
    line = refused(capsys, snapshot())
    assert line.endswith(
        f"{stray} does not belong in the dataset (only YYYY-MM.parquet and _dataset.json do): "
        f"move it out of {DATASET}"
    )


def test_hidden_temporary_files_are_ours_and_cleared_by_the_next_run(workspace, bucket):
    assert run_all() == [0, 0, 0, 0]
    leftover = DATASET / ".2024-05.parquet.x1y2.tmp"
    leftover.write_bytes(b"half written")
    assert run_stage("update", update.run) == 0
    assert not leftover.exists()


def test_a_merge_breaking_the_rows_contract_writes_nothing(workspace):
    config = load_config()
    before = snapshot()
    incomplete = row("2024-05-30", "A", etag="")  # available without an ETag
    summary = summarize(config.paths.dataset, config.dataset)
    with pytest.raises(GateError) as refusal:
        merge_and_log(config, summary, frame(), frame(incomplete), detected_at=DETECTED)
    assert str(refusal.value) == (
        "this run's merge breaks the dataset's contract (available_rows_incomplete 1, "
        "e.g. 2024-05-30 A): nothing was written; the log file has the run's details"
    )
    assert snapshot() == before


# --- the gate: a mass removal is refused unless accepted for one run ------------------------


@pytest.mark.parametrize(
    ("removed", "available", "limit", "allowed"),
    [
        (50, 10_000, RemovalLimit(50, 0.001, False), True),  # 50 files: the floor
        (51, 10_000, RemovalLimit(50, 0.001, False), False),
        (100, 100_000, RemovalLimit(50, 0.001, False), True),  # 0.1% of 100,000
        (101, 100_000, RemovalLimit(50, 0.001, False), False),
        (101, 100_000, RemovalLimit(50, 0.001, True), True),  # run.allow_removals
        (1, 10, RemovalLimit(0, 0.0, False), False),
    ],
)
def test_the_removal_threshold_is_the_larger_of_a_count_and_a_share(
    removed, available, limit, allowed
):
    changes = pl.DataFrame({"kind": ["removed"] * removed + ["appeared"] * 500})
    if allowed:
        check_removals(changes, available, limit)
        return
    with pytest.raises(GateError) as refusal:
        check_removals(changes, available, limit)
    assert str(refusal.value) == (
        f"this run would turn {removed} of the dataset's {available} available files into "
        f"unavailable, more than the {limit.threshold(available)} allowed "
        "(update.max_removed_files, update.max_removed_share): nothing was written; if the "
        "bucket really removed them, accept it for one run with `make update ALLOW_REMOVALS=1` "
        "(or `make audit ALLOW_REMOVALS=1`)"
    )


def test_a_mass_removal_is_refused_then_accepted_for_one_run(workspace, bucket, capsys):
    assert run_all() == [0, 0, 0, 0]
    for day in ("2024-05-29", "2024-05-30", "2024-05-31"):
        for symbol in ("BTCUSDT", "币安人生USDT"):
            bucket.remove_day(symbol, day)
    set_params({"update": {"max_removed_files": 5}})
    line = refused(capsys, snapshot())
    assert "this run would turn 6 of the dataset's " in line
    assert "more than the 5 allowed" in line
    set_params({"run": {"allow_removals": True}})
    assert run_stage("update", update.run) == 0
    log = read_changes(Path("data/changes.parquet"))
    assert log.get_column("kind").to_list() == ["removed"] * 6


# --- the commit: replay ----------------------------------------------------------------------


def test_temporary_files_without_a_journal_are_deleted_and_the_old_state_stands(tmp_path):
    dataset, changes = tmp_path / "availability", tmp_path / "changes.parquet"
    dataset.mkdir()
    (dataset / "2024-01.parquet").write_bytes(b"old")
    leftovers = [
        dataset / ".2024-01.parquet.a.tmp",
        tmp_path / ".changes.parquet.b.tmp",
        tmp_path / "..availability.commit.json.c.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"new")
    finish_interrupted_commit(dataset, changes)
    # Besides the data, only the writers' lock file (empty: it holds no state).
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        ".availability.commit.json.lock",
        "2024-01.parquet",
        "availability",
    ]
    assert (dataset / "2024-01.parquet").read_bytes() == b"old"


def test_a_journal_is_finished_and_a_rename_already_done_is_recognised(tmp_path):
    journal = tmp_path / ".commit.json"
    a, b, gone = tmp_path / "a", tmp_path / "b", tmp_path / "gone"
    for path, text in ((a, b"old a"), (b, b"old b"), (gone, b"old")):
        path.write_bytes(text)
    with staged_commit(journal) as commit:
        commit.new_file(a).write_bytes(b"new a")
        commit.new_file(b).write_bytes(b"new b")
        commit.remove(gone)
    assert (a.read_bytes(), b.read_bytes(), gone.exists()) == (b"new a", b"new b", False)
    # The same commit, killed after its first rename: the journal and b's temporary file remain.
    b.write_bytes(b"old b")
    temporary = tmp_path / ".b.x.tmp"
    temporary.write_bytes(b"new b")
    journal.write_text(json.dumps(_journal_of(a, b"new a", temporary, b, b"new b")), "utf-8")
    assert replay(journal, [a, b]) is True
    assert (a.read_bytes(), b.read_bytes()) == (b"new a", b"new b")
    assert not journal.exists() and not temporary.exists()
    assert replay(journal, [a, b]) is False  # nothing left to do


def test_a_journal_that_cannot_be_finished_is_refused_with_the_fix(tmp_path):
    journal = tmp_path / ".commit.json"
    a = tmp_path / "a"
    a.write_bytes(b"neither old nor new")
    journal.write_text(json.dumps(_journal_of(a, b"new a", tmp_path / "b", a, b"x")), "utf-8")
    with pytest.raises(CommitError, match=r"a is not the file .*commit.json committed, and its"):
        replay(journal, [])
    journal.write_text("{half", encoding="utf-8")
    with pytest.raises(CommitError, match=r"commit.json \(an interrupted commit's journal\) is"):
        replay(journal, [])


def _journal_of(
    done: Path, done_bytes: bytes, temporary: Path, target: Path, new_bytes: bytes
) -> dict[str, object]:
    """A journal whose first rename (to `done`) is done and whose second is not."""

    def entry(tmp: Path, path: Path, data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        return {"temporary": str(tmp), "target": str(path), "size": len(data), "sha256": digest}

    return {
        "version": 1,
        "renames": [
            entry(done.with_name(".gone.tmp"), done, done_bytes),
            entry(temporary, target, new_bytes),
        ],
        "removals": [],
    }


# --- the commit: killed at every step ---------------------------------------------------------

# The child: one merge of probed.parquet into the dataset, SIGKILLed after its K-th step.
CHILD = "import sys; from tests.test_commit import killed_after, merge_probed; " + (
    "killed_after(int(sys.argv[1])); print(merge_probed())"
)
STEPS = [0]


def killed_after(steps: int) -> None:
    """From now on, this process SIGKILLs itself after its `steps`-th fsync, rename or unlink."""

    def counted(step: Callable[..., Any]) -> Callable[..., Any]:
        def counting(*args: Any, **kwargs: Any) -> Any:
            result = step(*args, **kwargs)
            STEPS[0] += 1
            if STEPS[0] == steps:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return counting

    os.fsync, os.replace, os.unlink = map(counted, (os.fsync, os.replace, os.unlink))


def merge_probed() -> int:
    """What the update stage does once it has probed: merge, gate, commit; the steps taken."""
    config = load_config("params.yaml")
    summary = summarize(config.paths.dataset, config.dataset)
    probed = pl.read_parquet("probed.parquet")
    months = probed.select(month_of().unique()).to_series().to_list()
    previous = read_months(config.paths.dataset, months)
    merge_and_log(config, summary, previous, probed, detected_at=DETECTED)
    return STEPS[0]


def merge_in_child(directory: Path, kill_after: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(kill_after)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def state(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "probed.parquet"
    }


def test_a_commit_killed_at_any_step_ends_old_or_new_and_logs_each_change_once(
    tmp_path, monkeypatch
):
    old = tmp_path / "old"
    old.mkdir()
    write_params(old, {"dataset": {"start_date": "2024-01-01"}, "run": {"as_of": "2024-06-01"}})
    frame(*days("A", "2024-04-01", "2024-05-31", missing=["2024-05-30"])).write_parquet(
        old / "probed.parquet"
    )
    assert merge_in_child(old, 0).returncode == 0
    # The next probe: A's late file appears, another is removed, a new symbol brings new months.
    probed = frame(
        row("2024-05-30", "A", probed=DETECTED),
        row("2024-05-31", "A", False, probed=DETECTED),
        row("2024-04-30", "A", probed=DETECTED, etag="re-uploaded"),
        *days("B", "2024-03-31", "2024-05-31"),
    )
    probed.write_parquet(old / "probed.parquet")
    old_state = state(old)
    new = tmp_path / "new"
    shutil.copytree(old, new)
    done = merge_in_child(new, 0)
    assert done.returncode == 0, done.stderr
    steps, new_state = int(done.stdout), state(new)
    monkeypatch.chdir(new)
    assert sorted(read_changes(Path("data/changes.parquet")).get_column("kind")) == [
        "appeared",
        "removed",
        "replaced",
    ]
    # 4 new files (3 months, the log) flushed, the journal written, 4 renames, the journal gone.
    assert steps >= 4 + 2 + 4 + 1
    outcomes = set()
    for kill_after in range(1, steps + 1):
        killed = tmp_path / f"killed-{kill_after}"
        shutil.copytree(old, killed)
        result = merge_in_child(killed, kill_after)
        assert result.returncode == -signal.SIGKILL, (kill_after, result.stderr)
        monkeypatch.chdir(killed)
        finish_interrupted_commit(DATASET, Path("data/changes.parquet"))
        after_replay = state(killed)
        assert after_replay in (old_state, new_state), kill_after
        outcomes.add("new" if after_replay == new_state else "old")
        merge_probed()  # the next run, with the same probes
        assert state(killed) == new_state, kill_after  # each change logged once
    assert outcomes == {"old", "new"}


# --- what the operator sees ---------------------------------------------------------------------


def test_ctrl_c_during_the_renames_says_the_next_run_finishes_the_commit(
    workspace, monkeypatch, capsys
):
    a, b = Path("data/a"), Path("data/b")
    replace, calls = os.replace, [0]

    def interrupted_at_the_second_rename(src: Any, dst: Any) -> None:
        calls[0] += 1  # the journal, then a, then b
        if calls[0] == 3:
            raise KeyboardInterrupt
        replace(src, dst)

    def body(config: Any) -> None:
        with staged_commit(journal_path(config.paths.dataset)) as commit:
            commit.new_file(a).write_text("new a")
            commit.new_file(b).write_text("new b")
            monkeypatch.setattr(os, "replace", interrupted_at_the_second_rename)

    assert run_stage("update", body) == 130
    monkeypatch.setattr(os, "replace", replace)
    assert [line.split(" ERROR ")[1] for line in errors(capsys)] == [
        "interrupted while replacing the dataset's files: data/.availability.commit.json "
        "lists the rest, and the next run (make update, or any stage) finishes it first"
    ]
    assert (a.read_text(), b.exists()) == ("new a", False)
    assert run_stage("report", lambda config: None) == 0  # any stage: its first step
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert sorted(p.name for p in Path("data").iterdir()) == [
        ".availability.commit.json.lock",
        ".volume.commit.json.lock",  # every stage finishes the volume dataset's commit too
        "a",
        "b",
    ]


def test_ctrl_c_before_the_commit_says_no_file_was_left_half_written(workspace, capsys):
    def body(config: Any) -> None:
        raise KeyboardInterrupt

    assert run_stage("update", body) == 130
    assert [line.split(" ERROR ")[1] for line in errors(capsys)] == [
        "interrupted; no file was left half-written: rerun to finish"
    ]


def killed_run_leftovers() -> tuple[str, Path]:
    """What a run killed mid-way leaves: one-off params, and a commit done up to its 1st rename.

    Returns params.yaml's text from before the run, and the file whose rename is pending.
    """
    params = Path("params.yaml")
    before = params.read_text(encoding="utf-8")
    during = before + "# one-off params of the killed run\n"
    params.write_text(during, encoding="utf-8")
    one_off_journal(params).write_text(json.dumps({"before": before, "during": during}), "utf-8")
    a, b, temporary = Path("data/a"), Path("data/b"), Path("data/.b.x.tmp")
    a.parent.mkdir()
    a.write_bytes(b"new a")
    b.write_bytes(b"old b")
    temporary.write_bytes(b"new b")
    journal = json.dumps(_journal_of(a, b"new a", temporary, b, b"new b"))
    journal_path(DATASET).write_text(journal, encoding="utf-8")
    return before, b


@pytest.mark.parametrize("remote", [True, False], ids=["remote", "no-remote"])
def test_pull_puts_back_what_a_killed_run_left_then_pulls(workspace, monkeypatch, capsys, remote):
    # `dvc remote list` is run for real, from this interpreter's environment (.venv/bin).
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(["dvc", "init", "--no-scm", "--quiet"], check=True)
    if remote:
        subprocess.run(["dvc", "remote", "add", "-d", "store", str(workspace / "r")], check=True)
    params_before, pending = killed_run_leftovers()
    # A run recorded in dvc.lock: only the stages it records are pulled (no hash warnings).
    Path("dvc.yaml").write_text("stages:\n  update:\n    cmd: 'true'\n", encoding="utf-8")
    Path("dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  update:\n    cmd: 'true'\n", encoding="utf-8"
    )
    pulled = []

    def dvc(*args: str) -> int:
        # What DVC finds when it starts: the params and the commit as before the killed run.
        assert Path("params.yaml").read_text(encoding="utf-8") == params_before
        assert pending.read_bytes() == b"new b" and not journal_path(DATASET).exists()
        pulled.append(args)
        return 0

    monkeypatch.setattr(ops_cli, "dvc", dvc)
    capsys.readouterr()
    if remote:
        assert ops_cli.main(["pull"]) == 0
        assert pulled == [("pull", "--allow-missing", "--force", "update")]
        return
    assert ops_cli.main(["pull"]) == 1
    assert [line.split(" ERROR ")[1] for line in errors(capsys)] == [
        "no DVC remote configured: add one with `dvc remote add -d NAME URL`, then rerun"
    ]
    assert pulled == []
    assert pending.read_bytes() == b"new b"
    assert Path("params.yaml").read_text(encoding="utf-8") == params_before


@pytest.mark.parametrize("command", ["update", "audit", "backfill"])
def test_allow_removals_is_a_one_off_param_of_each_run_command(command):
    extra = ["--since", "2024-05-01"] if command == "backfill" else []

    def allowed(*flag: str) -> bool | None:
        overrides = overrides_of(ops_parser().parse_args([command, *flag, *extra]))
        return overrides.get("run.allow_removals")

    assert allowed("--allow-removals") is True
    assert allowed("--allow-removals=1") is True
    assert allowed("--allow-removals=0") is None
    assert allowed() is None


@pytest.mark.parametrize("value", ["true", "yes", "2", ""])
def test_allow_removals_other_than_0_or_1_is_a_usage_error_naming_it(value, capsys):
    with pytest.raises(SystemExit) as usage:
        ops_parser().parse_args(["audit", f"--allow-removals={value}"])
    assert usage.value.code == 2
    assert f"argument --allow-removals: invalid choice: '{value}'" in capsys.readouterr().err


def test_make_refuses_an_allow_removals_it_does_not_know(tmp_path):
    # Refused by the parser before params.yaml is read: no project is needed around it.
    result = ScratchProject(tmp_path).make("update", "ALLOW_REMOVALS=true")
    assert result.returncode == 2
    assert "argument --allow-removals: invalid choice: 'true' (choose from" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Makefile"]


@pytest.mark.parametrize(
    ("section", "key", "value", "problem"),
    [
        ("update", "max_removed_files", -1, "must be at least 0 (got -1)"),
        ("update", "max_removed_files", 2.5, "must be a whole number (got 2.5)"),
        ("update", "max_removed_share", 1.5, "must be at most 1.0 (got 1.5)"),
        ("run", "allow_removals", "yes", "must be true or false (got 'yes')"),
    ],
)
def test_the_removal_params_are_checked_naming_the_key(tmp_path, section, key, value, problem):
    params = write_params(tmp_path, {section: {key: value}})
    with pytest.raises(ConfigError) as refusal:
        load_config(params)
    assert str(refusal.value) == f"{params}: {section}.{key} {problem}"
