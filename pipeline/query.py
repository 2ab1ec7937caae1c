"""Questions the dataset answers, as lazy polars scans that read only what they need."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from pipeline.store import partition_files, partition_path


def scan(dataset: Path, *, day: dt.date | None = None) -> pl.LazyFrame:
    """The dataset, or with `day` only that day's monthly partition (partition pruning)."""
    if day is not None:
        files = [partition_path(dataset, day.strftime("%Y-%m"))]
        files = [path for path in files if path.exists()]
    else:
        files = partition_files(dataset)
    if not files:
        raise FileNotFoundError(f"no partitions under {dataset}: run the pipeline or `dvc pull`")
    return pl.scan_parquet(files)


def available_on(dataset: Path, day: dt.date) -> list[str]:
    """The symbols with a daily file on `day`: the survivorship-bias-free universe."""
    return (
        scan(dataset, day=day)
        .filter(pl.col("date") == day, pl.col("available"))
        .select("symbol")
        .sort("symbol")
        .collect()
        .get_column("symbol")
        .to_list()
    )


def timeline(dataset: Path, symbol: str) -> pl.DataFrame:
    """Every row of one symbol, oldest first."""
    return scan(dataset).filter(pl.col("symbol") == symbol).sort("date").collect()
