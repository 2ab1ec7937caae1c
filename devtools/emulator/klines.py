"""The emulated 1d klines: ground-truth values, their CSV text, and the zips that carry them.

Every figure is a pure function of (symbol, day, revision), so a day's row is the same in its
daily file and in its month's file, and tests can compute what the pipeline must have stored.
Revision 0 is the first upload; revision 1 is a correction (a re-upload with other volumes;
the prices stay). The CSV text is made first and the ground truth is parsed back from it, so
the two agree to the last bit whatever the rounding.

Prices follow a smooth per-symbol drift (a few slow waves on a log scale) with a little daily
noise, and a day opens at the previous day's close. Numbers are written as Binance writes
them: prices to the symbol's tick, base volumes to its lot size, quote volumes to the product
of both. Files of days before 2022 have no header row; later files start with HEADER.

Zips are written by hand (`_zip`), byte for byte what `zipfile` writes for one deflated
member with a fixed timestamp, because `zipfile`'s own bookkeeping costs more than the
compression of a one-row file, and a listing page needs the size and MD5 of 500 of them.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
import zlib
from collections.abc import Sequence
from datetime import date, timedelta
from functools import lru_cache
from typing import NamedTuple

HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
HEADER_FROM = date(2022, 1, 1)
"""Files whose first day is on or after this date start with HEADER."""
MS_PER_DAY = 86_400_000
MULTIPART_PERCENT = 1
"""Share of monthly files uploaded in two parts: their ETag is `<hex>-2`, not their MD5."""

_UNIX_EPOCH = date(1970, 1, 1).toordinal()
_HEADER_FROM = HEADER_FROM.toordinal()
_DAILY_NOISE = 0.03  # amplitude of a day's price noise, on a log scale
_RANGE = 0.04  # how far high and low reach beyond the open and close, at most
_CORRECTION = 0.0137  # a corrected file's volumes are this much larger per revision
_MIN_LOTS = 100  # a day's volume is at least this many lots, so taker buys stay below it
_LOG_PRICE = (math.log(0.0005), math.log(60_000.0))
_LOG_QUOTE_VOLUME = (math.log(2e5), math.log(5e9))
_TRADE_SIZE = (50.0, 2_000.0)
_WAVES = ((0.08, 20, 60), (0.25, 120, 300), (0.6, 500, 1200))  # (amplitude, period range)
# Well-known coins start near their real price; other symbols anywhere on the log scale.
_ANCHORS = (("BTC", 30_000.0), ("ETH", 2_000.0), ("BNB", 300.0), ("SOL", 60.0))
_DRAWS = hashlib.blake2b(digest_size=32, person=b"vision-kline")
_EIGHT = struct.Struct("<8L")
_UINT32 = 2.0**32
# Zip structures (PKWARE APPNOTE): a local header, the data, one central directory entry, the
# end record. "Made by" 0x0314 is Unix, spec 2.0; mode 0644 regular file; method 8 deflate.
_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_FILE_MODE = 0o100644 << 16


class Kline(NamedTuple):
    """One row of a 1d kline file, as Binance's columns name it."""

    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    close_time: int
    quote_volume: float
    count: int
    taker_buy_volume: float
    taker_buy_quote_volume: float
    ignore: int


class MonthRows(NamedTuple):
    """The rows of a monthly file, compactly (it keys caches): the days `first` through
    `last` (ordinals) but the `gaps`, those in `corrected` at revision 1."""

    first: int
    last: int
    gaps: tuple[int, ...] = ()
    corrected: tuple[int, ...] = ()

    def rows(self) -> list[tuple[int, int]]:
        """(day ordinal, revision) of each row."""
        gaps, corrected = set(self.gaps), set(self.corrected)
        return [
            (day, int(day in corrected))
            for day in range(self.first, self.last + 1)
            if day not in gaps
        ]


class ZipDigest(NamedTuple):
    """What a listing and a .CHECKSUM say about a zip: size, ETag (bare) and SHA-256."""

    size: int
    etag: str
    sha256: str


class _Model(NamedTuple):
    """A symbol's character: price level and drift, tick and lot sizes, activity."""

    seed: bytes  # what the day's draws are hashed from, with the day
    log_base: float
    waves: tuple[tuple[float, float, float], ...]  # (amplitude, angle per day, phase)
    qty_decimals: int
    line: str  # the CSV line's %-template, with the symbol's decimals
    log_quote_volume: float
    trade_size: float


@lru_cache(maxsize=4096)
def _model(symbol: str) -> _Model:
    rng = random.Random(f"kline/{symbol}")  # a str seed is hashed with SHA-512: stable
    anchor = dict(_ANCHORS).get(symbol.partition("USD")[0])
    log_base = math.log(anchor) if anchor else rng.uniform(*_LOG_PRICE)
    magnitude = math.floor(log_base / math.log(10))
    pd = min(7, max(2, 4 - magnitude))  # price decimals: the tick
    qd = min(3, max(0, magnitude))  # quantity decimals: the lot
    vd = min(8, pd + qd)  # quote decimals: a price times a quantity
    prices = ",".join([f"%.{pd}f"] * 4)
    return _Model(
        seed=symbol.encode() + b"\0",
        log_base=log_base,
        waves=tuple(
            (amplitude, math.tau / rng.uniform(low, high), rng.uniform(0, math.tau))
            for amplitude, low, high in _WAVES
        ),
        qty_decimals=qd,
        line=f"%d,{prices},%.{qd}f,%d,%.{vd}f,%d,%.{qd}f,%.{vd}f,0",
        log_quote_volume=rng.uniform(*_LOG_QUOTE_VOLUME),
        trade_size=rng.uniform(*_TRADE_SIZE),
    )


def _draws(model: _Model, ordinal: int) -> tuple[int, ...]:
    """Eight 32-bit draws for `model`'s symbol on the day `ordinal`."""
    hasher = _DRAWS.copy()
    hasher.update(model.seed + ordinal.to_bytes(4, "little"))
    return _EIGHT.unpack(hasher.digest())


def _price(model: _Model, ordinal: int, noise: int) -> float:
    """The price at the start of day `ordinal` (UTC midnight); `noise` is its first draw."""
    level = model.log_base
    for amplitude, angle, phase in model.waves:
        level += amplitude * math.sin(angle * ordinal + phase)
    return math.exp(level + _DAILY_NOISE * (2 * noise / _UINT32 - 1))


def _lines(model: _Model, first: int, stop: int, revision: int) -> list[str]:
    """CSV lines (no newlines) of the days `first` to `stop` - 1 (ordinals).

    A day opens at the price its own draws give and closes at the next day's, so each day's
    draws and price are computed once for the whole run of days. The hot loop of a listing
    of 1d files: names are bound locally, and draws scaled to [0, 1) by one multiplication.
    """
    draws = [_draws(model, ordinal) for ordinal in range(first, stop + 1)]
    prices = [_price(model, first + i, d[0]) for i, d in enumerate(draws)]
    exp, template, unit = math.exp, model.line, 1 / _UINT32
    min_volume = _MIN_LOTS * 10.0**-model.qty_decimals
    scale = 1 + _CORRECTION * revision
    open_ms = (first - _UNIX_EPOCH) * MS_PER_DAY
    lines = []
    for i in range(stop - first):
        opened, closed = prices[i], prices[i + 1]
        _, up, down, at, activity, buy_share, buy_at, size = draws[i]
        high = (opened if opened > closed else closed) * (1 + _RANGE * unit * up)
        low = (closed if opened > closed else opened) * (1 - _RANGE * unit * down)
        spread = high - low
        vwap = low + spread * (0.3 + 0.4 * unit * at)
        quote_target = scale * exp(model.log_quote_volume + 1.2 * (unit * activity - 0.5))
        # Unrounded figures: the text rounds them, and the ground truth is read from the text.
        volume = max(quote_target / vwap, min_volume)
        taker = volume * (0.4 + 0.2 * unit * buy_share)  # below 0.6 of >= 100 lots: less
        quote = volume * vwap
        trades = max(1, round(quote / (model.trade_size * (0.5 + unit * size))))
        taker_quote = taker * (low + spread * (0.3 + 0.4 * unit * buy_at))
        close_ms = open_ms + MS_PER_DAY - 1
        values = (open_ms, opened, high, low, closed, volume, close_ms, quote, trades, taker)
        lines.append(template % (*values, taker_quote))
        open_ms += MS_PER_DAY
    return lines


def _month_start(ordinal: int) -> int:
    day = date.fromordinal(ordinal)
    return ordinal - day.day + 1


@lru_cache(maxsize=1 << 12)
def _month_lines(symbol: str, month_start: int) -> tuple[str, ...]:
    """The first-upload lines of every day of a month, whether or not the symbol traded.

    Daily files and the monthly file of one month share them.
    """
    next_month = (date.fromordinal(month_start) + timedelta(days=31)).replace(day=1)
    return tuple(_lines(_model(symbol), month_start, next_month.toordinal(), 0))


def kline_line(symbol: str, ordinal: int, revision: int = 0) -> str:
    """The CSV line (no newline) of `symbol`'s 1d kline of the day `ordinal`.

    A correction (`revision` > 0) scales the volumes and nothing else.
    """
    if revision:
        return _lines(_model(symbol), ordinal, ordinal + 1, revision)[0]
    month_start = _month_start(ordinal)
    return _month_lines(symbol, month_start)[ordinal - month_start]


def parse_line(line: str) -> Kline:
    """A Kline from one CSV line: the ground truth is what the file says."""
    f = line.split(",")
    return Kline(
        int(f[0]),
        *(float(x) for x in f[1:6]),
        int(f[6]),
        float(f[7]),
        int(f[8]),
        float(f[9]),
        float(f[10]),
        int(f[11]),
    )


def kline(symbol: str, day: date, revision: int = 0) -> Kline:
    """The ground-truth 1d kline of `symbol` on `day` (revision 1: after a correction)."""
    return parse_line(kline_line(symbol, day.toordinal(), revision))


def csv_bytes(symbol: str, rows: Sequence[tuple[int, int]]) -> bytes:
    """A file's CSV for `rows` of (day ordinal, revision); a header if its first day is 2022+."""
    lines = [kline_line(symbol, ordinal, revision) for ordinal, revision in rows]
    if rows and rows[0][0] >= _HEADER_FROM:
        lines.insert(0, HEADER)
    return ("\n".join(lines) + "\n").encode()


def _dos_stamp(day: date) -> tuple[int, int]:
    """(time, date) of midnight on `day` in the zip format's MS-DOS encoding."""
    return 0, (day.year - 1980) << 9 | day.month << 5 | day.day


def _zip(member: str, data: bytes, stamp: date) -> bytes:
    """A zip holding `data` as `member`, deflated, stamped at midnight on `stamp`."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    packed = compressor.compress(data) + compressor.flush()
    name = member.encode()
    crc = zlib.crc32(data)
    dos_time, dos_date = _dos_stamp(stamp)
    common = (dos_time, dos_date, crc, len(packed), len(data), len(name))
    local = _LOCAL.pack(b"PK\x03\x04", 20, 0, 8, *common, 0)
    central = _CENTRAL.pack(b"PK\x01\x02", 0x0314, 20, 0, 8, *common, 0, 0, 0, 0, _FILE_MODE, 0)
    directory_at = len(local) + len(name) + len(packed)
    end = _END.pack(b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name), directory_at, 0)
    return b"".join((local, name, packed, central, name, end))


@lru_cache(maxsize=1 << 12)
def daily_zip(symbol: str, ordinal: int, revision: int) -> bytes:
    """The daily 1d file of `symbol` for the day `ordinal`."""
    day = date.fromordinal(ordinal)
    member = f"{symbol}-1d-{day.isoformat()}.csv"
    return _zip(member, csv_bytes(symbol, [(ordinal, revision)]), day + timedelta(days=1))


@lru_cache(maxsize=1 << 12)
def monthly_zip(symbol: str, month: str, rows: MonthRows) -> bytes:
    """The monthly 1d file of `symbol` for `month` (YYYY-MM) holding `rows`."""
    first = date.fromisoformat(month + "-01")
    next_month = (first + timedelta(days=31)).replace(day=1)
    return _zip(f"{symbol}-1d-{month}.csv", csv_bytes(symbol, rows.rows()), next_month)


def _digest(body: bytes, *, multipart: bool) -> ZipDigest:
    if multipart:
        # S3's ETag of a multipart upload: the MD5 of the parts' MD5s, and the part count.
        half = (len(body) + 1) // 2
        parts = hashlib.md5(body[:half]).digest() + hashlib.md5(body[half:]).digest()
        etag = hashlib.md5(parts).hexdigest() + "-2"
    else:
        etag = hashlib.md5(body).hexdigest()
    return ZipDigest(len(body), etag, hashlib.sha256(body).hexdigest())


@lru_cache(maxsize=1 << 16)
def daily_digest(symbol: str, ordinal: int, revision: int) -> ZipDigest:
    return _digest(daily_zip(symbol, ordinal, revision), multipart=False)


def is_multipart(symbol: str, month: str) -> bool:
    """Whether the monthly file of `symbol` for `month` was uploaded in two parts."""
    return zlib.crc32(f"{symbol}-1d-{month}".encode()) % 100 < MULTIPART_PERCENT


@lru_cache(maxsize=1 << 16)
def monthly_digest(symbol: str, month: str, rows: MonthRows) -> ZipDigest:
    body = monthly_zip(symbol, month, rows)
    return _digest(body, multipart=is_multipart(symbol, month))


def checksum_body(digest: ZipDigest, zip_name: str) -> bytes:
    """A .CHECKSUM file: the zip's SHA-256, two spaces, its name, a newline."""
    return f"{digest.sha256}  {zip_name}\n".encode()
