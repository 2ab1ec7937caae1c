"""The real `dvc repro`, in a scratch git repository, against the emulator on 127.0.0.1.

The session's project (`built`, tests/conftest.py) made its first run and an unchanged rerun
once; the first tests read what those runs did, the others copy the project and run the days
after. The universe is small but crosses the 1000-key page boundary (tests/e2e_support.py).
"""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from devtools.emulator import Emulator
from devtools.scratch import ScratchProject
from pipeline.symbols import render_gaps
from tests import e2e_support as e2e
from tests.e2e_support import AS_OF, NEXT_DAY, D, listings, ran, skipped

pytestmark = pytest.mark.e2e


@pytest.fixture
def project(tmp_path, built, emulator) -> ScratchProject:
    return built.project.copy(tmp_path / "repo")


def assert_each_symbol_listed_once(project: ScratchProject, emulator: Emulator) -> None:
    """The day's work and nothing more: discovery's page, then one listing per tracked symbol
    (its window)."""
    counters = emulator.counters()
    symbols = e2e.tracked(project)
    assert e2e.discovery_listings(counters) == 1
    assert listings(counters) == 1 + len(symbols)
    assert all(listings(counters, s) == 1 for s in symbols)


def test_first_run_backfills_everything_row_for_row(built):
    first, universe = built.first, e2e.universe()
    e2e.assert_rows_match(first.rows, universe, AS_OF)
    perpetual = e2e.perpetual(universe)
    assert json.loads(built.project.read("symbols.json")) == {"symbols": perpetual}
    assert first.gaps == perpetual
    assert ran(first.stdout, "backfill")
    # Discovery is one page; each symbol costs its pages, plus one empty tail listing for
    # each symbol that stopped listing long ago (OLDUSDT, AERGOUSDTSETTLED).
    budget = 1 + e2e.minimal_pages(universe, perpetual) + 2
    assert listings(first.counters) <= budget, first.stderr
    # The completeness check compares partitions + _dataset.json with DVC's own file count.
    lock = yaml.safe_load(built.project.read("dvc.lock"))
    recorded = next(o for o in lock["stages"]["update"]["outs"] if o["path"] == "data/availability")
    on_disk = list((built.project.root / "data" / "availability").iterdir())
    months = first.rows["date"].dt.month_start().unique()
    assert recorded["nfiles"] == len(on_disk) == len(months) + 1


def test_the_next_run_finds_no_gap_and_lists_each_symbol_once(built, tmp_path):
    second = built.second
    # detect_gaps runs every time (it costs no request), so gaps.json is never stale: it named
    # every symbol after the first run, and names none now.
    assert ran(second.stdout, "detect_gaps")
    assert second.gaps == []
    # gaps.json changed, so backfill ran: and listed nothing.
    assert "no symbol lacks history: nothing to backfill, no request made" in second.stderr
    symbols = e2e.tracked(built.project)
    assert listings(second.counters) == e2e.discovery_listings(second.counters) + len(symbols)
    assert all(listings(second.counters, s) == 1 for s in symbols)
    e2e.assert_rows_match(second.rows, e2e.universe(), AS_OF)
    assert e2e.dvc_status_is_clean(built.project.copy(tmp_path / "repo"))


def test_a_stale_gaps_json_naming_every_symbol_makes_backfill_list_nothing(project, emulator):
    symbols = e2e.tracked(project)
    (project.root / "data" / "gaps.json").write_text(render_gaps(symbols), encoding="utf-8")
    # Only backfill (`dvc repro` would run detect_gaps first, which rewrites gaps.json), and
    # run for real: DVC's run cache holds the first run's output for these very gaps.
    result = project.repro("--single-item", "--force", "backfill")
    assert ran(result.stdout, "backfill")
    assert listings(emulator.counters()) == 0
    assert f"no symbol lacks history ({len(symbols)} in gaps.json already have history)" in (
        result.stderr
    )
    assert pl.read_parquet(project.root / "data" / "backfill.parquet").is_empty()


def test_next_day_new_symbol_gets_exactly_its_history(project, emulator):
    new = "龙虾USDT"
    universe = e2e.universe().with_today(NEXT_DAY).with_symbol(new, [(D("2023-06-01"), None)])
    emulator.set_universe(universe)
    project.set_params({"run": {"as_of": NEXT_DAY.isoformat()}})
    result = project.repro()
    assert ran(result.stdout, "backfill")
    assert json.loads(project.read("data/gaps.json")) == [new]
    counters = emulator.counters()
    assert listings(counters, new) == e2e.minimal_pages(universe, [new])
    others = [s for s in e2e.tracked(project) if s != new]
    assert all(listings(counters, s) == 1 for s in others)
    assert listings(counters) == 1 + len(others) + listings(counters, new)
    e2e.assert_matches_universe(project, universe, NEXT_DAY)


def test_next_day_late_file_flips_to_available_and_delisted_rows_go_on(project, emulator):
    late = project.dataset().filter(
        pl.col("symbol") == "LATEUSDT", pl.col("date") == D("2024-05-30")
    )
    assert late["available"].to_list() == [False]
    universe = e2e.universe().with_today(NEXT_DAY)
    emulator.set_universe(universe)
    project.set_params({"run": {"as_of": NEXT_DAY.isoformat()}})

    result = project.repro()

    # No new symbol: gaps.json is as it was, and backfill does not even start.
    assert ran(result.stdout, "detect_gaps") and skipped(result.stdout, "backfill")
    assert_each_symbol_listed_once(project, emulator)
    rows = project.dataset()
    late = rows.filter(pl.col("symbol") == "LATEUSDT", pl.col("date") == D("2024-05-30"))
    assert late["available"].to_list() == [True]
    old = rows.filter(pl.col("symbol") == "OLDUSDT")
    assert old["date"].max() == AS_OF
    assert not old.filter(pl.col("date") > D("2023-02-28"))["available"].any()
    e2e.assert_matches_universe(project, universe, NEXT_DAY)
    changes = pl.read_parquet(project.root / "data" / "changes.parquet")
    assert changes.select("date", "symbol", "kind").rows() == [
        (D("2024-05-30"), "LATEUSDT", "appeared")
    ]


def test_a_day_after_a_deploy_of_the_listing_client_and_probe_params_lists_only_windows(
    project, emulator
):
    """A deploy changes backfill's code dependencies and probe.* (no longer backfill's params):
    backfill reruns, but lists only symbols without history, which there are none of."""
    client = project.root / "pipeline" / "vision" / "client.py"
    client.write_text(client.read_text(encoding="utf-8") + "# deployed\n", encoding="utf-8")
    project.set_params({"probe": {"workers": 3, "timeout_s": 7}})
    project.commit("deploy: the listing client and probe.*")
    universe = e2e.universe().with_today(NEXT_DAY)
    emulator.set_universe(universe)

    result = project.make("update", f"AS_OF={NEXT_DAY}")

    assert result.returncode == 0, result.stderr
    # Its code changed, so DVC reruns backfill; it finds every symbol held and lists nothing.
    assert "Running stage 'backfill'" in result.stdout
    assert "no symbol lacks history: nothing to backfill, no request made" in result.stderr
    assert_each_symbol_listed_once(project, emulator)
    e2e.assert_matches_universe(project, universe, NEXT_DAY)
    used = e2e.lock_params(project)
    assert (used["run.as_of"], used["probe.workers"], used["probe.timeout_s"]) == (
        NEXT_DAY.isoformat(),
        3,
        7,
    )
    assert project.params_path.read_bytes() == e2e.committed_params(project)
