"""Questions about daily volume (issue 14): the point-in-time universe, a symbol's rows, and the
volume columns of the panel export. The volume dataset (paths.volume) has the availability
dataset's layout: YYYY-MM.parquet partitions of pipeline.volume.schema plus _dataset.json.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Literal

import polars as pl

from pipeline.config import DatasetConfig
from pipeline.dataset.store import IDENTITY_FILE, StoreError
from pipeline.dvc_lock import DVC_LOCK
from pipeline.query import check_no_interrupted_commit
from pipeline.volume.schema import KLINE_FIGURES
from pipeline.volume.store import VolumeIdentity, volume_files

Measure = Literal["quote_volume", "trades"]
MEASURES: tuple[Measure, ...] = ("quote_volume", "trades")
UNIVERSE_COLUMNS = ("rank", "symbol", "volume", "days_listed")


def checked_volume_partitions(
    volume: Path, availability: DatasetConfig, *, lock: Path = DVC_LOCK
) -> list[Path]:
    """The volume dataset's partitions, once pipeline.volume.store has checked them (whole as
    `lock` records it, of the volume schema, no stray file) and they are known to be the
    volume of the availability dataset's market, start date and contracts."""
    check_no_interrupted_commit(volume)
    identity = VolumeIdentity(
        market=availability.market,
        start_date=availability.start_date,
        contracts=availability.contracts,
    )
    _check_identity(volume, identity)
    files = volume_files(volume, identity, lock=lock)
    if not files:
        raise StoreError(
            f"no volume partitions under {volume}: run the pipeline (make update) or "
            "`dvc pull`, or name the volume dataset's folder with --volume DIR"
        )
    return files


def _check_identity(volume: Path, identity: VolumeIdentity) -> None:
    """Volume of another market (or history) would rank other coins: said as the query's
    problem, where the store would speak of params.yaml and a new dataset."""
    path = volume / IDENTITY_FILE
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # missing or unreadable: the store's check names it
    expected = identity.identity()
    if isinstance(found, dict) and found != expected:
        differ = [key for key in sorted(expected) if found.get(key) != expected[key]]
        described = ", ".join(f"{key} {found.get(key)} (not {expected[key]})" for key in differ)
        raise StoreError(
            f"{volume} is not the volume of this availability dataset: {described or 'other keys'}"
            ": name the matching one with --volume DIR"
        )


def scan_volume(files: list[Path]) -> pl.LazyFrame:
    """The checked partitions as one lazy frame; filters on date and symbol are pushed down."""
    return pl.scan_parquet(files)


def volume_last_date(files: list[Path]) -> dt.date | None:
    """The newest date of the volume dataset, read from its newest month only."""
    return pl.scan_parquet(files[-1]).select(pl.col("date").max()).collect().item()


def check_covers(last_volume_date: dt.date | None, needed: dt.date, what: str) -> None:
    """Refuse an answer that needs volume after the volume dataset's last date: missing days
    would read as days without a kline, and rank or fill the panel wrongly."""
    if last_volume_date is None or last_volume_date < needed:
        raise StoreError(
            f"the volume dataset runs to {last_volume_date}, but {what} needs volume through "
            f"{needed}: run the pipeline (make update) or ask about an earlier date"
        )


def symbol_volume(volume: pl.LazyFrame, symbol: str, since: dt.date | None) -> pl.LazyFrame:
    """One symbol's daily kline figures, oldest first, from `since` if given."""
    rows = volume.filter(pl.col("symbol") == symbol)
    if since is not None:
        rows = rows.filter(pl.col("date") >= since)
    return rows.select("date", "symbol", *KLINE_FIGURES, "source").sort("date")


def with_volume(membership: pl.LazyFrame, volume: pl.LazyFrame) -> pl.LazyFrame:
    """The panel's rows with the day's kline figures, null where the symbol had no kline."""
    figures = volume.select("date", "symbol", *KLINE_FIGURES)
    return membership.join(figures, on=["date", "symbol"], how="left").sort("date", "symbol")


def universe(
    availability: pl.LazyFrame,
    volume: pl.LazyFrame,
    day: dt.date,
    *,
    top: int,
    by: Measure = "quote_volume",
    window: int = 1,
    min_listed_days: int = 0,
) -> pl.LazyFrame:
    """The `top` symbols on `day` by volume, with no look-ahead.

    Candidates: the symbols with a file on `day` in the availability dataset (listed that
    day), and at least `min_listed_days` days_listed. days_listed: the days before `day` with
    a file, over every listing span. volume: the mean daily `by` over the `window` days
    `day - window` .. `day - 1`, a day without a kline counting as 0 (so the window's sum
    divided by `window`: a symbol listed halfway through the window ranks by half its pace).
    A candidate with no kline in the window has no figure to rank by and is left out. Nothing
    on or after `day` is read but the membership itself. Ties rank by symbol name.
    """
    first = day - dt.timedelta(days=window)
    members = availability.filter(pl.col("date") == day, pl.col("available")).select("symbol")
    listed_days = (
        availability.filter(pl.col("date") < day, pl.col("available"))
        .group_by("symbol")
        .agg(days_listed=pl.len().cast(pl.Int64))
    )
    figures = (
        volume.filter(pl.col("date").is_between(first, day - dt.timedelta(days=1)))
        .group_by("symbol")
        .agg(volume=pl.col(by).cast(pl.Float64).sum() / window)
    )
    return (
        members.join(figures, on="symbol")
        .join(listed_days, on="symbol", how="left")
        .with_columns(pl.col("days_listed").fill_null(0))
        .filter(pl.col("days_listed") >= min_listed_days)
        .sort(["volume", "symbol"], descending=[True, False])
        .head(top)
        .with_row_index("rank", offset=1)
        .select(pl.col("rank").cast(pl.Int64), "symbol", "volume", "days_listed")
    )
