"""One 1d kline zip -> a polars frame of the schema's kline columns, or an error naming the file.

Binance has published two shapes of the same 12-column CSV: older files have no header row,
newer ones (from ~2022) begin with exactly CSV_HEADER. The first line tells which; anything
else is refused. Each file is checked whole before a row of it is used: one CSV member named
after the zip, 12 numeric columns, one row per UTC day (open_time at 00:00, close_time one
millisecond before the next day), no day twice, and every day inside the period (month or day)
the zip's name says it covers.

The full backfill parses ~45,000 small zips, so parse_kline_zips reads a whole batch of files
with one call of polars' CSV reader and checks it with one select of expressions; only a
failing batch is looked at file by file, and only a failing file line by line.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import polars as pl

from pipeline.errors import PipelineError
from pipeline.vision.layout import next_month
from pipeline.volume.schema import KLINE_COLUMNS

CSV_COLUMNS: dict[str, pl.DataType] = {
    "open_time": pl.Int64(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "close_time": pl.Int64(),
    "quote_volume": pl.Float64(),
    "count": pl.Int64(),
    "taker_buy_volume": pl.Float64(),
    "taker_buy_quote_volume": pl.Float64(),
    # Unused by Binance ("0"); read as text so that whatever it holds cannot fail a file.
    "ignore": pl.String(),
}
CSV_HEADER = ",".join(CSV_COLUMNS).encode()
FIGURES = [name for name, dtype in CSV_COLUMNS.items() if dtype == pl.Float64()]

DAY_MS = 86_400_000
# open_time/close_time above this are microseconds (some recent files): as milliseconds they
# would be past the year 33000.
MICROSECONDS_FROM = 10**15
# A month of daily rows is ~5 kB; a member far larger is no kline file (or a zip bomb).
MAX_MEMBER_BYTES = 1 << 20
# A zip's local file header: its signature, and the lengths of the name and extra field that
# come before the member's data (the sizes are taken from the central directory).
LOCAL_HEADER = struct.Struct("<4s22xHH")
LOCAL_SIGNATURE = b"PK\x03\x04"
# General-purpose flag bit 11: the member name is UTF-8 (otherwise cp437, by the spec).
UTF8_NAME_FLAG = 0x800
# "<symbol>-<interval>-<YYYY-MM>.zip" (monthly) or "...-<YYYY-MM-DD>.zip" (daily).
_ZIP_NAME = re.compile(r".+-[0-9]+[a-zA-Z]+-(?P<period>\d{4}-\d{2}(?:-\d{2})?)\.zip")


class KlineFileError(PipelineError):
    """A kline zip that is not what Binance publishes; the message names the file."""


@dataclass(frozen=True)
class _Member:
    """A zip's CSV, its header (if any) checked and cut off: the data rows to read."""

    source: str
    """The name the zip was given (its key)."""
    zip_name: str
    rows: bytes
    """The data lines, each ending in a newline."""
    lines: int
    first_line: int
    """The line number of the first data line in the CSV (2 after a header row)."""
    period: tuple[dt.date, dt.date]
    """The first and last day the zip's name says it covers."""


def parse_kline_zip(data: bytes, *, name: str) -> pl.DataFrame:
    """The kline rows of one 1d kline zip (schema.KLINE_COLUMNS, sorted by date).

    `name` is the zip's key or file name: its member must be named after it, and its rows
    must fall in the month or day it names. For many files, parse_kline_zips is far faster.
    """
    return parse_kline_zips([(name, data)]).drop("source")


def parse_kline_zips(files: Sequence[tuple[str, bytes]]) -> pl.DataFrame:
    """The kline rows of many zips, given as (name, bytes): KLINE_COLUMNS plus `source` (the
    name each row's zip was given), in the order given, each zip's rows sorted by date.

    All of them are read by one polars call and checked by one select: polars' cost per call
    is far above what a file of 1-31 rows costs it. When the batch fails a check, each file is
    read alone to name the first bad one (the error path only).
    """
    members = [_member(name, data) for name, data in files]
    if not members:
        return pl.DataFrame(schema={**KLINE_COLUMNS, "source": pl.String()})
    try:
        frame = _read_rows(b"".join(member.rows for member in members))
    except KlineFileError:
        _blame(members)
    if frame.height != sum(member.lines for member in members):
        _blame(members)
    frame = _annotate(frame, members)
    if _first_problem(frame) is not None:
        _blame(members)
    return _kline_columns(frame, [member.source for member in members])


def _member(source: str, data: bytes) -> _Member:
    zip_name = source.rsplit("/", 1)[-1]
    period = _period(zip_name)
    csv = _unzip(data, zip_name)
    has_header = _has_header(csv, zip_name)
    rows = _data_lines(csv, has_header=has_header)
    lines = rows.count(b"\n")
    if lines == 0:
        raise KlineFileError(f"{zip_name}: no rows")
    first_line = 2 if has_header else 1
    # polars reads a short row's missing fields as empty ones: count the columns here.
    if rows.count(b",") != (len(CSV_COLUMNS) - 1) * lines:
        _blame_columns(rows, zip_name, first_line)
    return _Member(source, zip_name, rows, lines, first_line, period)


def _data_lines(csv: bytes, *, has_header: bool) -> bytes:
    """The CSV's data lines, the last one ending in a newline too (as files from one batch are
    joined)."""
    rows = csv.partition(b"\n")[2] if has_header else csv
    return rows if not rows or rows.endswith(b"\n") else rows + b"\n"


def _blame_columns(rows: bytes, zip_name: str, first_line: int) -> NoReturn:
    """Names the first line without 12 columns (a file known to have one)."""
    for number, line in enumerate(rows.split(b"\n"), start=first_line):
        fields = line.count(b",") + 1
        if not line.rstrip(b"\r"):
            raise KlineFileError(f"{zip_name}: empty line {number}")
        if fields != len(CSV_COLUMNS):
            raise KlineFileError(
                f"{zip_name}: line {number}: {fields} columns, not {len(CSV_COLUMNS)}"
            )
    raise KlineFileError(f"{zip_name}: a line without {len(CSV_COLUMNS)} columns")


def _period(zip_name: str) -> tuple[dt.date, dt.date]:
    """The first and last day the zip's name says it covers."""
    match = _ZIP_NAME.fullmatch(zip_name)
    text = match.group("period") if match else ""
    try:
        if len(text) == len("YYYY-MM-DD"):
            day = dt.date.fromisoformat(text)
            return day, day
        month = dt.date.fromisoformat(text + "-01")
    except ValueError:
        raise KlineFileError(
            f"{zip_name}: not a kline zip name (<symbol>-<interval>-<YYYY-MM[-DD]>.zip)"
        ) from None
    return month, next_month(month) - dt.timedelta(days=1)


def _unzip(data: bytes, zip_name: str) -> bytes:
    """The bytes of the zip's one member, which must be `<zip name>.csv`."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise KlineFileError(f"{zip_name}: not a zip file") from None
    with archive:
        members = archive.infolist()
        if len(members) != 1:
            raise KlineFileError(f"{zip_name}: {len(members)} members, not one CSV")
        member = members[0]
        expected = zip_name.removesuffix(".zip") + ".csv"
        if _member_name(member) != expected:
            raise KlineFileError(f"{zip_name}: member {member.filename!r}, not {expected!r}")
        if member.file_size > MAX_MEMBER_BYTES:
            raise KlineFileError(f"{zip_name}: member of {member.file_size} bytes, too large")
        try:
            return _inflate(data, member) or archive.read(member)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as exc:
            raise KlineFileError(f"{zip_name}: unreadable member ({exc})") from None


def _member_name(member: zipfile.ZipInfo) -> str:
    """The member's name as its writer meant it.

    Without the zip's UTF-8 flag zipfile decodes a name as cp437, but many writers store UTF-8
    bytes without setting the flag: a non-ASCII symbol's member would then never match its zip.
    """
    if member.flag_bits & UTF8_NAME_FLAG:
        return member.filename
    try:
        return member.filename.encode("cp437").decode("utf-8")
    except UnicodeError:
        return member.filename


def _inflate(data: bytes, member: zipfile.ZipInfo) -> bytes | None:
    """The member's bytes, CRC checked, for the plain case (deflated, unencrypted); None for
    anything else, which zipfile reads instead.

    zipfile's own read costs ~70 us of Python per member, a full backfill's largest CPU cost;
    one zlib call over the slice the central directory points at costs ~10 us.
    """
    if member.compress_type != zipfile.ZIP_DEFLATED or member.flag_bits & 0x1:
        return None
    header = data[member.header_offset : member.header_offset + LOCAL_HEADER.size]
    if len(header) != LOCAL_HEADER.size:
        return None
    signature, name_length, extra_length = LOCAL_HEADER.unpack(header)
    if signature != LOCAL_SIGNATURE:
        return None
    start = member.header_offset + LOCAL_HEADER.size + name_length + extra_length
    compressed = data[start : start + member.compress_size]
    body = zlib.decompress(compressed, -zlib.MAX_WBITS, member.file_size or 1)
    if len(body) != member.file_size or zlib.crc32(body) != member.CRC:
        raise zipfile.BadZipFile("CRC or size of the member does not match the zip's directory")
    return body


def _has_header(csv: bytes, zip_name: str) -> bool:
    """Whether the CSV starts with the header row; refuses any other first line but data."""
    first_line = csv.split(b"\n", 1)[0].rstrip(b"\r")
    if not first_line:
        raise KlineFileError(f"{zip_name}: empty CSV" if not csv else f"{zip_name}: empty line 1")
    fields = first_line.count(b",") + 1
    if fields != len(CSV_COLUMNS):
        raise KlineFileError(f"{zip_name}: line 1: {fields} columns, not {len(CSV_COLUMNS)}")
    if first_line[:1].isdigit():
        return False
    if first_line == CSV_HEADER:
        return True
    shown = first_line[:120].decode("utf-8", errors="replace")
    raise KlineFileError(f"{zip_name}: header {shown!r} differs from Binance's kline header")


def _read_rows(rows: bytes) -> pl.DataFrame:
    """Header-less kline rows; a KlineFileError (without a file name) when polars refuses."""
    try:
        return pl.read_csv(rows, has_header=False, schema=CSV_COLUMNS)
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError) as exc:
        raise KlineFileError(_polars_reason(exc)) from None


def _polars_reason(exc: Exception) -> str:
    """polars' first line (its advice on schema inference does not apply to a fixed schema)."""
    first = str(exc).strip().split("\n", 1)[0]
    if "more fields than defined" in first:
        return f"a row with more than {len(CSV_COLUMNS)} columns"
    if "not found in CSV file" in first:
        return f"fewer than {len(CSV_COLUMNS)} columns"
    return first.replace("could not parse", "unparseable number")


def _annotate(frame: pl.DataFrame, members: Sequence[_Member]) -> pl.DataFrame:
    """Each row's file (its index in `members`) and that file's period."""
    files = pl.DataFrame(
        {
            "_file": range(len(members)),
            "_lines": [member.lines for member in members],
            "_start": [member.period[0] for member in members],
            "_end": [member.period[1] for member in members],
        },
        schema={"_file": pl.Int32, "_lines": pl.Int64, "_start": pl.Date, "_end": pl.Date},
    )
    per_row = files.select(pl.exclude("_lines").repeat_by(pl.col("_lines")).explode())
    return frame.hstack(per_row)


def _to_ms(column: str) -> pl.Expr:
    time = pl.col(column)
    return pl.when(time >= MICROSECONDS_FROM).then(time // 1000).otherwise(time)


_OPEN_MS = _to_ms("open_time")
_CLOSE_MS = _to_ms("close_time")
_DAY_NUMBER = _OPEN_MS // DAY_MS
_DATE = _DAY_NUMBER.cast(pl.Int32).cast(pl.Date)
# Each check, true on the rows that break it, with what the message says about such a row;
# in the order they are reported (a missing field makes every later check meaningless).
_PROBLEMS: dict[str, pl.Expr] = {
    "an empty or missing field": pl.any_horizontal(pl.exclude("ignore").is_null()),
    "a number that is not finite": ~pl.all_horizontal(pl.col(FIGURES).is_finite()),
    "a negative figure": pl.any_horizontal(pl.col(*FIGURES, "count") < 0),
    "open_time not at 00:00 UTC": _OPEN_MS % DAY_MS != 0,
    "close_time not open_time + 1 day - 1 ms": _CLOSE_MS != _OPEN_MS + (DAY_MS - 1),
    # The second time a day appears is the line named.
    "a day twice": ~pl.struct(pl.col("_file"), _DAY_NUMBER).is_first_distinct(),
    "a day outside the period its name gives": ~_DATE.is_between(pl.col("_start"), pl.col("_end")),
}


def _first_problem(frame: pl.DataFrame) -> str | None:
    """What the first check any row breaks says; None when every row passes every check."""
    flags = frame.select(
        problem.fill_null(False).any().alias(text) for text, problem in _PROBLEMS.items()
    ).row(0)
    return next((text for text, broken in zip(_PROBLEMS, flags, strict=True) if broken), None)


def _blame(members: Sequence[_Member]) -> NoReturn:
    """Raises the error of the first member that fails alone (the batch failed)."""
    for member in members:
        _check_alone(member)
    # Not reached unless a batch fails where none of its files does alone.
    raise KlineFileError(f"{members[0].zip_name} and {len(members) - 1} more: unreadable batch")


def _check_alone(member: _Member) -> None:
    """Reads one member by itself and raises, naming it and the line, if it is bad."""
    try:
        frame = _read_rows(member.rows)
    except KlineFileError as exc:
        raise KlineFileError(f"{member.zip_name}: {exc}") from None
    if frame.height != member.lines:
        raise KlineFileError(
            f"{member.zip_name}: {frame.height} rows read from {member.lines} lines"
        )
    frame = _annotate(frame, [member])
    problem = _first_problem(frame)
    if problem is not None:
        row = frame.select(_PROBLEMS[problem].fill_null(False).arg_true().first()).item()
        raise KlineFileError(f"{member.zip_name}: line {row + member.first_line}: {problem}")


def _kline_columns(frame: pl.DataFrame, sources: list[str]) -> pl.DataFrame:
    return (
        frame.select(
            _DATE.alias("date"),
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            pl.col("count").alias("trades"),
            "taker_buy_volume",
            "taker_buy_quote_volume",
            pl.lit(pl.Series(sources, dtype=pl.String)).gather(pl.col("_file")).alias("source"),
            "_file",
        )
        .sort("_file", "date")
        .drop("_file")
    )
