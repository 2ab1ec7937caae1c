"""params.yaml, validated once into a frozen dataclass before any request is made."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

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
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run from the repository root") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of sections (vision, dataset, ...)")
    return parse_config(raw, today=today or dt.datetime.now(dt.UTC).date(), source=str(path))


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
    return Config(
        vision=VisionConfig(
            listing_url=reader.url("vision.listing_url"),
            download_url=reader.url("vision.download_url"),
        ),
        dataset=dataset,
        as_of=as_of,
        lookback_days=reader.integer("update.lookback_days", minimum=1),
        probe=ProbeConfig(
            workers=reader.integer("probe.workers", minimum=1, maximum=512),
            timeout_s=reader.number("probe.timeout_s", minimum=0.1),
            retries=reader.integer("probe.retries", minimum=0, maximum=20),
            backoff_s=reader.number("probe.backoff_s", minimum=0.0),
        ),
        validate=ValidateConfig(
            stale_after_days=reader.integer("validate.stale_after_days", minimum=1),
            late_share=reader.fraction("validate.late_share"),
        ),
        spans=SpansConfig(max_gap_days=reader.integer("spans.max_gap_days", minimum=1)),
        paths=PathsConfig(
            **{field.name: reader.path(f"paths.{field.name}") for field in fields(PathsConfig)}
        ),
        repair=_repair(reader, dataset.start_date, as_of),
    )


REPAIR_KEYS = ("symbols", "since", "until")


def _repair(reader: _Reader, start_date: dt.date, as_of: dt.date) -> Repair | None:
    raw = reader.optional("run.repair")
    if raw is None:
        return None
    if not isinstance(raw, dict) or not set(raw) <= set(REPAIR_KEYS):
        reader.fail("run.repair", f"must be null or a mapping of {', '.join(REPAIR_KEYS)}")
    symbols = raw.get("symbols")
    if symbols is not None and (
        not isinstance(symbols, list)
        or not symbols
        or not all(isinstance(s, str) and s.strip() == s and s for s in symbols)
    ):
        reader.fail(
            "run.repair.symbols", f"must be null or a list of symbol names (got {symbols!r})"
        )
    since = reader.optional_date("run.repair.since") if "since" in raw else None
    until = reader.optional_date("run.repair.until") if "until" in raw else None
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

    def fail(self, key: str, problem: str) -> None:
        raise ConfigError(f"{self._source}: {key} {problem}")

    def _get(self, key: str) -> Any:
        node: Any = self._raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                self.fail(key, "is missing")
            node = node[part]
        return node

    def optional(self, key: str) -> Any:
        """The value at `key`, or None when it is absent (a one-off key need not be written)."""
        section, _, name = key.rpartition(".")
        node = self._get(section)
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

    def number(self, key: str, *, minimum: float) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number (got {value!r})")
        self._check_range(key, value, minimum, None)
        return float(value)

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
        value = self._get(key)
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a relative path (got {value!r})")
        return Path(value)
