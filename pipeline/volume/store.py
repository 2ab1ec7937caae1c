"""The volume dataset on disk: the availability dataset's layout (pipeline.dataset.store) with
the volume schema: monthly partitions checked before they are read, committed atomically.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.config import Config
from pipeline.dataset.commit import Commit
from pipeline.dataset.store import PARTITION_SUFFIX, StoreError, checked_files, read_months
from pipeline.dataset.store import write_dataset as write_partitions
from pipeline.dvc_lock import DVC_LOCK
from pipeline.volume.schema import INTERVAL, SCHEMA, STORED_SCHEMA


@dataclass(frozen=True)
class VolumeIdentity:
    """What a volume dataset holds (its `_dataset.json`): two must never be merged."""

    market: str
    start_date: dt.date
    contracts: str

    @classmethod
    def from_config(cls, config: Config) -> VolumeIdentity:
        dataset = config.dataset
        return cls(
            market=dataset.market, start_date=dataset.start_date, contracts=dataset.contracts
        )

    def identity(self) -> dict[str, str]:
        return {
            "market": self.market,
            "data_type": "klines",
            "interval": INTERVAL,
            "start_date": self.start_date.isoformat(),
            "contracts": self.contracts,
        }


def volume_files(path: Path, identity: VolumeIdentity, *, lock: Path = DVC_LOCK) -> list[Path]:
    """The partitions, once the volume dataset is known to be whole, ours and of its schema."""
    return checked_files(path, identity, lock=lock, schema=SCHEMA)


def read_sources(path: Path, identity: VolumeIdentity, *, lock: Path = DVC_LOCK) -> pl.DataFrame:
    """Every stored row's key and source (schema.STORED_SCHEMA), read from five columns only.

    A row in another month's partition is refused: its key may be in its own month's too.
    """
    files = volume_files(path, identity, lock=lock)
    if not files:
        return pl.DataFrame(schema=STORED_SCHEMA)
    rows = (
        pl.scan_parquet(files, include_file_paths="_file").select(*STORED_SCHEMA, "_file").collect()
    )
    misplaced = rows.filter(
        pl.col("date").dt.strftime("%Y-%m") + PARTITION_SUFFIX
        != pl.col("_file").str.extract(r"([^/\\]+)$")
    )
    if not misplaced.is_empty():
        first = misplaced.row(0, named=True)
        raise StoreError(
            f"{first['_file']} holds rows of another month (e.g. {first['date']} "
            f"{first['symbol']}): restore it with `dvc checkout` or `dvc pull`"
        )
    return rows.drop("_file")


def read_volume_months(path: Path, months: Iterable[dt.date]) -> pl.DataFrame:
    """The stored rows of the given months (each partition checked), in the volume schema."""
    return read_months(path, [f"{month:%Y-%m}" for month in months], schema=SCHEMA)


def write_volume(
    rows: pl.DataFrame,
    path: Path,
    identity: VolumeIdentity,
    *,
    previous: pl.DataFrame,
    commit: Commit,
) -> list[str]:
    """Stage the months whose rows differ from `previous` in `commit`; return those months."""
    return write_partitions(
        rows.select(list(SCHEMA)), path, identity, previous=previous, commit=commit
    )
