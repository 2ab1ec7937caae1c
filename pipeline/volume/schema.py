"""The volume dataset's columns and key: one row per (date, symbol) with a 1d kline.

The kline columns are those of Binance's kline CSV files, typed; the source columns name the
zip a row came from as the listing described it (key, bare-hex ETag, size), which is what the
planner compares with a new listing to tell a re-uploaded file from one already stored.
"""

from __future__ import annotations

import polars as pl

KLINE_COLUMNS: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "quote_volume": pl.Float64(),
    "trades": pl.Int64(),
    "taker_buy_volume": pl.Float64(),
    "taker_buy_quote_volume": pl.Float64(),
}
"""What the kline parser (pipeline.volume.klines) gives for one file: one row per UTC day."""
KLINE_FIGURES: tuple[str, ...] = tuple(name for name in KLINE_COLUMNS if name != "date")
"""A day's kline figures: prices, volumes and the trade count."""

SOURCE_COLUMNS: dict[str, pl.DataType] = {
    "source": pl.String(),
    "source_etag": pl.String(),
    "source_size": pl.Int64(),
}

SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "symbol": pl.String(),
    **{name: dtype for name, dtype in KLINE_COLUMNS.items() if name != "date"},
    **SOURCE_COLUMNS,
}
KEY = ("date", "symbol")
STORED_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "date": pl.Date(),
    **SOURCE_COLUMNS,
}
"""What planning reads of the stored rows: their key and source."""
INTERVAL = "1d"
"""The kline interval the volume comes from, whatever `dataset.interval` the availability has."""

VOLUME_PER_DAY = "volume_per_day.csv"
"""The plot data the volume stage writes in `paths.plots` (dvc.yaml's `plots:` and the report
page read it): total quote volume per day and the top symbols' share."""


def empty() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)
