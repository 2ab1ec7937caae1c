"""Listing spans: the stretches of days a symbol was listed, with the days missing inside them."""

from __future__ import annotations

import datetime as dt

import polars as pl

from pipeline.dataset.schema import KEY

SPANS_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "first_date": pl.Date(),
    "last_date": pl.Date(),
    "days_available": pl.Int64(),
    "days_missing": pl.Int64(),
}
LISTED, DELISTED = "listed", "delisted"
STATUS = pl.Enum((LISTED, DELISTED))


def listing_spans(rows: pl.LazyFrame, last_date: dt.date, max_gap_days: int) -> pl.LazyFrame:
    """Each symbol's listing spans (SPANS_SCHEMA), sorted by symbol and first date.

    A span runs from a day with a file to a day with a file. A stretch of at most
    `max_gap_days` days without one lies inside a span (its days are `days_missing`); a longer
    stretch ends it: a delisting, and a file after it starts a new span (a relisting). Dates
    after `last_date` are ignored. Only the days with a file are read, so a day with no row
    at all counts as missing just like a row without a file.
    """
    days = (
        rows.filter(pl.col("available"), pl.col("date") <= last_date)
        .group_by("symbol")
        .agg(pl.col("date").unique().sort())
        .explode("date")
    )
    # Each symbol's days are now consecutive and ascending: a span starts at a symbol's first
    # day or after a long gap, and the running count of starts numbers the spans.
    new_symbol = (pl.col("symbol") != pl.col("symbol").shift()).fill_null(True)
    days_since_previous = pl.col("date").diff().dt.total_days() - 1
    starts_span = new_symbol | (days_since_previous > max_gap_days)
    return (
        days.with_columns(span=starts_span.cum_sum())
        .group_by("span")
        .agg(
            pl.col("symbol").first(),
            first_date=pl.col("date").min(),
            last_date=pl.col("date").max(),
            days_available=pl.len().cast(pl.Int64),
        )
        .with_columns(
            days_missing=(pl.col("last_date") - pl.col("first_date")).dt.total_days()
            + 1
            - pl.col("days_available")
        )
        .select(*SPANS_SCHEMA)
        .sort("symbol", "first_date")
    )


def spans_with_status(rows: pl.LazyFrame, last_date: dt.date, max_gap_days: int) -> pl.LazyFrame:
    """Listing spans (SPANS_SCHEMA) with a `status`: listed or delisted as of `last_date`.

    A span is still listed while the days without a file since its last one could yet be a
    gap inside it: at most `max_gap_days` of them, the rule that splits spans. Only a
    symbol's last span can qualify, since a longer gap separates every other from the next.
    """
    days_since_last_file = (pl.lit(last_date) - pl.col("last_date")).dt.total_days()
    status = pl.when(days_since_last_file <= max_gap_days).then(pl.lit(LISTED))
    return listing_spans(rows, last_date, max_gap_days).with_columns(
        status=status.otherwise(pl.lit(DELISTED)).cast(STATUS)
    )


def missing_days_in_spans(rows: pl.LazyFrame, last: dt.date, max_gap_days: int) -> pl.LazyFrame:
    """(date, symbol) of the rows without a file inside a listing span, sorted.

    In a dataset that keeps its contract they are as many as the spans' days_missing.
    """
    spans = listing_spans(rows, last, max_gap_days).filter(pl.col("days_missing") > 0)
    return (
        rows.filter(~pl.col("available"))
        .join(spans, on="symbol")
        .filter(pl.col("date").is_between(pl.col("first_date"), pl.col("last_date")))
        .select(*KEY)
        .sort(*KEY)
    )
