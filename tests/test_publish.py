"""`make publish` and `make pull` with the shipped DVC remote, in a scratch repository.

The scratch repository gets this project's Makefile and .dvc/config, so the remote is the
shipped default: a directory beside the checkout, absent until the first publish. It is built
twice (v1, then v2 with a one-off AS_OF and LOOKBACK_DAYS), published and tagged each time;
consumers then get byte-identical files from a fresh clone, `dvc get` and `dvc import`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from devtools.emulator import Emulator, Universe
from devtools.scratch import MAKE_ENVIRONMENT, SOURCE, ScratchProject

pytestmark = pytest.mark.e2e

AS_OF = "2024-04-30"
NEXT_AS_OF = "2024-05-02"
NEXT_LOOKBACK = 3
STORAGE = "vision-availability-dvc-storage"
UNIVERSE = {
    "today": NEXT_AS_OF,
    "market": "um",
    "data_type": "klines",
    "intervals": ["1m"],
    "symbols": {
        "BTCUSDT": {"spans": [["2019-09-25", None]], "missing": ["2024-03-20"]},
        "ETHUSDT": {"spans": [["2024-03-10", None]]},
        "OLDUSDT": {"spans": [["2024-01-01", "2024-03-31"]]},
    },
}


@dataclass(frozen=True)
class Published:
    project: ScratchProject
    storage: Path
    storage_existed_before: bool
    v1: dict[str, bytes]
    """data/availability at tag v1, by path inside it."""
    v2: dict[str, bytes]
    params_before: bytes
    params_after: bytes


def succeed(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def recorded_outputs(root: Path) -> dict[str, bytes]:
    """Every file of every output dvc.lock records, by path from the repository root."""
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    outs = [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
    assert outs, "dvc.lock records no output"
    files: dict[str, bytes] = {}
    for out in outs:
        if (root / out).is_file():
            files[out] = (root / out).read_bytes()
        else:
            files |= {f"{out}/{name}": data for name, data in tree_bytes(root / out).items()}
    return files


def commit_run(project: ScratchProject, message: str) -> None:
    """What the workflow commits after a run: symbols.json, dvc.lock and the metrics."""
    tracked = [p for p in ("symbols.json", "dvc.lock", "metrics") if (project.root / p).exists()]
    project.run("git", "add", "--", *tracked)
    project.run("git", "commit", "--quiet", "-m", message)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Published:
    with Emulator(Universe.from_dict(UNIVERSE)) as emulator:
        project = ScratchProject.create(
            tmp_path_factory.mktemp("publish") / "repo",
            {
                "vision": {
                    "listing_url": emulator.listing_url,
                    "download_url": emulator.download_url,
                },
                "dataset": {"start_date": "2024-03-01"},
                "run": {"as_of": AS_OF},
                "update": {"lookback_days": 5},
                "probe": {"workers": 4, "timeout_s": 5, "retries": 2, "backoff_s": 0.01},
            },
        )
        for name in ("Makefile", ".dvc/config"):
            shutil.copy2(SOURCE / name, project.root / name)
        project.commit("the shipped Makefile and DVC remote")
        storage = project.root.parent / STORAGE
        storage_existed_before = storage.exists()
        params_before = project.params_path.read_bytes()

        # A fresh checkout: no dvc.lock, and the remote directory does not exist yet.
        succeed(project.make("update"))
        succeed(project.make("publish"))
        commit_run(project, "data: v1")
        project.run("git", "tag", "v1")
        v1 = tree_bytes(project.root / "data" / "availability")

        succeed(project.make("update", f"AS_OF={NEXT_AS_OF}", f"LOOKBACK_DAYS={NEXT_LOOKBACK}"))
        params_after = project.params_path.read_bytes()
        succeed(project.make("publish"))
        commit_run(project, "data: v2")
        project.run("git", "tag", "v2")
        v2 = tree_bytes(project.root / "data" / "availability")
    return Published(project, storage, storage_existed_before, v1, v2, params_before, params_after)


def clone_beside(published: Published, name: str) -> ScratchProject:
    """A git clone next to the published repository, so the shipped relative remote is shared."""
    target = published.project.root.parent / name
    published.project.run("git", "clone", "--quiet", str(published.project.root), str(target))
    return ScratchProject(target)


def test_publish_fills_the_shipped_remote_beside_the_checkout(published):
    assert not published.storage_existed_before
    assert any(p.is_file() for p in published.storage.rglob("*"))
    # Both tagged versions are complete on the remote, not only the latest.
    in_sync = published.project.run("dvc", "status", "--cloud", "--all-tags")
    assert in_sync.stdout.strip() == "Cache and remote 'local' are in sync."


def test_fresh_clone_pulls_byte_identical_outputs(published):
    clone = clone_beside(published, "clone")
    assert not (clone.root / "data" / "availability").exists()
    succeed(clone.make("pull"))
    assert recorded_outputs(clone.root) == recorded_outputs(published.project.root)
    assert clone.read("symbols.json") == published.project.read("symbols.json")


def test_dvc_get_pinned_tag_gives_that_version(published):
    # A clone without a DVC cache: the data can only come from the remote, which DVC finds
    # beside the source repository (a relative local remote is resolved from its .dvc/).
    source = clone_beside(published, "source-for-get")
    assert published.v1 != published.v2
    for tag, expected in (("v1", published.v1), ("v2", published.v2)):
        out = source.root.parent / f"get-{tag}"
        succeed(
            source.run(
                "dvc", "get", str(source.root), "data/availability", "--rev", tag, "-o", str(out)
            )
        )
        assert tree_bytes(out) == expected


def test_dvc_import_from_a_hosted_repository_with_the_remote_named(published):
    # A bare repository is what a hosted one is: history without a working tree, where a
    # relative remote means nothing. The consumer names the remote, as with S3 in the README.
    bare = published.project.root.parent / "hosted.git"
    published.project.run(
        "git", "clone", "--quiet", "--bare", str(published.project.root), str(bare)
    )
    consumer = ScratchProject(published.project.root.parent / "consumer")
    consumer.root.mkdir()
    consumer.run("git", "init", "--quiet")
    consumer.run("dvc", "init", "--quiet")
    succeed(
        consumer.run(
            "dvc",
            "import",
            str(bare),
            "data/availability",
            "--rev",
            "v1",
            "-o",
            "v",
            "--remote-config",
            f"url={published.storage}",
        )
    )
    assert tree_bytes(consumer.root / "v") == published.v1
    record = yaml.safe_load(consumer.read("v.dvc"))
    assert record["deps"][0]["repo"]["rev"] == "v1"


def test_one_off_as_of_and_lookback_leave_params_yaml_as_committed(published):
    assert published.params_after == published.params_before
    assert published.project.run("git", "status", "--porcelain", "params.yaml").stdout == ""
    # dvc.lock records what the run used, which is what the published data was made with.
    lock = yaml.safe_load(published.project.read("dvc.lock"))
    used = lock["stages"]["update"]["params"]["params.yaml"]
    assert used["run.as_of"] == NEXT_AS_OF
    assert used["update.lookback_days"] == NEXT_LOOKBACK
    newest = max(published.project.dataset()["date"]).isoformat()
    assert newest == "2024-05-01"


@pytest.mark.parametrize(
    ("value", "code", "says"),
    [
        # argparse refuses what is not a number, naming the option
        ("LOOKBACK_DAYS=many", 2, "argument --lookback-days: 'many' is not a whole number"),
        # the config what no run can use, naming the key
        ("AS_OF=2999-01-01", 1, "run.as_of is in the future (2999-01-01)"),
    ],
)
def test_a_bad_one_off_value_fails_before_the_run_and_leaves_params_yaml(
    published, tmp_path, value, code, says
):
    project = published.project.copy(tmp_path / "repo")
    before = project.params_path.read_bytes()
    result = project.make("update", value)
    assert result.returncode != 0
    assert says in result.stderr, result.stderr
    assert f"Error {code}" in result.stderr.splitlines()[-1]
    assert "Running stage" not in result.stdout
    assert project.params_path.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        (["update"], ["update"]),
        (
            ["update", "AS_OF=2024-06-01", "LOOKBACK_DAYS=3"],
            ["update", "--as-of", "2024-06-01", "--lookback-days", "3"],
        ),
        (["backfill", "SYMBOLS=A,B"], ["backfill", "--symbols", "A,B"]),
        (
            ["backfill", "SINCE=2024-05-01", "UNTIL=2024-05-03"],
            ["backfill", "--since", "2024-05-01", "--until", "2024-05-03"],
        ),
        (["audit"], ["audit"]),
    ],
)
def test_make_passes_only_the_values_it_is_given_to_pipeline_ops(tmp_path, args, argv):
    """Without AS_OF and friends, `make update` is `python -m pipeline.ops update`: no flag,
    so no one-off param (ops then runs plain `dvc repro`)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n', encoding="utf-8")
    (fake / "python").chmod(0o755)
    shutil.copy2(SOURCE / "Makefile", tmp_path / "Makefile")
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENVIRONMENT}
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        ["make", "--silent", "--no-print-directory", "RUNTIME=", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines() == ["-m", "pipeline.ops", *argv]
