"""The volume stage end to end: the real `dvc repro` on the emulator's 1d kline files.

The dataset must equal the emulator's ground truth (`Universe.kline_rows`) row for row after
each run; a next day fetches only the files that are new since (new days, a re-upload, a new
symbol's whole history, a month's file superseding its days), each 1d folder listed at most
once; a corrupted body fails the run naming the file with the dataset untouched; a killed run
resumes without downloading its checkpointed files again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from devtools.emulator import Emulator, Knobs, Universe
from devtools.scratch import ScratchProject
from pipeline.volume.schema import SCHEMA
from tests import e2e_support as e2e
from tests.e2e_support import AS_OF, NEXT_DAY, ONE_DAY, START

pytestmark = pytest.mark.e2e

SYMBOLS: dict[str, Any] = {
    "BTCUSDT": {"spans": [["2022-01-01", None]], "missing": ["2024-05-20"]},
    "OLDUSDT": {"spans": [["2022-03-01", "2023-02-28"]]},
    **{f"V{n}USDT": {"spans": [["2023-09-01", None]]} for n in range(4)},
}
DOCUMENT: dict[str, Any] = {
    "today": AS_OF.isoformat(),
    "market": "um",
    "data_type": "klines",
    "intervals": ["1m"],
    "symbols": SYMBOLS,
}
VOLUME = "data/volume"
CHECKPOINT = Path("data/.volume.checkpoint")


def bucket(today: dt.date = AS_OF, **extra: Any) -> Universe:
    document = {**DOCUMENT, "today": today.isoformat(), "symbols": {**SYMBOLS, **extra}}
    return Universe.from_dict(document)


def truth(universe: Universe, as_of: dt.date) -> pl.DataFrame:
    """The volume dataset the contract promises for `universe` on `as_of`."""
    rows = [
        row
        for symbol in e2e.perpetual(universe)
        for row in universe.kline_rows(symbol, START, as_of - ONE_DAY)
    ]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row").sort("date", "symbol")


def volume(project: ScratchProject) -> pl.DataFrame:
    return pl.read_parquet(project.root / VOLUME / "*.parquet").sort("date", "symbol")


def metrics(project: ScratchProject) -> dict[str, Any]:
    return json.loads(project.read("metrics/volume.json"))


def volume_listings(counters: dict[str, Any]) -> int:
    """Listing requests of 1d folders: every listing but the availability stages' (whose
    prefixes see nothing else; a 1d folder's count holds its GETs too)."""
    others = sum(n for prefix, n in counters["by_prefix"].items() if "/1d/" not in prefix)
    return counters["by_kind"]["list"] - others


def once_per_folder(found: dict[str, Any]) -> bool:
    """Each 1d folder listed was listed with one request (they all fit on one page)."""
    folders = found["monthly_folders_listed"] + found["daily_folders_listed"]
    return found["listing_requests"] == folders


def sources(rows: pl.DataFrame) -> set[tuple[str, str]]:
    return set(rows.select("source", "source_etag").unique().iter_rows())


@pytest.fixture(scope="module")
def first(tmp_path_factory, e2e_emulator: Emulator) -> tuple[ScratchProject, dict[str, Any]]:
    """A project after its first run on the module's universe (committed), and its counters."""
    e2e.reset(e2e_emulator, bucket())
    project = ScratchProject.create(
        tmp_path_factory.mktemp("volume") / "repo", e2e.emulated_params(e2e_emulator)
    )
    project.repro()
    project.commit("first run")
    return project, e2e_emulator.counters()


@pytest.fixture
def project(first, tmp_path, emulator) -> ScratchProject:
    e2e.reset(emulator, bucket())
    return first[0].copy(tmp_path / "repo")


def test_a_first_run_holds_the_ground_truth_at_the_minimum_of_requests(first):
    project, counters = first
    assert volume(project).equals(truth(bucket(), AS_OF))
    found = metrics(project)
    assert found["requests"] == found["listing_requests"] + found["download_requests"]
    assert once_per_folder(found)
    assert found["listing_requests"] == volume_listings(counters)
    assert found["download_requests"] == counters["by_kind"]["get"]
    assert found["requests"] == found["request_minimum"]
    assert found["files_fetched"] == len(sources(volume(project)))
    assert found["rows"] == volume(project).height
    validation = json.loads(project.read("metrics/validation.json"))
    assert validation["ok"] and validation["volume_rows"] == found["rows"]
    plot = pl.read_csv(project.root / "metrics/plots/volume_per_day.csv", try_parse_dates=True)
    expected = volume(project).group_by("date").agg(pl.col("quote_volume").sum()).sort("date")
    assert plot["date"].to_list() == expected["date"].to_list()
    assert plot["quote_volume"].to_list() == pytest.approx(expected["quote_volume"].to_list())


def test_next_days_fetch_only_new_files_a_new_symbols_history_and_superseding_months(
    project, emulator
):
    before = volume(project)
    # The next day: a new symbol (its whole history), a corrected 1d kline, a new day each.
    new = {"NEWUSDT": {"spans": [["2023-01-01", None]]}}
    next_bucket = bucket(NEXT_DAY, **new).with_reupload(
        "BTCUSDT", "2024-05-28", NEXT_DAY, interval="1d"
    )
    e2e.reset(emulator, next_bucket)
    project.set_params({"run": {"as_of": NEXT_DAY.isoformat()}})
    project.repro()
    expected = truth(next_bucket, NEXT_DAY)
    after = volume(project)
    assert after.equals(expected)
    fetched = sources(after) - sources(before)
    assert any(source.endswith("BTCUSDT-1d-2024-05-28.zip") for source, _ in fetched)
    assert metrics(project)["files_fetched"] == len(fetched)
    assert once_per_folder(metrics(project))
    assert metrics(project)["listing_requests"] == volume_listings(emulator.counters())
    assert metrics(project)["requests"] == metrics(project)["request_minimum"]
    assert (
        before.filter(pl.col("symbol") != "BTCUSDT")
        .join(after, on=list(SCHEMA), how="anti")
        .is_empty()
    )  # every other stored row kept as it was

    # Two days later some May monthly files are out: they replace their days' daily rows.
    third = next_bucket.with_today(NEXT_DAY + ONE_DAY)
    e2e.reset(emulator, third)
    project.set_params({"run": {"as_of": (NEXT_DAY + ONE_DAY).isoformat()}})
    project.repro()
    assert volume(project).equals(truth(third, NEXT_DAY + ONE_DAY))
    assert volume(project)["source"].str.ends_with("-1d-2024-05.zip").any()


def test_a_corrupted_body_fails_naming_the_file_and_leaves_the_dataset_untouched(project, emulator):
    e2e.reset(emulator, bucket(NEXT_DAY))
    faulted = "data/futures/um/daily/klines/V0USDT/1d/"
    emulator.set_knobs(Knobs(prefix_faults={faulted: "corrupt_body"}))
    project.set_params({"run": {"as_of": NEXT_DAY.isoformat()}})
    before = e2e.snapshot(project)
    result = project.repro(check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if " volume ERROR " in line]
    assert len(errors) == 1 and f"{faulted}V0USDT-1d-2024-06-01.zip" in errors[0]
    after = e2e.snapshot(project)
    assert e2e.changed_files(before, after, VOLUME) == []
    assert e2e.changed_files(before, after, "metrics/volume.json") == []


def test_a_killed_volume_run_resumes_without_downloading_checkpointed_files(project, emulator):
    # A new history of many files, fetched slowly by two workers: killed midway.
    many = {f"K{n:02d}USDT": {"spans": [["2024-04-20", None]]} for n in range(12)}
    bucket_k = bucket(NEXT_DAY, **many)
    before = volume(project)
    e2e.reset(emulator, bucket_k)
    project.set_params({"run": {"as_of": NEXT_DAY.isoformat()}, "volume": {"workers": 2}})
    project.run("dvc", "repro", "update")  # everything before the volume stage, quickly
    emulator.set_knobs(Knobs(latency_ms=100))
    repro = subprocess.Popen(
        ["dvc", "repro"],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    folder = project.root / CHECKPOINT
    deadline = time.monotonic() + 120
    try:
        while not list(folder.glob("batch-*.parquet")):
            assert repro.poll() is None, "dvc repro ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        os.killpg(repro.pid, signal.SIGKILL)
        repro.wait()
    saved = sources(pl.read_parquet(folder / "batch-*.parquet"))
    assert saved

    emulator.set_knobs(Knobs())
    emulator.reset_counters()
    project.repro()
    found = metrics(project)
    assert found["files_resumed"] == len(saved)
    assert volume(project).equals(truth(bucket_k, NEXT_DAY))
    new = sources(volume(project)) - sources(before)
    assert found["files_fetched"] + found["files_resumed"] == len(new)
    assert not folder.exists()
