import datetime as dt

import polars as pl
import pytest
import responses

from pipeline.dataset.schema import SCHEMA
from pipeline.prober import ProbeRange, probe
from pipeline.vision.client import VisionClient, VisionError
from tests.fake_bucket import LAYOUT, FakeBucket

URL = "https://s3.example.test/data.binance.vision"
NOW = dt.datetime(2026, 11, 29, 1, 2, 3, tzinfo=dt.UTC)
D = dt.date.fromisoformat


@pytest.fixture
def bucket():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakeBucket(URL)
        fake.register(mock)
        yield fake


def run(ranges: list[ProbeRange], workers: int = 4):
    with VisionClient(URL, timeout_s=5, retries=0, backoff_s=0, pool_size=workers) as client:
        return probe(client, LAYOUT, ranges, workers=workers, probed_at=NOW)


def test_lookback_window_costs_one_request_per_symbol(bucket):
    bucket.add_days("BTCUSDT", "2019-09-25", "2024-03-10", skip=("2024-03-05",))
    bucket.add_days("币安人生USDT", "2024-03-03", "2024-03-10")
    rows, stats = run(
        [ProbeRange(s, D("2024-02-20"), D("2024-03-10")) for s in ("BTCUSDT", "币安人生USDT")]
    )
    assert stats.requests == 2 and stats.symbols == 2
    assert rows.height == 2 * 20
    assert dict(rows.schema) == SCHEMA
    btc = rows.filter(pl.col("symbol") == "BTCUSDT")
    assert btc.filter(~pl.col("available"))["date"].to_list() == [D("2024-03-05")]
    new = rows.filter(pl.col("symbol") == "币安人生USDT", pl.col("available"))
    assert new["date"].to_list() == [D("2024-03-03") + dt.timedelta(days=i) for i in range(8)]
    assert rows["probe_timestamp"].unique().to_list() == [NOW]


def test_available_rows_carry_size_etag_and_last_modified_and_missing_rows_nulls(bucket):
    bucket.add_days("ETHUSDT", "2024-01-01", "2024-01-01")
    rows, _ = run([ProbeRange("ETHUSDT", D("2024-01-01"), D("2024-01-02"))])
    assert rows.select("date", "available", "file_size_bytes", "etag").rows() == [
        (D("2024-01-01"), True, 1234, "abc123"),
        (D("2024-01-02"), False, None, None),
    ]
    assert rows["last_modified"].to_list() == [
        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        None,
    ]


def test_full_history_costs_the_minimal_number_of_pages(bucket):
    # 1200 days = 2400 keys = 3 pages at best: head, tail, and one middle chunk in parallel.
    bucket.add_days("BTCUSDT", "2019-09-25", "2023-01-06")
    rows, stats = run([ProbeRange("BTCUSDT", D("2019-09-25"), D("2023-01-06"))])
    assert stats.requests == 3
    assert rows.height == 1200 and rows["available"].all()


def test_a_delisted_symbol_does_not_pay_for_empty_chunks(bucket):
    # Files for 700 days, then nothing for 1500: head, empty tail, then one serial page.
    bucket.add_days("OLDUSDT", "2019-09-25", "2021-08-24")
    rows, stats = run([ProbeRange("OLDUSDT", D("2019-09-25"), D("2025-10-01"))])
    assert stats.requests == 3
    assert rows.filter(pl.col("available")).height == 700
    assert rows.filter(pl.col("available"))["date"].max() == D("2021-08-24")


def test_relisting_after_a_gap_is_found(bucket):
    bucket.add_days("AGAINUSDT", "2020-01-01", "2020-12-31")
    bucket.add_days("AGAINUSDT", "2023-06-01", "2024-12-31")
    rows, stats = run([ProbeRange("AGAINUSDT", D("2019-09-25"), D("2024-12-31"))])
    available = rows.filter(pl.col("available"))
    assert available.height == 366 + 580
    assert stats.requests <= 6


def test_missing_days_inside_a_page_boundary_are_exact(bucket):
    skips = ("2021-02-06", "2021-02-07", "2022-05-01")
    bucket.add_days("XUSDT", "2019-09-25", "2022-12-31", skip=skips)
    rows, _ = run([ProbeRange("XUSDT", D("2019-09-25"), D("2022-12-31"))], workers=8)
    assert sorted(d.isoformat() for d in rows.filter(~pl.col("available"))["date"]) == list(skips)
    assert rows.height == (D("2022-12-31") - D("2019-09-25")).days + 1


def test_a_symbol_with_no_files_gets_only_unavailable_rows(bucket):
    rows, stats = run([ProbeRange("GHOSTUSDT", D("2024-01-01"), D("2024-01-03"))])
    assert stats.requests == 1
    assert rows["available"].to_list() == [False, False, False]


def test_an_empty_range_makes_no_request(bucket):
    rows, stats = run([ProbeRange("BTCUSDT", D("2024-01-02"), D("2024-01-01"))])
    assert stats.requests == 0 and rows.is_empty()


def test_a_failing_symbol_fails_the_whole_probe_with_its_name():
    with responses.RequestsMock() as mock:
        mock.get(URL + "/", status=500, body="<Error><Code>InternalError</Code></Error>")
        with pytest.raises(
            VisionError, match=r"^BTCUSDT: listing failed \(HTTP 500 InternalError\) from https:"
        ):
            run([ProbeRange("BTCUSDT", D("2024-01-01"), D("2024-01-02"))])


def test_full_history_ranges_start_at_the_first_file_and_skip_symbols_without_one(bucket):
    bucket.add_days("NEWUSDT", "2024-01-10", "2024-01-12")
    ranges = [
        ProbeRange("NEWUSDT", D("2024-01-01"), D("2024-01-15"), from_first_file=True),
        ProbeRange("GHOSTUSDT", D("2024-01-01"), D("2024-01-15"), from_first_file=True),
        ProbeRange("WINDOWUSDT", D("2024-01-14"), D("2024-01-15")),
    ]
    rows, _ = run(ranges)
    new = rows.filter(pl.col("symbol") == "NEWUSDT")
    assert new["date"].min() == D("2024-01-10") and new.height == 6
    assert new["available"].to_list() == [True, True, True, False, False, False]
    assert rows.filter(pl.col("symbol") == "GHOSTUSDT").is_empty()
    assert rows.filter(pl.col("symbol") == "WINDOWUSDT")["available"].to_list() == [False, False]
