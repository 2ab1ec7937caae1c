"""Backfill checkpoints: each symbol's listing, saved the moment it is complete.

A full backfill lists hundreds of symbols for minutes. If it is killed (a CI timeout, a
reboot, SIGKILL), the rerun reads the listings already saved and lists only the rest. A
checkpoint is kept beside the backfill output, in a hidden folder of one Parquet file per
symbol, each written atomically; it is valid only for the run it was made for (same dataset,
same dates, same bucket) and is removed once the backfill output is written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import polars as pl

from pipeline.atomic import write_text
from pipeline.config import Config
from pipeline.dataset.store import PARTITION_SUFFIX, write_parquet
from pipeline.prober import LISTED_FILES

log = logging.getLogger(__name__)

SCOPE_FILE = "_scope.json"
PROBED_AT = "probed_at"
CHECKPOINT_SCHEMA = {**LISTED_FILES, PROBED_AT: pl.Datetime("us", "UTC")}


@dataclass(frozen=True)
class Resumed:
    """What an interrupted run had finished: its symbols, and their listed files."""

    symbols: set[str]
    files: pl.DataFrame
    """Listed daily files (LISTED_FILES) with the time they were listed (`probed_at`)."""


NOTHING_RESUMED = Resumed(symbols=set(), files=pl.DataFrame(schema=CHECKPOINT_SCHEMA))


@dataclass(frozen=True)
class Checkpoint:
    directory: Path
    scope: dict[str, str]
    """What the saved listings are valid for; a checkpoint of another scope is discarded."""

    @classmethod
    def for_backfill(cls, config: Config) -> Checkpoint:
        output = config.paths.backfill
        return cls(
            directory=output.with_name(f".{output.name}.checkpoint"),
            scope={
                **config.dataset.identity(),
                "last_date": config.last_date.isoformat(),
                "listing_url": config.vision.listing_url,
            },
        )

    def load(self) -> Resumed:
        """The symbols saved by an interrupted run of the same scope, if any."""
        if not self.directory.is_dir():
            return NOTHING_RESUMED
        if self._saved_scope() != self.scope:
            log.info("discarding %s: it was made for other params or dates", self.directory)
            self.clear()
            return NOTHING_RESUMED
        symbols, frames = set(), []
        for path in sorted(self.directory.glob(f"*{PARTITION_SUFFIX}")):
            try:
                frame = pl.read_parquet(path)
            except Exception:  # polars raises several types for a damaged file
                log.warning("ignoring unreadable checkpoint %s: its symbol is listed again", path)
                continue
            if dict(frame.schema) != CHECKPOINT_SCHEMA:
                log.warning("ignoring checkpoint %s of another layout", path)
                continue
            symbols.add(unquote(path.name.removesuffix(PARTITION_SUFFIX)))
            frames.append(frame)
        files = pl.concat([NOTHING_RESUMED.files, *frames])
        return Resumed(symbols=symbols, files=files)

    def save(self, symbol: str, files: pl.DataFrame, probed_at: dt.datetime) -> None:
        """Record that `symbol` is fully listed, with its files (none is a valid answer)."""
        if not (self.directory / SCOPE_FILE).is_file():
            write_text(self.directory / SCOPE_FILE, json.dumps(self.scope, sort_keys=True))
        # The name is percent-encoded: symbols are not guaranteed to be safe file names.
        path = self.directory / f"{quote(symbol, safe='')}{PARTITION_SUFFIX}"
        stamp = pl.lit(probed_at, dtype=CHECKPOINT_SCHEMA[PROBED_AT]).alias(PROBED_AT)
        write_parquet(files.with_columns(stamp), path)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _saved_scope(self) -> object:
        try:
            return json.loads((self.directory / SCOPE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
