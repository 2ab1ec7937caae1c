"""Operator commands in a real DVC project on the emulator: `make audit`, `make backfill`.

Each starts from the session's project (a first run and a rerun, committed) against a bucket
that changed since: a file published long after its day, one re-uploaded, one removed. Each
command is one `dvc repro` with run.repair set for that run: it does the day's work (discovery,
each tracked symbol's window) and re-lists what the repair names, merged per symbol. It must
log each change once, make the minimal number of listing requests, rewrite only the months
whose rows changed (and the window's), and leave params.yaml as committed and `dvc status`
clean.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys

import polars as pl
import pytest

from devtools.scratch import ScratchProject
from pipeline.dataset.changes import read_changes
from tests import e2e_support as e2e
from tests.e2e_support import AS_OF, LAYOUT, NEXT_DAY, D, history_pages, listings, partition

pytestmark = pytest.mark.e2e

# The first run saw the session's universe; a day later the bucket is CHANGED, but run.as_of
# stays AS_OF, so that only the injected changes differ (2023 files are long past any window).
CHANGED = (
    e2e.universe()
    .with_today(NEXT_DAY)
    # Missing at the first run, published on NEXT_DAY.
    .with_symbol(
        "BTCUSDT", [("2019-09-25", None)], missing=["2024-05-20"], late={"2023-03-03": NEXT_DAY}
    )
    .with_reupload("PAGEUSDT", "2023-05-05", on=NEXT_DAY)
    .without_file("ETHUSDT", "2023-08-08")
)
INJECTED = [
    (D("2023-03-03"), "BTCUSDT", "appeared"),
    (D("2023-05-05"), "PAGEUSDT", "replaced"),
    (D("2023-08-08"), "ETHUSDT", "removed"),
    (D("2024-05-30"), "LATEUSDT", "appeared"),  # the universe's own late file, in the window
]
WINDOW_MONTH = "2024-05"
ALL = {"symbols": None, "since": None, "until": None}


@pytest.fixture
def project(tmp_path, built, emulator) -> ScratchProject:
    emulator.set_universe(CHANGED)
    return built.project.copy(tmp_path / "repo")


def ops(project: ScratchProject, *args: str, check: bool = True):
    result = project.run(sys.executable, "-m", "pipeline.ops", *args, check=False)
    assert result.returncode == 0 or not check, result.stderr
    return result


def make(project: ScratchProject, *args: str):
    result = project.make(*args)
    assert result.returncode == 0, result.stderr
    return result


def changes(project: ScratchProject) -> list[tuple[dt.date, str, str]]:
    log = read_changes(project.root / "data" / "changes.parquet")
    return sorted(log.select("date", "symbol", "kind").rows())


def dataset_rows(project: ScratchProject) -> pl.DataFrame:
    return e2e.without_timestamps(project.dataset())


def rewritten_months(before: dict[str, str], after: dict[str, str]) -> list[str]:
    paths = e2e.changed_files(before, after, under="data/availability/")
    return [path.removeprefix("data/availability/").removesuffix(".parquet") for path in paths]


def ops_query(project: ScratchProject, *args: str) -> str:
    result = project.run(sys.executable, "-m", "pipeline.query", *args, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_audit_finds_every_injected_change_once_with_minimal_requests(project, emulator):
    before = e2e.snapshot(project)
    result = make(project, "audit")

    symbols = e2e.tracked(project)
    # Discovery's page and every symbol's whole history (its window inside it), once.
    minimal = 1 + sum(history_pages(CHANGED, s) for s in symbols)
    first_audit = emulator.counters()
    assert minimal <= listings(first_audit) <= math.floor(1.1 * minimal)
    assert changes(project) == INJECTED
    log = read_changes(project.root / "data" / "changes.parquet")
    replaced = log.filter(pl.col("kind") == "replaced").row(0, named=True)
    meta = CHANGED.meta(LAYOUT.symbol_prefix("PAGEUSDT") + "PAGEUSDT-1m-2023-05-05.zip")
    assert (replaced["new_size"], replaced["new_etag"]) == (meta.size, meta.etag)
    assert replaced["old_etag"] != replaced["new_etag"]
    assert dataset_rows(project).equals(e2e.expected_rows(CHANGED, AS_OF))
    # Only the months with a change, and the window's, were rewritten.
    after = e2e.snapshot(project)
    assert rewritten_months(before, after) == ["2023-03", "2023-05", "2023-08", WINDOW_MONTH]
    assert e2e.ran(result.stdout, "validate") and e2e.ran(result.stdout, "report")
    e2e.assert_one_off_run(project, ALL, status=False)  # `dvc status` is checked after the next
    assert json.loads(project.read("metrics/update.json"))["repair"] == {
        "symbols": "all",
        "since": e2e.START.isoformat(),
        "until": (AS_OF - e2e.ONE_DAY).isoformat(),
    }
    # The day the audit ran, from its own stamp: the clock may have passed midnight since.
    day = log["detected_at"].min().date()
    answer = ops_query(project, "changes", "--since", str(day), "--format", "json")
    listed = sorted((c["date"], c["symbol"], c["kind"]) for c in json.loads(answer))
    assert listed == [(d.isoformat(), s, k) for d, s, k in INJECTED]
    tomorrow = str(day + dt.timedelta(days=1))
    later = ops_query(project, "changes", "--since", tomorrow, "--format", "csv")
    assert later.splitlines()[0].startswith("detected_at,date,symbol,kind,")
    assert len(later.splitlines()) == 1

    # Again, now that nothing changed since: an audit of an unchanged bucket finds nothing,
    # and writes nothing but the window's month (fresh probes, as on any day).
    emulator.reset_counters()
    ops(project, "audit")
    assert listings(emulator.counters()) == listings(first_audit)
    again = e2e.snapshot(project)
    assert e2e.changed_files(after, again, under="data/") == [partition(WINDOW_MONTH)]
    assert changes(project) == INJECTED
    e2e.assert_one_off_run(project, ALL)


def test_make_backfill_symbols_lists_their_history_and_each_windows_once(project, emulator):
    before = e2e.snapshot(project)
    make(project, "backfill", "SYMBOLS=BTCUSDT,PAGEUSDT")

    counters, symbols = emulator.counters(), e2e.tracked(project)
    chosen = ["BTCUSDT", "PAGEUSDT"]
    assert [listings(counters, s) for s in chosen] == [history_pages(CHANGED, s) for s in chosen]
    others = [s for s in symbols if s not in chosen]
    assert all(listings(counters, s) == 1 for s in others)  # the window only
    assert listings(counters) == 1 + len(others) + sum(history_pages(CHANGED, s) for s in chosen)
    # ETHUSDT's removal is not theirs: left alone.
    assert changes(project) == [INJECTED[0], INJECTED[1], INJECTED[3]]
    after = e2e.snapshot(project)
    assert rewritten_months(before, after) == ["2023-03", "2023-05", WINDOW_MONTH]
    e2e.assert_one_off_run(project, {"symbols": chosen, "since": None, "until": None}, status=False)

    # The same repair, from the command line: idempotent.
    emulator.reset_counters()
    ops(project, "backfill", "--symbols", "BTCUSDT,PAGEUSDT")
    assert listings(emulator.counters()) == listings(counters)
    assert e2e.changed_files(after, e2e.snapshot(project), under="data/") == [
        partition(WINDOW_MONTH)
    ]
    e2e.assert_one_off_run(project, {"symbols": chosen, "since": None, "until": None})


def test_make_backfill_since_until_lists_the_range_and_the_window_of_each_symbol(project, emulator):
    before = e2e.snapshot(project)
    result = make(project, "backfill", "SINCE=2023-08-01", "UNTIL=2023-08-31")

    # Per symbol the range and the window, which do not touch: two listings (one page each).
    symbols = e2e.tracked(project)
    counters = emulator.counters()
    assert all(listings(counters, s) == 2 for s in symbols)
    assert listings(counters) == 1 + 2 * len(symbols)
    assert changes(project) == [INJECTED[2], INJECTED[3]]
    # The changes outside the range (BTCUSDT's March file, PAGEUSDT's May re-upload) are left
    # alone: their months are not even rewritten.
    assert rewritten_months(before, e2e.snapshot(project)) == ["2023-08", WINDOW_MONTH]
    in_scope = pl.col("date").dt.strftime("%Y-%m").is_in(["2023-08", WINDOW_MONTH])
    assert (
        dataset_rows(project)
        .filter(in_scope)
        .equals(e2e.expected_rows(CHANGED, AS_OF).filter(in_scope))
    )
    assert e2e.ran(result.stdout, "validate") and e2e.ran(result.stdout, "report")
    e2e.assert_one_off_run(project, {"symbols": None, "since": "2023-08-01", "until": "2023-08-31"})


BAD_INPUT = {
    # arguments: (exit code, what the one line says)
    ("--symbols", "ETHUSTD"): (1, ["unknown symbol ETHUSTD", "did you mean ETHUSDT?"]),
    ("--symbols", "BTCUSDT_240628"): (1, ["BTCUSDT_240628 is a delivery contract"]),
    ("--since", "2021-12-31"): (1, ["run.repair.since", "before dataset.start_date"]),
    ("--since", "2024-05-01", "--until", str(AS_OF)): (1, ["run.repair.until", "after run.as_of"]),
    ("--since", "2024-13-01"): (2, ["argument --since: '2024-13-01' is not a date"]),
}


def test_bad_operator_input_is_one_line_and_makes_no_request(project, emulator):
    before = e2e.snapshot(project, "params.yaml")
    for args, (code, says) in BAD_INPUT.items():
        result = ops(project, "backfill", *args, check=False)
        assert result.returncode == code, (args, result.stderr)
        line = result.stderr.strip().splitlines()[-1]
        assert all(part in line for part in says), (args, result.stderr)
        if code == 1:
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    made = project.make("backfill")
    assert made.returncode == 2
    assert "error: give --symbols A,B and/or --since DATE" in made.stderr
    assert listings(emulator.counters()) == 0
    assert e2e.snapshot(project, "params.yaml") == before
    assert not (project.root / ".params.yaml.one-off.json").exists()
