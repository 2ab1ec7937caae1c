"""The planner: exact ranges for each kind of run, from a hand-made summary of the dataset."""

import polars as pl
import pytest

from pipeline.config import Repair, parse_config
from pipeline.dataset.store import Summary
from pipeline.planner import PlanError, RunInputs, check_repair, plan
from pipeline.prober import ProbeRange
from tests.support import STAGE_PARAMS, D, build_params, frame, row

START, LAST = D("2023-01-01"), D("2024-05-31")
# as_of 2024-06-01, lookback 5 days: the window is 2024-05-27 .. 2024-05-31.
WINDOW = D("2024-05-27")


def inputs(repair: Repair | None = None, *, lookback: bool = True) -> RunInputs:
    return RunInputs(START, LAST, WINDOW, lookback=lookback, repair=repair)


def summary(first_files: dict[str, str], last_date: str | None = "2024-05-31") -> Summary:
    """A dataset holding `first_files`' symbols, each from its first file through `last_date`."""
    return Summary(
        symbols=set(first_files),
        last_date=None if last_date is None else D(last_date),
        first_files=pl.DataFrame(
            {"symbol": list(first_files), "first_file": [D(d) for d in first_files.values()]},
            schema={"symbol": pl.String, "first_file": pl.Date},
        ),
    )


def repair(*symbols: str, since: str | None = None, until: str | None = None) -> Repair:
    return Repair(
        symbols=tuple(symbols) or None,
        since=None if since is None else D(since),
        until=None if until is None else D(until),
    )


def ranges(summary: Summary, symbols: list[str], run: RunInputs) -> list[tuple]:
    found = plan(summary, symbols, run)
    return [(r.symbol, str(r.first), str(r.last), r.from_first_file) for r in found.ranges]


TRACKED = summary({"BTCUSDT": "2023-01-01"})


def test_a_new_symbol_gets_its_whole_history_from_its_first_file():
    assert ranges(Summary.nothing(), ["NEWUSDT"], inputs()) == [
        ("NEWUSDT", "2023-01-01", "2024-05-31", True)
    ]
    assert ranges(TRACKED, ["BTCUSDT", "NEWUSDT"], inputs()) == [
        ("BTCUSDT", "2024-05-27", "2024-05-31", False),
        ("NEWUSDT", "2023-01-01", "2024-05-31", True),
    ]


def test_a_tracked_symbol_gets_the_window():
    the_plan = plan(TRACKED, ["BTCUSDT"], inputs())
    assert the_plan.ranges == [ProbeRange("BTCUSDT", WINDOW, LAST)]
    assert the_plan.window_first == WINDOW


def test_the_window_of_a_dataset_a_day_behind_is_the_lookback():
    behind = summary({"BTCUSDT": "2023-01-01"}, last_date="2024-05-30")
    assert ranges(behind, ["BTCUSDT"], inputs()) == [("BTCUSDT", "2024-05-27", "2024-05-31", False)]


def test_missed_runs_reach_the_window_back_to_the_day_after_the_newest_date():
    stale = summary({"BTCUSDT": "2023-01-01", "ETHUSDT": "2023-02-01"}, last_date="2024-05-10")
    the_plan = plan(stale, ["BTCUSDT", "ETHUSDT"], inputs())
    assert the_plan.window_first == D("2024-05-11")
    assert ranges(stale, ["BTCUSDT", "ETHUSDT"], inputs()) == [
        ("BTCUSDT", "2024-05-11", "2024-05-31", False),
        ("ETHUSDT", "2024-05-11", "2024-05-31", False),
    ]


@pytest.mark.parametrize(
    ("since", "until", "first"),
    [("2024-05-20", "2024-05-28", "2024-05-20"), ("2024-05-20", "2024-05-26", "2024-05-20")],
    ids=["overlapping", "touching"],
)
def test_a_repair_overlapping_or_touching_the_window_is_listed_with_it_as_one_range(
    since, until, first
):
    run = inputs(repair("BTCUSDT", since=since, until=until))
    assert ranges(TRACKED, ["BTCUSDT"], run) == [("BTCUSDT", first, "2024-05-31", False)]


def test_a_repair_far_from_the_window_is_a_second_range():
    run = inputs(repair("BTCUSDT", since="2024-01-01", until="2024-01-05"))
    assert ranges(TRACKED, ["BTCUSDT"], run) == [
        ("BTCUSDT", "2024-01-01", "2024-01-05", False),
        ("BTCUSDT", "2024-05-27", "2024-05-31", False),
    ]


def test_a_repair_before_the_known_first_file_reaches_the_day_before_it():
    late = summary({"LATEUSDT": "2024-03-10"})
    run = inputs(repair("LATEUSDT", since="2024-03-01", until="2024-03-03"))
    assert ranges(late, ["LATEUSDT"], run) == [
        ("LATEUSDT", "2024-03-01", "2024-03-09", False),
        ("LATEUSDT", "2024-05-27", "2024-05-31", False),
    ]


def test_a_repair_of_every_symbol_covers_the_dataset_and_defaults_to_the_whole_history():
    two = summary({"BTCUSDT": "2023-01-01", "币安人生USDT": "2024-05-20"})
    assert ranges(two, ["BTCUSDT", "币安人生USDT", "NEWUSDT"], inputs(repair())) == [
        ("BTCUSDT", "2023-01-01", "2024-05-31", False),
        ("NEWUSDT", "2023-01-01", "2024-05-31", True),
        ("币安人生USDT", "2023-01-01", "2024-05-31", False),
    ]


def test_a_repair_naming_a_new_symbol_lists_its_history_once():
    run = inputs(repair("NEWUSDT", since="2024-05-01"))
    assert ranges(TRACKED, ["BTCUSDT", "NEWUSDT"], run) == [
        ("BTCUSDT", "2024-05-27", "2024-05-31", False),
        ("NEWUSDT", "2023-01-01", "2024-05-31", True),
    ]


def test_backfill_plans_only_the_symbols_without_history():
    config = parse_config(
        build_params(STAGE_PARAMS, {"run": {"repair": {"symbols": ["BTCUSDT"]}}}),
        today=D("2024-06-01"),
    )
    backfill = RunInputs.for_backfill(config)
    assert backfill == RunInputs(START, LAST, WINDOW, lookback=False, repair=None)
    assert RunInputs.for_update(config) == RunInputs(
        START, LAST, WINDOW, repair=Repair(("BTCUSDT",), None, None)
    )
    assert ranges(TRACKED, ["BTCUSDT", "NEWUSDT"], backfill) == [
        ("NEWUSDT", "2023-01-01", "2024-05-31", True)
    ]
    assert ranges(TRACKED, ["BTCUSDT"], backfill) == []


def test_a_dataset_newer_than_the_run_is_refused():
    ahead = summary({"BTCUSDT": "2023-01-01"}, last_date="2024-06-01")
    with pytest.raises(PlanError) as refused:
        plan(ahead, ["BTCUSDT"], inputs())
    assert str(refused.value) == (
        "the dataset already has 2024-06-01, after run.as_of - 1 (2024-05-31): "
        "set run.as_of to null or a later date"
    )


def test_the_window_and_new_histories_are_merged_as_probed_and_the_rest_only_if_it_differs():
    run = inputs(repair("BTCUSDT", since="2024-01-01", until="2024-01-05"))
    the_plan = plan(TRACKED, ["BTCUSDT", "NEWUSDT"], run)
    rows = frame(
        row("2024-01-02", "BTCUSDT"), row("2024-05-27", "BTCUSDT"), row("2024-01-02", "NEWUSDT")
    )
    as_probed = rows.select(the_plan.as_probed(TRACKED.symbols)).to_series().to_list()
    assert as_probed == [False, True, True]


KNOWN = {"BTCUSDT", "BTCUSDC", "ETHUSDT", "币安人生USDT"}


@pytest.mark.parametrize(
    ("symbol", "contracts", "message"),
    [
        (
            "BTCUSTD",
            "perpetual",
            "unknown symbol BTCUSTD: not in symbols.json nor the dataset "
            "(run `make update` to discover new listings); did you mean BTCUSDT, BTCUSDC?",
        ),
        (
            "btcusdc",
            "perpetual",
            "unknown symbol btcusdc: not in symbols.json nor the dataset "
            "(run `make update` to discover new listings); did you mean BTCUSDC, BTCUSDT?",
        ),
        (
            "QQQ",
            "perpetual",
            "unknown symbol QQQ: not in symbols.json nor the dataset "
            "(run `make update` to discover new listings)",
        ),
        (
            "BTCUSDT_240628",
            "perpetual",
            "BTCUSDT_240628 is a delivery contract, outside dataset.contracts (perpetual)",
        ),
        (
            "BTCUSDT_240628",
            "all",
            "unknown symbol BTCUSDT_240628: not in symbols.json nor the dataset "
            "(run `make update` to discover new listings); did you mean BTCUSDT?",
        ),
    ],
)
def test_a_repair_naming_a_symbol_out_of_scope_is_refused_with_close_names(
    symbol, contracts, message
):
    with pytest.raises(PlanError) as refused:
        check_repair(repair("ETHUSDT", symbol), KNOWN, contracts, symbols_file="symbols.json")
    assert str(refused.value) == message


def test_a_repair_of_known_symbols_or_of_all_passes():
    for scope in (None, repair(), repair("ETHUSDT", "币安人生USDT")):
        check_repair(scope, KNOWN, "perpetual", symbols_file="symbols.json")
    check_repair(repair("BTCUSDT_240628"), {"BTCUSDT_240628"}, "all", symbols_file="s.json")
