"""The prober against the in-process bucket: exact rows, and how many pages each plan costs."""

import datetime as dt
import itertools

import polars as pl
import pytest
import responses

from pipeline.dataset.schema import SCHEMA
from pipeline.prober import ProbeRange, daily_files, page_limit, probe, typed_file_columns
from pipeline.vision.client import VisionClient, VisionError
from pipeline.vision.layout import Layout
from pipeline.vision.listing import ListingPage
from tests.s3xml import listing
from tests.support import LAYOUT, URL, D, dates, s3_error

NOW = dt.datetime(2026, 11, 29, 1, 2, 3, tzinfo=dt.UTC)


def run(ranges: list[ProbeRange], workers: int = 4):
    with VisionClient(URL, timeout_s=5, retries=0, backoff_s=0, pool_size=workers) as client:
        return probe(client, LAYOUT, ranges, workers=workers)


def test_lookback_window_costs_one_request_per_symbol(empty_bucket):
    empty_bucket.add_days("BTCUSDT", "2019-09-25", "2024-03-10", skip=("2024-03-05",))
    empty_bucket.add_days("币安人生USDT", "2024-03-03", "2024-03-10")
    rows, stats = run(
        [ProbeRange(s, D("2024-02-20"), D("2024-03-10")) for s in ("BTCUSDT", "币安人生USDT")]
    )
    assert stats.requests == 2 and stats.symbols == 2
    assert rows.height == 2 * 20
    assert dict(rows.schema) == SCHEMA
    btc = rows.filter(pl.col("symbol") == "BTCUSDT")
    assert btc.filter(~pl.col("available"))["date"].to_list() == [D("2024-03-05")]
    new = rows.filter(pl.col("symbol") == "币安人生USDT", pl.col("available"))
    assert new["date"].to_list() == dates("2024-03-03", "2024-03-10")
    assert rows["probe_timestamp"].unique().to_list() == [stats.probed_at]


def test_available_rows_carry_size_etag_and_last_modified_and_missing_rows_nulls(empty_bucket):
    empty_bucket.add_days("ETHUSDT", "2024-01-01", "2024-01-01")
    rows, _ = run([ProbeRange("ETHUSDT", D("2024-01-01"), D("2024-01-02"))])
    meta = empty_bucket.meta("ETHUSDT", "2024-01-01")
    assert rows.drop("symbol", "probe_timestamp").rows() == [
        (D("2024-01-01"), True, meta.size, meta.last_modified, meta.etag),
        (D("2024-01-02"), False, None, None, None),
    ]


def test_full_history_costs_the_minimal_number_of_pages(empty_bucket):
    # 1200 days = 2400 keys = 3 pages at best: head, tail, and one middle chunk in parallel.
    empty_bucket.add_days("BTCUSDT", "2019-09-25", "2023-01-06")
    rows, stats = run([ProbeRange("BTCUSDT", D("2019-09-25"), D("2023-01-06"))])
    assert stats.requests == 3
    assert rows.height == 1200 and rows["available"].all()


def test_a_delisted_symbol_does_not_pay_for_empty_chunks(empty_bucket):
    # Files for 700 days, then nothing for 1500: head, empty tail, then one serial page.
    empty_bucket.add_days("OLDUSDT", "2019-09-25", "2021-08-24")
    rows, stats = run([ProbeRange("OLDUSDT", D("2019-09-25"), D("2025-10-01"))])
    assert stats.requests == 3
    assert rows.filter(pl.col("available")).height == 700
    assert rows.filter(pl.col("available"))["date"].max() == D("2021-08-24")


def test_relisting_after_a_gap_is_found(empty_bucket):
    empty_bucket.add_days("AGAINUSDT", "2020-01-01", "2020-12-31")
    empty_bucket.add_days("AGAINUSDT", "2023-06-01", "2024-12-31")
    rows, stats = run([ProbeRange("AGAINUSDT", D("2019-09-25"), D("2024-12-31"))])
    available = rows.filter(pl.col("available"))
    assert available.height == 366 + 580
    assert stats.requests <= 6


def test_missing_days_inside_a_page_boundary_are_exact(empty_bucket):
    skips = ("2021-02-06", "2021-02-07", "2022-05-01")
    empty_bucket.add_days("XUSDT", "2019-09-25", "2022-12-31", skip=skips)
    rows, _ = run([ProbeRange("XUSDT", D("2019-09-25"), D("2022-12-31"))], workers=8)
    assert sorted(d.isoformat() for d in rows.filter(~pl.col("available"))["date"]) == list(skips)
    assert rows.height == (D("2022-12-31") - D("2019-09-25")).days + 1


def test_a_symbol_with_no_files_gets_only_unavailable_rows(empty_bucket):
    rows, stats = run([ProbeRange("GHOSTUSDT", D("2024-01-01"), D("2024-01-03"))])
    assert stats.requests == 1
    assert rows["available"].to_list() == [False, False, False]


def test_an_empty_range_makes_no_request(empty_bucket):
    rows, stats = run([ProbeRange("BTCUSDT", D("2024-01-02"), D("2024-01-01"))])
    assert stats.requests == 0 and rows.is_empty()


def test_a_failing_symbol_fails_the_whole_probe_with_its_name(empty_bucket):
    empty_bucket.add_days("ETHUSDT", "2024-01-01", "2024-01-02")
    empty_bucket.failing_symbols = {"BTCUSDT"}
    ranges = [ProbeRange(s, D("2024-01-01"), D("2024-01-02")) for s in ("BTCUSDT", "ETHUSDT")]
    with pytest.raises(
        VisionError, match=r"^BTCUSDT: listing failed \(HTTP 500 InternalError\) from https:"
    ):
        run(ranges)


def test_a_failure_of_every_listing_names_the_status_and_the_code():
    with responses.RequestsMock() as mock:
        mock.get(URL + "/", status=503, body=s3_error("SlowDown"))
        with pytest.raises(
            VisionError, match=r"^BTCUSDT: listing failed \(HTTP 503 SlowDown\) from https:"
        ):
            run([ProbeRange("BTCUSDT", D("2024-01-01"), D("2024-01-02"))])


def test_a_listing_of_endless_invented_keys_stops_at_the_pages_its_days_can_fill():
    # Each page moves forward (new keys, new token), but none is a daily file: without a
    # limit the prober would follow it forever.
    prefix = LAYOUT.symbol_prefix("BTCUSDT")
    served = itertools.count()

    def invented(_request):
        n = next(served)
        page = listing([f"{prefix}junk-{n:06d}"], prefix=prefix, truncated=True, token=f"t{n}")
        return 200, {}, page

    with responses.RequestsMock() as mock:
        mock.add_callback(responses.GET, URL + "/", invented, content_type="application/xml")
        with pytest.raises(VisionError) as failure:
            run([ProbeRange("BTCUSDT", D("2024-01-01"), D("2024-01-02"))], workers=1)
    assert str(failure.value).startswith(
        "BTCUSDT: more than 2 listing pages for 2024-01-01 to 2024-01-02, more than its daily "
        f"files can fill, from {URL}/ (prefix {prefix}); check vision.listing_url"
    )
    assert next(served) == 4  # the head, then the segment's two pages and the one too many


@pytest.mark.parametrize(
    ("first", "last", "pages"),
    [
        ("2024-01-01", "2024-01-01", 2),
        ("2024-01-01", "2025-05-14", 2),  # 500 days: 1000 keys, one page
        ("2024-01-01", "2025-05-15", 3),
    ],
)
def test_page_limit_is_the_pages_two_keys_a_day_fill_and_one_more(first, last, pages):
    assert page_limit(D(first), D(last)) == pages


def test_full_history_ranges_start_at_the_first_file_and_skip_symbols_without_one(empty_bucket):
    empty_bucket.add_days("NEWUSDT", "2024-01-10", "2024-01-12")
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


def page_of(keys: list[str], *, size: str = "77") -> ListingPage:
    """A listing page of `keys`, each with the same size, ETag and Last-Modified."""
    count = len(keys)
    stamps = ["2024-01-02T03:04:05.000Z"] * count
    return ListingPage(keys, [size] * count, ["e"] * count, stamps, [], False, None)


def daily_dates(layout: Layout, symbol: str, *pages: ListingPage) -> list[dt.date]:
    days = daily_files(layout, symbol, pages).get_column("date").to_list()
    # The per-key check the prober plans with agrees with the vectorised filter.
    keys = [key for page in pages for key in page.keys]
    assert [d for d in (layout.day_of(symbol, key) for key in keys) if d] == days
    return days


def test_daily_files_keep_only_the_symbols_dated_zips():
    prefix = LAYOUT.symbol_prefix("BTCUSDT")
    keys = [
        prefix + "BTCUSDT-1m-2024-02-29.zip",
        prefix + "BTCUSDT-1m-2024-02-29.zip.CHECKSUM",
        prefix + "BTCUSDT-1m-2024-02-30.zip",  # not a date
        prefix + "BTCUSDT-1m-2024-03.zip",  # a monthly name
        prefix + "BTCUSDT-5m-2024-03-01.zip",  # another interval
        prefix + "notes.txt",
    ]
    later = [prefix + "BTCUSDT-1m-2024-03-02.zip", prefix + "BTCUSDT-1m-2024-03-02.zip.CHECKSUM"]
    assert daily_dates(LAYOUT, "BTCUSDT", page_of(keys), page_of(later)) == [
        D("2024-02-29"),
        D("2024-03-02"),
    ]
    assert daily_dates(LAYOUT, "BTC", page_of(keys)) == []
    assert daily_dates(LAYOUT, "BTCUSDT") == []


def test_daily_files_of_a_data_type_without_an_interval_folder():
    trades = Layout(market="cm", data_type="trades", interval="1m")
    assert trades.symbol_prefix("BTCUSD_PERP") == "data/futures/cm/daily/trades/BTCUSD_PERP/"
    key = trades.symbol_prefix("BTCUSD_PERP") + "BTCUSD_PERP-trades-2024-01-01.zip"
    assert daily_dates(trades, "BTCUSD_PERP", page_of([key])) == [D("2024-01-01")]


def test_listed_file_columns_are_typed_as_the_dataset_stores_them():
    key = LAYOUT.symbol_prefix("龙虾USDT") + "龙虾USDT-1m-2026-01-01.zip"
    files = daily_files(LAYOUT, "龙虾USDT", [page_of([key], size="77")])
    typed = files.select("symbol", "date", "etag", *typed_file_columns())
    assert typed.rows() == [
        ("龙虾USDT", D("2026-01-01"), "e", 77, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    ]
    assert typed.schema["file_size_bytes"] == SCHEMA["file_size_bytes"]
    assert typed.schema["last_modified"] == SCHEMA["last_modified"]
