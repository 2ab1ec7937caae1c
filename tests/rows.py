"""Build dataset rows for tests, in the contract's schema."""

from __future__ import annotations

import datetime as dt

import polars as pl

from pipeline.dataset.schema import SCHEMA

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def row(
    day: str,
    symbol: str,
    available: bool = True,
    *,
    probed: dt.datetime = T0,
    size: int | None = 100,
    etag: str | None = "e",
) -> dict:
    date = dt.date.fromisoformat(day)
    return {
        "date": date,
        "symbol": symbol,
        "available": available,
        "file_size_bytes": size if available else None,
        "last_modified": dt.datetime.combine(date, dt.time(6), tzinfo=dt.UTC)
        if available
        else None,
        "etag": etag if available else None,
        "probe_timestamp": probed,
    }


def frame(*rows: dict) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=SCHEMA)
