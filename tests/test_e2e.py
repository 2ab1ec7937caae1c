"""The real `dvc repro`, in a scratch git repository, against the emulator on 127.0.0.1.

Each DVC call costs about a second, so one template repository is initialised per session and
copied per test, and the universe is small (but crosses the 1000-key page boundary).
"""

from __future__ import annotations

import datetime as dt
import json
import math

import polars as pl
import pytest
import yaml

from devtools.emulator import Emulator, Knobs, Universe
from devtools.scratch import ScratchProject
from pipeline.dataset.schema import SCHEMA
from pipeline.symbols import is_delivery
from pipeline.vision.layout import Layout

pytestmark = pytest.mark.e2e

D = dt.date.fromisoformat
LAYOUT = Layout(market="um", data_type="klines", interval="1m")
START = D("2022-01-01")
AS_OF = D("2024-06-01")
UNIVERSE = {
    "today": AS_OF.isoformat(),
    "market": "um",
    "data_type": "klines",
    "intervals": ["1m"],
    "symbols": {
        "BTCUSDT": {"spans": [["2019-09-25", None]], "missing": ["2023-03-03", "2024-05-20"]},
        "ETHUSDT": {"spans": [["2022-01-01", None]]},
        # Exactly one full page (500 days = 1000 keys) and one key pair over it.
        "PAGEUSDT": {"spans": [["2023-01-18", None]]},
        "OVERUSDT": {"spans": [["2023-01-17", None]]},
        "OLDUSDT": {"spans": [["2022-03-01", "2023-02-28"]]},
        "AGAINUSDT": {"spans": [["2022-01-01", "2022-06-30"], ["2023-09-01", None]]},
        "LATEUSDT": {"spans": [["2023-01-01", None]], "late": {"2024-05-30": "2024-06-02"}},
        "币安人生USDT": {"spans": [["2024-05-10", None]]},
        "AERGOUSDTSETTLED": {"spans": [["2023-05-01", "2024-03-31"]]},
        "BTCUSDT_240628": {"spans": [["2024-01-01", "2024-06-28"]]},
    },
}


@pytest.fixture(scope="module")
def emulator():
    with Emulator(Universe.from_dict(UNIVERSE)) as server:
        yield server


def emulated_params(emulator: Emulator, *, retries: int = 4) -> dict:
    """params.yaml for a scratch project on `emulator`: this module's dates, quick retries."""
    return {
        "vision": {"listing_url": emulator.listing_url, "download_url": emulator.download_url},
        "dataset": {"start_date": START.isoformat()},
        "run": {"as_of": AS_OF.isoformat()},
        "update": {"lookback_days": 5},
        "probe": {"workers": 8, "timeout_s": 5, "retries": retries, "backoff_s": 0.01},
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory, emulator):
    return ScratchProject.create(
        tmp_path_factory.mktemp("template") / "repo", emulated_params(emulator)
    )


@pytest.fixture
def project(tmp_path, template, emulator):
    emulator.set_universe(Universe.from_dict(UNIVERSE))
    emulator.set_knobs(Knobs())
    emulator.reset_counters()
    return template.copy(tmp_path / "repo")


def expected_rows(universe: Universe, as_of: dt.date) -> pl.DataFrame:
    """The dataset the contract promises for this universe: the ground truth."""
    last = as_of - dt.timedelta(days=1)
    rows = []
    for symbol in universe.symbols:
        if is_delivery(symbol):
            continue
        files = {d for d in universe.available_dates(symbol) if START <= d <= last}
        if not files:
            continue
        day = min(files)
        while day <= last:
            meta = universe.meta(LAYOUT.symbol_prefix(symbol) + f"{symbol}-1m-{day}.zip")
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
            day += dt.timedelta(days=1)
    schema = {k: v for k, v in SCHEMA.items() if k != "probe_timestamp"}
    return pl.DataFrame(rows, schema=schema).sort("date", "symbol")


def assert_matches_universe(project: ScratchProject, universe: Universe, as_of: dt.date) -> None:
    actual = project.dataset()
    assert dict(actual.schema) == SCHEMA
    assert actual.select("date", "symbol").is_unique().all()
    assert (
        actual.drop("probe_timestamp").sort("date", "symbol").equals(expected_rows(universe, as_of))
    )


def minimal_pages(universe: Universe, symbols: list[str], first: dt.date) -> int:
    """Σ ⌈keys / 1000⌉ over the listed prefixes, counting keys from `first` on."""
    return sum(
        math.ceil(2 * sum(d >= first for d in universe.available_dates(s)) / 1000) or 1
        for s in symbols
    )


def listing_requests(emulator: Emulator) -> int:
    return emulator.counters()["by_kind"].get("list", 0)


def skipped(output: str, stage: str) -> bool:
    return f"Stage '{stage}' didn't change, skipping" in output


def test_first_run_backfills_everything_row_for_row(project, emulator):
    result = project.repro()
    universe = Universe.from_dict(UNIVERSE)
    assert_matches_universe(project, universe, AS_OF)
    perpetual = [s for s in universe.symbols if not is_delivery(s)]
    assert json.loads(project.read("symbols.json")) == {"symbols": perpetual}
    assert json.loads(project.read("data/gaps.json")) == perpetual
    # Discovery is one page; each symbol costs its pages, plus one empty tail listing for
    # each symbol that stopped listing long ago (OLDUSDT, AERGOUSDTSETTLED).
    budget = 1 + minimal_pages(universe, perpetual, START) + 2
    assert listing_requests(emulator) <= budget, result.stderr
    assert "Running stage 'backfill'" in result.stdout
    # The completeness check compares partitions + _dataset.json with DVC's own file count.
    lock = yaml.safe_load(project.read("dvc.lock"))
    recorded = next(o for o in lock["stages"]["update"]["outs"] if o["path"] == "data/availability")
    on_disk = list((project.root / "data" / "availability").iterdir())
    assert (
        recorded["nfiles"]
        == len(on_disk)
        == len(project.dataset()["date"].dt.month_start().unique()) + 1
    )


def test_unchanged_rerun_skips_backfill_and_lists_only_the_window(project, emulator):
    project.repro()
    emulator.reset_counters()
    result = project.repro()
    assert skipped(result.stdout, "detect_gaps")
    assert skipped(result.stdout, "backfill")
    assert "Running stage 'update'" in result.stdout
    symbols = json.loads(project.read("symbols.json"))["symbols"]
    counters = emulator.counters()
    assert listing_requests(emulator) == 1 + len(symbols)
    assert all(counters["by_prefix"].get(LAYOUT.symbol_prefix(s)) == 1 for s in symbols)
    status = project.run("dvc", "status").stdout
    assert "backfill" not in status and "detect_gaps" not in status


def test_next_day_new_symbol_gets_exactly_its_history(project, emulator):
    project.repro()
    next_day = AS_OF + dt.timedelta(days=1)
    universe = (
        Universe.from_dict(UNIVERSE)
        .with_today(next_day)
        .with_symbol("龙虾USDT", [(D("2023-06-01"), None)])
    )
    emulator.set_universe(universe)
    emulator.reset_counters()
    project.set_params({"run": {"as_of": next_day.isoformat()}})
    result = project.repro()
    assert "Running stage 'backfill'" in result.stdout
    assert json.loads(project.read("data/gaps.json")) == ["龙虾USDT"]
    counters = emulator.counters()["by_prefix"]
    new_prefix = LAYOUT.symbol_prefix("龙虾USDT")
    assert counters[new_prefix] == minimal_pages(universe, ["龙虾USDT"], START)
    others = [s for s in json.loads(project.read("symbols.json"))["symbols"] if s != "龙虾USDT"]
    assert all(counters.get(LAYOUT.symbol_prefix(s)) == 1 for s in others)
    assert_matches_universe(project, universe, next_day)


def test_late_file_flips_to_available_and_delisted_rows_go_on(project, emulator):
    project.repro()
    late = project.dataset().filter(
        pl.col("symbol") == "LATEUSDT", pl.col("date") == D("2024-05-30")
    )
    assert late["available"].to_list() == [False]

    for offset in (1, 2):
        day = AS_OF + dt.timedelta(days=offset)
        emulator.set_universe(Universe.from_dict(UNIVERSE).with_today(day))
        project.set_params({"run": {"as_of": day.isoformat()}})
        project.repro()
    final = AS_OF + dt.timedelta(days=2)
    rows = project.dataset()
    late = rows.filter(pl.col("symbol") == "LATEUSDT", pl.col("date") == D("2024-05-30"))
    assert late["available"].to_list() == [True]
    old = rows.filter(pl.col("symbol") == "OLDUSDT")
    assert old["date"].max() == final - dt.timedelta(days=1)
    assert not old.filter(pl.col("date") > D("2023-02-28"))["available"].any()
    assert_matches_universe(project, Universe.from_dict(UNIVERSE).with_today(final), final)
