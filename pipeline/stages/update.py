"""Stage update: list the lookback window (and any one-off repair) and merge into the dataset.

Every symbol with history gets its lookback window listed again, reaching back further when runs
were missed; symbols new since the last run come in whole from backfill's output. A one-off
repair (`run.repair`, set for one run by `make backfill` or `make audit`) adds its symbols and
dates to the same listing; of those, only rows that differ from the dataset are merged. Every
file that appeared late, vanished or was re-uploaded is appended to the change log, in the same
atomic write as the dataset.
"""

from __future__ import annotations

import datetime as dt
import logging

import polars as pl

from pipeline.atomic import write_json
from pipeline.config import Config
from pipeline.dataset.changes import merge_and_log
from pipeline.dataset.merge import changed_rows
from pipeline.dataset.schema import month_of
from pipeline.dataset.store import Summary, read_months, read_probe_file, summarize
from pipeline.entry import stage_main
from pipeline.planner import Plan, RunInputs, check_repair, plan
from pipeline.prober import ProbeStats, probe
from pipeline.symbols import preview, read_symbols
from pipeline.vision.client import VisionClient
from pipeline.vision.layout import Layout

log = logging.getLogger(__name__)


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


def symbols_without_files(the_plan: Plan, probes: pl.DataFrame) -> list[str]:
    """The symbols listed over their whole history that have no file up to as_of - 1.

    A full-history range gives no row for such a symbol, so it is not in the dataset:
    validate is told so rather than finding it missing.
    """
    found = set(probes.get_column("symbol").unique().to_list())
    return sorted(
        {r.symbol for r in the_plan.ranges if r.from_first_file and r.symbol not in found}
    )


def rows_to_merge(
    probes: pl.DataFrame, previous: pl.DataFrame, the_plan: Plan, summary: Summary
) -> pl.DataFrame:
    """The window and new histories as probed; a repair's older rows only where they differ.

    Re-listing history changes nothing when nothing changed, not even probe_timestamp, so a
    repair that finds nothing leaves those months byte-identical.
    """
    as_probed = the_plan.as_probed(summary.symbols)
    return pl.concat([probes.filter(as_probed), changed_rows(probes.filter(~as_probed), previous)])


def run_metrics(
    config: Config,
    the_plan: Plan,
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
    repair = config.repair
    return {
        "as_of": config.as_of.isoformat(),
        "last_date": config.last_date.isoformat(),
        "window_first": the_plan.window_first.isoformat(),
        "repair": None
        if repair is None
        else {
            "symbols": "all" if repair.symbols is None else list(repair.symbols),
            "since": (repair.since or config.dataset.start_date).isoformat(),
            "until": (repair.until or config.last_date).isoformat(),
        },
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
    check_repair(
        config.repair, symbols, config.dataset.contracts, symbols_file=str(config.paths.symbols)
    )
    the_plan = plan(
        summary,
        symbols - probed_through(history, config.last_date),
        RunInputs.for_update(config),
    )
    if config.repair is not None:
        log.info("one-off repair: %s", describe_repair(config))
    with VisionClient.from_config(config) as client:
        probes, stats = probe(
            client,
            Layout.from_config(config),
            the_plan.ranges,
            workers=config.probe.workers,
        )
    # Only the months that new rows fall in are read, merged and rewritten.
    months = pl.concat([history, probes]).select(month_of().unique()).to_series().to_list()
    previous = read_months(config.paths.dataset, months)
    merged_rows = rows_to_merge(probes, previous, the_plan, summary)
    # Logged: late files flipping to available, files gone or re-uploaded.
    rewritten, logged = merge_and_log(
        config, summary, previous, history, merged_rows, detected_at=stats.probed_at
    )
    write_json(
        config.paths.run_metrics,
        run_metrics(
            config,
            the_plan,
            stats,
            rows_merged=history.height + merged_rows.height,
            months_rewritten=len(rewritten),
            changes_logged=logged,
            without_files=symbols_without_files(the_plan, probes),
        ),
    )
    log.info(
        "probed %d symbols for %s to %s with %d requests (%d retries) in %.1fs; "
        "merged %d rows; %d changes logged to %s; %d symbols tracked; %d months rewritten%s",
        stats.symbols,
        the_plan.window_first,
        config.last_date,
        stats.requests,
        stats.retries,
        stats.seconds,
        history.height + merged_rows.height,
        logged,
        config.paths.changes,
        len(symbols),
        len(rewritten),
        f" ({', '.join(rewritten)})" if 0 < len(rewritten) <= 6 else "",
    )


def describe_repair(config: Config) -> str:
    repair = config.repair
    assert repair is not None
    names = "every symbol" if repair.symbols is None else preview(repair.symbols, limit=5)
    since = repair.since or config.dataset.start_date
    until = repair.until or config.last_date
    return f"re-listing {names} from {since} to {until}; rows that differ are merged and logged"


if __name__ == "__main__":
    stage_main("update", run, __doc__)
