"""Stage detect_gaps: which symbols in symbols.json have no history in the dataset yet."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pipeline.atomic import write_text
from pipeline.config import Config
from pipeline.dataset.store import summarize
from pipeline.entry import stage_main
from pipeline.symbols import preview, read_symbols, render_gaps

log = logging.getLogger(__name__)


def find_gaps(symbols: Iterable[str], tracked: set[str]) -> list[str]:
    return sorted(set(symbols) - tracked)


def run(config: Config) -> None:
    symbols = read_symbols(config.paths.symbols)
    tracked = summarize(config.paths.dataset, config.dataset).symbols
    gaps = find_gaps(symbols, tracked)
    write_text(config.paths.gaps, render_gaps(gaps))
    log.info(
        "%d of %d symbols need their full history%s",
        len(gaps),
        len(symbols),
        f": {preview(gaps)}" if gaps else "",
    )


if __name__ == "__main__":
    stage_main("detect_gaps", run, __doc__)
