"""The emulator's 1d klines: ground truth, file contents, daily/monthly consistency, faults."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests

from devtools.emulator import (
    Emulator,
    Knobs,
    Universe,
    generate_universe,
    list_objects,
    load_reference,
)
from devtools.emulator.klines import HEADER, MS_PER_DAY, _zip, is_multipart, kline
from devtools.emulator.process import EmulatorProcess
from devtools.emulator.server import FAULTS, LISTING_FAULTS, OBJECT_FAULTS, PREFIX_FAULTS

DAILY = "data/futures/um/daily/klines/"
MONTHLY = "data/futures/um/monthly/klines/"
TODAY = date(2022, 3, 5)
COLUMNS = HEADER.split(",")


def daily_key(symbol: str, day: date | str) -> str:
    return f"{DAILY}{symbol}/1d/{symbol}-1d-{day}.zip"


def monthly_key(symbol: str, month: str) -> str:
    return f"{MONTHLY}{symbol}/1d/{symbol}-1d-{month}.zip"


@pytest.fixture
def universe() -> Universe:
    """Spans across the header change (2022), a delisting mid-month, missing and late days."""
    return Universe.from_dict(
        {
            "today": TODAY.isoformat(),
            "symbols": {
                "BTCUSDT": {
                    "spans": [["2021-11-20", None]],
                    "missing": ["2021-12-07"],
                    "late": {"2022-02-27": "2022-03-09"},
                },
                "OLDUSDT": {"spans": [["2021-10-10", "2021-12-15"]]},
                "币安人生USDT": {"spans": [["2022-01-30", None]]},
            },
        }
    )


@pytest.fixture
def emulator(universe: Universe) -> Iterator[Emulator]:
    with Emulator(universe) as running:
        yield running


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def read_zip(body: bytes) -> tuple[str, list[list[str]]]:
    """The one member's name and its CSV rows (header included), checking the archive."""
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    [member] = archive.infolist()
    text = archive.read(member).decode()
    assert text.endswith("\n") and "\r" not in text
    return member.filename, list(csv.reader(io.StringIO(text)))


def s3_etag(body: bytes, *, multipart: bool = False) -> str:
    """S3's ETag: the MD5, or of a two-part upload the MD5 of the parts' MD5s and "-2"."""
    if not multipart:
        return hashlib.md5(body).hexdigest()
    half = (len(body) + 1) // 2
    parts = hashlib.md5(body[:half]).digest() + hashlib.md5(body[half:]).digest()
    return hashlib.md5(parts).hexdigest() + "-2"


def etag_of(key: str, body: bytes) -> str:
    """The ETag `key` must have: monthly files are now and then multipart uploads."""
    name = key.rpartition("/")[2].removesuffix(".zip")
    symbol, _, month = name.rpartition("-1d-")
    return s3_etag(body, multipart=len(month) == 7 and is_multipart(symbol, month))


def truth_row(row: list[str]) -> tuple[float | int, ...]:
    """A CSV row as numbers, the way a reader of the file types it."""
    return tuple(int(v) if i in (0, 6, 8, 11) else float(v) for i, v in enumerate(row))


# --- ground truth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "symbol", ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT", "币安人生USDT", "XYZUSDT"]
)
def test_ground_truth_is_realistic_and_deterministic(symbol: str) -> None:
    days = [date(2020, 1, 1) + timedelta(days=n) for n in range(0, 1500, 7)]
    for day in days:
        k = kline(symbol, day)
        assert k == kline(symbol, day)
        assert k.open_time == (day - date(1970, 1, 1)).days * MS_PER_DAY
        assert k.close_time == k.open_time + MS_PER_DAY - 1
        assert 0 < k.low <= min(k.open, k.close) <= max(k.open, k.close) <= k.high
        assert k.open == kline(symbol, day - timedelta(days=1)).close  # opens at the last close
        assert 0 < k.taker_buy_volume < k.volume
        assert k.volume * k.low * 0.999 <= k.quote_volume <= k.volume * k.high * 1.001
        assert k.taker_buy_volume * k.low * 0.999 <= k.taker_buy_quote_volume
        assert k.taker_buy_quote_volume <= k.taker_buy_volume * k.high * 1.001
        assert isinstance(k.count, int) and k.count >= 1 and k.ignore == 0
    closes = [kline(symbol, day).close for day in days]
    assert len(set(closes)) > len(closes) * 0.9  # prices move
    assert max(closes) / min(closes) > 1.2  # and drift
    assert kline(symbol, days[0]) != kline("OTHERUSDT", days[0])


def test_a_correction_changes_the_volumes_only() -> None:
    day = date(2023, 4, 5)
    first, corrected = kline("BTCUSDT", day), kline("BTCUSDT", day, revision=1)
    assert first[:5] == corrected[:5] and first.close_time == corrected.close_time
    assert corrected.volume > first.volume and corrected.quote_volume > first.quote_volume
    assert corrected.volume == pytest.approx(first.volume * 1.0137, rel=1e-3)


def test_well_known_coins_trade_near_their_real_price() -> None:
    assert 5_000 < kline("BTCUSDT", date(2024, 1, 1)).close < 200_000
    assert 300 < kline("ETHUSDT", date(2024, 1, 1)).close < 15_000


# --- files ----------------------------------------------------------------------------------


def test_the_hand_made_zip_is_what_zipfile_writes() -> None:
    data = b"1,2,3\n" * 40
    ours = _zip("X-1d-2023-01.csv", data, date(2023, 2, 1))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        member = zipfile.ZipInfo("X-1d-2023-01.csv", date_time=(2023, 2, 1, 0, 0, 0))
        member.compress_type = zipfile.ZIP_DEFLATED
        member.create_system = 3
        member.external_attr = 0o100644 << 16
        archive.writestr(member, data)
    assert ours == buffer.getvalue()


@pytest.mark.parametrize(("day", "header"), [("2021-12-31", False), ("2022-01-01", True)])
def test_a_daily_file_holds_one_row_with_a_header_from_2022(
    universe: Universe, day: str, header: bool
) -> None:
    name, rows = read_zip(universe.body(daily_key("BTCUSDT", day)))
    assert name == f"BTCUSDT-1d-{day}.csv"
    assert rows[0] == COLUMNS if header else rows[0][0].isdigit()
    assert len(rows) == 1 + header
    assert truth_row(rows[-1]) == tuple(kline("BTCUSDT", date.fromisoformat(day)))


@pytest.mark.parametrize(
    ("symbol", "month", "header", "first", "last", "without"),
    [
        ("BTCUSDT", "2021-11", False, "2021-11-20", "2021-11-30", None),
        ("BTCUSDT", "2021-12", False, "2021-12-01", "2021-12-31", "2021-12-07"),  # missing
        ("BTCUSDT", "2022-02", True, "2022-02-01", "2022-02-28", None),  # holds the late day
        ("OLDUSDT", "2021-12", False, "2021-12-01", "2021-12-15", None),  # delisted
    ],
)
def test_a_monthly_file_holds_the_rows_of_the_days_of_its_month(
    universe: Universe,
    symbol: str,
    month: str,
    header: bool,
    first: str,
    last: str,
    without: str | None,
) -> None:
    name, rows = read_zip(universe.body(monthly_key(symbol, month)))
    assert name == f"{symbol}-1d-{month}.csv"
    assert (rows[0] == COLUMNS) == header
    days = [date.fromisoformat(first) + timedelta(days=n) for n in range(31)]
    days = [d for d in days if d <= date.fromisoformat(last) and str(d) != without]
    assert [truth_row(row) for row in rows[header:]] == [tuple(kline(symbol, d)) for d in days]


def test_monthly_and_daily_files_agree_row_for_row(universe: Universe) -> None:
    for month in universe.kline_months("BTCUSDT"):
        _, rows = read_zip(universe.body(monthly_key("BTCUSDT", month)))
        from_days = []
        for day in universe.available_dates("BTCUSDT"):
            if day.isoformat().startswith(month):
                from_days.append(read_zip(universe.body(daily_key("BTCUSDT", day)))[1][-1])
        monthly_rows = [row for row in rows if row != COLUMNS]
        late = date(2022, 2, 27)
        if month == "2022-02":  # the late day is in the month's file before its own
            assert truth_row(monthly_rows.pop(26)) == tuple(kline("BTCUSDT", late))
        assert monthly_rows == from_days


def test_a_checksum_names_its_zip_and_its_sha256(universe: Universe) -> None:
    for key in (daily_key("币安人生USDT", "2022-02-01"), monthly_key("BTCUSDT", "2022-01")):
        body = universe.body(key)
        checksum = universe.body(key + ".CHECKSUM")
        name = key.rpartition("/")[2]
        assert checksum == f"{hashlib.sha256(body).hexdigest()}  {name}\n".encode()
        meta = universe.meta(key + ".CHECKSUM")
        assert meta.size == len(checksum) and meta.etag == hashlib.md5(checksum).hexdigest()
        assert meta.last_modified == universe.meta(key).last_modified + timedelta(seconds=1)


def test_etags_are_the_md5_but_for_multipart_monthly_uploads() -> None:
    u = generate_universe(load_reference(), today=date(2024, 6, 1), n_symbols=40, seed=1)
    keys = [(symbol, month) for symbol in u.specs for month in u.kline_months(symbol)]
    multipart = [(s, m) for s, m in keys if is_multipart(s, m)]
    assert 0 < len(multipart) < len(keys) * 0.03
    for symbol, month in [*multipart[:3], *keys[:3]]:
        key = monthly_key(symbol, month)
        body, meta = u.body(key), u.meta(key)
        assert meta.size == len(body)
        assert meta.etag == s3_etag(body, multipart=(symbol, month) in multipart)
        assert meta.etag.endswith("-2") == ((symbol, month) in multipart)
    for symbol in u.symbols[:5]:
        key = daily_key(symbol, u.available_dates(symbol)[-1])
        assert u.meta(key).etag == hashlib.md5(u.body(key)).hexdigest()


# --- what is visible when -------------------------------------------------------------------


def test_daily_1d_files_follow_the_daily_files_days(universe: Universe) -> None:
    for symbol in universe.symbols:
        page = list_objects(universe, prefix=f"{DAILY}{symbol}/1d/", max_keys=5000)
        zips = [key for key, _ in page.keys if key.endswith(".zip")]
        assert zips == [daily_key(symbol, d) for d in universe.available_dates(symbol)]
    assert not universe.has_object(daily_key("BTCUSDT", "2021-12-07"))  # missing
    assert not universe.has_object(daily_key("BTCUSDT", "2022-02-27"))  # late
    assert universe.with_today("2022-03-09").has_object(daily_key("BTCUSDT", "2022-02-27"))
    assert not universe.has_object(daily_key("BTCUSDT", TODAY))


def test_a_monthly_file_appears_on_day_1_to_3_of_the_next_month(universe: Universe) -> None:
    assert universe.kline_months("BTCUSDT") == ["2021-11", "2021-12", "2022-01", "2022-02"]
    assert universe.kline_months("OLDUSDT") == ["2021-10", "2021-11", "2021-12"]
    assert universe.kline_months("币安人生USDT") == ["2022-01", "2022-02"]
    published = universe.meta(monthly_key("BTCUSDT", "2022-02")).last_modified
    assert datetime(2022, 3, 1, tzinfo=UTC) <= published < datetime(2022, 3, 4, tzinfo=UTC)
    on_the_day = universe.with_today(published.date())
    assert on_the_day.kline_months("BTCUSDT") == ["2021-11", "2021-12", "2022-01"]
    assert not on_the_day.has_object(monthly_key("BTCUSDT", "2022-02"))
    day_after = universe.with_today(published.date() + timedelta(days=1))
    assert day_after.kline_months("BTCUSDT")[-1] == "2022-02"
    # Never the current month, whatever the day.
    assert universe.with_today("2022-03-31").kline_months("BTCUSDT")[-1] == "2022-02"


def test_a_month_of_missing_days_only_has_no_file() -> None:
    gone = [date(2021, 2, 1) + timedelta(days=n) for n in range(28)]
    u = Universe.from_dict(
        {"today": "2021-04-10", "symbols": {"AUSDT": {"spans": [["2021-01-30", None]]}}}
    ).without_file("AUSDT", "2021-01-31")
    for day in gone:
        u = u.without_file("AUSDT", day)
    assert u.kline_months("AUSDT") == ["2021-01", "2021-03"]
    _, rows = read_zip(u.body(monthly_key("AUSDT", "2021-01")))
    assert [truth_row(row) for row in rows] == [tuple(kline("AUSDT", date(2021, 1, 30)))]


def test_without_1d_klines_the_bucket_holds_only_the_intervals_files(universe: Universe) -> None:
    plain = Universe.from_dict({**universe.to_dict(), "kline_1d": False})
    assert plain.key_count == 2 * sum(len(plain.available_dates(s)) for s in plain.symbols)
    assert universe.key_count == plain.key_count * 2 + 2 * sum(
        len(universe.kline_months(s)) for s in universe.specs
    )
    assert list_objects(plain, prefix="data/futures/um/monthly/").keys == []
    assert not plain.has_object(daily_key("BTCUSDT", "2022-01-01"))
    with pytest.raises(ValueError, match="no 1d klines"):
        plain.kline_rows("BTCUSDT")
    with pytest.raises(ValueError, match="leave it out of intervals"):
        Universe.from_dict({**universe.to_dict(), "intervals": ["1m", "1d"]})
    with pytest.raises(ValueError, match="kline_1d must be true or false"):
        Universe.from_dict({**universe.to_dict(), "kline_1d": "yes"})


# --- ground truth of a dataset --------------------------------------------------------------


def test_kline_rows_take_complete_months_from_monthly_files(universe: Universe) -> None:
    rows = universe.kline_rows("BTCUSDT")
    by_date = {row.date: row for row in rows}
    expected_days = set(universe.available_dates("BTCUSDT")) | {date(2022, 2, 27)}
    assert set(by_date) == expected_days and [r.date for r in rows] == sorted(expected_days)
    for row in rows:
        month = row.date.strftime("%Y-%m")
        source = (
            monthly_key("BTCUSDT", month) if month < "2022-03" else daily_key("BTCUSDT", row.date)
        )
        meta = universe.meta(source)
        assert (row.source, row.source_etag, row.source_size) == (source, meta.etag, meta.size)
        k = kline("BTCUSDT", row.date)
        assert row[2:11] == (
            k.open,
            k.high,
            k.low,
            k.close,
            k.volume,
            k.quote_volume,
            k.count,
            k.taker_buy_volume,
            k.taker_buy_quote_volume,
        )
    march = universe.kline_rows("BTCUSDT", first="2022-02-28", last="2022-03-03")
    assert [r.date.day for r in march] == [28, 1, 2, 3]
    assert march[0].source.endswith("2022-02.zip") and march[1].source.endswith("03-01.zip")
    assert universe.kline_rows("OLDUSDT")[-1].date == date(2021, 12, 15)
    with pytest.raises(KeyError):
        universe.kline_rows("NOSUCHUSDT")


def test_kline_rows_are_what_the_served_files_say(
    emulator: Emulator, http: requests.Session, universe: Universe
) -> None:
    for symbol in universe.symbols:
        expected = universe.kline_rows(symbol)
        got = []
        for source in dict.fromkeys(row.source for row in expected):
            response = http.get(f"{emulator.download_url}/{source}")
            assert response.headers["ETag"] == f'"{etag_of(source, response.content)}"'
            _, rows = read_zip(response.content)
            got += [(source, truth_row(row)) for row in rows if row != COLUMNS]
        assert len(got) == len(expected)
        for (source, values), row in zip(got, expected, strict=True):
            assert source == row.source
            assert values[0] == (row.date - date(1970, 1, 1)).days * MS_PER_DAY
            assert (*values[1:6], *values[7:11]) == row[2:11]


# --- corrections ----------------------------------------------------------------------------


def test_a_corrected_day_is_uploaded_again_with_its_month(universe: Universe) -> None:
    day, on = "2022-01-10", date(2022, 3, 4)
    fixed = universe.with_reupload("BTCUSDT", day, on, interval="1d")
    assert fixed.specs["BTCUSDT"].reuploaded == {}  # the 1m file is left alone
    for key in (daily_key("BTCUSDT", day), monthly_key("BTCUSDT", "2022-01")):
        before, after = universe.meta(key), fixed.meta(key)
        assert after.etag != before.etag and after.size == len(fixed.body(key))
        assert after.etag == etag_of(key, fixed.body(key))
        assert after.last_modified == datetime(2022, 3, 4, 3, tzinfo=UTC)
        sha = hashlib.sha256(fixed.body(key)).hexdigest()
        assert fixed.body(key + ".CHECKSUM").startswith(sha.encode())
    # The other months' files and days' files are untouched.
    for key in (daily_key("BTCUSDT", "2022-01-11"), monthly_key("BTCUSDT", "2021-12")):
        assert fixed.meta(key) == universe.meta(key) and fixed.body(key) == universe.body(key)
    row = {r.date: r for r in fixed.kline_rows("BTCUSDT")}[date(2022, 1, 10)]
    corrected = kline("BTCUSDT", date(2022, 1, 10), revision=1)
    assert (row.volume, row.open) == (corrected.volume, corrected.open)
    assert row.volume != kline("BTCUSDT", date(2022, 1, 10)).volume
    # The day before the correction, nothing has changed yet.
    earlier = fixed.with_today("2022-03-03")
    assert earlier.meta(daily_key("BTCUSDT", day)) == universe.with_today("2022-03-03").meta(
        daily_key("BTCUSDT", day)
    )


def test_a_correction_before_the_month_is_published_is_in_its_first_upload(
    universe: Universe,
) -> None:
    fixed = universe.with_reupload("BTCUSDT", "2022-02-10", "2022-02-20", interval="1d")
    key = monthly_key("BTCUSDT", "2022-02")
    assert fixed.meta(key).last_modified == universe.meta(key).last_modified
    assert fixed.meta(key).etag != universe.meta(key).etag
    _, rows = read_zip(fixed.body(key))
    assert truth_row(rows[10]) == tuple(kline("BTCUSDT", date(2022, 2, 10), revision=1))


def test_corrections_round_trip_through_json(universe: Universe, tmp_path: Path) -> None:
    fixed = universe.with_reupload("BTCUSDT", "2022-01-10", "2022-03-04", interval="1d")
    fixed.save(tmp_path / "u.json")
    assert Universe.load(tmp_path / "u.json") == fixed
    assert fixed.to_dict()["symbols"]["BTCUSDT"]["reuploaded_1d"] == {"2022-01-10": "2022-03-04"}
    with pytest.raises(ValueError, match="no '5m' files"):
        universe.with_reupload("BTCUSDT", "2022-01-10", "2022-03-04", interval="5m")


# --- over HTTP, with faults -----------------------------------------------------------------


def test_listing_head_and_get_agree(
    emulator: Emulator, http: requests.Session, universe: Universe
) -> None:
    page = list_objects(universe, prefix=f"{MONTHLY}BTCUSDT/").keys
    page += list_objects(universe, prefix=f"{DAILY}币安人生USDT/1d/").keys
    for key, meta in page:
        head = http.head(f"{emulator.download_url}/{key}")
        got = http.get(f"{emulator.download_url}/{key}")
        for response in (head, got):
            assert response.headers["ETag"] == f'"{meta.etag}"'
            assert response.headers["Content-Length"] == str(meta.size)
            assert parsedate_to_datetime(response.headers["Last-Modified"]) == meta.last_modified
        assert len(got.content) == meta.size
        expected_type = "text/plain" if key.endswith(".CHECKSUM") else "application/zip"
        assert got.headers["Content-Type"] == expected_type
    assert emulator.counters()["by_kind"] == {"list": 0, "head": len(page), "get": len(page)}


def test_corrupt_body_keeps_the_promised_size_and_etag(
    emulator: Emulator, http: requests.Session, universe: Universe
) -> None:
    key = monthly_key("BTCUSDT", "2022-01")
    emulator.set_knobs(Knobs(prefix_faults={f"{MONTHLY}BTCUSDT/": "corrupt_body"}))
    got = http.get(f"{emulator.download_url}/{key}")
    meta = universe.meta(key)
    assert got.status_code == 200 and got.headers["ETag"] == f'"{meta.etag}"'
    assert len(got.content) == meta.size and got.content != universe.body(key)
    assert hashlib.md5(got.content).hexdigest() != meta.etag
    assert http.head(f"{emulator.download_url}/{key}").status_code == 200  # HEADs are fine
    listed = http.get(emulator.listing_url, params={"prefix": f"{MONTHLY}BTCUSDT/"})
    assert listed.status_code == 200 and key in listed.text  # listings are fine
    assert emulator.counters()["faults"]["corrupt_body"] == 1


def test_short_body_says_it_is_short(
    emulator: Emulator, http: requests.Session, universe: Universe
) -> None:
    key = daily_key("BTCUSDT", "2022-01-05")
    emulator.set_knobs(Knobs(prefix_faults={key: "short_body"}))
    got = http.get(f"{emulator.download_url}/{key}")
    body = universe.body(key)
    assert got.content == body[: len(body) // 2]
    assert got.headers["Content-Length"] == str(len(body) // 2)
    assert got.headers["ETag"] == f'"{universe.meta(key).etag}"'
    other = daily_key("BTCUSDT", "2022-01-06")
    assert http.get(f"{emulator.download_url}/{other}").content == universe.body(other)
    assert http.get(f"{emulator.download_url}/{key}.CHECKSUM").ok  # the key is the prefix


def test_truncated_closes_a_get_halfway(emulator: Emulator, universe: Universe) -> None:
    key = monthly_key("BTCUSDT", "2021-12")
    emulator.set_knobs(Knobs(prefix_faults={MONTHLY: "truncated"}))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{emulator.download_url}/{key}", timeout=5)
    assert emulator.counters()["faults"]["truncated"] == 1


@pytest.mark.parametrize(
    ("fault", "status"),
    [("slowdown", 503), ("internal_error", 500), ("no_such_key", 404), ("html", 200)],
)
def test_answering_faults_hit_gets_and_heads(
    emulator: Emulator, http: requests.Session, fault: str, status: int
) -> None:
    emulator.set_knobs(Knobs(prefix_faults={f"{DAILY}BTCUSDT/1d/": fault}))
    url = f"{emulator.download_url}/{daily_key('BTCUSDT', '2022-01-05')}"
    assert http.get(url).status_code == status
    assert http.head(url).status_code == status
    assert http.get(f"{emulator.download_url}/{daily_key('OLDUSDT', '2021-11-05')}").ok
    assert emulator.counters()["faults"][fault] == 2


def test_random_faults_hit_gets(emulator: Emulator, http: requests.Session) -> None:
    emulator.set_knobs(Knobs(slowdown_rate=0.3, reset_rate=0.2, seed=4))
    statuses = []
    for day in range(1, 27):  # the 27th is late
        try:
            key = daily_key("BTCUSDT", f"2022-02-{day:02d}")
            statuses.append(http.get(f"{emulator.download_url}/{key}").status_code)
        except requests.ConnectionError:
            statuses.append(0)
    counters = emulator.counters()
    assert counters["by_kind"]["get"] == 26
    assert counters["faults"]["slowdown"] == statuses.count(503) > 0
    assert counters["faults"]["reset"] == statuses.count(0) > 0
    assert statuses.count(200) + statuses.count(503) + statuses.count(0) == 26


def test_fault_kinds_say_where_they_apply() -> None:
    assert OBJECT_FAULTS | LISTING_FAULTS == set(PREFIX_FAULTS) <= set(FAULTS)
    assert {"corrupt_body", "short_body"} == OBJECT_FAULTS - LISTING_FAULTS
    assert "looping_token" not in OBJECT_FAULTS
    knobs = Knobs(prefix_faults={DAILY: "looping_token", f"{DAILY}A/": "corrupt_body"})
    assert knobs.prefix_fault(f"{DAILY}A/1d/") == "looping_token"  # listings
    assert knobs.prefix_fault(f"{DAILY}A/1d/x.zip", OBJECT_FAULTS) == "corrupt_body"
    assert knobs.prefix_fault(f"{DAILY}B/1d/x.zip", OBJECT_FAULTS) is None


# --- scale ----------------------------------------------------------------------------------


def test_full_scale_universe_lists_1d_files_lazily() -> None:
    full = generate_universe(load_reference(), today=date(2026, 11, 29)).prepare()
    months = len(full.kline_months("BTCUSDT"))
    assert months == 86  # 2019-09 through 2026-10
    page = list_objects(full, prefix=f"{MONTHLY}BTCUSDT/1d/")
    assert len(page.keys) == 2 * months and not page.is_truncated
    daily = list_objects(
        full, prefix=f"{DAILY}BTCUSDT/1d/", start_after=f"{DAILY}BTCUSDT/1d/BTCUSDT-1d-2026-11"
    )
    assert [key for key, _ in daily.keys][::2] == [
        daily_key("BTCUSDT", d) for d in full.available_dates("BTCUSDT") if d >= date(2026, 11, 1)
    ]


def test_an_emulator_process_serves_corrections_and_body_faults(universe: Universe) -> None:
    fixed = universe.with_reupload("BTCUSDT", "2022-01-10", "2022-03-01", interval="1d")
    corrupted, fine = daily_key("BTCUSDT", "2022-01-10"), monthly_key("BTCUSDT", "2022-01")
    knobs = Knobs(prefix_faults={corrupted: "corrupt_body"})
    with EmulatorProcess(fixed, knobs) as process, requests.Session() as http:
        bad = http.get(f"{process.download_url}/{corrupted}", timeout=10)
        good = http.get(f"{process.download_url}/{fine}", timeout=10)
        faults = process.counters()["faults"]
    assert bad.headers["ETag"] == f'"{fixed.meta(corrupted).etag}"'
    assert len(bad.content) == fixed.meta(corrupted).size and bad.content != fixed.body(corrupted)
    assert good.content == fixed.body(fine) != universe.body(fine)
    assert faults["corrupt_body"] == 1
