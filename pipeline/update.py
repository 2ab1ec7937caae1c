"""Stage update: re-probe the lookback window for every symbol and merge into the dataset."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence

import polars as pl

from pipeline.changes import merge_and_log
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.prober import ProbeRange, ProbeStats, probe
from pipeline.stage import main
from pipeline.store import (
    Summary,
    month_of,
    read_months,
    read_probe_file,
    summarize,
    write_json,
)
from pipeline.symbols import read_symbols
from pipeline.vision import Layout, VisionClient

log = logging.getLogger(__name__)


def window_start(config: Config, newest: dt.date | None) -> dt.date:
    """The lookback window's first day, reaching back further if runs were missed."""
    if newest is not None and newest > config.last_date:
        raise PipelineError(
            f"the dataset already has {newest}, after run.as_of - 1 ({config.last_date}): "
            "set run.as_of to null or a later date"
        )
    first = config.lookback_start
    if newest is not None:
        first = min(first, newest + dt.timedelta(days=1))
    return first


def fresh_history(backfill: pl.DataFrame, summary: Summary, last: dt.date) -> pl.DataFrame:
    """The backfilled rows of symbols the dataset does not have yet, up to `last`.

    Rows of symbols already in the dataset were merged by an earlier run: merging them again
    would only rewrite history with older probes. A backfill made for a later as_of (it does
    not depend on as_of) is clipped to this run's dates.
    """
    return backfill.filter(~pl.col("symbol").is_in(list(summary.symbols)), pl.col("date") <= last)


def probed_through(history: pl.DataFrame, last: dt.date) -> set[str]:
    """Symbols whose fresh history already reaches `last`: listing them again is waste."""
    reach = history.group_by("symbol").agg(pl.col("date").max())
    return set(reach.filter(pl.col("date") >= last).get_column("symbol").to_list())


def update_ranges(
    symbols: Iterable[str],
    first: dt.date,
    config: Config,
    *,
    tracked: set[str],
    backfilled: set[str],
) -> list[ProbeRange]:
    """The lookback window for every symbol, except two kinds.

    Symbols whose fresh history already reaches as_of - 1 (`backfilled`) are not listed
    again. Symbols with no row anywhere (neither `tracked` nor backfilled: their backfill
    found no file) get their whole history listed, as the window alone would miss older files
    published since; detect_gaps will not name them again while symbols.json is unchanged.
    """
    start, last = config.dataset.start_date, config.last_date
    return [
        ProbeRange(s, first, last)
        if s in tracked
        else ProbeRange(s, start, last, from_first_file=True)
        for s in sorted(set(symbols) - backfilled)
    ]


def symbols_without_files(ranges: Sequence[ProbeRange], probes: pl.DataFrame) -> list[str]:
    """The symbols listed over their whole history that have no file up to as_of - 1.

    A full-history range gives no row for such a symbol, so it is not in the dataset:
    validate is told so rather than finding it missing.
    """
    found = set(probes.get_column("symbol").unique().to_list())
    return sorted(r.symbol for r in ranges if r.from_first_file and r.symbol not in found)


def run_metrics(
    config: Config,
    first: dt.date,
    stats: ProbeStats,
    *,
    rows_merged: int,
    months_rewritten: int,
    changes_logged: int,
    without_files: list[str],
) -> dict[str, object]:
    """What this run probed and found, for `dvc metrics show` and the validate stage.

    No durations: an unchanged rerun gives unchanged metrics.
    """
    return {
        "as_of": config.as_of.isoformat(),
        "last_date": config.last_date.isoformat(),
        "window_first": first.isoformat(),
        "symbols_probed": stats.symbols,
        "requests": stats.requests,
        "retries": stats.retries,
        "rows_merged": rows_merged,
        "months_rewritten": months_rewritten,
        "changes_logged": changes_logged,
        "symbols_without_files": without_files,
    }


def run(config: Config) -> None:
    summary = summarize(config.paths.dataset, config.dataset)
    history = fresh_history(read_probe_file(config.paths.backfill), summary, config.last_date)
    symbols = set(read_symbols(config.paths.symbols)) | summary.symbols
    first = window_start(config, summary.last_date)
    ranges = update_ranges(
        symbols,
        first,
        config,
        tracked=summary.symbols,
        backfilled=probed_through(history, config.last_date),
    )
    probed_at = dt.datetime.now(dt.UTC)
    with VisionClient.from_config(config) as client:
        probes, stats = probe(
            client,
            Layout.from_config(config),
            ranges,
            workers=config.probe.workers,
            probed_at=probed_at,
        )
    # Only the months that new rows fall in are read, merged and rewritten.
    months = pl.concat([history, probes]).select(month_of().unique()).to_series().to_list()
    previous = read_months(config.paths.dataset, months)
    # Logged: late files flipping to available, files gone or re-uploaded within the window.
    rewritten, logged = merge_and_log(
        config, summary, previous, history, probes, detected_at=probed_at
    )
    write_json(
        config.paths.run_metrics,
        run_metrics(
            config,
            first,
            stats,
            rows_merged=history.height + probes.height,
            months_rewritten=len(rewritten),
            changes_logged=logged,
            without_files=symbols_without_files(ranges, probes),
        ),
    )
    log.info(
        "probed %d symbols for %s to %s with %d requests (%d retries) in %.1fs; "
        "merged %d probed rows; %d changes logged; %d symbols tracked; %d months rewritten%s",
        stats.symbols,
        first,
        config.last_date,
        stats.requests,
        stats.retries,
        stats.seconds,
        history.height + probes.height,
        logged,
        len(symbols),
        len(rewritten),
        f" ({', '.join(rewritten)})" if len(rewritten) <= 6 else "",
    )


if __name__ == "__main__":
    main("update", run)
