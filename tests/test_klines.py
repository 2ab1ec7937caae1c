"""The 1d kline parser: both CSV shapes read row for row, every malformed file refused in one
line naming it (zips built here with zipfile)."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipeline.volume.klines import CSV_HEADER, KlineFileError, parse_kline_zip, parse_kline_zips
from pipeline.volume.schema import KLINE_COLUMNS

MARCH = "BTCUSDT-1d-2024-03.zip"
DAY = "BTCUSDT-1d-2024-03-02.zip"
HEADER = CSV_HEADER.decode()


def ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1000


def line(day: dt.date, n: int = 1, *, scale: int = 1, close_offset: int = 86_399_999) -> str:
    """A kline row for `day` whose figures grow with `n`; times in ms (scale 1000: in us)."""
    open_time = ms(day) * scale
    close_time = (ms(day) + close_offset) * scale + (scale - 1)
    return (
        f"{open_time},{n}.5,{n + 1}.25,{n - 1}.75,{n}.0,{100 * n}.5,{close_time},"
        f"{1000 * n}.125,{7 * n},{40 * n}.5,{400 * n}.0625,0"
    )


def expected(days: list[dt.date], ns: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "date": days,
            "open": [n + 0.5 for n in ns],
            "high": [n + 1.25 for n in ns],
            "low": [n - 1 + 0.75 for n in ns],
            "close": [float(n) for n in ns],
            "volume": [100 * n + 0.5 for n in ns],
            "quote_volume": [1000 * n + 0.125 for n in ns],
            "trades": [7 * n for n in ns],
            "taker_buy_volume": [40 * n + 0.5 for n in ns],
            "taker_buy_quote_volume": [400 * n + 0.0625 for n in ns],
        },
        schema=KLINE_COLUMNS,
    )


def kline_zip(
    name: str,
    lines: list[str],
    *,
    header: bool = False,
    member: str | None = None,
    newline: str = "\n",
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    """A zip as Binance publishes it: one CSV member named after the zip."""
    text = newline.join(([HEADER] if header else []) + lines) + newline
    return zip_of({member or name.removesuffix(".zip") + ".csv": text}, compression)


def zip_of(members: dict[str, str], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for member_name, text in members.items():
            archive.writestr(member_name, text)
    return buffer.getvalue()


def march(day: int) -> dt.date:
    return dt.date(2024, 3, day)


# --- both shapes ----------------------------------------------------------------------------


@pytest.mark.parametrize("header", [True, False], ids=["header", "no-header"])
def test_a_monthly_file_of_either_shape_gives_its_rows(header):
    days = [march(d) for d in range(1, 32)]
    data = kline_zip(MARCH, [line(day, n) for n, day in enumerate(days, 1)], header=header)
    frame = parse_kline_zip(data, name="data/futures/um/monthly/klines/BTCUSDT/1d/" + MARCH)
    assert_frame_equal(frame, expected(days, list(range(1, 32))))


@pytest.mark.parametrize("header", [True, False], ids=["header", "no-header"])
def test_a_daily_file_gives_its_one_row(header):
    frame = parse_kline_zip(kline_zip(DAY, [line(march(2), 3)], header=header), name=DAY)
    assert_frame_equal(frame, expected([march(2)], [3]))


def test_rows_come_sorted_by_date_and_a_month_may_have_days_missing():
    data = kline_zip(MARCH, [line(march(20), 2), line(march(5), 1)])
    assert_frame_equal(parse_kline_zip(data, name=MARCH), expected([march(5), march(20)], [1, 2]))


def test_microsecond_times_crlf_lines_and_a_stored_member_are_read():
    data = kline_zip(
        DAY,
        [line(march(2), 4, scale=1000)],
        header=True,
        newline="\r\n",
        compression=zipfile.ZIP_STORED,
    )
    assert_frame_equal(parse_kline_zip(data, name=DAY), expected([march(2)], [4]))


def test_a_last_line_without_a_newline_is_read():
    text = "\n".join([line(march(1), 1), line(march(2), 2)])
    data = zip_of({"BTCUSDT-1d-2024-03.csv": text})
    assert_frame_equal(parse_kline_zip(data, name=MARCH), expected([march(1), march(2)], [1, 2]))


def test_a_batch_names_each_row_source_in_the_order_given():
    files = [
        ("k/ETHUSDT-1d-2024-03.zip", kline_zip("ETHUSDT-1d-2024-03.zip", [line(march(1), 1)])),
        ("k/" + DAY, kline_zip(DAY, [line(march(2), 2)], header=True)),
        ("k/" + MARCH, kline_zip(MARCH, [line(march(4), 4), line(march(3), 3)])),
    ]
    frame = parse_kline_zips(files)
    want = expected([march(1), march(2), march(3), march(4)], [1, 2, 3, 4]).with_columns(
        source=pl.Series(["k/ETHUSDT-1d-2024-03.zip", "k/" + DAY, "k/" + MARCH, "k/" + MARCH])
    )
    assert_frame_equal(frame, want)


def test_an_empty_batch_is_an_empty_frame_of_the_schema():
    assert parse_kline_zips([]).schema == pl.Schema({**KLINE_COLUMNS, "source": pl.String()})


# --- rejections -----------------------------------------------------------------------------

GOOD = [line(march(1), 1), line(march(2), 2)]


def refused(data: bytes, name: str = MARCH) -> str:
    with pytest.raises(KlineFileError) as caught:
        parse_kline_zip(data, name="data/futures/um/monthly/klines/BTCUSDT/1d/" + name)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_not_a_zip():
    assert refused(b"<html>Not Found</html>") == f"{MARCH}: not a zip file"


def test_no_member_or_several():
    assert refused(zip_of({})) == f"{MARCH}: 0 members, not one CSV"
    two = zip_of({"BTCUSDT-1d-2024-03.csv": GOOD[0], "extra.csv": GOOD[1]})
    assert refused(two) == f"{MARCH}: 2 members, not one CSV"


def test_a_member_not_named_after_the_zip():
    data = kline_zip(MARCH, GOOD, member="ETHUSDT-1d-2024-03.csv")
    assert refused(data) == (
        f"{MARCH}: member 'ETHUSDT-1d-2024-03.csv', not 'BTCUSDT-1d-2024-03.csv'"
    )


def test_a_name_that_is_no_kline_zip_name():
    for name in ("BTCUSDT.zip", "BTCUSDT-1d-2024-13.zip", "BTCUSDT-1d-2024-02-30.zip"):
        assert refused(kline_zip(name, GOOD), name) == (
            f"{name}: not a kline zip name (<symbol>-<interval>-<YYYY-MM[-DD]>.zip)"
        )


def test_a_corrupted_member():
    data = bytearray(kline_zip(MARCH, GOOD, compression=zipfile.ZIP_STORED))
    data[data.index(b"1709251200000")] ^= 0x01  # a byte of the CSV: its CRC no longer holds
    assert refused(bytes(data)).startswith(f"{MARCH}: unreadable member (")


def test_an_empty_csv_a_header_alone_and_empty_lines():
    assert refused(zip_of({"BTCUSDT-1d-2024-03.csv": ""})) == f"{MARCH}: empty CSV"
    assert refused(kline_zip(MARCH, [], header=True)) == f"{MARCH}: no rows"
    assert refused(kline_zip(MARCH, ["", *GOOD])) == f"{MARCH}: empty line 1"
    assert refused(kline_zip(MARCH, [GOOD[0], "", GOOD[1]], header=True)) == (
        f"{MARCH}: empty line 3"
    )


def test_a_wrong_column_count():
    assert refused(kline_zip(MARCH, [GOOD[0] + ",1"])) == f"{MARCH}: line 1: 13 columns, not 12"
    short = GOOD[1].rsplit(",", 1)[0]
    assert refused(kline_zip(MARCH, [GOOD[0], short], header=True)) == (
        f"{MARCH}: line 3: 11 columns, not 12"
    )


def test_a_header_that_differs():
    header = HEADER.replace("taker_buy_volume", "taker_buy_base_volume")
    data = zip_of({"BTCUSDT-1d-2024-03.csv": "\n".join([header, *GOOD]) + "\n"})
    assert refused(data) == (f"{MARCH}: header {header!r} differs from Binance's kline header")


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (
            "1.5,",
            "abc,",
            "unparseable number `abc` as dtype `f64` at column 'open' (column number 2)",
        ),
        (
            ",7,",
            ",7.5,",
            "unparseable number `7.5` as dtype `i64` at column 'count' (column number 9)",
        ),
    ],
    ids=["float", "count"],
)
def test_unparseable_numbers(old, new, reason):
    assert refused(kline_zip(MARCH, [GOOD[0].replace(old, new, 1)])) == f"{MARCH}: {reason}"


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (GOOD[1].replace("2.5,", ",", 1), "an empty or missing field"),
        (GOOD[1].replace("2.5,", "nan,", 1), "a number that is not finite"),
        (GOOD[1].replace("200.5,", "inf,", 1), "a number that is not finite"),
        (GOOD[1].replace("200.5,", "-200.5,", 1), "a negative figure"),
        (GOOD[1].replace(",14,", ",-14,", 1), "a negative figure"),
        (
            line(march(2), 2).replace(str(ms(march(2))), str(ms(march(2)) + 3_600_000), 1),
            "open_time not at 00:00 UTC",
        ),
        (line(march(2), 2, close_offset=86_400_000), "close_time not open_time + 1 day - 1 ms"),
        (line(march(1), 2), "a day twice"),
        (line(dt.date(2024, 4, 1), 2), "a day outside the period its name gives"),
    ],
    ids=[
        "empty",
        "nan",
        "inf",
        "negative",
        "negative-count",
        "open-time",
        "close-time",
        "duplicate",
        "outside",
    ],
)
def test_rows_that_are_no_daily_kline(broken, reason):
    """Each named on the line where it happens (line 3: after the header and a good row)."""
    data = kline_zip(MARCH, [GOOD[0], broken, line(march(3), 3)], header=True)
    assert refused(data) == f"{MARCH}: line 3: {reason}"


def test_a_daily_file_holding_another_day():
    assert refused(kline_zip(DAY, [line(march(3))]), DAY) == (
        f"{DAY}: line 1: a day outside the period its name gives"
    )


def test_a_batch_names_its_bad_file_and_the_line_in_it():
    good = ("k/ETHUSDT-1d-2024-03.zip", kline_zip("ETHUSDT-1d-2024-03.zip", GOOD))
    bad = ("k/" + MARCH, kline_zip(MARCH, [GOOD[0], GOOD[0]], header=True))
    with pytest.raises(KlineFileError, match=rf"^{MARCH}: line 3: a day twice$"):
        parse_kline_zips([good, bad])
    # The same day in two files is no duplicate: a monthly and a daily file may overlap.
    daily = ("k/" + DAY, kline_zip(DAY, [line(march(2), 2)]))
    assert parse_kline_zips([good, daily])["date"].to_list() == [march(1), march(2), march(2)]


def test_a_batch_with_an_unparseable_file_names_it():
    good = ("k/ETHUSDT-1d-2024-03.zip", kline_zip("ETHUSDT-1d-2024-03.zip", GOOD))
    bad = ("k/" + DAY, kline_zip(DAY, [line(march(2)).replace("1.5,", "x,", 1)]))
    with pytest.raises(KlineFileError, match=rf"^{DAY}: unparseable number `x`"):
        parse_kline_zips([good, bad])


def test_a_utf8_member_name_without_the_utf8_flag_still_matches_its_zip() -> None:
    name = "币安人生USDT-1d-2024-05-10.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            name.removesuffix(".zip") + ".csv",
            "1715299200000,1,2,0.5,1.5,10,1715385599999,15,3,4,6,0\n",
        )
    # Clear the UTF-8 flag (bit 11) in the local and the central header, as writers that store
    # UTF-8 names without saying so do: zipfile then reads the name as cp437.
    data = bytearray(buffer.getvalue())
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature) + flags_at
        data[at : at + 2] = (int.from_bytes(data[at : at + 2], "little") & ~0x800).to_bytes(
            2, "little"
        )
    assert (
        zipfile.ZipFile(io.BytesIO(bytes(data))).namelist()[0] != name.removesuffix(".zip") + ".csv"
    )
    frame = parse_kline_zip(bytes(data), name=name)
    assert frame["date"].to_list() == [dt.date(2024, 5, 10)]
