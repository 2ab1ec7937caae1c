"""The emulated bucket's contents: which daily files exist on which day, and how they list.

A `Universe` says, per symbol, over which date spans it had daily files, which days are missing
and which were published late. Everything the emulator serves is derived from it on the fly:
the full-scale universe holds millions of keys, so instead of materialising key strings we
keep, per (symbol, interval) folder, a compact sorted array of visible day ordinals and
generate key strings only for the page being listed. The intervals' files (1m by default) have
metadata (size, ETag, Last-Modified) and pseudo-random bodies that are pure functions of the
key, so two runs against the same universe see identical bytes.

Beside them (unless `kline_1d` is false) the bucket holds the 1d klines (`klines`): a daily
file for each day the intervals have one, and a monthly file for each complete month with a
kline day, published on day 1 to 3 of the next month. A month's file holds exactly the rows
the daily files of its days hold, including days whose daily file is still late; a missing day
is in neither. These are real zips whose ETag is their MD5 (but for the few monthly files
uploaded in two parts), with .CHECKSUM files that match; `Universe.kline_rows` is the ground
truth a volume dataset built from them must equal. Their bytes are built when listed or
fetched, and kept in bounded caches.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

from devtools.emulator import klines

BUCKET = "data.binance.vision"
ZIP_SUFFIX = ".zip"
CHECKSUM_SUFFIX = ".CHECKSUM"
# Each visible day has two keys, in this order (a string sorts before its own extensions).
_DAY_SUFFIXES = (ZIP_SUFFIX, ZIP_SUFFIX + CHECKSUM_SUFFIX)
# Sorts after every key that starts with a given string (no real key holds U+10FFFF).
_AFTER_ALL = "\U0010ffff"

_ZIP_MIN_SIZE = 20_000
_ZIP_MAX_SIZE = 2_000_000
# Real Binance Vision files published before 2021 were partly re-uploaded in 2022.
_UNIX_EPOCH = date(1970, 1, 1).toordinal()
_REUPLOAD_BEFORE = date(2021, 1, 1).toordinal()
_REUPLOAD_PERMILLE = 30
_REUPLOAD_YEAR_START = (date(2022, 1, 1).toordinal() - _UNIX_EPOCH) * 86400
_YEAR_S = 365 * 86400
# A day's file appears a few hours to a couple of days after the day ends.
_PUBLISH_MIN_DELAY_S = 2 * 3600
_PUBLISH_DELAY_RANGE_S = 46 * 3600
_SHA256_HEX_LEN = 64
_KEY_HASHER = hashlib.blake2b(digest_size=20, person=b"vision-meta")
# A .CHECKSUM is uploaded right after its zip.
_CHECKSUM_LAG = timedelta(seconds=1)
_REUPLOAD_HOUR = timedelta(hours=3)
# 1d klines are served beside the universe's intervals, daily and monthly.
KLINE_1D = "1d"
_MONTHLY_DELAY_DAYS = 3
_DAY_S = 86400

Span = tuple[date, date | None]


class ObjectMeta(NamedTuple):
    """What a listing or HEAD tells about one object; `etag` is bare hex, without quotes."""

    size: int
    etag: str
    last_modified: datetime


class KlineRow(NamedTuple):
    """A day's 1d kline as the volume dataset must hold it (its columns, in its order)."""

    date: date
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    taker_buy_volume: float
    taker_buy_quote_volume: float
    source: str
    source_etag: str
    source_size: int


def _kline_row(symbol: str, day: int, source: str, meta: ObjectMeta, revision: int) -> KlineRow:
    k = klines.parse_line(klines.kline_line(symbol, day, revision))
    return KlineRow(
        date.fromordinal(day),
        symbol,
        k.open,
        k.high,
        k.low,
        k.close,
        k.volume,
        k.quote_volume,
        k.count,
        k.taker_buy_volume,
        k.taker_buy_quote_volume,
        source,
        meta.etag,
        meta.size,
    )


@dataclass(frozen=True, slots=True)
class ListPage:
    """One ListObjects page; `last_returned` is the last key or CommonPrefix on it."""

    keys: list[tuple[str, ObjectMeta]]
    common_prefixes: list[str]
    is_truncated: bool
    last_returned: str | None


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _as_optional_date(value: date | str | None) -> date | None:
    return None if value is None else _as_date(value)


@dataclass(frozen=True)
class SymbolSpec:
    """One symbol's listing history: spans are inclusive, an open end means still listed."""

    spans: tuple[Span, ...]
    missing: frozenset[date] = frozenset()
    late: Mapping[date, date] = field(default_factory=dict)
    reuploaded: Mapping[date, date] = field(default_factory=dict)
    """Days whose zip was uploaded again (new bytes, ETag and time), and on which date."""
    reuploaded_1d: Mapping[date, date] = field(default_factory=dict)
    """Days whose 1d kline was corrected, and on which date: the day's 1d file and its
    .CHECKSUM are uploaded again that day, and so is its month's file if already published."""

    @classmethod
    def build(
        cls,
        spans: Iterable[Sequence[date | str | None]],
        missing: Iterable[date | str] = (),
        late: Mapping[date | str, date | str] | None = None,
        reuploaded: Mapping[date | str, date | str] | None = None,
        reuploaded_1d: Mapping[date | str, date | str] | None = None,
    ) -> SymbolSpec:
        """Accept ISO strings or dates, so that tests and JSON share one constructor."""
        parsed: list[Span] = []
        for span in spans:
            if len(span) != 2 or span[0] is None:
                raise ValueError(f"a span is [start, end or null], got {list(span)!r}")
            start, end = _as_date(span[0]), _as_optional_date(span[1])
            if end is not None and end < start:
                raise ValueError(f"span ends before it starts: {start}..{end}")
            parsed.append((start, end))
        return cls(
            spans=tuple(sorted(parsed)),
            missing=frozenset(_as_date(day) for day in missing),
            late=_day_map(late),
            reuploaded=_day_map(reuploaded),
            reuploaded_1d=_day_map(reuploaded_1d),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "spans": [[start.isoformat(), end and end.isoformat()] for start, end in self.spans]
        }
        if self.missing:
            out["missing"] = [day.isoformat() for day in sorted(self.missing)]
        for name in ("late", "reuploaded", "reuploaded_1d"):
            if days := getattr(self, name):
                out[name] = {day.isoformat(): when.isoformat() for day, when in days.items()}
        return out

    def reuploads_seen(self, today: date, *, kline_1d: bool = False) -> dict[int, date]:
        """Ordinals of the days whose re-upload has happened by `today`, and when it did.

        `kline_1d`: the corrections of the 1d klines instead of the interval files' re-uploads.
        """
        days = self.reuploaded_1d if kline_1d else self.reuploaded
        return {day.toordinal(): on for day, on in days.items() if on <= today}

    def kline_days(self, first: int, last: int) -> list[int]:
        """Ordinals from `first` through `last` in a span and not missing: the days whose 1d
        kline the monthly files hold (late publishing delays daily files only)."""
        days: set[int] = set()
        for start, end in self.spans:
            stop = last if end is None else min(end.toordinal(), last)
            days.update(range(max(start.toordinal(), first), stop + 1))
        return sorted(days - {day.toordinal() for day in self.missing})

    def kline_months(self, before: int) -> list[int]:
        """Month numbers (`_month_number`) before `before` holding at least one kline day."""
        months: set[int] = set()
        for start, end in self.spans:
            last = before - 1 if end is None else min(_month_number(end), before - 1)
            months.update(range(_month_number(start), last + 1))
        # Only a month with missing days can have none left.
        for m in {_month_number(day) for day in self.missing} & months:
            first = _month_first(m).toordinal()
            if not self.kline_days(first, _month_first(m + 1).toordinal() - 1):
                months.discard(m)
        return sorted(months)

    def visible_ordinals(self, today: date) -> array[int]:
        """Sorted ordinals of the days whose file can be seen on `today`."""
        last = today.toordinal() - 1
        hidden = {day.toordinal() for day in self.missing}
        hidden.update(day.toordinal() for day, shown in self.late.items() if today < shown)
        days: array[int] = array("i")
        for start, end in self.spans:
            stop = last if end is None else min(end.toordinal(), last)
            span = range(start.toordinal(), stop + 1)
            days.extend(span if not hidden else (o for o in span if o not in hidden))
        # Overlapping spans would repeat days; a sorted set keeps the key order strict.
        return days if _strictly_increasing(days) else array("i", sorted(set(days)))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _strictly_increasing(days: array[int]) -> bool:
    return all(a < b for a, b in pairwise(days))


def _day_map(days: Mapping[date | str, date | str] | None) -> dict[date, date]:
    return dict(sorted((_as_date(day), _as_date(when)) for day, when in (days or {}).items()))


def _month_number(day: date) -> int:
    """Months counted from year 0, so consecutive months have consecutive numbers."""
    return day.year * 12 + day.month - 1


def _month_first(month: int) -> date:
    return date(month // 12, month % 12 + 1, 1)


@lru_cache(maxsize=1 << 12)
def _month_text(month: int) -> str:
    return f"{month // 12:04d}-{month % 12 + 1:02d}"


@lru_cache(maxsize=1 << 14)
def _iso(ordinal: int) -> str:
    return date.fromordinal(ordinal).isoformat()


def _hash(key_bytes: bytes) -> bytes:
    """20 bytes drawn from a key: 16 for its ETag, 4 for its size."""
    hasher = _KEY_HASHER.copy()  # cheaper than building a personalised hasher per key
    hasher.update(key_bytes)
    return hasher.digest()


def _zip_size(raw: bytes) -> int:
    return _ZIP_MIN_SIZE + int.from_bytes(raw[16:]) % (_ZIP_MAX_SIZE - _ZIP_MIN_SIZE + 1)


def _checksum_size(zip_name_bytes: int) -> int:
    """Length of `<sha256 hex>  <zip name>\n`."""
    return _SHA256_HEX_LEN + 2 + zip_name_bytes + 1


def _published(day: int, zip_key_bytes: bytes) -> int:
    """When a day's zip appeared, in Unix seconds: hours after the day ends, or a 2022 re-upload.

    A CRC drives it rather than a cryptographic hash because a listing page needs 1000 of them.
    """
    bits = zlib.crc32(zip_key_bytes)
    if day < _REUPLOAD_BEFORE and bits % 1000 < _REUPLOAD_PERMILLE:
        return _REUPLOAD_YEAR_START + (bits >> 10) * 7 % _YEAR_S
    day_end = (day + 1 - _UNIX_EPOCH) * 86400
    return day_end + _PUBLISH_MIN_DELAY_S + (bits >> 10) % _PUBLISH_DELAY_RANGE_S


def object_meta(key: str, *, reuploaded_on: date | None = None) -> ObjectMeta:
    """Size, ETag and Last-Modified of a daily file or its .CHECKSUM, derived from the key.

    A .CHECKSUM is published a second after its zip, and its size is that of its body. A zip
    re-uploaded on `reuploaded_on` has other bytes (size and ETag) and that day's time; its
    .CHECKSUM is left as it was. Raises ValueError for a key that is not a daily file.
    """
    zip_key = key.removesuffix(CHECKSUM_SUFFIX)
    if not zip_key.endswith(ZIP_SUFFIX):
        raise ValueError(f"not a daily file: {key!r}")
    day = date.fromisoformat(zip_key[-len(ZIP_SUFFIX) - 10 : -len(ZIP_SUFFIX)]).toordinal()
    zip_key_bytes = zip_key.encode()
    if zip_key == key and reuploaded_on is not None:
        raw = _hash(zip_key_bytes + b"@" + reuploaded_on.isoformat().encode())
        when = datetime.combine(reuploaded_on, datetime.min.time(), UTC) + _REUPLOAD_HOUR
        return ObjectMeta(_zip_size(raw), raw[:16].hex(), when)
    published = datetime.fromtimestamp(_published(day, zip_key_bytes), UTC)
    if zip_key == key:
        raw = _hash(zip_key_bytes)
        return ObjectMeta(_zip_size(raw), raw[:16].hex(), published)
    zip_name_bytes = len(zip_key_bytes) - zip_key_bytes.rfind(b"/") - 1
    etag = _hash(key.encode())[:16].hex()
    return ObjectMeta(_checksum_size(zip_name_bytes), etag, published + _CHECKSUM_LAG)


class _Folder:
    """One (symbol, interval) folder: a lazy, sorted sequence of its keys."""

    __slots__ = ("checksum_size", "days", "path", "reuploads", "stem")

    def __init__(
        self, path: str, stem: str, days: array[int], reuploads: Mapping[int, date]
    ) -> None:
        self.path = path
        self.stem = stem
        self.days = days
        self.reuploads = reuploads
        # Every zip name in a folder has the same length: `{stem}YYYY-MM-DD.zip`.
        name_bytes = len(stem[len(path) :].encode()) + len("YYYY-MM-DD") + len(ZIP_SUFFIX)
        self.checksum_size = _checksum_size(name_bytes)

    def __len__(self) -> int:
        return 2 * len(self.days)

    def __getitem__(self, i: int) -> str:
        return self.stem + _iso(self.days[i >> 1]) + _DAY_SUFFIXES[i & 1]

    def day_of(self, key: str) -> int:
        return date.fromisoformat(key[len(self.stem) : len(self.stem) + 10]).toordinal()

    def meta(self, key: str) -> ObjectMeta:
        return object_meta(key, reuploaded_on=self.reuploads.get(self.day_of(key)))

    def body(self, key: str) -> bytes:
        return object_body(key, self.meta(key))

    def keys_from(self, i: int) -> Iterator[tuple[str, ObjectMeta]]:
        return _folder_keys(self, i)

    def contains(self, name: str) -> bool:
        """Whether the file `name` (a key without the folder's path) is listed today."""
        if not name.startswith(self.stem[len(self.path) :]):
            return False
        day_text = name[len(self.stem) - len(self.path) :]
        if day_text[10:] not in _DAY_SUFFIXES:
            return False
        ordinal = _parse_day(day_text[:10])
        if ordinal is None:
            return False
        position = bisect_left(self.days, ordinal)
        return position < len(self.days) and self.days[position] == ordinal


def _parse_day(text: str) -> int | None:
    """The ordinal of a YYYY-MM-DD date, None for anything else (other ISO spellings too)."""
    try:
        ordinal = date.fromisoformat(text).toordinal()
    except ValueError:
        return None
    return ordinal if _iso(ordinal) == text else None


def _reupload_time(on: date) -> datetime:
    return datetime.combine(on, datetime.min.time(), UTC) + _REUPLOAD_HOUR


def _checksum_meta(body: bytes, zip_time: datetime) -> ObjectMeta:
    return ObjectMeta(len(body), hashlib.md5(body).hexdigest(), zip_time + _CHECKSUM_LAG)


class _DailyKlineFolder(_Folder):
    """A symbol's daily 1d klines: real zips whose ETag is their MD5, on the 1m files' days.

    `reuploads` holds the corrections seen today: those days' files have the corrected
    content, uploaded (with their .CHECKSUM) on the correction's date.
    """

    __slots__ = ("symbol",)

    def __init__(
        self, path: str, symbol: str, days: array[int], corrections: Mapping[int, date]
    ) -> None:
        super().__init__(path, f"{path}{symbol}-{KLINE_1D}-", days, corrections)
        self.symbol = symbol

    def _day(self, day: int) -> tuple[klines.ZipDigest, str, datetime]:
        """The zip's digest, name and Last-Modified of the file of `day`."""
        name = f"{self.stem[len(self.path) :]}{_iso(day)}{ZIP_SUFFIX}"
        corrected_on = self.reuploads.get(day)
        digest = klines.daily_digest(self.symbol, day, 0 if corrected_on is None else 1)
        if corrected_on is not None:
            return digest, name, _reupload_time(corrected_on)
        published = _published(day, (self.path + name).encode())
        return digest, name, datetime.fromtimestamp(published, UTC)

    def _metas(self, day: int) -> tuple[ObjectMeta, ObjectMeta]:
        digest, name, when = self._day(day)
        zip_meta = ObjectMeta(digest.size, digest.etag, when)
        return zip_meta, _checksum_meta(klines.checksum_body(digest, name), when)

    def meta(self, key: str) -> ObjectMeta:
        return self._metas(self.day_of(key))[key.endswith(CHECKSUM_SUFFIX)]

    def body(self, key: str) -> bytes:
        day = self.day_of(key)
        digest, name, _ = self._day(day)
        if key.endswith(CHECKSUM_SUFFIX):
            return klines.checksum_body(digest, name)
        return klines.daily_zip(self.symbol, day, int(day in self.reuploads))

    def sources(self, low: int, high: int) -> Iterator[tuple[int, tuple[str, ObjectMeta, int]]]:
        """(day, (zip key, its meta, revision)) of the days from `low` through `high`."""
        for day in self.days[bisect_left(self.days, low) : bisect_right(self.days, high)]:
            key = f"{self.stem}{_iso(day)}{ZIP_SUFFIX}"
            yield day, (key, self._metas(day)[0], int(day in self.reuploads))

    def keys_from(self, i: int) -> Iterator[tuple[str, ObjectMeta]]:
        for j in range(i >> 1, len(self.days)):
            day = self.days[j]
            base = self.stem + _iso(day)
            zip_meta, checksum_meta = self._metas(day)
            if j > i >> 1 or not i & 1:
                yield base + ZIP_SUFFIX, zip_meta
            yield base + ZIP_SUFFIX + CHECKSUM_SUFFIX, checksum_meta


class _MonthlyKlineFolder:
    """A symbol's monthly 1d klines: a zip (and .CHECKSUM) per published complete month.

    A month's file holds one row per day of the month with a kline (`SymbolSpec.kline_days`),
    each as the day's daily file has it: corrected if its correction happened by today.
    """

    __slots__ = ("corrections", "months", "path", "spec", "stem", "symbol")

    def __init__(
        self, path: str, symbol: str, spec: SymbolSpec, months: array[int], today: date
    ) -> None:
        self.path = path
        self.stem = f"{path}{symbol}-{KLINE_1D}-"
        self.symbol = symbol
        self.spec = spec
        self.months = months
        self.corrections = spec.reuploads_seen(today, kline_1d=True)

    def __len__(self) -> int:
        return 2 * len(self.months)

    def __getitem__(self, i: int) -> str:
        return self.stem + _month_text(self.months[i >> 1]) + _DAY_SUFFIXES[i & 1]

    def month_of(self, key: str) -> int:
        text = key[len(self.stem) : len(self.stem) + 7]
        return int(text[:4]) * 12 + int(text[5:]) - 1

    def rows(self, month: int) -> klines.MonthRows:
        """The rows of the month's file (which days, which of them corrected)."""
        first = _month_first(month).toordinal()
        days = self.spec.kline_days(first, _month_first(month + 1).toordinal() - 1)
        held = set(days)
        return klines.MonthRows(
            days[0],
            days[-1],
            tuple(day for day in range(days[0], days[-1]) if day not in held),
            tuple(day for day in days if day in self.corrections),
        )

    def _month(self, month: int) -> tuple[klines.ZipDigest, str, datetime]:
        """The zip's digest, name and Last-Modified of the file of `month`."""
        text = _month_text(month)
        name = f"{self.stem[len(self.path) :]}{text}{ZIP_SUFFIX}"
        rows = self.rows(month)
        when = _monthly_published(name, month)
        for day in rows.corrected:  # each re-uploaded the file, unless it was not out yet
            when = max(when, _reupload_time(self.corrections[day]))
        return klines.monthly_digest(self.symbol, text, rows), name, when

    def meta(self, key: str) -> ObjectMeta:
        digest, name, when = self._month(self.month_of(key))
        if key.endswith(CHECKSUM_SUFFIX):
            return _checksum_meta(klines.checksum_body(digest, name), when)
        return ObjectMeta(digest.size, digest.etag, when)

    def body(self, key: str) -> bytes:
        month = self.month_of(key)
        if key.endswith(CHECKSUM_SUFFIX):
            digest, name, _ = self._month(month)
            return klines.checksum_body(digest, name)
        return klines.monthly_zip(self.symbol, _month_text(month), self.rows(month))

    def sources(self, low: int, high: int) -> Iterator[tuple[int, tuple[str, ObjectMeta, int]]]:
        """(day, (zip key, its meta, revision)) of the rows of the days `low` through `high`."""
        for i, month in enumerate(self.months):
            if _month_first(month + 1).toordinal() <= low or _month_first(month).toordinal() > high:
                continue
            key = self[2 * i]
            meta = self.meta(key)
            for day, revision in self.rows(month).rows():
                if low <= day <= high:
                    yield day, (key, meta, revision)

    def keys_from(self, i: int) -> Iterator[tuple[str, ObjectMeta]]:
        for j in range(i, len(self)):
            key = self[j]
            yield key, self.meta(key)

    def contains(self, name: str) -> bool:
        prefix = self.stem[len(self.path) :]
        text = name[len(prefix) : len(prefix) + 7]
        if not name.startswith(prefix) or name[len(prefix) + 7 :] not in _DAY_SUFFIXES:
            return False
        ordinal = _parse_day(text + "-01")
        if ordinal is None:
            return False
        month = _month_number(date.fromordinal(ordinal))
        position = bisect_left(self.months, month)
        return position < len(self.months) and self.months[position] == month


def _monthly_published(name: str, month: int) -> datetime:
    """When a month's file appeared: on day 1, 2 or 3 of the next month."""
    bits = zlib.crc32(name.encode())
    start = datetime.combine(_month_first(month + 1), datetime.min.time(), UTC)
    return start + timedelta(days=bits % _MONTHLY_DELAY_DAYS, seconds=(bits >> 8) % _DAY_S)


def _monthly_months(spec: SymbolSpec, name_prefix: str, today: date) -> array[int]:
    """The months whose file is visible on `today`: complete, published, not empty."""
    return array(
        "i",
        (
            month
            for month in spec.kline_months(before=_month_number(today))
            if _monthly_published(f"{name_prefix}{_month_text(month)}{ZIP_SUFFIX}", month).date()
            < today
        ),
    )


_Listable = _Folder | _MonthlyKlineFolder


class _KeySpace:
    """All keys of the bucket as one lazy sorted sequence, so `bisect` can find a start."""

    def __init__(self, folders: list[_Listable]) -> None:
        self.folders = folders
        self.offsets: list[int] = []
        total = 0
        for folder in folders:
            self.offsets.append(total)
            total += len(folder)
        self.total = total

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i: int) -> str:
        f = bisect_right(self.offsets, i) - 1
        return self.folders[f][i - self.offsets[f]]

    def locate(self, i: int) -> tuple[int, int]:
        """(folder index, index inside it) of global key position `i`."""
        if i >= self.total:
            return len(self.folders), 0
        f = bisect_right(self.offsets, i) - 1
        return f, i - self.offsets[f]


class _Index:
    """The listing view of a universe on its `today`, built once and then read-only."""

    def __init__(self, universe: Universe) -> None:
        root = universe.root
        visible = {
            name: days
            for name, spec in universe.specs.items()
            if len(days := spec.visible_ordinals(universe.today))
        }
        today = universe.today
        folders: list[_Listable] = [
            _Folder(
                path=f"{root}{name}/{interval}/",
                stem=f"{root}{name}/{interval}/{name}-{interval}-",
                days=days,
                reuploads=universe.specs[name].reuploads_seen(today),
            )
            for name, days in visible.items()
            for interval in universe.intervals
        ]
        if universe.kline_1d:
            folders += [
                _DailyKlineFolder(
                    f"{root}{name}/{KLINE_1D}/",
                    name,
                    days,
                    universe.specs[name].reuploads_seen(today, kline_1d=True),
                )
                for name, days in visible.items()
            ]
            for name, spec in universe.specs.items():
                months = _monthly_months(spec, f"{name}-{KLINE_1D}-", today)
                if months:
                    path = f"{universe.monthly_root}{name}/{KLINE_1D}/"
                    folders.append(_MonthlyKlineFolder(path, name, spec, months, today))
        # Folder paths end in "/" and symbols hold no "/", so no folder's keys interleave with
        # another's: sorting folders by path sorts the whole key space.
        folders.sort(key=lambda folder: folder.path)
        self.by_path = {folder.path: folder for folder in folders}
        self.space = _KeySpace(folders)
        self.symbols = tuple(sorted(visible)) if universe.intervals or universe.kline_1d else ()
        self.visible = visible

    def has_key(self, key: str) -> bool:
        folder_path, _, name = key.rpartition("/")
        folder = self.by_path.get(folder_path + "/")
        return folder is not None and folder.contains(name)

    def entries(
        self, prefix: str, delimiter: str | None, start_after: str | None
    ) -> Iterator[tuple[str, ObjectMeta | None]]:
        """Listing entries after `start_after` in key order: (key, meta) or (CommonPrefix, None).

        A CommonPrefix is an entry of its own: it is returned once, and only when it sorts
        after `start_after`, so a listing continued from a CommonPrefix moves past it.
        """
        space = self.space
        start = bisect_left(space, prefix)
        if start_after:
            start = max(start, bisect_right(space, start_after))
        f, i = space.locate(start)
        last_common: str | None = None
        while f < len(space.folders):
            folder = space.folders[f]
            if folder.path.startswith(prefix):
                cut = folder.path.find(delimiter, len(prefix)) if delimiter else -1
                if cut >= 0:
                    # The whole folder rolls up into one CommonPrefix; the next may share it.
                    common = folder.path[: cut + len(delimiter or "")]
                    if common != last_common and (not start_after or common > start_after):
                        yield common, None
                    last_common = common
                elif delimiter:
                    yield from _folder_entries(folder, i, prefix, delimiter, start_after)
                else:
                    yield from folder.keys_from(i)
            elif prefix.startswith(folder.path):
                # The prefix reaches into this folder's file names: no other folder matches.
                yield from _folder_entries(folder, i, prefix, delimiter, start_after)
                return
            else:
                return  # past every key that starts with the prefix
            f, i = f + 1, 0


def _folder_keys(folder: _Folder, i: int) -> Iterator[tuple[str, ObjectMeta]]:
    """Every key of `folder` from position `i`, with its metadata: a listing's hot path.

    Same results as `object_meta`, computed a day at a time so the zip and its .CHECKSUM
    share the day's parsing and publication time.
    """
    stem, days, checksum_size = folder.stem, folder.days, folder.checksum_size
    zip_suffix, checksum_suffix = _DAY_SUFFIXES
    if i & 1:
        key = stem + _iso(days[i >> 1]) + checksum_suffix
        yield key, object_meta(key)
        i += 1
    for day in days[i >> 1 :]:
        base = stem + _iso(day)
        zip_key = base + zip_suffix
        if day in folder.reuploads:
            yield zip_key, folder.meta(zip_key)
            checksum_key = base + checksum_suffix
            yield checksum_key, object_meta(checksum_key)
            continue
        zip_key_bytes = zip_key.encode()
        raw = _hash(zip_key_bytes)
        published = datetime.fromtimestamp(_published(day, zip_key_bytes), UTC)
        yield zip_key, ObjectMeta(_zip_size(raw), raw[:16].hex(), published)
        checksum_key = base + checksum_suffix
        etag = _hash(checksum_key.encode())[:16].hex()
        yield checksum_key, ObjectMeta(checksum_size, etag, published + _CHECKSUM_LAG)


def _folder_entries(
    folder: _Listable, i: int, prefix: str, delimiter: str | None, start_after: str | None
) -> Iterator[tuple[str, ObjectMeta | None]]:
    """Entries of `folder` when the prefix or the delimiter reaches into its file names."""
    n = len(folder)
    while i < n:
        key = folder[i]
        if not key.startswith(prefix):
            return
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut < 0:
            yield key, folder.meta(key)
            i += 1
            continue
        common = key[: cut + len(delimiter or "")]
        if not start_after or common > start_after:
            yield common, None
        i = bisect_left(folder, common + _AFTER_ALL, i, n)


@dataclass(frozen=True)
class Universe:
    """Which files the bucket holds on `today`: the intervals' daily files, and the 1d klines
    that follow from them (`kline_1d`). Immutable, edited by making new ones."""

    today: date
    specs: Mapping[str, SymbolSpec] = field(hash=False)
    market: str = "um"
    data_type: str = "klines"
    intervals: tuple[str, ...] = ("1m",)
    kline_1d: bool = True
    """Serve 1d klines too: daily files beside the intervals', and monthly files."""

    def __post_init__(self) -> None:
        for name in self.specs:
            if not name or "/" in name:
                raise ValueError(f"a symbol name must be non-empty and hold no '/': {name!r}")
        for part in (self.market, self.data_type, *self.intervals):
            if not part or "/" in part:
                raise ValueError(f"a path part must be non-empty and hold no '/': {part!r}")
        if not isinstance(self.kline_1d, bool):
            raise ValueError(f"kline_1d must be true or false, got {self.kline_1d!r}")
        if self.kline_1d and KLINE_1D in self.intervals:
            raise ValueError(f"{KLINE_1D!r} files are the 1d klines: leave it out of intervals")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Universe:
        try:
            symbols = d["symbols"]
            return cls(
                today=_as_date(d["today"]),
                specs={
                    name: SymbolSpec.build(
                        spec["spans"],
                        spec.get("missing", ()),
                        spec.get("late"),
                        spec.get("reuploaded"),
                        spec.get("reuploaded_1d"),
                    )
                    for name, spec in symbols.items()
                },
                market=d.get("market", "um"),
                data_type=d.get("data_type", "klines"),
                intervals=tuple(d.get("intervals", ("1m",))),
                kline_1d=d.get("kline_1d", True),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a universe document: {exc!r}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Universe:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_dict(self) -> dict[str, Any]:
        return {
            "today": self.today.isoformat(),
            "market": self.market,
            "data_type": self.data_type,
            "intervals": list(self.intervals),
            "kline_1d": self.kline_1d,
            "symbols": {name: self.specs[name].to_dict() for name in sorted(self.specs)},
        }

    def to_json(self) -> str:
        """The universe document, one symbol a line so that diffs of it stay readable."""
        d = self.to_dict()
        lines = [f" {_json(k)}: {_json(v)}," for k, v in d.items() if k != "symbols"]
        symbols = [f"  {_json(name)}: {_json(spec)}" for name, spec in d["symbols"].items()]
        lines += [' "symbols": {', ",\n".join(symbols), " }"] if symbols else [' "symbols": {}']
        return "{\n" + "\n".join(lines) + "\n}\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically, so a server or test never reads a half-written universe."""
        target = Path(path)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(self.to_json())
            Path(tmp).replace(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def with_today(self, d: date | str) -> Universe:
        return replace(self, today=_as_date(d))

    def with_symbol(
        self,
        name: str,
        spans: Iterable[Sequence[date | str | None]],
        missing: Iterable[date | str] = (),
        late: Mapping[date | str, date | str] | None = None,
    ) -> Universe:
        """Add `name`, or replace its whole history."""
        specs = {**self.specs, name: SymbolSpec.build(spans, missing, late)}
        return replace(self, specs=specs)

    def with_reupload(
        self, symbol: str, d: date | str, on: date | str, *, interval: str | None = None
    ) -> Universe:
        """Upload one day's zip of `symbol` again on date `on` (KeyError for an unknown symbol).

        By default the intervals' file of the day (other bytes; its .CHECKSUM left as it was).
        With `interval="1d"`, the day's 1d kline is corrected: its daily 1d file and .CHECKSUM
        get the new content on `on`, and so does its month's file if published by then (one
        correction per day; `on` should come after the daily file's publication).
        """
        spec = self.specs[symbol]
        if interval is None or interval in self.intervals:
            reuploaded = _day_map({**spec.reuploaded, _as_date(d): _as_date(on)})
            new_spec = replace(spec, reuploaded=reuploaded)
        elif interval == KLINE_1D and self.kline_1d:
            corrected = _day_map({**spec.reuploaded_1d, _as_date(d): _as_date(on)})
            new_spec = replace(spec, reuploaded_1d=corrected)
        else:
            raise ValueError(f"this universe serves no {interval!r} files")
        return replace(self, specs={**self.specs, symbol: new_spec})

    def meta(self, key: str) -> ObjectMeta:
        """Size, ETag and Last-Modified of a key as this universe lists it (re-uploads
        included); `object_meta` for a key of no listed folder."""
        folder = self._index.by_path.get(key.rpartition("/")[0] + "/")
        return folder.meta(key) if folder is not None else object_meta(key)

    def body(self, key: str) -> bytes:
        """The bytes a GET of a listed key returns (`object_body` for a key of no listed
        folder): pseudo-random for the intervals' zips, real zips for the 1d klines."""
        folder = self._index.by_path.get(key.rpartition("/")[0] + "/")
        return folder.body(key) if folder is not None else object_body(key)

    def without_file(self, symbol: str, d: date | str) -> Universe:
        """Mark one day of `symbol` as missing (KeyError for an unknown symbol)."""
        spec = self.specs[symbol]
        new_spec = replace(spec, missing=spec.missing | {_as_date(d)})
        return replace(self, specs={**self.specs, symbol: new_spec})

    @property
    def root(self) -> str:
        """The folder whose subfolders are the symbols."""
        return f"data/futures/{self.market}/daily/{self.data_type}/"

    @property
    def monthly_root(self) -> str:
        """The folder of the monthly files' symbol folders."""
        return f"data/futures/{self.market}/monthly/{self.data_type}/"

    @property
    def symbols(self) -> tuple[str, ...]:
        """Symbols with at least one visible file, in S3 key order (str order = UTF-8 order)."""
        return self._index.symbols

    @property
    def key_count(self) -> int:
        """How many keys the bucket lists today: two per visible file (a zip, a .CHECKSUM)."""
        return len(self._index.space)

    def available_dates(self, symbol: str) -> list[date]:
        """The days whose file is visible today: the ground truth for tests."""
        if symbol not in self.specs:
            raise KeyError(symbol)
        return [date.fromordinal(o) for o in self._index.visible.get(symbol, ())]

    def kline_months(self, symbol: str) -> list[str]:
        """The months (YYYY-MM) whose monthly 1d file of `symbol` is visible today."""
        if symbol not in self.specs:
            raise KeyError(symbol)
        folder = self._kline_folders(symbol)[1]
        return [] if folder is None else [_month_text(month) for month in folder.months]

    def kline_rows(
        self, symbol: str, first: date | str | None = None, last: date | str | None = None
    ) -> list[KlineRow]:
        """The ground truth of `symbol`'s 1d klines the bucket holds today, by date.

        A day has a row when a visible monthly or daily 1d file holds it. Its source is the
        file the volume dataset takes it from: the month's file once published (the daily
        file is superseded), else the day's file; rows of corrected days have the corrected
        figures once the correction happened. `first` and `last` bound the dates.
        """
        if symbol not in self.specs:
            raise KeyError(symbol)
        if not self.kline_1d:
            raise ValueError("this universe serves no 1d klines (kline_1d is false)")
        low = -1 if first is None else _as_date(first).toordinal()
        high = date.max.toordinal() if last is None else _as_date(last).toordinal()
        daily, monthly = self._kline_folders(symbol)
        sources: dict[int, tuple[str, ObjectMeta, int]] = {}
        for folder in (daily, monthly):  # a month's file supersedes its days' files
            if folder is not None:
                sources.update(folder.sources(low, high))
        return [_kline_row(symbol, day, *sources[day]) for day in sorted(sources)]

    def _kline_folders(
        self, symbol: str
    ) -> tuple[_DailyKlineFolder | None, _MonthlyKlineFolder | None]:
        daily = self._index.by_path.get(f"{self.root}{symbol}/{KLINE_1D}/")
        monthly = self._index.by_path.get(f"{self.monthly_root}{symbol}/{KLINE_1D}/")
        return (
            daily if isinstance(daily, _DailyKlineFolder) else None,
            monthly if isinstance(monthly, _MonthlyKlineFolder) else None,
        )

    def has_object(self, key: str) -> bool:
        return self._index.has_key(key)

    def prepare(self) -> Universe:
        """Build the listing index now, instead of on the first request that needs it."""
        _ = self._index
        return self

    @cached_property
    def _index(self) -> _Index:
        return _Index(self)


def list_objects(
    universe: Universe,
    *,
    prefix: str,
    delimiter: str | None = None,
    start_after: str | None = None,
    max_keys: int = 1000,
) -> ListPage:
    """One ListObjects page, with S3's rules: each CommonPrefix counts toward `max_keys`."""
    if max_keys <= 0:
        return ListPage(keys=[], common_prefixes=[], is_truncated=False, last_returned=None)
    entries = universe._index.entries(prefix, delimiter or None, start_after or None)
    keys: list[tuple[str, ObjectMeta]] = []
    common_prefixes: list[str] = []
    last: str | None = None
    for name, meta in entries:
        if len(keys) + len(common_prefixes) == max_keys:
            return ListPage(keys, common_prefixes, is_truncated=True, last_returned=last)
        if meta is None:
            common_prefixes.append(name)
        else:
            keys.append((name, meta))
        last = name
    return ListPage(keys, common_prefixes, is_truncated=False, last_returned=last)


def object_body(key: str, meta: ObjectMeta | None = None) -> bytes:
    """The bytes a GET returns: pseudo-random for a zip, `sha256  name\\n` for its .CHECKSUM.

    `meta` is the zip's as listed (`Universe.meta`): a re-uploaded zip has other bytes, seeded
    by its ETag; its .CHECKSUM is left as it was, as the listing leaves it.
    """
    if key.endswith(CHECKSUM_SUFFIX):
        zip_key = key[: -len(CHECKSUM_SUFFIX)]
        digest = hashlib.sha256(object_body(zip_key)).hexdigest()
        return f"{digest}  {zip_key.rpartition('/')[2]}\n".encode()
    original = object_meta(key)
    if meta is None or meta == original:
        return hashlib.shake_256(b"vision-body\0" + key.encode()).digest(original.size)
    return hashlib.shake_256(b"vision-body\0" + meta.etag.encode()).digest(meta.size)
