"""Realistic universes built from the real Binance Vision symbol names.

The reference file holds every real name and the first daily snapshot it appeared in. We keep
the real cadence of new listings (about one a day) by shifting those first-seen dates so that
the reference snapshot falls on `today`, and invent a plausible past for the names that were
already listed when the snapshots began. Delistings, relistings, missing days and late
publishing are sprinkled in at the rates seen on the real bucket. Every choice comes from a
random generator seeded by (seed, symbol name), so a symbol's history does not change when the
subset of symbols around it does.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from devtools.emulator.universe import Span, SymbolSpec, Universe

REFERENCE_PATH = Path(__file__).with_name("reference_symbols.json")
DEFAULT_START = date(2019, 9, 25)
# The first daily snapshot: names seen in it were listed on or before this day.
FIRST_SNAPSHOT = date(2025, 11, 16)

_LISTED_AT_START = 0.15
# Binance futures opened with BTCUSDT on 2019-09-25 and ETHUSDT followed within weeks; both
# have traded every day since, and examples name them: they are listed from the first day.
_FOUNDING_SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT"})
_DELISTED = 0.10
_RELISTED_AFTER_DELISTING = 0.15
_MISSING_PER_DAY = 0.003
_LATE_SYMBOLS = 0.30
_LATE_WINDOW_DAYS = 5
_MIN_LIFETIME_DAYS = 30
_DELIVERY_LIFETIME_DAYS = (90, 180)


def load_reference(path: Path = REFERENCE_PATH) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class _Calendar:
    """The dates every symbol's history is drawn against."""

    start: date
    today: date
    shift: timedelta  # reference snapshot date -> today

    @property
    def last_visible(self) -> date:
        return self.today - timedelta(days=1)

    @property
    def old_listing_end(self) -> date:
        """Latest listing date for a name already present in the first snapshot."""
        return max(self.start, min(FIRST_SNAPSHOT + self.shift, self.last_visible))


def generate_universe(
    reference: Mapping[str, Any],
    *,
    today: date,
    start: date = DEFAULT_START,
    n_symbols: int | None = None,
    include_delivery: bool = True,
    seed: int = 0,
    include: Collection[str] = (),
) -> Universe:
    """A universe of the reference names on `today`, or a seeded subset of `n_symbols` of them.

    A subset always keeps the non-ASCII names, one SETTLED name and (with delivery contracts)
    one delivery contract, because those are the names that break naive code, and the names
    in `include` (the demo's: the symbols the README's examples ask about).
    """
    calendar = _Calendar(
        start=start,
        today=today,
        shift=today - date.fromisoformat(reference["snapshot_date"]),
    )
    first_seen = reference["first_seen"]
    specs = {
        name: _perpetual_history(
            _rng(seed, name), calendar, name, date.fromisoformat(first_seen[name])
        )
        for name in reference["perpetual"]
    }
    if include_delivery:
        for name in reference["delivery"]:
            spec = _delivery_history(_rng(seed, name), calendar, _expiry(name))
            if spec is not None:
                specs[name] = spec
    unknown = sorted(set(include) - set(specs))
    if unknown:
        raise ValueError(f"not in the reference symbols: {', '.join(unknown)}")
    if n_symbols is not None:
        keep = _subset(specs, n_symbols, random.Random(f"{seed}/subset"), include)
        specs = {name: specs[name] for name in keep}
    return Universe(today=today, specs=specs)


def _rng(seed: int, name: str) -> random.Random:
    return random.Random(f"{seed}/{name}")


def _expiry(delivery_name: str) -> date:
    """The expiry date of a delivery contract named like BTCUSDT_210326."""
    yymmdd = delivery_name.rpartition("_")[2]
    return date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6]))


def _perpetual_history(
    rng: random.Random, calendar: _Calendar, name: str, first_seen: date
) -> SymbolSpec:
    if name in _FOUNDING_SYMBOLS:
        return _with_gaps(rng, calendar, [(calendar.start, None)])
    listed = _listing_date(rng, calendar, first_seen)
    spans: list[Span] = [(listed, None)]
    if "SETTLED" in name:
        spans = [(listed, _settlement_date(rng, calendar, listed))]
    elif rng.random() < _DELISTED:
        spans = _delist(rng, calendar, listed)
    return _with_gaps(rng, calendar, spans)


def _listing_date(rng: random.Random, calendar: _Calendar, first_seen: date) -> date:
    if first_seen > FIRST_SNAPSHOT:
        # New listings keep their real cadence, moved so the reference snapshot is today.
        return max(calendar.start, first_seen + calendar.shift)
    if rng.random() < _LISTED_AT_START:
        return calendar.start
    window = (calendar.old_listing_end - calendar.start).days
    return calendar.start + timedelta(days=rng.randint(0, window))


def _settlement_date(rng: random.Random, calendar: _Calendar, listed: date) -> date:
    """A SETTLED name is a contract that has been settled: it always ended in the past."""
    latest = max(listed, calendar.last_visible - timedelta(days=1))
    earliest = min(listed + timedelta(days=_MIN_LIFETIME_DAYS), latest)
    return earliest + timedelta(days=rng.randint(0, (latest - earliest).days))


def _delist(rng: random.Random, calendar: _Calendar, listed: date) -> list[Span]:
    """End the listing at a random past day, and now and then list the symbol again."""
    earliest_end = listed + timedelta(days=_MIN_LIFETIME_DAYS)
    latest_end = calendar.last_visible - timedelta(days=1)
    if earliest_end > latest_end:
        return [(listed, None)]  # too young to have been delisted already
    ended = earliest_end + timedelta(days=rng.randint(0, (latest_end - earliest_end).days))
    spans: list[Span] = [(listed, ended)]
    room = (calendar.last_visible - ended).days
    if room > _MIN_LIFETIME_DAYS and rng.random() < _RELISTED_AFTER_DELISTING:
        relisted = ended + timedelta(days=rng.randint(_MIN_LIFETIME_DAYS, room))
        spans.append((relisted, None))
    return spans


def _delivery_history(rng: random.Random, calendar: _Calendar, expiry: date) -> SymbolSpec | None:
    """A quarterly contract trades for three to six months up to its expiry date."""
    listed = expiry - timedelta(days=rng.randint(*_DELIVERY_LIFETIME_DAYS))
    if listed > calendar.today or expiry < calendar.start:
        return None
    return _with_gaps(rng, calendar, [(max(listed, calendar.start), expiry)])


def _with_gaps(rng: random.Random, calendar: _Calendar, spans: list[Span]) -> SymbolSpec:
    """Add isolated missing days and, for some live symbols, recent days published late."""
    days = [o for span in spans for o in _ordinals(span, calendar.last_visible)]
    count = min(len(days), int(len(days) * _MISSING_PER_DAY + rng.random()))
    missing = set(rng.sample(days, count))
    recent = [o for o in days[-_LATE_WINDOW_DAYS:] if o not in missing]
    window_start = (calendar.today - timedelta(days=_LATE_WINDOW_DAYS)).toordinal()
    live = bool(recent) and recent[0] >= window_start
    live = live and recent[-1] == calendar.last_visible.toordinal()
    late: dict[date, date] = {}
    if live and rng.random() < _LATE_SYMBOLS:
        for o in rng.sample(recent, rng.randint(1, min(3, len(recent)))):
            late[date.fromordinal(o)] = calendar.today + timedelta(days=rng.randint(1, 3))
    return SymbolSpec.build(spans, (date.fromordinal(o) for o in sorted(missing)), late)


def _ordinals(span: Span, last: date) -> range:
    start, end = span
    stop = last if end is None else min(end, last)
    return range(start.toordinal(), stop.toordinal() + 1)


def _subset(
    specs: Mapping[str, SymbolSpec],
    n_symbols: int,
    rng: random.Random,
    include: Collection[str] = (),
) -> list[str]:
    names = sorted(specs)
    # Sorted and without repeats, so the subset depends on which names, not on their order.
    must = sorted(set(include) | {name for name in names if not name.isascii()})
    settled = [name for name in names if "SETTLED" in name]
    delivery = [name for name in names if name.rpartition("_")[2].isdigit()]
    chosen = [rng.choice(group) for group in (settled, delivery) if group]
    must += [name for name in chosen if name not in must]
    if n_symbols < len(must):
        raise ValueError(f"a subset needs at least {len(must)} symbols, got {n_symbols}")
    others = [name for name in names if name not in must]
    return must + rng.sample(others, min(len(others), n_symbols - len(must)))
