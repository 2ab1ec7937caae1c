"""The volume planner: which 1d folders a run lists, which files it fetches, which rows those
replace, as exact sets for each situation a daily run, a backfill and an audit meet."""

from __future__ import annotations

import datetime as dt

import polars as pl

from pipeline.config import Repair
from pipeline.volume.planner import (
    AVAILABLE_SCHEMA,
    DAILY,
    MONTHLY,
    SymbolState,
    VolumeInputs,
    daily_windows,
    last_complete_month,
    listed,
    needs_monthly_listing,
    plan_fetches,
    symbol_states,
)
from pipeline.volume.schema import STORED_SCHEMA
from tests.support import D, dates

INPUTS = VolumeInputs(
    start_date=D("2024-01-01"), last_date=D("2024-03-10"), lookback_start=D("2024-03-06")
)
JAN, FEB, MAR = D("2024-01-01"), D("2024-02-01"), D("2024-03-01")


def monthly_key(symbol: str, month: dt.date) -> str:
    return f"m/{symbol}/1d/{symbol}-1d-{month:%Y-%m}.zip"


def daily_key(symbol: str, day: dt.date) -> str:
    return f"d/{symbol}/1d/{symbol}-1d-{day.isoformat()}.zip"


def stored(*rows: tuple[str, dt.date, str, str, int]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=STORED_SCHEMA, orient="row")


def from_monthly(symbol: str, month: dt.date, days: list[dt.date], etag: str = "m0") -> list:
    return [(symbol, day, monthly_key(symbol, month), etag, 100) for day in days]


def from_daily(symbol: str, days: list[dt.date], etag: str = "d0") -> list:
    return [(symbol, day, daily_key(symbol, day), etag, 10) for day in days]


def available(symbol: str, days: list[dt.date]) -> pl.DataFrame:
    return pl.DataFrame({"symbol": [symbol] * len(days), "date": days}, schema=AVAILABLE_SCHEMA)


def files(plan) -> set[tuple[str, str, dt.date]]:
    return {(kind, symbol, period) for kind, symbol, period, *_ in plan.files.iter_rows()}


def drops(plan) -> set[tuple[str, dt.date]]:
    return set(plan.drops.iter_rows())


# --- which folders are listed ---------------------------------------------------------------


def test_last_complete_month_is_the_month_of_a_month_end_else_the_one_before():
    assert last_complete_month(D("2024-03-10")) == FEB
    assert last_complete_month(D("2024-02-29")) == FEB
    assert last_complete_month(D("2024-01-01")) == D("2023-12-01")


def test_a_new_symbol_lists_its_monthly_folder_then_only_the_months_without_a_monthly_file():
    states = symbol_states(
        stored(), available("NEWUSDT", dates("2024-01-15", "2024-03-10")), ["NEWUSDT"], INPUTS
    )
    state = states["NEWUSDT"]
    assert state.uncovered_months == {JAN, FEB, MAR}
    assert needs_monthly_listing(state, INPUTS)
    # January's monthly file was listed, February's is not out: February and March daily.
    assert daily_windows(state, {JAN}, INPUTS) == [(FEB, D("2024-03-10"))]
    assert daily_windows(state, {JAN, FEB}, INPUTS) == [(MAR, D("2024-03-10"))]


def test_a_new_symbol_listed_this_month_lists_only_its_daily_folder():
    states = symbol_states(
        stored(), available("NEWUSDT", dates("2024-03-08", "2024-03-10")), ["NEWUSDT"], INPUTS
    )
    assert not needs_monthly_listing(states["NEWUSDT"], INPUTS)
    assert daily_windows(states["NEWUSDT"], set(), INPUTS) == [(MAR, D("2024-03-10"))]


def test_a_quiet_day_lists_the_daily_folder_of_the_current_month_only():
    rows = [
        *from_monthly("BTCUSDT", JAN, dates("2024-01-01", "2024-01-31")),
        *from_monthly("BTCUSDT", FEB, dates("2024-02-01", "2024-02-29")),
        *from_daily("BTCUSDT", dates("2024-03-01", "2024-03-09")),
    ]
    state = symbol_states(
        stored(*rows), available("BTCUSDT", dates("2024-01-01", "2024-03-10")), [], INPUTS
    )["BTCUSDT"]
    assert state.uncovered_months == {MAR}
    assert not needs_monthly_listing(state, INPUTS)
    assert daily_windows(state, state.monthly_months, INPUTS) == [(MAR, D("2024-03-10"))]


def test_a_complete_month_of_daily_rows_makes_its_monthly_file_due():
    rows = [
        *from_monthly("BTCUSDT", JAN, dates("2024-01-01", "2024-01-31")),
        *from_daily("BTCUSDT", dates("2024-02-01", "2024-02-29")),
    ]
    state = symbol_states(stored(*rows), available("BTCUSDT", []), [], INPUTS)["BTCUSDT"]
    assert state.daily_months == {FEB}
    assert needs_monthly_listing(state, INPUTS)


def test_a_month_before_the_newest_monthly_file_is_not_asked_about_again():
    # December had no monthly file: its days came from daily files, for good.
    inputs = VolumeInputs(D("2023-12-01"), D("2024-03-10"), D("2024-03-06"))
    rows = [
        *from_daily("BTCUSDT", dates("2023-12-01", "2023-12-31")),
        *from_monthly("BTCUSDT", JAN, dates("2024-01-01", "2024-01-31")),
        *from_monthly("BTCUSDT", FEB, dates("2024-02-01", "2024-02-29")),
    ]
    state = symbol_states(stored(*rows), available("BTCUSDT", []), [], inputs)["BTCUSDT"]
    assert not needs_monthly_listing(state, inputs)
    assert daily_windows(state, state.monthly_months, inputs) == []


def test_a_delisted_symbol_whose_history_is_covered_lists_nothing():
    rows = from_monthly("OLDUSDT", JAN, dates("2024-01-01", "2024-01-20"))
    state = symbol_states(
        stored(*rows), available("OLDUSDT", dates("2024-01-01", "2024-01-20")), [], INPUTS
    )["OLDUSDT"]
    assert not needs_monthly_listing(state, INPUTS)
    assert daily_windows(state, state.monthly_months, INPUTS) == []


def test_a_symbol_without_any_available_day_lists_nothing():
    state = symbol_states(stored(), available("X", []), ["EMPTYUSDT"], INPUTS)["EMPTYUSDT"]
    assert state == SymbolState("EMPTYUSDT")
    assert not needs_monthly_listing(state, INPUTS)
    assert daily_windows(state, set(), INPUTS) == []


def test_an_uncovered_day_in_a_gap_month_lists_that_month_and_consecutive_months_merge():
    inputs = VolumeInputs(D("2023-11-15"), D("2024-03-10"), D("2024-03-06"))
    state = SymbolState(
        "BTCUSDT",
        monthly_months=frozenset({JAN}),
        uncovered_months=frozenset({D("2023-11-01"), D("2023-12-01"), FEB}),
        recent_months=frozenset({MAR}),
    )
    assert daily_windows(state, {JAN}, inputs) == [
        (D("2023-11-15"), D("2023-12-31")),  # clipped to the dataset's start
        (FEB, D("2024-03-10")),  # and to its last date
    ]


def test_an_audit_relists_both_folders_of_its_symbols_over_its_dates():
    inputs = VolumeInputs(
        D("2024-01-01"),
        D("2024-03-10"),
        D("2024-03-06"),
        repair=Repair(symbols=("BTCUSDT",), since=D("2024-02-10"), until=None),
    )
    rows = from_monthly("BTCUSDT", JAN, dates("2024-01-01", "2024-01-31"))
    state = symbol_states(stored(*rows), available("BTCUSDT", []), ["ETHUSDT"], inputs)
    assert needs_monthly_listing(state["BTCUSDT"], inputs)
    assert daily_windows(state["BTCUSDT"], {JAN}, inputs) == [(FEB, D("2024-03-10"))]
    assert not needs_monthly_listing(state["ETHUSDT"], inputs)  # not audited


# --- which files are fetched and which rows they replace ------------------------------------


def test_a_backfill_fetches_every_monthly_file_and_the_daily_files_after_them():
    monthly = listed(
        [
            ("NEWUSDT", JAN, monthly_key("NEWUSDT", JAN), "a", 100),
            ("NEWUSDT", FEB, monthly_key("NEWUSDT", FEB), "b", 100),
        ]
    )
    daily = listed(
        [("NEWUSDT", day, daily_key("NEWUSDT", day), "c", 10) for day in dates(MAR, "2024-03-10")]
    )
    plan = plan_fetches(stored(), monthly, daily, INPUTS)
    assert files(plan) == {(MONTHLY, "NEWUSDT", JAN), (MONTHLY, "NEWUSDT", FEB)} | {
        (DAILY, "NEWUSDT", day) for day in dates(MAR, "2024-03-10")
    }
    assert drops(plan) == set()
    assert plan.months() == [JAN, FEB, MAR]


def test_a_stored_file_with_the_same_etag_and_size_is_not_fetched_again():
    rows = from_daily("BTCUSDT", dates("2024-03-01", "2024-03-09"), etag="d0")
    daily = listed(
        [("BTCUSDT", d, daily_key("BTCUSDT", d), "d0", 10) for d in dates(MAR, "2024-03-10")]
    )
    plan = plan_fetches(stored(*rows), listed([]), daily, INPUTS)
    assert files(plan) == {(DAILY, "BTCUSDT", D("2024-03-10"))}
    assert drops(plan) == set()


def test_a_reuploaded_file_is_fetched_again_and_replaces_its_rows():
    rows = [
        *from_monthly("BTCUSDT", JAN, dates("2024-01-01", "2024-01-31"), etag="m0"),
        *from_daily("BTCUSDT", dates("2024-03-01", "2024-03-02"), etag="d0"),
    ]
    monthly = listed([("BTCUSDT", JAN, monthly_key("BTCUSDT", JAN), "m1", 100)])  # new ETag
    daily = listed(
        [
            ("BTCUSDT", MAR, daily_key("BTCUSDT", MAR), "d0", 10),
            ("BTCUSDT", D("2024-03-02"), daily_key("BTCUSDT", D("2024-03-02")), "d0", 11),  # size
        ]
    )
    plan = plan_fetches(stored(*rows), monthly, daily, INPUTS)
    # A stored month is fetched again by an audit only (as availability's history changes).
    assert files(plan) == {(DAILY, "BTCUSDT", D("2024-03-02"))}
    assert drops(plan) == {("BTCUSDT", D("2024-03-02"))}

    for audit in (Repair(symbols=None, since=None, until=None), Repair(("BTCUSDT",), None, None)):
        audited = VolumeInputs(**{**INPUTS.__dict__, "repair": audit})
        plan = plan_fetches(stored(*rows), monthly, daily, audited)
        assert files(plan) == {(MONTHLY, "BTCUSDT", JAN), (DAILY, "BTCUSDT", D("2024-03-02"))}
        assert drops(plan) == {("BTCUSDT", d) for d in dates("2024-01-01", "2024-01-31")} | {
            ("BTCUSDT", D("2024-03-02"))
        }
    other = VolumeInputs(**{**INPUTS.__dict__, "repair": Repair(("ETHUSDT",), None, None)})
    assert files(plan_fetches(stored(*rows), monthly, daily, other)) == {
        (DAILY, "BTCUSDT", D("2024-03-02"))
    }


def test_a_new_monthly_file_supersedes_its_months_daily_rows_and_files():
    rows = from_daily("BTCUSDT", dates("2024-02-01", "2024-02-29"))
    monthly = listed([("BTCUSDT", FEB, monthly_key("BTCUSDT", FEB), "m", 100)])
    # A daily file of February listed too (an audit): never fetched beside its month's file.
    daily = listed([("BTCUSDT", D("2024-02-05"), daily_key("BTCUSDT", D("2024-02-05")), "x", 9)])
    plan = plan_fetches(stored(*rows), monthly, daily, INPUTS)
    assert files(plan) == {(MONTHLY, "BTCUSDT", FEB)}
    assert drops(plan) == {("BTCUSDT", d) for d in dates("2024-02-01", "2024-02-29")}


def test_daily_files_of_a_month_with_a_stored_monthly_file_are_not_fetched():
    rows = from_monthly("BTCUSDT", FEB, dates("2024-02-01", "2024-02-29"))
    daily = listed([("BTCUSDT", D("2024-02-05"), daily_key("BTCUSDT", D("2024-02-05")), "x", 9)])
    plan = plan_fetches(stored(*rows), listed([]), daily, INPUTS)
    assert files(plan) == set() and drops(plan) == set()


def test_files_outside_the_dataset_dates_and_incomplete_months_are_ignored():
    monthly = listed(
        [
            ("BTCUSDT", D("2023-12-01"), monthly_key("BTCUSDT", D("2023-12-01")), "a", 1),
            ("BTCUSDT", MAR, monthly_key("BTCUSDT", MAR), "b", 1),  # March is not over
        ]
    )
    daily = listed(
        [
            ("BTCUSDT", D("2023-12-31"), daily_key("BTCUSDT", D("2023-12-31")), "c", 1),
            ("BTCUSDT", D("2024-03-11"), daily_key("BTCUSDT", D("2024-03-11")), "d", 1),
        ]
    )
    plan = plan_fetches(stored(), monthly, daily, INPUTS)
    assert files(plan) == set()
    assert plan.months() == []
