"""Stage report: the listing spans table, the summary metrics and the plot data, after validate.

- data/spans.parquet: one row per symbol and listing span (pipeline.dataset.spans), with its status;
- metrics/summary.json: what the dataset holds, for `dvc metrics show`, and the run's as_of and
  lookback window, for the report page;
- metrics/plots/*.csv: the plot data of pipeline.report.data (symbols with a file per day,
  listings and delistings per month, missing files per day, each symbol's availability per
  month), for `dvc plots show` (dvc.yaml declares them with their titles and axes) and for the
  page `make report` draws (pipeline.report.page).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path

import polars as pl

from pipeline.atomic import atomic_path, write_json
from pipeline.config import Config
from pipeline.dataset.changes import CHANGE_KINDS, read_changes
from pipeline.dataset.schema import empty
from pipeline.dataset.spans import LISTED, SPANS_SCHEMA, STATUS, spans_with_status
from pipeline.dataset.store import checked_files, write_frame
from pipeline.entry import stage_main
from pipeline.report.data import (
    AVAILABILITY_BY_MONTH,
    AVAILABLE_PER_DAY,
    LISTINGS_PER_MONTH,
    MISSING_PER_DAY,
    availability_by_month,
    available_per_day,
    listings_per_month,
    missing_per_day,
)

log = logging.getLogger(__name__)

REPORT_SPANS_SCHEMA: dict[str, pl.DataType] = {**SPANS_SCHEMA, "status": STATUS}
SPANS_ORDER = ("symbol", "first_date")
# "Recent" in the summary: 7 days, ending on last_date for listings, on as_of for detections.
RECENT_DAYS = 7
COLUMNS = ("date", "symbol", "available")


def change_counts(changes: pl.DataFrame, as_of: dt.date) -> dict[str, int]:
    """The change log's size, by kind, and the changes detected on the 7 days up to `as_of`.

    `detected_at` is when a run probed, on or after its as_of date (a daily run probes on
    as_of itself), so recent detections are those since (as_of - 6 days) 00:00 UTC.
    """
    since = dt.datetime.combine(as_of - dt.timedelta(days=RECENT_DAYS - 1), dt.time(), dt.UTC)
    by_kind = dict(changes.group_by("kind").len().iter_rows())
    return {
        "changes_total": changes.height,
        **{f"changes_{kind}": by_kind.get(kind, 0) for kind in CHANGE_KINDS},
        f"changes_last_{RECENT_DAYS}_days": changes.filter(pl.col("detected_at") >= since).height,
    }


def run_window(config: Config) -> dict[str, str]:
    """The run's as_of and the first date of its lookback window, whose files may still come.

    The report page shades the window from there through the last date: its days without a
    file are not final.
    """
    return {"as_of": config.as_of.isoformat(), "lookback_start": config.lookback_start.isoformat()}


def summary(rows: pl.DataFrame, spans: pl.DataFrame, last_date: dt.date) -> dict[str, object]:
    """What the dataset holds, for metrics/summary.json: flat keys, numbers and ISO dates.

    `available_yesterday` counts the symbols with a file on `last_date` (as_of - 1, the newest
    date probed). `new_listings_last_7_days` counts the spans whose first file lies on one of
    the 7 days ending on `last_date`: a relisting after a gap longer than spans.max_gap_days
    counts as a listing, as it starts a new span.
    """
    recent = last_date - dt.timedelta(days=RECENT_DAYS - 1)
    first, last = rows.select(first=pl.col("date").min(), last=pl.col("date").max()).row(0)
    return {
        "symbols": rows.get_column("symbol").n_unique(),
        "available_yesterday": rows.filter(pl.col("date") == last_date, pl.col("available")).height,
        "rows": rows.height,
        "first_date": first.isoformat() if first else None,
        "last_date": last.isoformat() if last else None,
        f"new_listings_last_{RECENT_DAYS}_days": spans.filter(
            pl.col("first_date") >= recent
        ).height,
    }


def read_rows(config: Config) -> pl.DataFrame:
    """The three columns the report needs, once the dataset is known to be whole and ours."""
    files = checked_files(config.paths.dataset, config.dataset)
    # Collected once: the spans, the daily counts and the summary each scan every row.
    return pl.scan_parquet(files).select(COLUMNS).collect() if files else empty().select(COLUMNS)


def plot_data(
    rows: pl.DataFrame, spans: pl.DataFrame, changes: pl.DataFrame, last_date: dt.date
) -> dict[str, pl.DataFrame]:
    """Every plot's data, by its file name in paths.plots."""
    queries = {
        AVAILABLE_PER_DAY: available_per_day(rows.lazy()),
        LISTINGS_PER_MONTH: listings_per_month(spans.lazy(), last_date),
        MISSING_PER_DAY: missing_per_day(rows.lazy(), spans.lazy(), changes.lazy(), last_date),
        AVAILABILITY_BY_MONTH: availability_by_month(rows.lazy(), spans.lazy(), last_date),
    }
    return dict(zip(queries, pl.collect_all(queries.values()), strict=True))


def write_outputs(
    config: Config,
    spans: pl.DataFrame,
    plots: dict[str, pl.DataFrame],
    metrics: dict[str, object],
) -> None:
    """All outputs, renamed into place together once all were written."""
    with contextlib.ExitStack() as staged:

        def staged_path(path: Path) -> Path:
            return staged.enter_context(atomic_path(path))

        write_frame(spans, staged_path(config.paths.spans), order=SPANS_ORDER)
        for name, data in plots.items():
            data.write_csv(staged_path(config.paths.plots / name))
        write_json(staged_path(config.paths.summary), metrics)


def run(config: Config) -> None:
    last_date = config.last_date
    rows = read_rows(config)
    spans = spans_with_status(rows.lazy(), last_date, config.spans.max_gap_days).collect()
    changes = read_changes(config.paths.changes)
    metrics = {
        **summary(rows, spans, last_date),
        **change_counts(changes, config.as_of),
        **run_window(config),
    }
    write_outputs(config, spans, plot_data(rows, spans, changes, last_date), metrics)
    listed = spans.filter(pl.col("status") == LISTED).height
    log.info(
        "%d listing spans of %d symbols (%d listed) through %s; %d symbols with a file that "
        "day, %d new listings in %d days; %d changes logged",
        spans.height,
        metrics["symbols"],
        listed,
        last_date,
        metrics["available_yesterday"],
        metrics[f"new_listings_last_{RECENT_DAYS}_days"],
        RECENT_DAYS,
        metrics["changes_total"],
    )


if __name__ == "__main__":
    stage_main("report", run, __doc__)
