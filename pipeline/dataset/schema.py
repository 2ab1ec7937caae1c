"""The dataset's columns and key: one row per (date, symbol) from the symbol's first file on."""

from __future__ import annotations

import polars as pl

SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "symbol": pl.String(),
    "available": pl.Boolean(),
    "file_size_bytes": pl.Int64(),
    "last_modified": pl.Datetime("us", "UTC"),
    "etag": pl.String(),
    "probe_timestamp": pl.Datetime("us", "UTC"),
}
KEY = ("date", "symbol")
FILE_STATE = ("available", "file_size_bytes", "etag", "last_modified")
"""What a row says of its file; a row whose state differs from the dataset's is a change."""


def empty() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def month_of(column: str = "date") -> pl.Expr:
    """The partition a date belongs to, as `YYYY-MM`."""
    return pl.col(column).dt.strftime("%Y-%m")
