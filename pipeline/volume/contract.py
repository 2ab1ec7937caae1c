"""The volume dataset's contract on rows, and how it must cover the availability dataset.

Violations (validate fails on any): two rows for one key, a null anywhere, a date outside the
dataset's dates, a row whose source is not its own day's or month's 1d file of its symbol,
prices or counts no kline can have, and an available (date, symbol) of the availability
dataset older than the lookback window without a volume row (its files are out: only a broken
run leaves it uncovered). Figures: available days of the window still without volume (files
published late), and volume rows of days the availability dataset has no file for.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from pipeline.vision.layout import KlineLayout
from pipeline.volume.schema import KEY, KLINE_FIGURES, SCHEMA

ZIP = ".zip"
ONE_DAY = dt.timedelta(days=1)


def volume_violations(
    volume: pl.LazyFrame,
    available: pl.LazyFrame,
    layout: KlineLayout,
    *,
    start: dt.date,
    last: dt.date,
    lookback_start: dt.date,
) -> dict[str, pl.LazyFrame]:
    """Each check's offending items, sorted. `available`: the availability dataset's rows."""
    return {
        "volume_duplicate_keys": duplicate_keys(volume),
        "volume_null_fields": null_fields(volume),
        "volume_dates_out_of_range": volume.filter(~pl.col("date").is_between(start, last))
        .select(*KEY)
        .sort(*KEY),
        "volume_sources_mismatched": sources_mismatched(volume, layout),
        "volume_impossible_klines": impossible_klines(volume),
        "volume_rows_missing": uncovered(volume, available, start, lookback_start - ONE_DAY),
    }


def volume_figures(
    volume: pl.LazyFrame, available: pl.LazyFrame, *, lookback_start: dt.date, last: dt.date
) -> dict[str, pl.LazyFrame]:
    return {
        "volume_pending": uncovered(volume, available, lookback_start, last),
        "volume_without_availability": volume.join(
            _available_keys(available), on=list(KEY), how="anti"
        )
        .select(*KEY)
        .sort(*KEY),
    }


def _available_keys(available: pl.LazyFrame) -> pl.LazyFrame:
    return available.filter(pl.col("available")).select(*KEY)


def uncovered(
    volume: pl.LazyFrame, available: pl.LazyFrame, first: dt.date, last: dt.date
) -> pl.LazyFrame:
    """Available (date, symbol) from `first` through `last` with no volume row."""
    return (
        _available_keys(available)
        .filter(pl.col("date").is_between(first, last))
        .join(volume.select(*KEY), on=list(KEY), how="anti")
        .sort(*KEY)
    )


def duplicate_keys(volume: pl.LazyFrame) -> pl.LazyFrame:
    return (
        volume.group_by(*KEY)
        .agg(rows=pl.len())
        .filter(pl.col("rows") > 1)
        .with_columns(pl.col("rows").cast(pl.Int64))
        .sort(*KEY)
    )


def null_fields(volume: pl.LazyFrame) -> pl.LazyFrame:
    """Rows with a null in any column: every field of a kline and of its source is known."""
    return (
        volume.filter(pl.any_horizontal(pl.col(list(SCHEMA)).is_null()))
        .select(
            *KEY,
            fields=pl.concat_str(
                [pl.when(pl.col(c).is_null()).then(pl.lit(c)) for c in SCHEMA],
                separator=",",
                ignore_nulls=True,
            ),
        )
        .sort(*KEY)
    )


def sources_mismatched(volume: pl.LazyFrame, layout: KlineLayout) -> pl.LazyFrame:
    """Rows whose source is neither their day's daily zip nor their month's monthly zip."""
    names = volume.select("symbol").unique().collect().get_column("symbol").to_list()
    # The keys' stems come from the layout, per symbol: the dataset has ~1000 symbols.
    probe_month, probe_day = dt.date(2000, 1, 1), dt.date(2000, 1, 1)
    stems = pl.LazyFrame(
        {
            "symbol": names,
            "monthly_stem": [
                layout.monthly_key(s, probe_month).removesuffix(f"{probe_month:%Y-%m}{ZIP}")
                for s in names
            ],
            "daily_stem": [
                layout.daily_key(s, probe_day).removesuffix(f"{probe_day.isoformat()}{ZIP}")
                for s in names
            ],
        },
        schema={"symbol": pl.String, "monthly_stem": pl.String, "daily_stem": pl.String},
    )
    monthly = pl.col("monthly_stem") + pl.col("date").dt.strftime("%Y-%m") + ZIP
    daily = pl.col("daily_stem") + pl.col("date").dt.strftime("%Y-%m-%d") + ZIP
    return (
        volume.join(stems, on="symbol", how="left")
        .filter((pl.col("source") != monthly) & (pl.col("source") != daily))
        .select(*KEY, "source")
        .sort(*KEY)
    )


def impossible_klines(volume: pl.LazyFrame) -> pl.LazyFrame:
    """Rows whose figures no kline can have: a high below the open or close, a low above
    them, negative volumes or counts, taker-buy volumes above the volumes, a file of no byte."""
    price = pl.col("open", "close")
    bad = (
        (pl.col("high") < pl.max_horizontal(price))
        | (pl.col("low") > pl.min_horizontal(price))
        | pl.any_horizontal(pl.col(KLINE_FIGURES) < 0)
        | (pl.col("taker_buy_volume") > pl.col("volume"))
        | (pl.col("taker_buy_quote_volume") > pl.col("quote_volume"))
        | (pl.col("source_size") <= 0)
    )
    return volume.filter(bad).select(*KEY, "open", "high", "low", "close").sort(*KEY)
