"""The planner: which dates of which symbols a run lists, as one pure function of what is known.

Backfill, the daily update and the operator's repairs all ask the same question: given the
dataset (its summary), the symbols in scope and the run's inputs (its dates, its lookback, a
one-off repair), which (symbol, date range) pairs must be listed? `plan` answers it:

- a symbol the dataset does not hold yet gets its whole history, from its first file on;
- a symbol it holds gets the lookback window (reaching back further when runs were missed);
- a repair adds its dates for its symbols, reaching back to a symbol's known first file
  (a file found earlier moves the history back, and every day up to the old first file must
  get a row); overlapping ranges of one symbol are listed once.

Backfill asks with no window and no repair: only the symbols without history get ranges.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, replace

import polars as pl

from pipeline.config import Config, Contracts, Repair
from pipeline.dataset.store import Summary
from pipeline.errors import PipelineError
from pipeline.symbols import close_names, in_scope

ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class ProbeRange:
    """Probe `symbol` for every date from `first` through `last`, inclusive.

    A full-history range (`from_first_file`) gives rows from the symbol's first file found
    on, and none for a symbol with no file, as the dataset contract has it; otherwise every
    date of the range gets a row.
    """

    symbol: str
    first: dt.date
    last: dt.date
    from_first_file: bool = False


class PlanError(PipelineError):
    """A run was asked for dates or symbols the dataset cannot have."""


@dataclass(frozen=True)
class RunInputs:
    """What a run is asked to do, beyond the data: its dates, its window and a one-off repair."""

    start_date: dt.date
    last_date: dt.date
    """run.as_of - 1: the newest date whose files can be out."""
    lookback_start: dt.date
    lookback: bool = True
    """Whether symbols with history get the lookback window (update) or nothing (backfill)."""
    repair: Repair | None = None

    @classmethod
    def for_update(cls, config: Config) -> RunInputs:
        """The daily update: the window, new histories, and the one-off repair if any."""
        return cls(
            start_date=config.dataset.start_date,
            last_date=config.last_date,
            lookback_start=config.lookback_start,
            repair=config.repair,
        )

    @classmethod
    def for_backfill(cls, config: Config) -> RunInputs:
        """Backfill: whole histories of the symbols without any, nothing else."""
        return replace(cls.for_update(config), lookback=False, repair=None)


@dataclass(frozen=True)
class Plan:
    ranges: list[ProbeRange]
    window_first: dt.date
    """Rows of symbols with history from this date on are merged as probed (the window);
    earlier ones only where they differ from the dataset (a repair's)."""

    def as_probed(self, tracked: set[str]) -> pl.Expr:
        """True for the probed rows merged as they are: the window and new histories."""
        return (pl.col("date") >= self.window_first) | ~pl.col("symbol").is_in(list(tracked))


def plan(summary: Summary, symbols: Iterable[str], inputs: RunInputs) -> Plan:
    """The ranges to list for `symbols`, given the dataset's `summary` and the run's `inputs`."""
    first = window_first(summary, inputs)
    wanted: dict[str, list[tuple[dt.date, dt.date]]] = {}
    new_histories = set()
    for symbol in sorted(set(symbols)):
        if symbol not in summary.symbols:
            new_histories.add(symbol)
            wanted[symbol] = [(inputs.start_date, inputs.last_date)]
        elif inputs.lookback:
            wanted[symbol] = [(first, inputs.last_date)]
    for symbol, span in repair_spans(summary, inputs).items():
        if symbol not in new_histories:
            wanted.setdefault(symbol, []).append(span)
    ranges = [
        ProbeRange(symbol, start, end, from_first_file=symbol in new_histories)
        for symbol, spans in wanted.items()
        for start, end in _union(spans)
        if start <= end
    ]
    return Plan(ranges=ranges, window_first=first)


def window_first(summary: Summary, inputs: RunInputs) -> dt.date:
    """The lookback window's first day, reaching back further if runs were missed."""
    newest = summary.last_date
    if newest is not None and newest > inputs.last_date:
        raise PlanError(
            f"the dataset already has {newest}, after run.as_of - 1 ({inputs.last_date}): "
            "set run.as_of to null or a later date"
        )
    if newest is None:
        return inputs.lookback_start
    return min(inputs.lookback_start, newest + ONE_DAY)


def repair_spans(summary: Summary, inputs: RunInputs) -> dict[str, tuple[dt.date, dt.date]]:
    """The repair's dates per symbol it names (all the dataset holds when it names none)."""
    repair = inputs.repair
    if repair is None:
        return {}
    first = repair.since or inputs.start_date
    last = repair.until or inputs.last_date
    known_first = dict(summary.first_files.iter_rows())
    symbols = summary.symbols if repair.symbols is None else set(repair.symbols)
    return {
        symbol: (first, max(last, known_first.get(symbol, first) - ONE_DAY))
        for symbol in sorted(symbols)
    }


def check_repair(
    repair: Repair | None, known: set[str], contracts: Contracts, *, symbols_file: str
) -> None:
    """Refuse a repair naming a symbol outside the dataset's scope, before any request."""
    for symbol in () if repair is None or repair.symbols is None else repair.symbols:
        if not in_scope([symbol], contracts):
            raise PlanError(
                f"{symbol} is a delivery contract, outside dataset.contracts ({contracts})"
            )
        if symbol not in known:
            close = close_names(symbol, known)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise PlanError(
                f"unknown symbol {symbol}: not in {symbols_file} nor the dataset "
                f"(run `make update` to discover new listings){hint}"
            )


def _union(spans: list[tuple[dt.date, dt.date]]) -> list[tuple[dt.date, dt.date]]:
    """Overlapping or adjacent spans as one: a date is listed once per run."""
    merged: list[tuple[dt.date, dt.date]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + ONE_DAY:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
