"""Volume checkpoints: the rows of downloaded files, saved batch by batch while a run fetches.

A full volume backfill downloads ~45,000 files. If it is killed, the rerun reads the saved
batches and fetches only the files not in them. A saved row is keyed by its source (key, ETag,
size): a file re-uploaded since has another ETag and is fetched again, so a checkpoint stays
valid across run dates; it is tied only to the dataset identity it was made for, and removed
once the volume dataset is committed.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.atomic import write_text
from pipeline.dataset.store import PARTITION_SUFFIX, write_parquet
from pipeline.volume.schema import SCHEMA

log = logging.getLogger(__name__)

SCOPE_FILE = "_scope.json"
BATCH_PREFIX = "batch-"


@dataclass(frozen=True)
class VolumeCheckpoint:
    directory: Path
    scope: dict[str, str]
    """What the saved rows are valid for; a checkpoint of another scope is discarded."""

    @classmethod
    def beside(cls, volume: Path, scope: dict[str, str]) -> VolumeCheckpoint:
        """Hidden beside the dataset (`data/.volume.checkpoint`), outside what DVC records."""
        return cls(directory=volume.with_name(f".{volume.name}.checkpoint"), scope=scope)

    def load(self) -> pl.DataFrame:
        """The rows saved by interrupted runs of the same scope (the volume schema)."""
        if not self.directory.is_dir():
            return pl.DataFrame(schema=SCHEMA)
        if self._saved_scope() != self.scope:
            log.info("discarding %s: it was made for another dataset", self.directory)
            self.clear()
            return pl.DataFrame(schema=SCHEMA)
        frames = []
        for path in self._batches():
            try:
                frame = pl.read_parquet(path)
            except Exception:  # polars raises several types for a damaged file
                log.warning("ignoring unreadable checkpoint %s: its files are fetched again", path)
                continue
            if dict(frame.schema) != SCHEMA:
                log.warning("ignoring checkpoint %s of another layout", path)
                continue
            frames.append(frame)
        return pl.concat([pl.DataFrame(schema=SCHEMA), *frames])

    def save(self, rows: pl.DataFrame) -> None:
        """Record a batch of fetched files' rows (the volume schema), atomically."""
        if rows.is_empty():
            return
        if not (self.directory / SCOPE_FILE).is_file():
            self.directory.mkdir(parents=True, exist_ok=True)
            write_text(self.directory / SCOPE_FILE, json.dumps(self.scope, sort_keys=True))
        number = len(self._batches())
        # Numbered past any saved batch: a rerun's batches add to an interrupted run's.
        while (path := self.directory / f"{BATCH_PREFIX}{number:06d}{PARTITION_SUFFIX}").exists():
            number += 1
        write_parquet(rows, path)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _batches(self) -> list[Path]:
        return sorted(self.directory.glob(f"{BATCH_PREFIX}*{PARTITION_SUFFIX}"))

    def _saved_scope(self) -> object:
        try:
            return json.loads((self.directory / SCOPE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
