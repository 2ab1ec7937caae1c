"""The full-history audit: list every symbol's whole history again and log what changed.

Binance re-uploads and removes files long after publishing them (real 2019 files carry 2022
timestamps), and files published later than the update's lookback window are never seen by
it. Listing costs ~1 request per 500 days of a symbol, so the whole history is ~2,200
requests: cheap enough to audit weekly. Every difference is appended to the change log
(`paths.changes`) and merged into the dataset; with nothing changed, nothing is written.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipeline.repair import run_repair
from pipeline.stage import main


def cli(argv: Sequence[str] | None = None) -> None:
    argparse.ArgumentParser(
        prog="python -m pipeline.audit",
        description=(
            "List every symbol's whole history on Binance Vision again, append files that "
            "appeared, were removed or replaced to the change log, and merge them into the "
            "dataset (recorded in dvc.lock with `dvc commit update`)."
        ),
    ).parse_args(argv)
    main("audit", lambda config: run_repair(config, what="audit"))


if __name__ == "__main__":
    cli()
