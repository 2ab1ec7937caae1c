"""Operator commands in a real DVC project on the emulator: audit, targeted backfill, re-probe.

Each runs after a first `dvc repro`, against a universe that changed since: files re-uploaded,
removed, or published long after their day. The commands must find each change once, make
the minimal number of listing requests, and leave `dvc status` honest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import sys
from pathlib import Path

import polars as pl
import pytest

from devtools.emulator import Emulator, Universe
from devtools.scratch import ScratchProject
from pipeline.dataset.changes import read_changes
from pipeline.symbols import is_delivery
from tests.test_e2e import AS_OF, LAYOUT, START, UNIVERSE, emulated_params, expected_rows

pytestmark = pytest.mark.e2e

D = dt.date.fromisoformat
REPO = Path(__file__).resolve().parent.parent
NEXT_DAY = AS_OF + dt.timedelta(days=1)
# The first run sees BEFORE; a day later the bucket is CHANGED, but run.as_of stays AS_OF, so
# only the injected changes differ (a 2023 file published on NEXT_DAY is long past any window).
BEFORE = Universe.from_dict(UNIVERSE).with_symbol(
    "PAGEUSDT", [("2023-01-18", None)], late={"2023-02-02": NEXT_DAY}
)
CHANGED = (
    BEFORE.with_today(NEXT_DAY)
    .with_reupload("BTCUSDT", "2023-05-05", on=NEXT_DAY)
    .without_file("ETHUSDT", "2023-08-08")
)
INJECTED = [
    (D("2023-02-02"), "PAGEUSDT", "appeared"),
    (D("2023-05-05"), "BTCUSDT", "replaced"),
    (D("2023-08-08"), "ETHUSDT", "removed"),
    (D("2024-05-30"), "LATEUSDT", "appeared"),  # the universe's own late file, due NEXT_DAY
]


@pytest.fixture(scope="module")
def emulator():
    with Emulator(BEFORE) as server:
        yield server


@pytest.fixture(scope="module")
def built(tmp_path_factory, emulator):
    """A project after its first `dvc repro`, committed: what an operator starts from."""
    project = ScratchProject.create(
        tmp_path_factory.mktemp("built") / "repo",
        emulated_params(emulator, retries=2),
    )
    project.repro()
    project.commit("first run")
    return project


@pytest.fixture
def project(tmp_path, built, emulator):
    emulator.set_universe(CHANGED)
    emulator.reset_counters()
    return built.copy(tmp_path / "repo")


def run(project: ScratchProject, *args: str, check: bool = True):
    result = project.run(sys.executable, "-m", *args, check=False)
    assert result.returncode == 0 or not check, result.stderr
    return result


def listings(emulator: Emulator, symbol: str | None = None) -> int:
    counters = emulator.counters()
    if symbol is None:
        return counters["by_kind"].get("list", 0)
    return counters["by_prefix"].get(LAYOUT.symbol_prefix(symbol), 0)


def perpetual(universe: Universe) -> list[str]:
    return [s for s in universe.symbols if not is_delivery(s)]


def history_pages(universe: Universe, symbol: str) -> int:
    last = AS_OF - dt.timedelta(days=1)
    days = sum(START <= d <= last for d in universe.available_dates(symbol))
    return max(1, math.ceil(2 * days / 1000))


def files(project: ScratchProject) -> dict[str, str]:
    data = project.root / "data"
    return {
        str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data.rglob("*"))
        if p.is_file()
    }


def dataset_rows(project: ScratchProject) -> pl.DataFrame:
    return project.dataset().drop("probe_timestamp").sort("date", "symbol")


def dvc_status_is_clean_for_the_dataset(project: ScratchProject) -> bool:
    status = project.run("dvc", "status", "update").stdout
    return "data/availability" not in status and "changes.parquet" not in status


def test_the_audit_finds_every_injected_change_once_with_minimal_requests(project, emulator):
    run(project, "pipeline.audit")
    symbols = perpetual(CHANGED)
    minimal = sum(history_pages(CHANGED, s) for s in symbols)
    assert minimal <= listings(emulator) <= math.floor(1.1 * minimal)
    changes = read_changes(project.root / "data" / "changes.parquet").sort("date")
    assert changes.select("date", "symbol", "kind").rows() == INJECTED
    replaced = changes.filter(pl.col("kind") == "replaced").row(0, named=True)
    meta = CHANGED.meta(LAYOUT.symbol_prefix("BTCUSDT") + "BTCUSDT-1m-2023-05-05.zip")
    assert (replaced["new_size"], replaced["new_etag"]) == (meta.size, meta.etag)
    assert replaced["old_etag"] != replaced["new_etag"]
    assert dataset_rows(project).equals(expected_rows(CHANGED, AS_OF))
    assert dvc_status_is_clean_for_the_dataset(project)
    # The day the audit ran, from its own stamp: the clock may have passed midnight since.
    day = changes["detected_at"].min().date()
    answer = run(project, "pipeline.query", "changes", "--since", str(day), "--format", "json")
    listed = sorted((c["date"], c["symbol"], c["kind"]) for c in json.loads(answer.stdout))
    assert listed == [(d.isoformat(), s, k) for d, s, k in INJECTED]
    tomorrow = str(day + dt.timedelta(days=1))
    later = run(project, "pipeline.query", "changes", "--since", tomorrow, "--format", "csv")
    assert later.stdout.splitlines()[0].startswith("detected_at,date,symbol,kind,")
    assert len(later.stdout.splitlines()) == 1

    before, listed_first = files(project), listings(emulator)
    emulator.reset_counters()
    run(project, "pipeline.audit")
    assert files(project) == before  # nothing new: no change row, not a byte rewritten
    assert listings(emulator) == listed_first


def test_an_audit_of_an_unchanged_bucket_writes_nothing(project, emulator):
    emulator.set_universe(BEFORE)
    before = files(project)
    run(project, "pipeline.audit")
    assert files(project) == before
    assert read_changes(project.root / "data" / "changes.parquet").is_empty()


def test_targeted_backfill_lists_only_its_symbols_and_leaves_dvc_status_honest(project, emulator):
    run(project, "pipeline.backfill", "--symbols", "BTCUSDT,PAGEUSDT")
    assert listings(emulator) == listings(emulator, "BTCUSDT") + listings(emulator, "PAGEUSDT")
    assert listings(emulator, "BTCUSDT") == history_pages(CHANGED, "BTCUSDT")
    assert listings(emulator, "PAGEUSDT") == history_pages(CHANGED, "PAGEUSDT")
    changes = read_changes(project.root / "data" / "changes.parquet").sort("date")
    assert changes.select("date", "symbol", "kind").rows() == INJECTED[:2]
    assert dvc_status_is_clean_for_the_dataset(project)
    before = files(project)
    run(project, "pipeline.backfill", "--symbols", "BTCUSDT,PAGEUSDT")
    assert files(project) == before  # idempotent


def test_a_range_reprobe_lists_one_page_per_symbol_and_repairs_the_window(project, emulator):
    run(project, "pipeline.backfill", "--since", "2023-08-01", "--until", "2023-08-31")
    assert listings(emulator) == len(perpetual(CHANGED))
    changes = read_changes(project.root / "data" / "changes.parquet")
    assert changes.select("date", "symbol", "kind").rows() == [INJECTED[2]]
    assert dvc_status_is_clean_for_the_dataset(project)


def test_bad_operator_input_is_one_line_and_makes_no_request(project, emulator):
    before = files(project)
    result = run(project, "pipeline.backfill", "--symbols", "ETHUSTD", check=False)
    assert result.returncode == 1
    assert "unknown symbol ETHUSTD" in result.stderr and "did you mean ETHUSDT?" in result.stderr
    assert listings(emulator) == 0 and files(project) == before


def test_make_backfill_repairs_then_validates_and_reports(project, emulator):
    result = project.make("backfill", "SYMBOLS=BTCUSDT")
    assert result.returncode == 0, result.stderr
    assert listings(emulator) == listings(emulator, "BTCUSDT") == history_pages(CHANGED, "BTCUSDT")
    assert "Running stage 'validate'" in result.stdout and "Running stage 'report'" in result.stdout
    emulator.reset_counters()
    result = project.make("backfill", "SINCE=2023-08-01", "UNTIL=2023-08-31")
    assert result.returncode == 0, result.stderr
    assert listings(emulator) == len(perpetual(CHANGED))
    changes = read_changes(project.root / "data" / "changes.parquet").sort("date")
    assert changes.select("date", "symbol", "kind").rows() == [INJECTED[1], INJECTED[2]]
    assert dvc_status_is_clean_for_the_dataset(project)
    result = project.make("backfill")
    assert result.returncode == 2 and "error: give SYMBOLS=A,B and/or SINCE=" in result.stderr
