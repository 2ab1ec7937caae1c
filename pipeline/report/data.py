"""The report's plot data: pure polars functions from the dataset's rows and spans to frames.

Each frame is written as one CSV under paths.plots by the report stage; `dvc plots` and the
report page (pipeline.report.page) draw them. Dates are those the dataset has rows of, so the
frames end on the last date probed (as_of - 1).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from pipeline.dataset.schema import month_of
from pipeline.dataset.spans import DELISTED

# The file names inside paths.plots; dvc.yaml's `plots:` and the page's figures name the same.
AVAILABLE_PER_DAY = "available_per_day.csv"
LISTINGS_PER_MONTH = "listings_per_month.csv"
MISSING_PER_DAY = "missing_per_day.csv"
AVAILABILITY_BY_MONTH = "availability_by_month.csv"
SHARE_DECIMALS = 3


def available_per_day(rows: pl.LazyFrame) -> pl.LazyFrame:
    """(date, symbols): how many symbols had a file, for every date the dataset has rows of."""
    return rows.group_by("date").agg(symbols=pl.col("available").sum().cast(pl.Int64)).sort("date")


def listings_per_month(spans: pl.LazyFrame, last_date: dt.date) -> pl.LazyFrame:
    """(month, listings, delistings) from the month after the first span's through last_date's.

    A listing is the start of a span (a relisting too), dated by its first file; a delisting
    is the end of a delisted span, dated by its last file. The dataset's first month is left
    out: every symbol already listed when the dataset starts would count as listed in it.
    Months without either are rows of zeros, so that a plot does not bridge them.
    """
    listings = spans.group_by(month=month_of("first_date")).agg(listings=pl.len())
    delistings = (
        spans.filter(pl.col("status") == DELISTED)
        .group_by(month=month_of("last_date"))
        .agg(delistings=pl.len())
    )
    months = (
        spans.select(first=pl.col("first_date").min().dt.month_start().dt.offset_by("1mo"))
        .drop_nulls()  # no span at all: no month either
        .select(month=pl.date_ranges("first", pl.lit(last_date), interval="1mo"))
        .explode("month")
        .drop_nulls()  # a dataset within one month: no month after its first
        .select(month=month_of("month"))
    )
    return (
        months.join(listings, on="month", how="left")
        .join(delistings, on="month", how="left")
        .select("month", pl.col("listings", "delistings").fill_null(0).cast(pl.Int64))
        .sort("month")
    )


def listed_days(spans: pl.LazyFrame, last_date: dt.date) -> pl.LazyFrame:
    """(symbol, first_date, end): the days each span may have a file on.

    A delisted span ends on its last file; a listed one runs on through `last_date`, since its
    next file may still come (a gap, or a file published late).
    """
    end = pl.when(pl.col("status") == DELISTED).then("last_date").otherwise(pl.lit(last_date))
    return spans.select("symbol", "first_date", end=end)


def missing_per_day(
    rows: pl.LazyFrame, spans: pl.LazyFrame, changes: pl.LazyFrame, last_date: dt.date
) -> pl.LazyFrame:
    """(date, missing, published_late) for every date the dataset has rows of.

    `missing`: symbols listed that day (within a span, or after the last file of a span still
    listed) without a file: outages, and the recent days whose files are not published yet.
    A delisted symbol's days after its last file are not missing. `published_late`: symbols
    whose file for that day appeared after a run had recorded it missing (the change log's
    `appeared`), so a day's late files stay visible once they arrived.
    """
    missing = (
        rows.filter(~pl.col("available"))
        .join(listed_days(spans, last_date), on="symbol")
        .filter(pl.col("date").is_between("first_date", "end"))
        .group_by("date")
        .agg(missing=pl.len())
    )
    late = (
        changes.filter(pl.col("kind") == "appeared")
        .group_by("date")
        .agg(published_late=pl.col("symbol").n_unique())
    )
    return (
        rows.select("date")
        .unique()
        .join(missing, on="date", how="left")
        .join(late, on="date", how="left")
        .select("date", pl.col("missing", "published_late").fill_null(0).cast(pl.Int64))
        .sort("date")
    )


def availability_by_month(
    rows: pl.LazyFrame, spans: pl.LazyFrame, last_date: dt.date
) -> pl.LazyFrame:
    """(month, symbol, first_date, days, files, share): each symbol's listed months, for a heatmap.

    `days`: the symbol's days of that month within a listing span (as in `listed_days`: a
    listed span runs on through `last_date`), `files`: those with a file, `share` = files /
    days. A month of no such day has no row: before the first file, between a delisting and a
    relisting, after a delisting, so the map shows who existed when, and its holes are missing
    files. `first_date` (the symbol's first file) orders the symbols by listing.
    """
    listed = (
        rows.join(listed_days(spans, last_date), on="symbol")
        .filter(pl.col("date").is_between("first_date", "end"))
        .group_by("symbol", month=month_of("date"))
        .agg(days=pl.len(), files=pl.col("available").sum())
    )
    first = spans.group_by("symbol").agg(pl.col("first_date").min())
    return (
        listed.join(first, on="symbol")
        .select(
            "month",
            "symbol",
            "first_date",
            pl.col("days", "files").cast(pl.Int64),
            share=(pl.col("files") / pl.col("days")).round(SHARE_DECIMALS),
        )
        .sort("first_date", "symbol", "month")
    )
