"""Questions the dataset answers, as lazy polars scans that read only what they need.

`python -m pipeline.query` (or `vision-query`) asks them on the command line; see cli.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from pipeline.config import DatasetConfig
from pipeline.dataset.commit import journal_path
from pipeline.dataset.schema import SCHEMA
from pipeline.dataset.spans import DELISTED, LISTED, missing_days_in_spans, spans_with_status
from pipeline.dataset.store import (
    PARTITION_SUFFIX,
    StoreError,
    partition_files,
    partition_path,
    summarize,
)
from pipeline.dvc_lock import DVC_LOCK
from pipeline.errors import PipelineError
from pipeline.query.sources import dataset_identity
from pipeline.symbols import close_names

# What spans, gaps, listings and stats need: the other columns are never read for them.
HISTORY_COLUMNS = ("symbol", "date", "available")


class QueryError(PipelineError):
    """The question cannot be answered as asked: a date outside the dataset, an unknown symbol."""


def _files(dataset: Path) -> list[Path]:
    files = partition_files(dataset)
    if not files:
        raise StoreError(
            f"no partitions under {dataset}: run the pipeline (make update) or `dvc pull`"
        )
    return files


def checked_partitions(
    dataset: Path, params: DatasetConfig | None, *, lock: Path = DVC_LOCK
) -> list[Path]:
    """The partitions, once the dataset passes the checks the stages make before reading it.

    The store's checks (whole as `lock` records it, if it does; built with these params, or
    with None those its own _dataset.json records; of the dataset's schema, each row in its
    own month's file, no stray file), and one of its own: no month missing between the first
    and the last. By the contract every symbol has a row on every day from its first file on,
    so a missing month is a lost file, and answering from what is left would give an empty
    snapshot or invent a delisting.
    """
    check_no_interrupted_commit(dataset)
    if params is None:
        _files(dataset)  # no partitions: say so, rather than that _dataset.json is missing
        params = dataset_identity(dataset)
    summarize(dataset, params, lock=lock)
    files = _files(dataset)
    months = [path.name.removesuffix(PARTITION_SUFFIX) for path in files]  # YYYY-MM, sorted
    missing = sorted(set(_months_between(months[0], months[-1])) - set(months))
    if missing:
        raise StoreError(
            f"{partition_path(dataset, missing[0])} is missing, a month between {months[0]} and "
            f"{months[-1]} ({len(missing)} missing in all): restore it with `dvc checkout` or "
            "`dvc pull`"
        )
    return files


def check_no_interrupted_commit(dataset: Path) -> None:
    """Refuse to answer while a killed run's commit is half applied: old and new files mixed.

    Only a writer may finish it (every stage and `python -m pipeline.ops` replay it first);
    the query reads and never writes.
    """
    if journal_path(dataset).exists():
        raise StoreError(
            f"a run was interrupted while writing {dataset}: run `make update` to finish it"
        )


def _months_between(first: str, last: str) -> list[str]:
    """Every YYYY-MM from `first` through `last`."""

    def index(month: str) -> int:
        return int(month[:4]) * 12 + int(month[5:7]) - 1

    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index(first), index(last) + 1)]


def scan(dataset: Path, *, day: dt.date | None = None) -> pl.LazyFrame:
    """The dataset, or with `day` only that day's monthly partition (partition pruning)."""
    files = _files(dataset)
    if day is not None:
        month = partition_path(dataset, day.strftime("%Y-%m"))
        if month not in files:
            return pl.LazyFrame(schema=SCHEMA)
        files = [month]
    return pl.scan_parquet(files)


def history(dataset: Path, *, symbol: str | None = None) -> pl.LazyFrame:
    """The columns that say when each symbol had a file; with `symbol`, only its rows.

    Partitions are sorted by symbol in small row groups, so the symbol filter, pushed down
    into the scan, skips most of each file by the row groups' statistics.
    """
    rows = scan(dataset).select(HISTORY_COLUMNS)
    if symbol is None:
        return rows
    # A row a day at most: read them once rather than once per pass a query makes over them.
    return rows.filter(pl.col("symbol") == symbol).collect().lazy()


def date_range(dataset: Path) -> tuple[dt.date, dt.date]:
    """The dataset's first and last date, read from its first and last month only."""
    files = _files(dataset)  # named YYYY-MM, so sorted by month
    first = pl.scan_parquet(files[0]).select(pl.col("date").min()).collect().item()
    last = pl.scan_parquet(files[-1]).select(pl.col("date").max()).collect().item()
    return first, last


def symbols(dataset: Path) -> list[str]:
    """Every symbol of the dataset, sorted, read from the newest month only.

    Enough by the contract: every symbol has a row on every date from its first file to the
    last date, delisted or not, so each one is in the newest partition.
    """
    newest = _files(dataset)[-1]
    found = pl.scan_parquet(newest).select(pl.col("symbol").unique().sort()).collect()
    return found.get_column("symbol").to_list()


def check_date(day: dt.date, first: dt.date, last: dt.date) -> None:
    if not first <= day <= last:
        raise QueryError(f"{day} is outside the dataset, which runs from {first} to {last}")


def check_symbol(symbol: str, known: list[str]) -> None:
    """Refuse a symbol the dataset does not hold, suggesting close names (case aside)."""
    if symbol in known:
        return
    close = close_names(symbol, known)
    if close:
        raise QueryError(f"unknown symbol {symbol}; did you mean {', '.join(close)}?")
    raise QueryError(
        f"unknown symbol {symbol}; no symbol has a close name (names are as in the bucket)"
    )


def snapshot(dataset: Path, day: dt.date) -> pl.LazyFrame:
    """The symbols with a daily file on `day`, with its size and time: one partition read."""
    return (
        scan(dataset, day=day)
        .filter(pl.col("date") == day, pl.col("available"))
        .select("symbol", "file_size_bytes", "last_modified")
        .sort("symbol")
    )


def available_on(dataset: Path, day: dt.date) -> list[str]:
    """The symbols with a daily file on `day`: the survivorship-bias-free universe."""
    return snapshot(dataset, day).collect().get_column("symbol").to_list()


def timeline(dataset: Path, symbol: str) -> pl.DataFrame:
    """Every row of one symbol, oldest first."""
    return scan(dataset).filter(pl.col("symbol") == symbol).sort("date").collect()


def spans(rows: pl.LazyFrame, last: dt.date, max_gap_days: int) -> pl.LazyFrame:
    """Listing spans with their status (pipeline.dataset.spans), numbered per symbol from 1."""
    return (
        spans_with_status(rows, last, max_gap_days)
        .with_columns(
            span=pl.col("first_date").rank("ordinal").over("symbol").cast(pl.Int64),
            status=pl.col("status").cast(pl.String),
        )
        .select(
            "symbol", "span", "first_date", "last_date", "days_available", "days_missing", "status"
        )
    )


def gaps(rows: pl.LazyFrame, last: dt.date, max_gap_days: int) -> pl.LazyFrame:
    """Stretches of consecutive days without a file inside listing spans, by symbol and date."""
    missing = missing_days_in_spans(rows, last, max_gap_days).sort("symbol", "date")
    starts_gap = (pl.col("symbol") != pl.col("symbol").shift()) | (
        pl.col("date").diff().dt.total_days() != 1
    )
    return (
        missing.with_columns(gap=starts_gap.fill_null(True).cum_sum())
        .group_by("gap")
        .agg(
            pl.col("symbol").first(),
            first_date=pl.col("date").min(),
            last_date=pl.col("date").max(),
            days=pl.len().cast(pl.Int64),
        )
        .drop("gap")
        .sort("symbol", "first_date")
    )


def symbol_timeline(rows: pl.LazyFrame, last: dt.date, max_gap_days: int) -> pl.LazyFrame:
    """Spans with `missing_dates`, the list of their days without a file, oldest first."""
    listed = spans(rows, last, max_gap_days)
    missing = (
        missing_days_in_spans(rows, last, max_gap_days)
        .join(listed.select("symbol", "span", "first_date", "last_date"), on="symbol")
        .filter(pl.col("date").is_between(pl.col("first_date"), pl.col("last_date")))
        .group_by("symbol", "span")
        .agg(missing_dates=pl.col("date").sort())
    )
    no_day = pl.lit([], dtype=pl.List(pl.Date))
    return (
        listed.join(missing, on=["symbol", "span"], how="left")
        .with_columns(pl.col("missing_dates").fill_null(no_day))
        .sort("symbol", "span")
    )


def listings(rows: pl.LazyFrame, since: dt.date, last: dt.date, max_gap_days: int) -> pl.LazyFrame:
    """Spans that began (listed, or relisted after an earlier span) or ended (delisted) since
    `since`; the date is the span's first file, or for a delisting its last file."""
    # Each span gives up to two events; one unpivot computes the spans once for both.
    ends = pl.when(pl.col("status") == DELISTED).then(pl.col("last_date"))
    return (
        spans(rows, last, max_gap_days)
        .select("symbol", "span", began="first_date", ended=ends)
        .unpivot(index=["symbol", "span"], variable_name="kind", value_name="date")
        .filter(pl.col("date") >= since)
        .select(
            "date",
            "symbol",
            event=pl.when(pl.col("kind") == "ended")
            .then(pl.lit(DELISTED))
            .when(pl.col("span") == 1)
            .then(pl.lit(LISTED))
            .otherwise(pl.lit("relisted")),
        )
        .sort("date", "symbol", "event")
    )


def stats(rows: pl.LazyFrame, last: dt.date, max_gap_days: int) -> pl.LazyFrame:
    """One row of figures about the whole dataset (see cli.py's `stats` for their meaning)."""
    totals = rows.select(
        first_date=pl.col("date").min(),
        last_date=pl.col("date").max(),
        symbols=pl.col("symbol").n_unique().cast(pl.Int64),
        available_on_last_date=(pl.col("available") & (pl.col("date") == last))
        .sum()
        .cast(pl.Int64),
        rows=pl.len().cast(pl.Int64),
        available_share=pl.col("available").mean().round(4),
    )
    by_span = spans(rows, last, max_gap_days).select(
        listed_symbols=(pl.col("status") == LISTED).sum().cast(pl.Int64),
        listing_spans=pl.len().cast(pl.Int64),
        relistings=(pl.col("span") > 1).sum().cast(pl.Int64),
        missing_days_in_spans=pl.col("days_missing").sum().cast(pl.Int64),
    )
    found = pl.concat([totals, by_span], how="horizontal")
    return found.with_columns(delisted_symbols=pl.col("symbols") - pl.col("listed_symbols")).select(
        "first_date",
        "last_date",
        "symbols",
        "listed_symbols",
        "delisted_symbols",
        "available_on_last_date",
        "rows",
        "available_share",
        "listing_spans",
        "relistings",
        "missing_days_in_spans",
    )


MEMBERSHIP_COLUMNS = ("date", "symbol", "available", "listed")


def membership(
    rows: pl.LazyFrame,
    since: dt.date,
    until: dt.date,
    last: dt.date,
    max_gap_days: int,
    *,
    symbols: list[str] | None = None,
) -> pl.LazyFrame:
    """Each (date, symbol) row of the dataset from `since` through `until`, sorted, with
    `available` (a file that day) and `listed` (inside a listing span: from its first file to
    its last, or to `last` while the span is still listed).

    Spans come from the whole history in `rows`, so a day's `listed` can depend on later
    files (a gap is a gap only once a file follows it): a label, not a point-in-time signal.
    The symbols are `symbols`, or else those listed on at least one day of the range; a
    symbol has rows from its first file on (by the contract), so none before it.
    """
    span_end = pl.when(pl.col("status") == LISTED).then(pl.lit(last)).otherwise("last_date")
    listed_spans = (
        spans_with_status(rows, last, max_gap_days)
        .select("symbol", "first_date", span_end=span_end)
        .sort("first_date")
    )
    days = rows.filter(pl.col("date").is_between(since, until))
    if symbols is not None:
        days = days.filter(pl.col("symbol").is_in(symbols))
    found = (
        days.sort("date")
        # The span that began last on or before the day: the day is in it if it has not ended.
        .join_asof(
            listed_spans,
            left_on="date",
            right_on="first_date",
            by="symbol",
            check_sortedness=False,  # both sorted by date above, so within each symbol too
        )
        .with_columns(listed=(pl.col("date") <= pl.col("span_end")).fill_null(False))
    )
    if symbols is None:
        found = found.filter(pl.col("listed").any().over("symbol"))
    return found.select(MEMBERSHIP_COLUMNS).sort("date", "symbol")


def wide(long: pl.DataFrame, value: str) -> pl.DataFrame:
    """`long` (date, symbol, `value`, ...) as a date x symbol matrix of `value`, a column per
    symbol in name order. A day before a symbol's first file has no row: false for a flag (it
    had no file and was not listed), null for a figure."""
    symbols = long.get_column("symbol").unique().sort().to_list()
    if not symbols:
        return pl.DataFrame(schema={"date": pl.Date})
    # Every (date, symbol) cell, in symbol order within each date, gathered into one list per
    # date and spread into columns: many times faster than a pivot at a thousand symbols.
    matrix = (
        long.select(pl.col("date").unique())
        .join(pl.DataFrame({"symbol": symbols}), how="cross")
        .join(long.select("date", "symbol", value), on=["date", "symbol"], how="left")
        .sort("date", "symbol")
        .group_by("date", maintain_order=True)
        .agg(pl.col(value))
        .with_columns(pl.col(value).list.to_struct(fields=symbols))
        .unnest(value)
    )
    if long.schema[value] == pl.Boolean:
        matrix = matrix.with_columns(pl.exclude("date").fill_null(False))
    return matrix
