"""Stage backfill: the full history of the symbols in data/gaps.json, as one Parquet file."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from pipeline.config import Config
from pipeline.prober import ProbeRange, probe
from pipeline.stage import main
from pipeline.store import empty, write_parquet
from pipeline.symbols import read_gaps
from pipeline.vision import Layout, VisionClient

log = logging.getLogger(__name__)


def history_ranges(symbols: Iterable[str], config: Config) -> list[ProbeRange]:
    start, last = config.dataset.start_date, config.last_date
    return [ProbeRange(s, start, last, from_first_file=True) for s in sorted(symbols)]


def run(config: Config) -> None:
    gaps = read_gaps(config.paths.gaps)
    if not gaps:
        write_parquet(empty(), config.paths.backfill)
        log.info("no symbol lacks history: nothing to backfill, no request made")
        return
    probed_at = dt.datetime.now(dt.UTC)
    with VisionClient.from_config(config) as client:
        rows, stats = probe(
            client,
            Layout.from_config(config),
            history_ranges(gaps, config),
            workers=config.probe.workers,
            probed_at=probed_at,
        )
    write_parquet(rows, config.paths.backfill)
    log.info(
        "backfilled %d symbols (%s to %s): %d rows, %d available; "
        "%d requests (%d retries) in %.1fs",
        stats.symbols,
        config.dataset.start_date,
        config.last_date,
        rows.height,
        rows.get_column("available").sum(),
        stats.requests,
        stats.retries,
        stats.seconds,
    )


if __name__ == "__main__":
    main("backfill", run)
