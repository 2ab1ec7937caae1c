"""The volume planner: which 1d folders a run lists, which files it fetches, which rows those
replace, as exact sets for each situation a daily run, a backfill and an audit meet."""

from __future__ import annotations

import datetime as dt

import polars as pl

from pipeline.config import Repair
from pipeline.volume.planner import (
    AVAILABLE_SCHEMA,
    DAILY,
    DIRECT_SCHEMA,
    MONTHLY,
    SymbolState,
    VolumeInputs,
    daily_windows,
    direct_days,
    is_listing_day,
    last_complete_month,
    listed,
    lists_daily_folder,
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


def test_a_quiet_day_lists_the_daily_folder_of_the_current_month_on_its_listing_day_only():
    rows = [
        *from_monthly("BTCUSDT", JAN, dates("2024-01-01", "2024-01-31")),
        *from_monthly("BTCUSDT", FEB, dates("2024-02-01", "2024-02-29")),
        *from_daily("BTCUSDT", dates("2024-03-01", "2024-03-07")),
    ]
    for last, lists in (("2024-03-08", True), ("2024-03-09", False), ("2024-03-10", False)):
        inputs = VolumeInputs(D("2024-01-01"), D(last), D(last) - dt.timedelta(days=4))
        state = symbol_states(
            stored(*rows), available("BTCUSDT", dates("2024-01-01", last)), [], inputs
        )["BTCUSDT"]
        assert state.uncovered_months == {MAR} and state.old_uncovered_months == set()
        assert not needs_monthly_listing(state, inputs)
        # BTCUSDT's listing day, of every 5 (INPUTS' window), is 2024-03-08.
        expected = [(MAR, D(last))] if lists else []
        assert daily_windows(state, state.monthly_months, inputs) == expected, last


def test_a_complete_month_of_daily_rows_makes_its_monthly_file_due():
    rows = [
        *from_monthly("BTCUSDT", JAN, dates("2024-01-01", "2024-01-31")),
        *from_daily("BTCUSDT", dates("2024-02-01", "2024-02-29")),
    ]
    inputs = VolumeInputs(D("2024-01-01"), D("2024-03-03"), D("2024-02-28"))
    state = symbol_states(stored(*rows), available("BTCUSDT", []), [], inputs)["BTCUSDT"]
    assert state.daily_months == {FEB}
    assert needs_monthly_listing(state, inputs)


def test_a_due_month_is_asked_about_daily_while_newest_then_on_the_listing_day_only():
    # OLDUSDT stopped trading on 2024-02-29 and February's file never came: asked every day
    # while February is the newest complete month, then on its listing day only (every 5 days).
    rows = [
        *from_monthly("OLDUSDT", JAN, dates("2024-01-01", "2024-01-31")),
        *from_daily("OLDUSDT", dates("2024-02-01", "2024-02-29")),
    ]
    asked = []
    for last in dates("2024-03-25", "2024-04-20"):
        inputs = VolumeInputs(D("2024-01-01"), last, last - dt.timedelta(days=4))
        state = symbol_states(stored(*rows), available("OLDUSDT", []), [], inputs)["OLDUSDT"]
        if needs_monthly_listing(state, inputs):
            asked.append(last)
    daily = dates("2024-03-25", "2024-03-30")  # March is complete on 03-31
    later = [day for day in dates("2024-03-31", "2024-04-20") if is_listing_day("OLDUSDT", day, 5)]
    assert asked == daily + later and len(later) == 4


def test_an_older_due_month_with_days_missing_a_row_is_asked_about_at_once():
    # RELISTUSDT came back for March 2024 only; its days reached the availability dataset
    # late (an audit), and on 2024-05-10 (not its listing day) March's file is still wanted.
    inputs = VolumeInputs(D("2024-01-01"), D("2024-05-10"), D("2024-05-06"))
    rows = from_monthly("RELISTUSDT", JAN, dates("2024-01-01", "2024-01-31"))
    state = symbol_states(
        stored(*rows), available("RELISTUSDT", dates("2024-03-01", "2024-03-31")), [], inputs
    )["RELISTUSDT"]
    assert state.old_uncovered_months == {MAR}
    assert not inputs.is_listing_day("RELISTUSDT")
    assert needs_monthly_listing(state, inputs)


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
    gap = frozenset({D("2023-11-01"), D("2023-12-01"), FEB})
    state = SymbolState(
        "BTCUSDT",
        monthly_months=frozenset({JAN}),
        uncovered_months=gap,
        recent_months=frozenset({MAR}),
        old_uncovered_months=gap,  # older than the window: listed whatever the day
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


# --- staggered listing days and direct GETs ---------------------------------------------------

SYMBOLS = ["BTCUSDT", "ETHUSDT", "NEWUSDT", "SOLUSDT", "XRPUSDT"]


def test_each_symbol_has_one_listing_day_in_every_lookback_days_days():
    for every in (1, 5, 20):
        for offset in range(3 * every):
            first = D("2024-02-20") + dt.timedelta(days=offset)
            window = [first + dt.timedelta(days=n) for n in range(every)]
            for symbol in [*SYMBOLS, "1000PEPEUSDT", "币安人生USDT"]:
                assert sum(is_listing_day(symbol, day, every) for day in window) == 1


def test_the_listing_days_of_symbols_are_a_stable_hash_of_their_names():
    # zlib.crc32 of the UTF-8 name plus the day's ordinal, modulo 5: the same in every process.
    listing = {
        day: {s for s in SYMBOLS if is_listing_day(s, D(day), 5)}
        for day in ("2024-03-06", "2024-03-07", "2024-03-08", "2024-03-09", "2024-03-10")
    }
    assert listing == {
        "2024-03-06": {"NEWUSDT"},
        "2024-03-07": {"ETHUSDT"},
        "2024-03-08": {"BTCUSDT", "XRPUSDT"},
        "2024-03-09": set(),
        "2024-03-10": {"SOLUSDT"},
    }
    assert INPUTS.lookback_days == 5
    assert {s for s in SYMBOLS if INPUTS.is_listing_day(s)} == {"SOLUSDT"}


def test_which_daily_folders_a_day_lists_new_old_uncovered_audited_or_listing_day():
    inputs = VolumeInputs(**{**INPUTS.__dict__, "repair": Repair(("ETHUSDT",), None, None)})
    mar = frozenset({MAR})
    states = [
        SymbolState("BTCUSDT", daily_months=mar, recent_months=mar),  # quiet: not its day
        SymbolState("ETHUSDT", daily_months=mar, recent_months=mar),  # audited
        SymbolState("NEWUSDT", uncovered_months=mar, recent_months=mar),  # no volume yet
        SymbolState("SOLUSDT", daily_months=mar, recent_months=mar),  # its listing day
        SymbolState(  # an uncovered day older than the window
            "XRPUSDT",
            daily_months=mar,
            uncovered_months=frozenset({FEB, MAR}),
            old_uncovered_months=frozenset({FEB}),
        ),
        SymbolState(  # ... in a month with a monthly file: no daily file can be fetched
            "ADAUSDT",
            monthly_months=frozenset({FEB}),
            daily_months=mar,
            uncovered_months=frozenset({FEB}),
            old_uncovered_months=frozenset({FEB}),
        ),
    ]
    lists = {s.symbol for s in states if lists_daily_folder(s, s.monthly_months, inputs)}
    assert lists == {"ETHUSDT", "NEWUSDT", "SOLUSDT", "XRPUSDT"}
    windows = {s.symbol: daily_windows(s, s.monthly_months, inputs) for s in states}
    assert windows == {
        "BTCUSDT": [],
        "ETHUSDT": [(JAN, D("2024-03-10"))],  # the audit's dates: the whole history
        "NEWUSDT": [(MAR, D("2024-03-10"))],
        "SOLUSDT": [(MAR, D("2024-03-10"))],
        "XRPUSDT": [(FEB, D("2024-03-10"))],
        "ADAUSDT": [],
    }


def test_a_listing_day_relists_the_window_and_as_many_days_before_it():
    # Window 2024-03-04..2024-03-08 (5 days), all in March; a day re-uploaded while in it, up
    # to 4 days before this listing day, is still listed: the relisting window starts on
    # 2024-02-28, so February is listed too, though no day of it is in the window.
    inputs = VolumeInputs(D("2024-01-01"), D("2024-03-08"), D("2024-03-04"))
    assert inputs.relist_start == D("2024-02-28")
    rows = [*from_monthly("BTCUSDT", JAN, dates("2024-01-01", "2024-01-31"))]
    rows += from_daily("BTCUSDT", dates("2024-02-01", "2024-03-08"))
    state = symbol_states(
        stored(*rows), available("BTCUSDT", dates("2024-01-01", "2024-03-08")), [], inputs
    )["BTCUSDT"]
    assert state.recent_months == {FEB, MAR}
    assert is_listing_day("BTCUSDT", D("2024-03-08"), 5)
    assert daily_windows(state, state.monthly_months, inputs) == [(FEB, D("2024-03-08"))]
    # A relisting window all in March lists March only.
    later = VolumeInputs(D("2024-01-01"), D("2024-03-13"), D("2024-03-09"))
    state = symbol_states(
        stored(*rows), available("BTCUSDT", dates("2024-03-01", "2024-03-13")), [], later
    )["BTCUSDT"]
    assert state.recent_months == {MAR}
    assert is_listing_day("BTCUSDT", D("2024-03-13"), 5)
    assert daily_windows(state, state.monthly_months, later) == [(MAR, D("2024-03-13"))]


def test_direct_days_are_the_window_days_available_without_a_row_of_unlisted_symbols():
    rows = [
        *from_daily("BTCUSDT", dates("2024-03-01", "2024-03-07")),
        *from_daily("ETHUSDT", dates("2024-03-01", "2024-03-10")),
    ]
    availability = pl.concat(
        [
            available("BTCUSDT", [*dates("2024-03-01", "2024-03-09"), D("2024-03-11")]),
            available("ETHUSDT", dates("2024-03-01", "2024-03-10")),
            available("SOLUSDT", dates("2024-03-01", "2024-03-10")),  # its folder is listed
            available("OLDUSDT", [D("2024-03-02")]),  # older than the window
        ]
    )
    unlisted = ["BTCUSDT", "ETHUSDT", "OLDUSDT"]
    days = direct_days(stored(*rows), availability, unlisted, INPUTS)
    # 2024-03-11 is after the last date (its file cannot be out); ETHUSDT is covered.
    assert days.rows() == [("BTCUSDT", D("2024-03-08")), ("BTCUSDT", D("2024-03-09"))]


def direct(*days: tuple[str, dt.date]) -> pl.DataFrame:
    rows = [(symbol, day, daily_key(symbol, day)) for symbol, day in days]
    return pl.DataFrame(rows, schema=DIRECT_SCHEMA, orient="row")


def test_direct_files_are_planned_unless_a_monthly_file_or_the_listing_covers_their_day():
    rows = from_monthly("BTCUSDT", JAN, dates("2024-01-01", "2024-01-31"))
    monthly = listed([("ETHUSDT", FEB, monthly_key("ETHUSDT", FEB), "m", 100)])
    daily = listed([("SOLUSDT", MAR, daily_key("SOLUSDT", MAR), "d", 10)])
    plan = plan_fetches(
        stored(*rows),
        monthly,
        daily,
        INPUTS,
        direct(
            ("BTCUSDT", D("2024-01-31")),  # January is stored from its monthly file
            ("ETHUSDT", D("2024-02-29")),  # February's monthly file is listed this run
            ("SOLUSDT", MAR),  # listed
            ("XRPUSDT", D("2024-03-09")),
            ("XRPUSDT", D("2024-03-10")),
            ("XRPUSDT", D("2024-03-11")),  # after the last date
        ),
    )
    assert files(plan) == {
        (MONTHLY, "ETHUSDT", FEB),
        (DAILY, "SOLUSDT", MAR),
        (DAILY, "XRPUSDT", D("2024-03-09")),
        (DAILY, "XRPUSDT", D("2024-03-10")),
    }
    unlisted = plan.files.filter(pl.col("etag").is_null())
    assert unlisted.select("key", "size").rows() == [
        (daily_key("XRPUSDT", D("2024-03-09")), None),
        (daily_key("XRPUSDT", D("2024-03-10")), None),
    ]
    assert plan.months() == [FEB, MAR]


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


def test_a_reuploaded_file_is_fetched_again_whichever_listing_shows_it():
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
    reuploaded = {(MONTHLY, "BTCUSDT", JAN), (DAILY, "BTCUSDT", D("2024-03-02"))}
    plan = plan_fetches(stored(*rows), monthly, daily, INPUTS)
    # The fetched rows replace the days they give (the stage's merge); nothing more is dropped:
    # a day the re-upload lost keeps its row until an audit, as in the availability dataset.
    assert files(plan) == reuploaded
    assert drops(plan) == set()
    other = VolumeInputs(**{**INPUTS.__dict__, "repair": Repair(("ETHUSDT",), None, None)})
    assert plan_fetches(stored(*rows), monthly, daily, other).files.equals(plan.files)

    # An audit of the symbol rebuilds the month from its file.
    for audit in (Repair(symbols=None, since=None, until=None), Repair(("BTCUSDT",), None, None)):
        audited = VolumeInputs(**{**INPUTS.__dict__, "repair": audit})
        plan = plan_fetches(stored(*rows), monthly, daily, audited)
        assert files(plan) == reuploaded
        assert drops(plan) == {("BTCUSDT", d) for d in dates("2024-01-01", "2024-01-31")}

    unchanged = listed([("BTCUSDT", JAN, monthly_key("BTCUSDT", JAN), "m0", 100)])
    assert files(plan_fetches(stored(*rows), unchanged, daily, INPUTS)) == {
        (DAILY, "BTCUSDT", D("2024-03-02"))
    }


def test_an_audit_rebuilds_a_month_a_reupload_left_rows_of_an_older_version_in():
    # January was re-uploaded without the 31st and fetched again outside an audit: the 31st
    # kept its row of the old version. Only an audit of the symbol rebuilds the month.
    rows = [
        *from_monthly("BTCUSDT", JAN, dates("2024-01-01", "2024-01-30"), etag="m1"),
        *from_monthly("BTCUSDT", JAN, [D("2024-01-31")], etag="m0"),
    ]
    monthly = listed([("BTCUSDT", JAN, monthly_key("BTCUSDT", JAN), "m1", 100)])
    assert files(plan_fetches(stored(*rows), monthly, listed([]), INPUTS)) == set()
    audited = VolumeInputs(**{**INPUTS.__dict__, "repair": Repair(("BTCUSDT",), None, None)})
    plan = plan_fetches(stored(*rows), monthly, listed([]), audited)
    assert files(plan) == {(MONTHLY, "BTCUSDT", JAN)}
    assert drops(plan) == {("BTCUSDT", d) for d in dates("2024-01-01", "2024-01-31")}

    # An audit of other dates rebuilds no January: its availability is not re-derived either.
    february = Repair(("BTCUSDT",), since=FEB, until=D("2024-02-29"))
    ranged = VolumeInputs(**{**INPUTS.__dict__, "repair": february})
    assert files(plan_fetches(stored(*rows), monthly, listed([]), ranged)) == set()


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
