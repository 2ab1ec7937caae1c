"""What the end-to-end test modules share: the universe, its ground truth, counters, snapshots.

The end-to-end tests run the real `dvc repro` (and `make`) in scratch git + DVC repositories
(devtools.scratch) against the emulator on 127.0.0.1. A DVC run costs seconds, so the session
builds one project once (`build`: a first run, then an unchanged rerun, each committed) and the
tests copy it; its fixtures (e2e_emulator, built, emulator) are in tests/conftest.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from devtools.emulator import Emulator, Knobs, Universe
from devtools.emulator.universe import KLINE_1D
from devtools.scratch import ScratchProject
from pipeline.dataset.schema import SCHEMA
from pipeline.ops.one_off import journal_path
from pipeline.symbols import is_delivery
from pipeline.vision.layout import Layout

D = dt.date.fromisoformat
ONE_DAY = dt.timedelta(days=1)
LAYOUT = Layout(market="um", data_type="klines", interval="1m")
START = D("2022-01-01")
AS_OF = D("2024-06-01")
NEXT_DAY = AS_OF + ONE_DAY
RETRIES = 4

# Page boundaries, relistings, a late file, a non-ASCII name, a delisted symbol with a suffix
# and a delivery contract (out of scope).
AWKWARD: dict[str, Any] = {
    "BTCUSDT": {"spans": [["2019-09-25", None]], "missing": ["2023-03-03", "2024-05-20"]},
    "ETHUSDT": {"spans": [["2022-01-01", None]]},
    # Exactly one full page (500 days = 1000 keys) and one key pair over it.
    "PAGEUSDT": {"spans": [["2023-01-18", None]]},
    "OVERUSDT": {"spans": [["2023-01-17", None]]},
    "OLDUSDT": {"spans": [["2022-03-01", "2023-02-28"]]},
    "AGAINUSDT": {"spans": [["2022-01-01", "2022-06-30"], ["2023-09-01", None]]},
    # Its 2024-05-30 file is published on NEXT_DAY.
    "LATEUSDT": {"spans": [["2023-01-01", None]], "late": {"2024-05-30": "2024-06-02"}},
    "币安人生USDT": {"spans": [["2024-05-10", None]]},
    "AERGOUSDTSETTLED": {"spans": [["2023-05-01", "2024-03-31"]]},
    "BTCUSDT_240628": {"spans": [["2024-01-01", "2024-06-28"]]},
}
# 30 plain symbols, so that a first run makes enough requests (74) for the fault rates of
# tests/test_faults_e2e.py to bite.
PLAIN: dict[str, Any] = {f"F{n:02d}USDT": {"spans": [["2022-01-01", None]]} for n in range(30)}
UNIVERSE: dict[str, Any] = {
    "today": AS_OF.isoformat(),
    "market": "um",
    "data_type": "klines",
    "intervals": ["1m"],
    "symbols": {**AWKWARD, **PLAIN},
}
# What the pipeline writes; logs/ is left out (a failed run is expected to log).
WRITTEN = ("data", "metrics", "symbols.json", "dvc.lock")


def universe() -> Universe:
    """The session's universe, as the first run sees it (today is AS_OF)."""
    return Universe.from_dict(UNIVERSE)


def emulated_params(emulator: Emulator, *, retries: int = RETRIES) -> dict[str, Any]:
    """params.yaml for a scratch project on `emulator`: these dates, quick retries."""
    return {
        "vision": {"listing_url": emulator.listing_url, "download_url": emulator.download_url},
        "dataset": {"start_date": START.isoformat()},
        "run": {"as_of": AS_OF.isoformat()},
        "update": {"lookback_days": 5},
        "probe": {"workers": 8, "timeout_s": 5, "retries": retries, "backoff_s": 0.01},
    }


def reset(emulator: Emulator, bucket: Universe | None = None) -> Emulator:
    """`emulator` serving `bucket` (the session's universe by default), no fault, no count."""
    emulator.set_universe(bucket or universe())
    emulator.set_knobs(Knobs())
    emulator.reset_counters()
    return emulator


# --- ground truth ---------------------------------------------------------------------------


def perpetual(bucket: Universe) -> list[str]:
    """The symbols in the dataset's scope (dataset.contracts: perpetual), in key order."""
    return [s for s in bucket.symbols if not is_delivery(s)]


def expected_rows(bucket: Universe, as_of: dt.date) -> pl.DataFrame:
    """The dataset the contract promises for this universe, probe_timestamp aside."""
    last = as_of - ONE_DAY
    rows = []
    for symbol in perpetual(bucket):
        files = {d for d in bucket.available_dates(symbol) if START <= d <= last}
        if not files:
            continue
        day = min(files)
        while day <= last:
            meta = bucket.meta(LAYOUT.symbol_prefix(symbol) + f"{symbol}-1m-{day}.zip")
            present = day in files
            rows.append(
                {
                    "date": day,
                    "symbol": symbol,
                    "available": present,
                    "file_size_bytes": meta.size if present else None,
                    "last_modified": meta.last_modified if present else None,
                    "etag": meta.etag if present else None,
                }
            )
            day += ONE_DAY
    schema = {k: v for k, v in SCHEMA.items() if k != "probe_timestamp"}
    return pl.DataFrame(rows, schema=schema).sort("date", "symbol")


def without_timestamps(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.drop("probe_timestamp").sort("date", "symbol")


def assert_rows_match(rows: pl.DataFrame, bucket: Universe, as_of: dt.date) -> None:
    assert dict(rows.schema) == SCHEMA
    assert rows.select("date", "symbol").is_unique().all()
    assert without_timestamps(rows).equals(expected_rows(bucket, as_of))


def assert_matches_universe(project: ScratchProject, bucket: Universe, as_of: dt.date) -> None:
    assert_rows_match(project.dataset(), bucket, as_of)


def history_pages(bucket: Universe, symbol: str, first: dt.date = START) -> int:
    """⌈keys / 1000⌉ of `symbol` from `first` through AS_OF - 1 (one page when it has none)."""
    days = sum(first <= d < AS_OF for d in bucket.available_dates(symbol))
    return max(1, math.ceil(2 * days / 1000))


def minimal_pages(bucket: Universe, symbols: list[str], first: dt.date = START) -> int:
    """Σ history_pages over `symbols`: what listing their histories costs at least."""
    return sum(history_pages(bucket, s, first) for s in symbols)


# --- what a run did -------------------------------------------------------------------------


def listings(counters: Mapping[str, Any], symbol: str | None = None) -> int:
    """Listing requests of the availability stages in emulator counters: all of them, or those
    of one symbol's folder. The 1d folders' requests (listings and GETs, counted together by
    prefix) are the volume stage's, counted in its metrics/volume.json."""
    if symbol is None:
        return sum(
            n for prefix, n in counters["by_prefix"].items() if f"/{KLINE_1D}/" not in prefix
        )
    return counters["by_prefix"].get(LAYOUT.symbol_prefix(symbol), 0)


def discovery_listings(counters: Mapping[str, Any]) -> int:
    """The listing requests of discovery (the root folder, with a delimiter)."""
    return counters["by_prefix"].get(LAYOUT.root, 0)


def ran(output: str, stage: str) -> bool:
    return f"Running stage '{stage}'" in output


def skipped(output: str, stage: str) -> bool:
    return f"Stage '{stage}' didn't change, skipping" in output


def tracked(project: ScratchProject) -> list[str]:
    return json.loads(project.read("symbols.json"))["symbols"]


def snapshot(project: ScratchProject, *extra: str) -> dict[str, str]:
    """The SHA-256 of every file the pipeline writes (and of `extra` paths), by path."""
    tops = [project.root / name for name in (*WRITTEN, *extra)]
    files = [file for top in tops for file in [top, *sorted(top.rglob("*"))] if file.is_file()]
    return {
        file.relative_to(project.root).as_posix(): hashlib.sha256(file.read_bytes()).hexdigest()
        for file in files
    }


def changed_files(before: dict[str, str], after: dict[str, str], under: str = "") -> list[str]:
    """The paths (under a folder, if given) written, added or removed between two snapshots."""
    return sorted(
        path
        for path in before.keys() | after.keys()
        if path.startswith(under) and before.get(path) != after.get(path)
    )


def partition(month: str) -> str:
    """The dataset's file of one month ("2024-05"), as snapshot paths name it."""
    return f"data/availability/{month}.parquet"


def dvc_status_is_clean(project: ScratchProject) -> bool:
    """Nothing for `dvc repro` to redo: no stage output differs from what dvc.lock records,
    and only stages that always run (always_changed) have changed dependencies (the one-off
    params of the last run, such as run.repair, are update's)."""
    status = json.loads(project.run("dvc", "status", "--json").stdout)
    for reasons in status.values():
        changes = [reason for reason in reasons if reason != "always changed"]
        if any("changed outs" in change for change in changes):
            return False
        if changes and "always changed" not in reasons:
            return False
    return True


def lock_params(project: ScratchProject, stage: str = "update") -> dict[str, Any]:
    """The params dvc.lock records for `stage`'s last run."""
    lock = yaml.safe_load(project.read("dvc.lock"))
    return lock["stages"][stage]["params"]["params.yaml"]


def committed_params(project: ScratchProject) -> bytes:
    return project.run("git", "show", "HEAD:params.yaml").stdout.encode()


def assert_one_off_run(
    project: ScratchProject, repair: dict[str, Any] | None, *, status: bool = True
) -> None:
    """The last run was `dvc repro` with run.repair = `repair` for that run only: dvc.lock
    records it, params.yaml is back as committed, and (unless `status` is false, to save a
    second) `dvc status` has nothing to redo."""
    assert lock_params(project)["run.repair"] == repair
    assert project.params_path.read_bytes() == committed_params(project)
    assert not journal_path(project.params_path).exists()
    assert not status or dvc_status_is_clean(project)


def no_temporary_files(project: ScratchProject) -> bool:
    return not [p for p in (project.root / "data").rglob("*") if p.name.endswith(".tmp")]


def start(project: ScratchProject, *command: str) -> subprocess.Popen[str]:
    """`command` in `project`, as ScratchProject.run runs it, without waiting for it (`finish`)."""
    return subprocess.Popen(
        command,
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, for `finish` to kill whole
    )


def finish(running: subprocess.Popen[str], *, within_s: float = 600) -> tuple[str, str]:
    """The output of a command `start`ed, once it ends; killed with its children if it has
    not ended within `within_s` (a bound, not a measure: it must not outlive the test and
    send requests the next tests would count)."""
    try:
        return running.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        os.killpg(running.pid, signal.SIGKILL)
        running.communicate()
        raise


def kill_repro_once(
    project: ScratchProject,
    emulator: Emulator,
    folder: Path,
    pattern: str,
    count: int = 1,
    *,
    within_s: float = 120,
) -> None:
    """Run `dvc repro` in `project` and SIGKILL it, stage and all, as soon as `folder` holds
    `count` files matching `pattern` (a checkpoint): a kill at a known point of the run.

    Returns once `emulator` has served what the killed run left in flight, so that counters
    reset afterwards count the next run alone."""
    repro = subprocess.Popen(
        ["dvc", "repro"],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: DVC and the stage die together
    )
    deadline = time.monotonic() + within_s
    try:
        while len(list(folder.glob(pattern))) < count:
            assert repro.poll() is None, "dvc repro ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        os.killpg(repro.pid, signal.SIGKILL)
        repro.wait()
    emulator.wait_until_idle()


def vision_query_json(*args: str) -> list[str]:
    """The installed `vision-query` console script's command line for a JSON answer."""
    return [str(Path(sys.executable).parent / "vision-query"), *args, "--format", "json"]


def answer(result: subprocess.CompletedProcess[str]) -> str:
    """The standard output of a command that must succeed quietly (exit 0, no stderr)."""
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


# --- the session's project ------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What one `dvc repro` of the session's project printed and requested, and left."""

    stdout: str
    stderr: str
    counters: dict[str, Any]
    gaps: list[str]
    rows: pl.DataFrame


@dataclass(frozen=True)
class Built:
    """The session's projects on the universe, both committed: `template` before any run,
    `project` after its first run and an unchanged rerun (the steady state of a daily run)."""

    template: ScratchProject
    project: ScratchProject
    first: Run
    second: Run


def _run(project: ScratchProject, emulator: Emulator) -> Run:
    emulator.reset_counters()
    result = project.repro(check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    project.commit("a run")
    return Run(
        stdout=result.stdout,
        stderr=result.stderr,
        counters=emulator.counters(),
        gaps=json.loads(project.read("data/gaps.json")),
        rows=project.dataset(),
    )


def build(root: Path, emulator: Emulator) -> Built:
    reset(emulator)
    template = ScratchProject.create(root / "template", emulated_params(emulator))
    project = template.copy(root / "built")
    first = _run(project, emulator)
    second = _run(project, emulator)
    return Built(template, project, first, second)
