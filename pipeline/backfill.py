"""Stage backfill: the full history of the symbols in data/gaps.json, as one Parquet file.

Each symbol's listing is checkpointed as soon as it is complete, so a killed backfill resumes
where it stopped: the rerun lists only the symbols not finished yet.

With `--symbols` or `--since/--until` it is instead an operator's repair (pipeline/repair.py):
those symbols (or all) over those dates (or all) are listed again and merged into the dataset.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from functools import partial

import polars as pl

from pipeline.arguments import iso_date, symbol_list
from pipeline.checkpoint import PROBED_AT, Checkpoint, Resumed
from pipeline.config import Config
from pipeline.prober import ProbeRange, probe, to_rows
from pipeline.repair import run_repair
from pipeline.stage import main
from pipeline.store import empty, write_parquet
from pipeline.symbols import preview, read_gaps
from pipeline.vision import Layout, VisionClient

log = logging.getLogger(__name__)


def history_ranges(symbols: Iterable[str], config: Config) -> list[ProbeRange]:
    start, last = config.dataset.start_date, config.last_date
    return [ProbeRange(s, start, last, from_first_file=True) for s in sorted(symbols)]


def resumed_rows(resumed: Resumed, config: Config) -> pl.DataFrame:
    """The rows of the symbols an interrupted run finished, stamped with when it listed them."""
    frames = [
        to_rows(
            history_ranges(files.get_column("symbol").unique(), config),
            [files.drop(PROBED_AT)],
            probed_at,
        )
        for (probed_at,), files in resumed.files.group_by(PROBED_AT)
    ]
    return pl.concat([empty(), *frames])


def run(config: Config) -> None:
    gaps = read_gaps(config.paths.gaps)
    checkpoint = Checkpoint.for_backfill(config)
    if not gaps:
        write_parquet(empty(), config.paths.backfill)
        checkpoint.clear()
        log.info("no symbol lacks history: nothing to backfill, no request made")
        return
    resumed = checkpoint.load()
    done = resumed.symbols & set(gaps)
    if done:
        log.info(
            "resuming an interrupted backfill: %d of %d symbols already listed (%s)",
            len(done),
            len(gaps),
            checkpoint.directory,
        )
    probed_at = dt.datetime.now(dt.UTC)
    with VisionClient.from_config(config) as client:
        rows, stats = probe(
            client,
            Layout.from_config(config),
            history_ranges(set(gaps) - done, config),
            workers=config.probe.workers,
            probed_at=probed_at,
            on_listed=lambda symbol, files: checkpoint.save(symbol, files, probed_at),
        )
    earlier = resumed_rows(resumed, config).filter(pl.col("symbol").is_in(list(gaps)))
    rows = pl.concat([earlier, rows])
    write_parquet(rows, config.paths.backfill)
    checkpoint.clear()
    log.info(
        "backfilled %d symbols (%s to %s): %d rows, %d available; "
        "%d symbols listed with %d requests (%d retries) in %.1fs%s",
        len(gaps),
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.backfill",
        description=(
            "Without options: the DVC stage (backfill the symbols in data/gaps.json). "
            "With options: list chosen symbols and dates again and merge them into the dataset."
        ),
        epilog=(
            "examples: --symbols NEWUSDT,OTHERUSDT (their whole history); "
            "--since 2024-05-01 --until 2024-05-03 (every symbol, after an outage)"
        ),
    )
    parser.add_argument(
        "--symbols",
        type=symbol_list,
        metavar="A,B",
        help="comma-separated symbols (default with --since: every symbol)",
    )
    parser.add_argument(
        "--since", type=iso_date, metavar="DATE", help="first date to list (default: start_date)"
    )
    parser.add_argument(
        "--until", type=iso_date, metavar="DATE", help="last date to list (default: as_of - 1)"
    )
    args = parser.parse_args(argv)
    if args.until and not args.since and not args.symbols:
        parser.error("--until needs --since or --symbols")
    return args


def cli(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.symbols is None and args.since is None and args.until is None:
        main("backfill", run)
    what = "targeted backfill" if args.since is None and args.until is None else "re-probe"
    repair = partial(
        run_repair, what=what, symbols=args.symbols, since=args.since, until=args.until
    )
    main("backfill", repair)


if __name__ == "__main__":
    cli()
