"""Operator repairs in process: the update stage run with `run.repair` set, as `make backfill`
and `make audit` run it (through dvc repro), against the in-process bucket.

A repair run does the day's work too (every tracked symbol's lookback window), and lists its
symbols' dates beside it, once per symbol where they overlap. Of the repair's rows outside the
window only those that differ from the dataset are merged, so a second run leaves the change
log and every partition but the window's month byte-identical.
"""

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from pipeline.dataset.changes import read_changes
from pipeline.entry import run_stage
from pipeline.ops.one_off import journal_path, one_off_params
from pipeline.stages import update
from tests.support import (
    PARAMS,
    D,
    dataset,
    dates,
    files_outside_logs,
    read_json,
    run_all,
    set_as_of,
    snapshot,
)

CHANGES = Path("data/changes.parquet")
# as_of 2024-06-01 with a lookback of 5 days: the window is 2024-05-27 .. 2024-05-31.
WINDOW_MONTH = "data/availability/2024-05.parquet"


def repair(
    symbols: list[str] | None = None, since: str | None = None, until: str | None = None
) -> int:
    """The update stage, once, with run.repair set in params.yaml (put back afterwards)."""
    scope = {"symbols": symbols, "since": since, "until": until}
    with one_off_params(PARAMS, {"run.repair": scope}):
        return run_stage("update", update.run)


def audit() -> int:
    return repair()


def changes(*columns: str) -> list[tuple]:
    return read_changes(CHANGES).select("date", "symbol", "kind", *columns).rows()


def rewrites_only_the_window(run: Callable[[], int]) -> None:
    """Assert that `run` succeeds and rewrites nothing under data/ but the window's month."""
    before = snapshot()
    assert run() == 0
    after = snapshot()
    rewritten = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert rewritten == {WINDOW_MONTH}


def test_a_targeted_backfill_lists_the_symbols_history_beside_the_window_and_is_idempotent(
    workspace, bucket, caplog
):
    assert run_all() == [0, 0, 0, 0]
    params = Path("params.yaml").read_bytes()
    bucket.add_days("BTCUSDT", "2023-03-03", "2023-03-03")  # published a year late
    bucket.queries.clear()
    assert repair(symbols=["BTCUSDT"]) == 0
    # BTCUSDT from 2023-01-01 through 2024-05-31, its window inside: 517 days, two pages (the
    # first holds 500 days' files, through 2024-05-14). 币安人生USDT's window only: one page.
    assert bucket.start_dates("BTCUSDT") == [D("2023-01-01"), D("2024-05-15")]
    assert bucket.start_dates("币安人生USDT") == [D("2024-05-27")]
    assert len(bucket.queries) == 3
    row = dataset().filter(pl.col("symbol") == "BTCUSDT", pl.col("date") == D("2023-03-03"))
    assert row["available"].to_list() == [True]
    assert changes() == [(D("2023-03-03"), "BTCUSDT", "appeared")]
    assert read_json("metrics/update.json")["repair"] == {
        "symbols": ["BTCUSDT"],
        "since": "2023-01-01",
        "until": "2024-05-31",
    }
    # The one-off params lasted for that run only, and were put back without a warning.
    assert Path("params.yaml").read_bytes() == params
    assert not journal_path(PARAMS).exists()
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []
    rewrites_only_the_window(lambda: repair(symbols=["BTCUSDT"]))


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        (
            {"symbols": ["BTCUSTD"]},
            "unknown symbol BTCUSTD: not in symbols.json nor the dataset "
            "(run `make update` to discover new listings); did you mean BTCUSDT?",
        ),
        (
            {"symbols": ["BTCUSDT_240628"]},
            "BTCUSDT_240628 is a delivery contract, outside dataset.contracts (perpetual)",
        ),
        (
            {"since": "2022-12-31"},
            "params.yaml: run.repair.since 2022-12-31 is before dataset.start_date (2023-01-01)",
        ),
        (
            {"since": "2024-05-01", "until": "2024-06-01"},
            "params.yaml: run.repair.until 2024-06-01 is after run.as_of - 1 (2024-05-31)",
        ),
        (
            {"since": "2024-05-02", "until": "2024-05-01"},
            "params.yaml: run.repair.since 2024-05-02 is after run.repair.until (2024-05-01)",
        ),
    ],
    ids=["unknown", "delivery", "before-start", "after-as-of", "since-after-until"],
)
def test_a_bad_repair_is_refused_before_any_listing(workspace, bucket, caplog, scope, message):
    assert run_all() == [0, 0, 0, 0]
    before, requests = files_outside_logs(), len(bucket.queries)
    caplog.clear()
    assert repair(**scope) == 1
    assert len(bucket.queries) == requests
    assert files_outside_logs() == before  # params.yaml included: put back
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [message]


def test_a_range_reprobe_lists_those_dates_and_the_window_of_every_symbol(workspace, bucket):
    assert run_all() == [0, 0, 0, 0]
    bucket.remove_day("币安人生USDT", "2024-05-21")
    bucket.remove_day("币安人生USDT", "2024-05-25")  # in neither the repair nor the window
    bucket.queries.clear()
    assert repair(since="2024-05-20", until="2024-05-22") == 0
    # Far from the window (2024-05-27 ..): two ranges a symbol, one page each.
    for symbol in ("BTCUSDT", "币安人生USDT"):
        assert bucket.start_dates(symbol) == [D("2024-05-20"), D("2024-05-27")]
    assert len(bucket.queries) == 4
    assert changes() == [(D("2024-05-21"), "币安人生USDT", "removed")]
    assert read_json("metrics/update.json")["symbols_probed"] == 2  # in four ranges
    untouched = dataset().filter(
        pl.col("symbol") == "币安人生USDT", pl.col("date") == D("2024-05-25")
    )
    assert untouched["available"].to_list() == [True]
    assert read_json("metrics/update.json")["repair"] == {
        "symbols": "all",
        "since": "2024-05-20",
        "until": "2024-05-22",
    }


def test_the_audit_finds_each_change_once_and_a_quiet_audit_rewrites_only_the_window(
    workspace, bucket
):
    assert run_all() == [0, 0, 0, 0]
    bucket.add_days("BTCUSDT", "2023-03-03", "2023-03-03")  # late, outside the window
    bucket.remove_day("BTCUSDT", "2023-06-01")
    original = bucket.meta("BTCUSDT", "2024-01-15")
    reuploaded = bucket.reupload("BTCUSDT", "2024-01-15", on="2024-05-30")
    bucket.remove_day("币安人生USDT", "2024-05-20")  # its first file
    bucket.queries.clear()
    assert audit() == 0
    # The minimum: BTCUSDT's whole history in two pages (the first reaches 2024-05-15, a day
    # later than 500 days: 2023-06-01 has no file), 币安人生USDT's in one.
    assert bucket.start_dates("BTCUSDT") == [D("2023-01-01"), D("2024-05-16")]
    assert bucket.start_dates("币安人生USDT") == [D("2023-01-01")]
    assert len(bucket.queries) == 3
    late, gone = bucket.meta("BTCUSDT", "2023-03-03"), bucket.meta("BTCUSDT", "2023-06-01")
    first = bucket.meta("币安人生USDT", "2024-05-20")
    assert changes("old_size", "new_size", "new_etag") == [
        (D("2023-03-03"), "BTCUSDT", "appeared", None, late.size, late.etag),
        (D("2023-06-01"), "BTCUSDT", "removed", gone.size, None, None),
        (D("2024-01-15"), "BTCUSDT", "replaced", original.size, reuploaded.size, reuploaded.etag),
        (D("2024-05-20"), "币安人生USDT", "removed", first.size, None, None),
    ]
    rows = dataset()
    assert rows.filter(pl.col("symbol") == "币安人生USDT")["date"].min() == D("2024-05-21")
    assert rows.select("date", "symbol").is_unique().all()
    assert read_json("metrics/update.json")["repair"] == {
        "symbols": "all",
        "since": "2023-01-01",
        "until": "2024-05-31",
    }
    bucket.queries.clear()
    rewrites_only_the_window(audit)
    assert len(bucket.queries) == 3
    assert read_json("metrics/update.json")["changes_logged"] == 0


def test_an_earlier_first_file_found_by_a_reprobe_extends_the_history_without_holes(
    workspace, bucket
):
    assert run_all() == [0, 0, 0, 0]
    bucket.add_days("币安人生USDT", "2024-05-10", "2024-05-10")  # uploaded long after
    bucket.queries.clear()
    # The repair ends before the recorded first file (2024-05-20): the days up to it are
    # listed too, since the symbol's history now starts earlier.
    assert repair(symbols=["币安人生USDT"], since="2024-05-08", until="2024-05-12") == 0
    assert bucket.start_dates("币安人生USDT") == [D("2024-05-08"), D("2024-05-27")]
    assert bucket.start_dates("BTCUSDT") == [D("2024-05-27")]
    rows = dataset().filter(pl.col("symbol") == "币安人生USDT").sort("date")
    assert rows["date"].to_list() == dates("2024-05-10", "2024-05-31")
    assert rows.filter(pl.col("available"))["date"].to_list()[:2] == [
        D("2024-05-10"),
        D("2024-05-20"),
    ]
    assert changes() == [(D("2024-05-10"), "币安人生USDT", "appeared")]


def test_a_repair_runs_until_as_of_minus_1_and_does_the_days_work(workspace, bucket):
    assert run_all() == [0, 0, 0, 0]
    bucket.add_days("BTCUSDT", "2024-06-01", "2024-06-02")
    set_as_of("2024-06-03")  # today's update has not run yet
    bucket.queries.clear()
    assert repair(symbols=["BTCUSDT"]) == 0
    # The window reaches back to 2024-05-29 (lookback 5); BTCUSDT's repair holds it (its first
    # page reaches 2024-05-15: 2023-03-03 has no file).
    assert bucket.start_dates("BTCUSDT") == [D("2023-01-01"), D("2024-05-16")]
    assert bucket.start_dates("币安人生USDT") == [D("2024-05-29")]
    grown = dataset().filter(pl.col("date") > D("2024-05-31"))
    assert grown.select("date", "symbol", "available").sort("date", "symbol").rows() == [
        (D("2024-06-01"), "BTCUSDT", True),
        (D("2024-06-01"), "币安人生USDT", False),
        (D("2024-06-02"), "BTCUSDT", True),
        (D("2024-06-02"), "币安人生USDT", False),
    ]
    assert read_json("metrics/update.json")["repair"] == {
        "symbols": ["BTCUSDT"],
        "since": "2023-01-01",
        "until": "2024-06-02",
    }
    assert changes() == []  # growth, not a change


def test_an_earlier_first_file_in_a_month_the_dataset_lacks_is_logged(workspace, bucket):
    bucket.add_days("NEWUSDT", "2024-05-01", "2024-05-31")
    assert run_all() == [0, 0, 0, 0]
    bucket.add_days("NEWUSDT", "2024-04-10", "2024-04-10")  # a month the dataset never had
    bucket.queries.clear()
    assert repair(symbols=["NEWUSDT"], since="2024-04-08", until="2024-04-12") == 0
    assert bucket.start_dates("NEWUSDT") == [D("2024-04-08"), D("2024-05-27")]
    rows = dataset().filter(pl.col("symbol") == "NEWUSDT").sort("date")
    assert rows["date"].to_list() == dates("2024-04-10", "2024-05-31")
    april = rows.filter(pl.col("date") < D("2024-05-01"))["available"].to_list()
    assert april == [True] + [False] * 20
    assert changes() == [(D("2024-04-10"), "NEWUSDT", "appeared")]


@pytest.mark.parametrize(
    ("symbols", "requests"), [(None, 0), (["BTCUSDT"], 2)], ids=["audit", "one-symbol"]
)
def test_a_repair_on_an_empty_dataset_is_a_first_run(workspace, bucket, symbols, requests):
    scope = {"symbols": symbols, "since": None, "until": None}
    with one_off_params(PARAMS, {"run.repair": scope}):
        assert run_all() == [0, 0, 0, 0]
    rows = dataset()
    btc = rows.filter(pl.col("symbol") == "BTCUSDT").sort("date")
    assert btc["date"].to_list() == dates("2023-01-01", "2024-05-31")
    assert btc.filter(~pl.col("available"))["date"].to_list() == [D("2023-03-03")]
    new = rows.filter(pl.col("symbol") == "币安人生USDT").sort("date")
    assert new["date"].to_list() == dates("2024-05-20", "2024-05-31") and new["available"].all()
    assert set(rows["symbol"]) == {"BTCUSDT", "币安人生USDT"}
    assert read_changes(CHANGES).is_empty()
    metrics = read_json("metrics/update.json")
    # Backfill listed both histories; the update lists only what the repair names again.
    assert metrics["requests"] == requests
    assert metrics["repair"]["symbols"] == ("all" if symbols is None else symbols)
