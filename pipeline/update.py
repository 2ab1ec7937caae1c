"""Stage update: re-probe the lookback window for every symbol and merge into the dataset."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

import polars as pl

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.prober import ProbeRange, probe
from pipeline.stage import main
from pipeline.store import (
    DatasetIdentity,
    last_date,
    merge,
    read_dataset,
    read_probe_file,
    write_dataset,
)
from pipeline.symbols import read_symbols
from pipeline.vision import Layout, VisionClient

log = logging.getLogger(__name__)


def window_start(config: Config, existing: pl.DataFrame) -> dt.date:
    """The lookback window's first day, reaching back further if runs were missed."""
    newest = last_date(existing)
    if newest is not None and newest > config.last_date:
        raise PipelineError(
            f"the dataset already has {newest}, after run.as_of - 1 ({config.last_date}): "
            "set run.as_of to null or a later date"
        )
    first = config.lookback_start
    if newest is not None:
        first = min(first, newest + dt.timedelta(days=1))
    return first


def freshly_backfilled(backfill: pl.DataFrame, existing: pl.DataFrame, last: dt.date) -> set[str]:
    """Symbols this run's backfill already probed through `last`: listing them again is waste.

    A symbol already in the dataset was merged by an earlier run, so its backfill rows are old
    news and its lookback window must be listed like any other symbol's.
    """
    reach = backfill.group_by("symbol").agg(pl.col("date").max())
    probed_through = set(reach.filter(pl.col("date") >= last).get_column("symbol").to_list())
    return probed_through - set(existing.get_column("symbol").unique().to_list())


def update_ranges(
    symbols: Iterable[str], first: dt.date, config: Config, *, skip: set[str]
) -> list[ProbeRange]:
    return [ProbeRange(s, first, config.last_date) for s in sorted(set(symbols) - skip)]


def run(config: Config) -> None:
    identity = DatasetIdentity.of(config)
    existing = read_dataset(config.paths.dataset, identity)
    backfill = read_probe_file(config.paths.backfill)
    symbols = set(read_symbols(config.paths.symbols)) | set(existing.get_column("symbol").unique())
    first = window_start(config, existing)
    skip = freshly_backfilled(backfill, existing, config.last_date)
    ranges = update_ranges(symbols, first, config, skip=skip)
    probed_at = dt.datetime.now(dt.UTC)
    with VisionClient.from_config(config) as client:
        probes, stats = probe(
            client,
            Layout.from_config(config),
            ranges,
            workers=config.probe.workers,
            probed_at=probed_at,
        )
    merged = merge(existing, backfill, probes)
    months = write_dataset(merged, config.paths.dataset, identity, previous=existing)
    log.info(
        "probed %d symbols for %s to %s with %d requests (%d retries) in %.1fs; "
        "dataset: %d rows, %d symbols, %d months rewritten%s",
        stats.symbols,
        first,
        config.last_date,
        stats.requests,
        stats.retries,
        stats.seconds,
        merged.height,
        merged.get_column("symbol").n_unique(),
        len(months),
        f" ({', '.join(months)})" if len(months) <= 6 else "",
    )


if __name__ == "__main__":
    main("update", run)
