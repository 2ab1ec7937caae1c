"""Stage backfill: the whole history of every symbol in data/gaps.json the dataset lacks.

Only symbols the dataset does not hold yet are listed, whatever made the stage rerun (a new
gaps.json, a deploy of the listing client, a change of the listing URL): a symbol with history
is update's to keep current. Each symbol's listing is checkpointed as soon as it is complete,
so a killed backfill resumes where it stopped: the rerun lists only the symbols not finished.
"""

from __future__ import annotations

import logging

import polars as pl

from pipeline.checkpoint import PROBED_AT, Checkpoint, Resumed
from pipeline.config import Config
from pipeline.dataset.schema import empty
from pipeline.dataset.store import Summary, summarize, write_parquet
from pipeline.entry import stage_main
from pipeline.planner import ProbeRange, RunInputs, plan
from pipeline.prober import probe, to_rows
from pipeline.symbols import preview, read_gaps
from pipeline.vision.client import VisionClient
from pipeline.vision.layout import Layout

log = logging.getLogger(__name__)


def resumed_rows(resumed: Resumed, config: Config) -> pl.DataFrame:
    """The rows of the symbols an interrupted run finished, stamped with when it listed them."""
    inputs = RunInputs.for_backfill(config)
    frames = [
        to_rows(
            plan_histories(files.get_column("symbol").unique(), inputs),
            [files.drop(PROBED_AT)],
            probed_at,
        )
        for (probed_at,), files in resumed.files.group_by(PROBED_AT)
    ]
    return pl.concat([empty(), *frames])


def plan_histories(symbols: pl.Series, inputs: RunInputs) -> list[ProbeRange]:
    """Whole-history ranges of `symbols`, as if the dataset held none of them."""
    return plan(Summary.nothing(), symbols.to_list(), inputs).ranges


def run(config: Config) -> None:
    summary = summarize(config.paths.dataset, config.dataset)
    gaps = read_gaps(config.paths.gaps)
    lacking = sorted(set(gaps) - summary.symbols)
    checkpoint = Checkpoint.for_backfill(config)
    if not lacking:
        write_parquet(empty(), config.paths.backfill)
        checkpoint.clear()
        held = f" ({len(gaps)} in gaps.json already have history)" if gaps else ""
        log.info("no symbol lacks history%s: nothing to backfill, no request made", held)
        return
    ranges = plan(summary, lacking, RunInputs.for_backfill(config)).ranges
    resumed = checkpoint.load()
    done = resumed.symbols & set(lacking)
    if done:
        log.info(
            "resuming an interrupted backfill: %d of %d symbols already listed (%s)",
            len(done),
            len(lacking),
            checkpoint.directory,
        )
    with VisionClient.from_config(config) as client:
        rows, stats = probe(
            client,
            Layout.from_config(config),
            [r for r in ranges if r.symbol not in done],
            workers=config.probe.workers,
            # Each symbol is stamped as it is saved: a resumed run keeps when it was listed.
            on_listed=lambda symbol, files: checkpoint.save(symbol, files, client.now()),
        )
    earlier = resumed_rows(resumed, config).filter(pl.col("symbol").is_in(lacking))
    rows = pl.concat([earlier, rows])
    write_parquet(rows, config.paths.backfill)
    checkpoint.clear()
    log.info(
        "backfilled %d symbols (%s to %s): %d rows, %d available; "
        "%d symbols listed with %d requests (%d retries) in %.1fs%s",
        len(lacking),
        config.dataset.start_date,
        config.last_date,
        rows.height,
        rows.get_column("available").sum(),
        stats.symbols,
        stats.requests,
        stats.retries,
        stats.seconds,
        f"; {len(done)} resumed from the checkpoint ({preview(done)})" if done else "",
    )


if __name__ == "__main__":
    stage_main("backfill", run, __doc__)
