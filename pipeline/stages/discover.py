"""Stage discover: list the symbol folders on Binance Vision and write symbols.json."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import Config
from pipeline.entry import stage_main
from pipeline.errors import PipelineError
from pipeline.symbols import SymbolsError, in_scope, preview, read_symbols, write_symbols
from pipeline.vision.client import VisionClient
from pipeline.vision.layout import Layout

log = logging.getLogger(__name__)


def discover_symbols(client: VisionClient, layout: Layout, config: Config) -> list[str]:
    """Every symbol folder under the dataset's root, filtered to the configured contracts."""
    prefixes = client.list_common_prefixes(layout.root, subject="symbols")
    return in_scope((layout.symbol_of(p) for p in prefixes), config.dataset.contracts)


def run(config: Config) -> None:
    layout = Layout.from_config(config)
    with VisionClient.from_config(config) as client:
        symbols = discover_symbols(client, layout, config)
        requests, retries = client.requests, client.retries
    if not symbols:
        raise PipelineError(
            f"no symbols under {layout.root} at {config.vision.listing_url}: "
            "check vision.listing_url, dataset.market and dataset.data_type"
        )
    path = config.paths.symbols
    previous = _previous_symbols(path)
    changed = write_symbols(path, symbols)
    new, gone = set(symbols) - previous, previous - set(symbols)
    log.info(
        "discovered %d symbols with %d requests (%d retries): %d new%s, %d no longer listed; %s %s",
        len(symbols),
        requests,
        retries,
        len(new),
        f" ({preview(new)})" if new else "",
        len(gone),
        path,
        "rewritten" if changed else "unchanged",
    )


def _previous_symbols(path: Path) -> set[str]:
    """The list being replaced; a damaged one is what discover is there to repair."""
    if not path.exists():
        return set()
    try:
        return set(read_symbols(path))
    except SymbolsError as exc:
        log.warning("replacing an invalid %s: %s", path, exc)
        return set()


if __name__ == "__main__":
    stage_main("discover", run, __doc__)
