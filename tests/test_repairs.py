"""Operator repairs in process against the fake bucket: targeted backfill, re-probes, audit."""

from pathlib import Path

import polars as pl
import pytest
from pipeline.repair import run_repair

from pipeline import audit
from pipeline.dataset.changes import read_changes
from pipeline.entry import run_stage
from pipeline.stages import backfill
from tests import test_stages as stages
from tests.test_stages import D, dataset, run_all

CHANGES = Path("data/changes.parquet")
# The in-process project and fake bucket of the stage tests.
project = stages.project
bucket = stages.bucket


def snapshot() -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(Path("data").rglob("*")) if p.is_file()}


def repair(**request):
    return run_stage("backfill", lambda config: run_repair(config, what="test", **request))


def test_targeted_backfill_lists_exactly_those_symbols_and_is_idempotent(project, bucket):
    assert run_all() == [0, 0, 0, 0]
    bucket.add_days("BTCUSDT", "2023-03-03", "2023-03-03")  # published a year late
    bucket.queries.clear()
    assert repair(symbols=["BTCUSDT"]) == 0
    # 2023-01-01 to 2024-05-31 is 517 days: two pages, for BTCUSDT only.
    assert bucket.listed_symbols() == {"BTCUSDT"} and len(bucket.queries) == 2
    row = dataset().filter(pl.col("symbol") == "BTCUSDT", pl.col("date") == D("2023-03-03"))
    assert row["available"].to_list() == [True]
    assert read_changes(CHANGES).select("date", "symbol", "kind").rows() == [
        (D("2023-03-03"), "BTCUSDT", "appeared")
    ]
    before = snapshot()
    assert repair(symbols=["BTCUSDT"]) == 0
    assert snapshot() == before


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"symbols": ["BTCUSTD"]}, "unknown symbol BTCUSTD: not in symbols.json nor the dataset"),
        ({"symbols": ["BTCUSDT_240628"]}, "BTCUSDT_240628 is a delivery contract, outside"),
        ({"since": D("2022-12-31")}, "--since 2022-12-31 is before dataset.start_date"),
        ({"since": D("2024-05-01"), "until": D("2024-06-01")}, "--until 2024-06-01 is after"),
        ({"since": D("2024-05-02"), "until": D("2024-05-01")}, "--since 2024-05-02 is after"),
    ],
)
def test_a_bad_request_is_refused_before_any_listing(project, bucket, caplog, request_, message):
    assert run_all() == [0, 0, 0, 0]
    before, requests = snapshot(), len(bucket.queries)
    caplog.clear()
    assert repair(**request_) == 1
    assert message in caplog.text and len(bucket.queries) == requests and snapshot() == before


def test_an_unknown_symbol_gets_close_names(project, bucket, caplog):
    assert run_all() == [0, 0, 0, 0]
    assert repair(symbols=["BTCUSTD"]) == 1
    assert "did you mean BTCUSDT?" in caplog.text


def test_a_range_reprobe_lists_only_that_window_for_every_symbol(project, bucket):
    assert run_all() == [0, 0, 0, 0]
    bucket.remove_day("币安人生USDT", "2024-05-21")
    bucket.remove_day("币安人生USDT", "2024-05-25")  # outside the window: left as recorded
    bucket.queries.clear()
    assert repair(since=D("2024-05-20"), until=D("2024-05-22")) == 0
    assert len(bucket.queries) == 2
    assert {q["start-after"][-10:] for q in bucket.queries} == {"2024-05-20"}
    assert read_changes(CHANGES).select("date", "symbol", "kind").rows() == [
        (D("2024-05-21"), "币安人生USDT", "removed")
    ]
    outside = dataset().filter(
        pl.col("symbol") == "币安人生USDT", pl.col("date") == D("2024-05-25")
    )
    assert outside["available"].to_list() == [True]


def test_the_audit_finds_each_change_once_and_a_quiet_audit_writes_nothing(project, bucket):
    assert run_all() == [0, 0, 0, 0]
    bucket.add_days("BTCUSDT", "2023-03-03", "2023-03-03")  # late, outside the window
    bucket.remove_day("BTCUSDT", "2023-06-01")
    bucket.sizes[bucket.key("BTCUSDT", "2024-01-15")] = 999  # re-uploaded
    bucket.remove_day("币安人生USDT", "2024-05-20")  # its first file
    bucket.queries.clear()
    assert run_stage("audit", lambda config: run_repair(config, what="audit")) == 0
    assert len(bucket.queries) == 3  # the minimum: two pages of BTCUSDT, one of 币安人生USDT
    assert read_changes(CHANGES).select("date", "symbol", "kind", "new_size").rows() == [
        (D("2023-03-03"), "BTCUSDT", "appeared", 1234),
        (D("2023-06-01"), "BTCUSDT", "removed", None),
        (D("2024-01-15"), "BTCUSDT", "replaced", 999),
        (D("2024-05-20"), "币安人生USDT", "removed", None),
    ]
    rows = dataset()
    assert rows.filter(pl.col("symbol") == "币安人生USDT")["date"].min() == D("2024-05-21")
    assert rows.select("date", "symbol").is_unique().all()
    before = snapshot()
    assert run_stage("audit", lambda config: run_repair(config, what="audit")) == 0
    assert snapshot() == before


@pytest.mark.parametrize(
    ("cli", "says"),
    [(backfill.cli, "--symbols A,B"), (audit.cli, "List every symbol's whole history")],
)
def test_the_commands_have_help(capsys, cli, says):
    with pytest.raises(SystemExit) as done:
        cli(["--help"])
    assert done.value.code == 0
    assert says in capsys.readouterr().out


def test_an_earlier_first_file_found_by_a_reprobe_extends_the_history_without_holes(
    project, bucket
):
    assert run_all() == [0, 0, 0, 0]
    bucket.add_days("币安人生USDT", "2024-05-10", "2024-05-10")  # uploaded long after
    # The window ends before the recorded first file (2024-05-20): the days up to it are
    # listed too, since the symbol's history now starts earlier.
    assert repair(symbols=["币安人生USDT"], since=D("2024-05-08"), until=D("2024-05-12")) == 0
    assert bucket.queries[-1]["start-after"].endswith("2024-05-08")
    rows = dataset().filter(pl.col("symbol") == "币安人生USDT").sort("date")
    assert (
        rows["date"].to_list()
        == pl.date_range(D("2024-05-10"), D("2024-05-31"), eager=True).to_list()
    )
    assert rows.filter(pl.col("available"))["date"].to_list()[:2] == [
        D("2024-05-10"),
        D("2024-05-20"),
    ]
    assert read_changes(CHANGES).select("date", "symbol", "kind").rows() == [
        (D("2024-05-10"), "币安人生USDT", "appeared")
    ]


def test_a_repair_re_lists_the_dates_the_dataset_holds_and_leaves_growth_to_update(project, bucket):
    assert run_all() == [0, 0, 0, 0]
    bucket.add_days("BTCUSDT", "2024-06-01", "2024-06-02")
    stages.set_as_of(project, "2024-06-03")  # today's update has not run yet
    bucket.queries.clear()
    assert repair(symbols=["BTCUSDT"]) == 0
    assert bucket.listed_symbols() == {"BTCUSDT"}
    assert dataset()["date"].max() == D("2024-05-31")


def test_an_earlier_first_file_in_a_month_the_dataset_lacks_is_logged(project, bucket):
    bucket.add_days("NEWUSDT", "2024-05-01", "2024-05-31")
    assert run_all() == [0, 0, 0, 0]
    bucket.add_days("NEWUSDT", "2024-04-10", "2024-04-10")  # a month the dataset never had
    assert repair(symbols=["NEWUSDT"], since=D("2024-04-08"), until=D("2024-04-12")) == 0
    assert dataset().filter(pl.col("symbol") == "NEWUSDT")["date"].min() == D("2024-04-10")
    assert read_changes(CHANGES).select("date", "symbol", "kind").rows() == [
        (D("2024-04-10"), "NEWUSDT", "appeared")
    ]
