"""params.yaml, validated once into a frozen dataclass before any request is made."""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from pipeline.errors import PipelineError

MARKETS = ("um", "cm")
DATA_TYPES = (
    "aggTrades",
    "bookDepth",
    "bookTicker",
    "indexPriceKlines",
    "klines",
    "markPriceKlines",
    "metrics",
    "premiumIndexKlines",
    "trades",
)
KLINE_DATA_TYPES = ("klines", "indexPriceKlines", "markPriceKlines", "premiumIndexKlines")
INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
CONTRACTS = ("perpetual", "all")
# Binance Vision's daily futures files begin on this day; nothing earlier can exist.
EARLIEST_START = dt.date(2019, 9, 25)

Contracts = Literal["perpetual", "all"]
# When the volume stage fetches a zip's .CHECKSUM too (pipeline.vision.download).
ChecksumPolicy = Literal["multipart", "always"]
CHECKSUM_POLICIES: tuple[str, ...] = get_args(ChecksumPolicy)
# The largest count of days a param may hold: a century is more than any history here, and far
# from where date arithmetic overflows (a lookback of 1e6 days would go before year 1).
MAX_DAYS = 36_500
# The largest number of seconds a timeout or backoff may hold: beyond an hour, a run never ends.
MAX_SECONDS = 3_600.0


class ConfigError(PipelineError):
    """params.yaml is missing, malformed, or holds a value outside its allowed range."""


@dataclass(frozen=True)
class VisionConfig:
    listing_url: str
    download_url: str


@dataclass(frozen=True)
class DatasetConfig:
    market: str
    data_type: str
    interval: str
    start_date: dt.date
    contracts: Contracts

    def identity(self) -> dict[str, str]:
        """What a dataset built with these params holds; two identities must never mix."""
        return {
            "market": self.market,
            "data_type": self.data_type,
            "interval": self.interval,
            "start_date": self.start_date.isoformat(),
            "contracts": self.contracts,
        }


@dataclass(frozen=True)
class ProbeConfig:
    workers: int
    timeout_s: float
    retries: int
    backoff_s: float


@dataclass(frozen=True)
class ValidateConfig:
    stale_after_days: int
    """A symbol with no file for longer than this is reported as a delisting candidate."""
    late_share: float
    """A lookback date missing for at least this share of active symbols is reported as late."""


@dataclass(frozen=True)
class SpansConfig:
    max_gap_days: int
    """Missing stretches up to this long are gaps inside a listing span; longer ones end it."""


@dataclass(frozen=True)
class VolumeConfig:
    workers: int
    """Concurrent downloads of 1d kline files: each is one small GET, so latency bounds them."""
    checksums: ChecksumPolicy
    """When a zip's .CHECKSUM is fetched too: for multipart ETags only (an MD5 checks the
    others), or always (twice the GETs)."""


@dataclass(frozen=True)
class PathsConfig:
    symbols: Path
    gaps: Path
    backfill: Path
    dataset: Path
    spans: Path
    changes: Path
    run_metrics: Path
    validation: Path
    summary: Path
    plots: Path
    log: Path
    volume: Path
    volume_metrics: Path


@dataclass(frozen=True)
class RemovalLimit:
    """How many available files one run may turn unavailable before it refuses to write.

    Binance removes files rarely: a run that finds many gone is almost always listing a broken
    endpoint. `allowed` (`run.allow_removals`, set for one run by ALLOW_REMOVALS=1) lifts it.
    """

    max_files: int
    max_share: float
    allowed: bool

    def threshold(self, available_files: int) -> int:
        """The larger of `max_files` and `max_share` of the dataset's available files."""
        return max(self.max_files, math.floor(self.max_share * available_files))


@dataclass(frozen=True)
class Repair:
    """A one-off re-listing (`run.repair`), set for a single run by `make backfill` or `make audit`.

    The symbols (None: every symbol) are listed again from `since` to `until` (None: the whole
    history, from dataset.start_date to run.as_of - 1), and whatever differs is merged and logged.
    """

    symbols: tuple[str, ...] | None
    since: dt.date | None
    until: dt.date | None


@dataclass(frozen=True)
class Config:
    vision: VisionConfig
    dataset: DatasetConfig
    as_of: dt.date
    lookback_days: int
    probe: ProbeConfig
    validate: ValidateConfig
    spans: SpansConfig
    paths: PathsConfig
    removals: RemovalLimit
    volume: VolumeConfig
    repair: Repair | None = None

    @property
    def last_date(self) -> dt.date:
        """The newest date probed: files for as_of itself are not published yet."""
        return self.as_of - dt.timedelta(days=1)

    @property
    def lookback_start(self) -> dt.date:
        return max(self.as_of - dt.timedelta(days=self.lookback_days), self.dataset.start_date)


def load_config(path: Path | str = "params.yaml", *, today: dt.date | None = None) -> Config:
    """Read and validate params.yaml; `today` (UTC) stands in for a null `run.as_of`."""
    path = Path(path)
    raw = read_params(path)
    return parse_config(raw, today=today or dt.datetime.now(dt.UTC).date(), source=str(path))


def read_params(path: Path) -> dict[str, Any]:
    """params.yaml's sections, refused in one line when missing, not UTF-8 or not YAML."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run from the repository root") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.start}): fix it or restore it with `git checkout`"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of sections (vision, dataset, ...)")
    return raw


def refuse_yaml_dates(path: Path) -> None:
    """`make`'s check before DVC reads params.yaml: DVC's templating cannot read a YAML date.

    Unquoted, 2024-06-01 is a date to YAML, and `dvc repro` (or `dvc pull`) stops with
    "unexpected error - Unsupported value of type 'date'", with no fix. The stages read both.
    """
    for key, value in _leaves(read_params(path), ""):
        if isinstance(value, dt.date):
            raise ConfigError(
                f"{path}: {key} is an unquoted YAML date, which DVC cannot read: "
                f'quote it ("{value}")'
            )


def _leaves(node: Any, key: str) -> Iterator[tuple[str, Any]]:
    """Every value under `node` that is not a mapping or a list, with its dotted key."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _leaves(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{key}[{index}]")
    else:
        yield key, node


def parse_config(raw: dict[str, Any], *, today: dt.date, source: str = "params.yaml") -> Config:
    reader = _Reader(raw, source)
    dataset = DatasetConfig(
        market=reader.choice("dataset.market", MARKETS),
        data_type=reader.choice("dataset.data_type", DATA_TYPES),
        interval=reader.choice("dataset.interval", INTERVALS),
        start_date=reader.date("dataset.start_date"),
        contracts=reader.choice("dataset.contracts", CONTRACTS),  # type: ignore[arg-type]
    )
    as_of = reader.optional_date("run.as_of") or today
    if dataset.start_date < EARLIEST_START:
        reader.fail("dataset.start_date", f"must be on or after {EARLIEST_START}")
    # Tomorrow is still allowed: it probes today, whose files are not all out yet but will be
    # re-probed by the lookback window; anything later can only write rows of no file.
    if as_of > today + dt.timedelta(days=1):
        reader.fail("run.as_of", f"is in the future ({as_of}): no file for it can exist yet")
    if dataset.start_date >= as_of:
        reader.fail("dataset.start_date", f"must be before run.as_of ({as_of})")
    config = Config(
        vision=VisionConfig(
            listing_url=reader.url("vision.listing_url"),
            download_url=reader.url("vision.download_url"),
        ),
        dataset=dataset,
        as_of=as_of,
        lookback_days=reader.integer("update.lookback_days", minimum=1, maximum=MAX_DAYS),
        probe=ProbeConfig(
            workers=reader.integer("probe.workers", minimum=1, maximum=512),
            timeout_s=reader.number("probe.timeout_s", minimum=0.1, maximum=MAX_SECONDS),
            retries=reader.integer("probe.retries", minimum=0, maximum=20),
            backoff_s=reader.number("probe.backoff_s", minimum=0.0, maximum=MAX_SECONDS),
        ),
        validate=ValidateConfig(
            stale_after_days=reader.integer(
                "validate.stale_after_days", minimum=1, maximum=MAX_DAYS
            ),
            late_share=reader.fraction("validate.late_share"),
        ),
        spans=SpansConfig(
            max_gap_days=reader.integer("spans.max_gap_days", minimum=1, maximum=MAX_DAYS)
        ),
        paths=PathsConfig(
            **{field.name: reader.path(f"paths.{field.name}") for field in fields(PathsConfig)}
        ),
        removals=RemovalLimit(
            max_files=reader.integer("update.max_removed_files", minimum=0),
            max_share=reader.number("update.max_removed_share", minimum=0.0, maximum=1.0),
            allowed=reader.flag("run.allow_removals"),
        ),
        volume=VolumeConfig(
            workers=reader.integer("volume.workers", minimum=1, maximum=512),
            checksums=reader.choice("volume.checksums", CHECKSUM_POLICIES),  # type: ignore[arg-type]
        ),
        repair=_repair(reader, dataset.start_date, as_of),
    )
    # The known keys are the ones read above, so a param added there is known here.
    reader.refuse_unknown_keys()
    return config


REPAIR_KEYS = ("symbols", "since", "until")


def _repair(reader: _Reader, start_date: dt.date, as_of: dt.date) -> Repair | None:
    raw = reader.optional("run.repair")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        reader.fail("run.repair", f"must be null or a mapping of {', '.join(REPAIR_KEYS)}")
    symbols = reader.optional("run.repair.symbols")
    if symbols is not None and (
        not isinstance(symbols, list)
        or not symbols
        or not all(isinstance(s, str) and s.strip() == s and s for s in symbols)
    ):
        reader.fail(
            "run.repair.symbols", f"must be null or a list of symbol names (got {symbols!r})"
        )
    since, until = (
        None if reader.optional(key) is None else reader.date(key)
        for key in ("run.repair.since", "run.repair.until")
    )
    last_date = as_of - dt.timedelta(days=1)
    if since is not None and since < start_date:
        reader.fail("run.repair.since", f"{since} is before dataset.start_date ({start_date})")
    if until is not None and until > last_date:
        reader.fail("run.repair.until", f"{until} is after run.as_of - 1 ({last_date})")
    if since is not None and until is not None and since > until:
        reader.fail("run.repair.since", f"{since} is after run.repair.until ({until})")
    return Repair(
        symbols=None if symbols is None else tuple(sorted(set(symbols))),
        since=since,
        until=until,
    )


class _Reader:
    """Typed access to dotted keys, failing with one line that names the key and the fix."""

    def __init__(self, raw: dict[str, Any], source: str) -> None:
        self._raw = raw
        self._source = source
        self._read: set[str] = set()  # every dotted key asked for: the known keys

    def fail(self, key: str, problem: str) -> None:
        raise ConfigError(f"{self._source}: {key} {problem}")

    def _get(self, key: str) -> Any:
        self._read.add(key)
        node: Any = self._raw
        for depth, part in enumerate(key.split(".")):
            if not isinstance(node, dict) or part not in node:
                self.fail(key, "is missing" + self._misspelt(node, key, depth))
            node = node[part]
        return node

    def _misspelt(self, node: Any, key: str, depth: int) -> str:
        """` (is X a misspelling of it?)` when the missing key's section has a close unknown key."""
        parts = key.split(".")
        if not isinstance(node, dict):
            return ""
        close = difflib.get_close_matches(parts[depth], [str(name) for name in node], n=1)
        return f" (is {'.'.join([*parts[:depth], close[0]])} a misspelling of it?)" if close else ""

    def refuse_unknown_keys(self) -> None:
        """Fail on the first key no param reads: a misspelt key would silently keep a default."""
        self._refuse_unknown(self._raw, "")

    def _refuse_unknown(self, node: dict[Any, Any], prefix: str) -> None:
        known = sorted(
            {key[len(prefix) :].split(".")[0] for key in self._read if key.startswith(prefix)}
        )
        for name, value in node.items():
            dotted = f"{prefix}{name}"
            if str(name) not in known:
                close = difflib.get_close_matches(str(name), known, n=1)
                hint = (
                    f"did you mean {prefix}{close[0]}?"
                    if close
                    else f"remove it (known: {', '.join(known)})"
                )
                what = "key" if prefix else "section"
                raise ConfigError(f"{self._source}: {dotted} is not a known {what}; {hint}")
            # A mapping read whole (a value) has no keys of its own to check.
            if isinstance(value, dict) and any(k.startswith(f"{dotted}.") for k in self._read):
                self._refuse_unknown(value, f"{dotted}.")

    def optional(self, key: str) -> Any:
        """The value at `key`, or None when it is absent (a one-off key need not be written)."""
        section, _, name = key.rpartition(".")
        node = self._get(section)
        self._read.add(key)
        return node.get(name) if isinstance(node, dict) else None

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self._get(key)
        if value not in allowed:
            self.fail(key, f"must be one of {', '.join(allowed)} (got {value!r})")
        return value

    def optional_date(self, key: str) -> dt.date | None:
        return None if self._get(key) is None else self.date(key)

    def date(self, key: str) -> dt.date:
        value = self._get(key)
        if isinstance(value, dt.datetime):
            value = value.date()
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = dt.date.fromisoformat(value)
        if not isinstance(value, dt.date):
            self.fail(key, f"must be a date like 2019-09-25 (got {value!r})")
        return value

    def integer(self, key: str, *, minimum: int, maximum: int | None = None) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be a whole number (got {value!r})")
        self._check_range(key, value, minimum, maximum)
        return value

    def number(self, key: str, *, minimum: float, maximum: float | None = None) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number (got {value!r})")
        if not math.isfinite(value):  # YAML's .nan and .inf: every comparison would pass
            self.fail(key, f"must be a finite number (got {value})")
        self._check_range(key, value, minimum, maximum)
        return float(value)

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false (got {value!r})")
        return value

    def fraction(self, key: str) -> float:
        value = self.number(key, minimum=0.0)
        if not 0 < value <= 1:
            self.fail(key, f"must be a fraction in (0, 1] (got {value})")
        return value

    def _check_range(self, key: str, value: float, minimum: float, maximum: float | None) -> None:
        if value < minimum:
            self.fail(key, f"must be at least {minimum} (got {value})")
        if maximum is not None and value > maximum:
            self.fail(key, f"must be at most {maximum} (got {value})")

    def url(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            self.fail(key, f"must be an http(s) URL (got {value!r})")
        return value.rstrip("/")

    def path(self, key: str) -> Path:
        """A path inside the repository: a stage must never write outside what DVC tracks."""
        value = self._get(key)
        # Lexical: `data/../..` escapes whatever the folders are; normpath folds the `..`.
        normal = Path(os.path.normpath(value)) if isinstance(value, str) and value.strip() else None
        if normal is None or normal.is_absolute() or normal.parts[:1] in ((), ("..",)):
            self.fail(
                key, f"must be a relative path inside the repository, like data/x (got {value!r})"
            )
        return Path(value)
