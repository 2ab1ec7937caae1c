"""The volume planner: which 1d folders a run lists, then which files it fetches and which
stored months those files rebuild, as pure functions of what is known.

Cheap sources first. A complete month comes from its monthly file (one GET for up to 31 rows);
days after the newest monthly file come from daily files. What exists comes from listings:

- the monthly folder is listed only when it can hold news: a symbol with no volume yet, a
  complete month after the newest stored monthly file that holds available days or daily-sourced
  rows (its monthly file is due: every day while it is the newest complete month, then on the
  symbol's listing day only), or a one-off repair (`run.repair`: an audit relists all);
- the daily folder is listed, from the first day of a month (start-after) to the month's end,
  for months without a monthly file that hold an available day (of the availability dataset)
  with no volume row yet, or an available day of the relisting window (late or re-uploaded
  files: the lookback window and as many days before it), or the repair's dates. Consecutive
  months are one listing. It is listed when the symbol has no volume yet (a new symbol), when
  it has an uncovered available day older than the lookback window, on an audit of it, and
  otherwise on its listing day only: one day in every `update.lookback_days`, staggered over
  the symbols by a stable hash of the name (`is_listing_day`), so that a quiet day lists
  about symbols / lookback_days folders, not one per symbol;
- on the other days, the new days come by a direct GET of `{S}-1d-{day}.zip` for each
  available day of the lookback window with no volume row (`direct_days`): the availability
  dataset, just built from the 1m folder's listing of the same days, says the day has files.
  Its bytes are verified against the GET's own headers (pipeline.vision.download); a 404 is no
  error: the day stays pending, is asked again next run, and its symbol's next listing (at the
  latest once it leaves the window) settles it. A re-upload inside the window is seen by the
  symbol's next listing day, which still holds the re-uploaded day (the relisting window).

Then a listed file is fetched only when no stored row has it as its source with the same ETag
and size: a new file, or a re-upload, whichever listing shows it. A fetched file's rows replace
the stored rows of the days they give. A monthly file replaces its whole month when it first
supersedes the month's daily-sourced rows, and on an audit of its symbol and dates, which also
refetches a month whose stored rows are not all of the listed version. Otherwise the days a
re-uploaded monthly file no longer gives keep their rows: the availability dataset's history
changes only by an audit, and the two datasets change together. Daily files of a month that
has a monthly file are never fetched (neither listed nor direct).

Months are named by their first day, as pipeline.vision.layout.KlineLayout names them.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import polars as pl

from pipeline.config import Config, Repair

ONE_DAY = dt.timedelta(days=1)
MONTHLY = "monthly"
DAILY = "daily"

LISTED_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "period": pl.Date(),
    "key": pl.String(),
    "etag": pl.String(),
    "size": pl.Int64(),
}
"""Listed zips of one kind: `period` is the month (its first day) of a monthly file, the day of
a daily one."""

FILES_SCHEMA: dict[str, pl.DataType] = {"kind": pl.String(), **LISTED_SCHEMA}
"""Files to fetch: LISTED_SCHEMA with their kind (MONTHLY or DAILY). A direct GET's file
(a daily file not listed) has a null ETag and size: its answer's headers give them."""

AVAILABLE_SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), "date": pl.Date()}
"""The available (date, symbol) of the availability dataset."""

DROPS_SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), "date": pl.Date()}
"""Stored rows dropped whatever the fetched files give: those of the months rebuilt."""

DAYS_SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), "date": pl.Date()}
"""(symbol, day) pairs: the days a run GETs directly."""

DIRECT_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "period": pl.Date(),
    "key": pl.String(),
}
"""Daily files to GET without a listing: their symbol, day and key."""


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def month_end(month: dt.date) -> dt.date:
    return (month.replace(day=1) + dt.timedelta(days=32)).replace(day=1) - ONE_DAY


def last_complete_month(last_date: dt.date) -> dt.date:
    """The newest month whose days are all on or before `last_date`: its monthly file can exist."""
    if month_end(last_date) == last_date:
        return month_start(last_date)
    return month_start(month_start(last_date) - ONE_DAY)


@dataclass(frozen=True)
class VolumeInputs:
    """What a volume run is asked for: its dates, the lookback window and a one-off repair."""

    start_date: dt.date
    last_date: dt.date
    """run.as_of - 1: the newest day whose files can be out."""
    lookback_start: dt.date
    repair: Repair | None = None
    """An audit: its symbols (None: all) have both folders relisted over its dates."""
    lookback_days: int = 0
    """`update.lookback_days`: each daily folder is listed one day in this many. 0: the
    number of days from lookback_start through last_date."""

    def __post_init__(self) -> None:
        if self.lookback_days <= 0:
            days = (self.last_date - self.lookback_start).days + 1
            object.__setattr__(self, "lookback_days", max(days, 1))

    @classmethod
    def for_run(cls, config: Config) -> VolumeInputs:
        return cls(
            start_date=config.dataset.start_date,
            last_date=config.last_date,
            lookback_start=config.lookback_start,
            repair=config.repair,
            lookback_days=config.lookback_days,
        )

    @property
    def relist_start(self) -> dt.date:
        """The first day a listing day looks at: the lookback window and as many days before
        it, so a day re-uploaded while in the window is still listed on the symbol's next
        listing day (at most lookback_days - 1 days later)."""
        return max(self.lookback_start - dt.timedelta(days=self.lookback_days), self.start_date)

    def is_listing_day(self, symbol: str) -> bool:
        """Whether this run is the symbol's listing day (`is_listing_day` of last_date)."""
        return is_listing_day(symbol, self.last_date, self.lookback_days)

    def audits(self, symbol: str) -> bool:
        repair = self.repair
        return repair is not None and (repair.symbols is None or symbol in repair.symbols)

    def audit_months(self) -> list[dt.date]:
        """The months a repair relists (every month of its dates)."""
        assert self.repair is not None
        first = month_start(self.repair.since or self.start_date)
        last = month_start(self.repair.until or self.last_date)
        return months_between(first, last)


def is_listing_day(symbol: str, day: dt.date, every: int) -> bool:
    """Whether a run whose newest day is `day` lists the symbol's daily folder: one day in
    every `every`, each symbol on its own day (a stable hash of the name, the same in every
    process, unlike Python's hash()), so the listings of a quiet day are spread evenly."""
    return (zlib.crc32(symbol.encode("utf-8")) + day.toordinal()) % every == 0


def months_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every month (first day) from `first`'s through `last`'s."""
    months, month = [], month_start(first)
    while month <= last:
        months.append(month)
        month = month_start(month + dt.timedelta(days=32))
    return months


@dataclass(frozen=True)
class SymbolState:
    """What is known of one symbol before listing, by month (each named by its first day)."""

    symbol: str
    monthly_months: frozenset[dt.date] = frozenset()
    """Months whose stored rows come from the monthly file."""
    daily_months: frozenset[dt.date] = frozenset()
    """Months with stored rows from daily files."""
    uncovered_months: frozenset[dt.date] = frozenset()
    """Months with an available day (availability dataset) that has no volume row."""
    recent_months: frozenset[dt.date] = frozenset()
    """Months with an available day inside the relisting window (`VolumeInputs.relist_start`)."""
    old_uncovered_months: frozenset[dt.date] = frozenset()
    """Months with an available day older than the lookback window that has no volume row."""

    @property
    def stored(self) -> bool:
        """Whether the symbol has volume rows already (else it is new: its folders are listed)."""
        return bool(self.monthly_months or self.daily_months)


def symbol_states(
    stored: pl.DataFrame,
    available: pl.DataFrame,
    symbols: Iterable[str],
    inputs: VolumeInputs,
) -> dict[str, SymbolState]:
    """Each symbol's state, for `symbols` and every symbol of the stored rows.

    `stored` has STORED_SCHEMA's columns, `available` AVAILABLE_SCHEMA's; available days after
    `inputs.last_date` are ignored.
    """
    available = _in_dates(available, inputs)
    month = pl.col("date").dt.truncate("1mo").alias("month")
    kinds = (
        stored.select("symbol", month, monthly=is_monthly_source())
        .unique()
        .group_by("symbol", "monthly")
        .agg("month")
    )
    uncovered_days = _uncovered(available, stored)
    by_month = {
        "uncovered_months": uncovered_days,
        "recent_months": available.filter(pl.col("date") >= inputs.relist_start),
        "old_uncovered_months": uncovered_days.filter(pl.col("date") < inputs.lookback_start),
    }
    found: dict[str, dict[str, frozenset[dt.date]]] = {s: {} for s in symbols}
    for symbol, monthly, months in kinds.iter_rows():
        found.setdefault(symbol, {})["monthly_months" if monthly else "daily_months"] = frozenset(
            months
        )
    for name, days in by_month.items():
        frame = days.select("symbol", month).unique().group_by("symbol").agg("month")
        for symbol, months in frame.iter_rows():
            if symbol in found:  # only symbols in scope or stored are planned
                found[symbol][name] = frozenset(months)
    return {symbol: SymbolState(symbol, **fields) for symbol, fields in sorted(found.items())}


def _in_dates(available: pl.DataFrame, inputs: VolumeInputs) -> pl.DataFrame:
    return available.filter(pl.col("date").is_between(inputs.start_date, inputs.last_date)).select(
        "symbol", "date"
    )


def _uncovered(available: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """The available (symbol, date) with no stored volume row."""
    return available.join(stored.select("symbol", "date"), on=["symbol", "date"], how="anti")


def is_monthly_source() -> pl.Expr:
    """Whether a stored row's `source` is a monthly zip (…-YYYY-MM.zip), not a daily one."""
    return pl.col("source").str.contains(r"-\d{4}-\d{2}\.zip$")


def needs_monthly_listing(state: SymbolState, inputs: VolumeInputs) -> bool:
    """Whether the symbol's monthly folder can hold a file this run should know of.

    A complete month after the newest stored monthly file, holding available days or daily
    rows, is due a monthly file; a month before it that never got one is covered by daily files
    and not asked about again (an audit relists it). A due month is asked about every day while
    it is the newest complete month (its file is out within days) or has days older than the
    lookback window without a row, later only on the symbol's listing day.
    """
    if inputs.audits(state.symbol):
        return True
    complete = last_complete_month(inputs.last_date)
    newest = max(state.monthly_months, default=None)
    due = [
        month
        for month in state.uncovered_months | state.daily_months
        if month_start(inputs.start_date) <= month <= complete
        and (newest is None or month > newest)
    ]
    if not due:
        return False
    # Daily while the newest complete month's file can be on its way, or while a due month has
    # days without a row (its file gives them in one GET); for an older month whose days are
    # all there (one Binance did not publish, say) only on the listing day, not daily for good.
    return (
        max(due) == complete
        or not state.stored
        or bool(state.old_uncovered_months.intersection(due))
        or inputs.is_listing_day(state.symbol)
    )


def lists_daily_folder(
    state: SymbolState, monthly_months: Iterable[dt.date], inputs: VolumeInputs
) -> bool:
    """Whether the symbol's daily folder is listed this run (when it has days to list): on an
    audit of it, for a new symbol, for one with an uncovered day older than the lookback
    window (outside a month with a monthly file), else on its listing day only."""
    return (
        inputs.audits(state.symbol)
        or not state.stored
        or bool(state.old_uncovered_months - set(monthly_months))
        or inputs.is_listing_day(state.symbol)
    )


def daily_windows(
    state: SymbolState,
    monthly_months: Iterable[dt.date],
    inputs: VolumeInputs,
) -> list[tuple[dt.date, dt.date]]:
    """The day ranges of the symbol's daily folder to list, first to last day inclusive; none
    when the folder is not listed this run (`lists_daily_folder`).

    `monthly_months`: the months with a monthly file, stored or listed this run. One range per
    run of consecutive months wanted, clipped to the dataset's dates.
    """
    covered = set(monthly_months)
    if not lists_daily_folder(state, covered, inputs):
        return []
    wanted = set(state.uncovered_months | state.recent_months)
    if inputs.audits(state.symbol):
        wanted.update(inputs.audit_months())
    first_month, last_month = month_start(inputs.start_date), month_start(inputs.last_date)
    months = sorted(m for m in wanted - covered if first_month <= m <= last_month)
    windows: list[tuple[dt.date, dt.date]] = []
    for month in months:
        first, last = max(month, inputs.start_date), min(month_end(month), inputs.last_date)
        if windows and windows[-1][1] + ONE_DAY == first:
            windows[-1] = (windows[-1][0], last)
        else:
            windows.append((first, last))
    return windows


def direct_days(
    stored: pl.DataFrame,
    available: pl.DataFrame,
    symbols: Collection[str],
    inputs: VolumeInputs,
) -> pl.DataFrame:
    """The (symbol, day) pairs to GET without a listing (DAYS_SCHEMA), sorted: every available
    day of the lookback window with no volume row, of `symbols` (those planned whose daily
    folder this run does not list). Days of months with a monthly file are dropped by
    `plan_fetches`, which knows the months listed this run."""
    in_window = _in_dates(available, inputs).filter(
        pl.col("date") >= inputs.lookback_start, pl.col("symbol").is_in(list(symbols))
    )
    return _uncovered(in_window, stored).unique().sort("symbol", "date").cast(DAYS_SCHEMA)


@dataclass(frozen=True)
class FetchPlan:
    files: pl.DataFrame
    """The files to GET (FILES_SCHEMA), sorted by symbol, kind, period."""
    drops: pl.DataFrame
    """The stored (symbol, date) rows dropped whatever the fetched files give (DROPS_SCHEMA),
    sorted: the months a monthly file rebuilds."""

    def months(self) -> list[dt.date]:
        """The months the plan touches: those whose partitions may change."""
        touched = pl.concat(
            [
                self.files.select(pl.col("period").dt.truncate("1mo")),
                self.drops.select(period=pl.col("date").dt.truncate("1mo")),
            ]
        )
        return sorted(touched.get_column("period").unique().to_list())


def plan_fetches(
    stored: pl.DataFrame,
    monthly: pl.DataFrame,
    daily: pl.DataFrame,
    inputs: VolumeInputs,
    direct: pl.DataFrame | None = None,
) -> FetchPlan:
    """The files to fetch and the stored months they rebuild.

    `stored`: STORED_SCHEMA; `monthly`, `daily`: what this run listed (LISTED_SCHEMA);
    `direct`: daily files to GET unlisted (DIRECT_SCHEMA, from `direct_days`). Only complete
    months and days within the dataset's dates count. A listed file that a stored row has as
    its source, with the same ETag and size, is not fetched again (but on an audit, for a month
    with rows of another version); a direct file of a month with a monthly file (stored or
    listed) is not fetched. The drops are the whole months a monthly file rebuilds; the days
    the fetched files give replace their stored rows too (`merge` of the volume stage).
    """
    first_month = month_start(inputs.start_date)
    monthly = monthly.filter(
        pl.col("period").is_between(first_month, last_complete_month(inputs.last_date))
    )
    daily = daily.filter(pl.col("period").is_between(inputs.start_date, inputs.last_date))
    stored = stored.with_columns(period=pl.col("date").dt.truncate("1mo"))  # the row's month
    stored_months = stored.filter(is_monthly_source()).select("symbol", "period").unique()
    covered = pl.concat([stored_months, monthly.select("symbol", "period")]).unique()
    uncovered = covered.rename({"period": "month"})
    daily = (
        daily.with_columns(month=pl.col("period").dt.truncate("1mo"))
        .join(uncovered, on=["symbol", "month"], how="anti")
        .drop("month")
    )
    direct = pl.DataFrame(schema=DIRECT_SCHEMA) if direct is None else direct
    direct = (
        direct.filter(pl.col("period").is_between(inputs.start_date, inputs.last_date))
        .with_columns(month=pl.col("period").dt.truncate("1mo"))
        .join(uncovered, on=["symbol", "month"], how="anti")
        .join(daily.select("symbol", "period"), on=["symbol", "period"], how="anti")
        .select(*DIRECT_SCHEMA, etag=pl.lit(None, pl.String()), size=pl.lit(None, pl.Int64()))
    )
    versions = stored.select("symbol", key="source", etag="source_etag", size="source_size")
    listed_files = pl.concat(
        [
            monthly.select(*LISTED_SCHEMA, kind=pl.lit(MONTHLY)),
            daily.select(*LISTED_SCHEMA, kind=pl.lit(DAILY)),
            direct.select(*LISTED_SCHEMA, kind=pl.lit(DAILY)),
        ]
    )
    # New or re-uploaded: no stored row has this version (a direct file's null ETag matches
    # none: nulls never join).
    changed = listed_files.join(versions.unique(), on=["symbol", "key", "etag", "size"], how="anti")
    # An audit rebuilds each listed month of its dates whose stored rows are not all of this
    # version (rows a re-upload without them left behind), as it rebuilds their availability.
    rebuilt = (
        monthly.filter(_audited(inputs))
        .join(stored, on=["symbol", "period"])
        .filter(
            (pl.col("source") != pl.col("key"))
            | (pl.col("source_etag") != pl.col("etag"))
            | (pl.col("source_size") != pl.col("size"))
        )
        .select(*LISTED_SCHEMA, kind=pl.lit(MONTHLY))
        .unique()
    )
    files = pl.concat([changed, rebuilt]).unique().sort("symbol", "kind", "period")
    # A monthly file replaces its whole month when it first supersedes the month's daily rows,
    # and on an audit; a re-upload seen by another listing replaces only the days it gives
    # (the merge does that): availability's history changes only by an audit, and the days a
    # re-upload dropped stay covered until one.
    first_monthly = files.filter(pl.col("kind") == MONTHLY).join(
        stored_months, on=["symbol", "period"], how="anti"
    )
    whole_months = pl.concat(
        [first_monthly, files.filter((pl.col("kind") == MONTHLY) & _audited(inputs))]
    ).select("symbol", "period")
    drops = (
        stored.join(whole_months, on=["symbol", "period"])
        .select("symbol", "date")
        .unique()
        .sort("symbol", "date")
    )
    return FetchPlan(
        files=files.select(list(FILES_SCHEMA)).cast(FILES_SCHEMA),
        drops=drops.cast(DROPS_SCHEMA),
    )


def _audited(inputs: VolumeInputs) -> pl.Expr:
    """Whether a file's (symbol, period) is audited this run (`run.repair`): its symbol is
    one of the repair's, and its month one of the repair's dates."""
    repair = inputs.repair
    if repair is None:
        return pl.lit(value=False)
    in_dates = pl.col("period").dt.truncate("1mo").is_in(inputs.audit_months())
    if repair.symbols is None:
        return in_dates
    return in_dates & pl.col("symbol").is_in(list(repair.symbols))


def listed(rows: Sequence[tuple[str, dt.date, str, str, int]]) -> pl.DataFrame:
    """Listed files (symbol, period, key, etag, size) as a LISTED_SCHEMA frame."""
    return pl.DataFrame(rows, schema=LISTED_SCHEMA, orient="row")
