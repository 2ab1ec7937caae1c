"""The dataset store: schema, monthly partitions, the newest-probe-wins merge, atomic writes.

The dataset is a directory of one Parquet file per month (`2024-01.parquet`), so a daily run
rewrites only the months it touched and DVC caches only those files again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import yaml

from pipeline.errors import PipelineError

SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "symbol": pl.String(),
    "available": pl.Boolean(),
    "file_size_bytes": pl.Int64(),
    "last_modified": pl.Datetime("us", "UTC"),
    "etag": pl.String(),
    "probe_timestamp": pl.Datetime("us", "UTC"),
}
KEY = ("date", "symbol")
PARTITION_SUFFIX = ".parquet"
DVC_LOCK = Path("dvc.lock")


class StoreError(PipelineError):
    """The dataset on disk is missing, unreadable, or does not follow the contract."""


def empty() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def merge(*frames: pl.DataFrame) -> pl.DataFrame:
    """One row per (date, symbol): the newest probe wins; ties go to the later frame.

    Rows before a symbol's first available date are dropped, as the contract says: a symbol
    has rows from its first file onwards.
    """
    ordered = pl.concat([frame.lazy() for frame in frames], how="vertical").with_row_index("_order")
    return (
        ordered.sort("probe_timestamp", "_order")
        .unique(subset=list(KEY), keep="last")
        .pipe(_from_first_file)
        .drop("_order")
        .sort(*KEY)
        .collect()
    )


def trim_to_first_file(rows: pl.DataFrame) -> pl.DataFrame:
    """Drop each symbol's rows before its first available date (and symbols with none)."""
    return rows.lazy().pipe(_from_first_file).sort(*KEY).collect()


def _from_first_file(rows: pl.LazyFrame) -> pl.LazyFrame:
    first_file = pl.col("date").filter(pl.col("available")).min().over("symbol")
    return rows.filter(pl.col("date") >= first_file)


def month_of(column: str = "date") -> pl.Expr:
    return pl.col(column).dt.strftime("%Y-%m")


def partition_path(dataset: Path, month: str) -> Path:
    return dataset / f"{month}{PARTITION_SUFFIX}"


def partition_files(dataset: Path) -> list[Path]:
    return sorted(dataset.glob(f"*{PARTITION_SUFFIX}")) if dataset.is_dir() else []


def read_dataset(dataset: Path, *, lock: Path = DVC_LOCK) -> pl.DataFrame:
    """The whole dataset, or an empty frame on a genuine first run.

    A dataset that dvc.lock records but that is not on disk (a fresh clone, a CI runner) is
    never read as empty: that would silently truncate history. It has to be pulled first.
    """
    files = partition_files(dataset)
    if not files:
        if recorded_in_dvc_lock(dataset, lock):
            raise StoreError(
                f"{dataset} is recorded in {lock} but missing here: "
                "run `dvc pull` (or `make pull`) first"
            )
        return empty()
    frames = [_read_partition(path) for path in files]
    return pl.concat(frames, how="vertical") if frames else empty()


def _read_partition(path: Path) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a damaged file
        raise StoreError(
            f"{path} is not a readable Parquet file ({type(exc).__name__}): "
            "restore it with `dvc checkout` or `dvc pull`"
        ) from None
    if dict(frame.schema) != SCHEMA:
        raise StoreError(
            f"{path} has columns {_describe(frame.schema)}, expected {_describe(SCHEMA)}: "
            "restore it with `dvc checkout` or `dvc pull`"
        )
    return frame


def _describe(schema: pl.Schema | dict[str, pl.DataType]) -> str:
    return ", ".join(f"{name}:{dtype}" for name, dtype in schema.items())


def dataset_symbols(dataset: Path, *, lock: Path = DVC_LOCK) -> set[str]:
    return set(read_dataset(dataset, lock=lock).get_column("symbol").unique().to_list())


def recorded_in_dvc_lock(out: Path, lock: Path = DVC_LOCK) -> bool:
    """Whether any stage in dvc.lock lists `out` among its outputs."""
    if not lock.exists():
        return False
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    wanted = out.as_posix().rstrip("/")
    return any(
        entry.get("path", "").rstrip("/") == wanted
        for stage in stages.values()
        for entry in stage.get("outs", [])
    )


def write_dataset(merged: pl.DataFrame, dataset: Path, *, previous: pl.DataFrame) -> list[str]:
    """Write the months whose rows differ from `previous`; return those months.

    Unchanged months are not rewritten, so their files (and DVC's cache) stay as they were.
    """
    dataset.mkdir(parents=True, exist_ok=True)
    new_parts = _by_month(merged)
    old_parts = _by_month(previous)
    changed = sorted(
        month
        for month in new_parts.keys() | old_parts.keys()
        if month not in new_parts
        or month not in old_parts
        or not new_parts[month].equals(old_parts[month])
    )
    for month in changed:
        path = partition_path(dataset, month)
        if month in new_parts:
            write_parquet(new_parts[month], path)
        else:
            path.unlink(missing_ok=True)
    return changed


def _by_month(rows: pl.DataFrame) -> dict[str, pl.DataFrame]:
    keyed = rows.sort(*KEY).with_columns(month_of().alias("_month"))
    return {
        str(month): part.drop("_month")
        for (month,), part in keyed.group_by("_month", maintain_order=True)
    }


def write_parquet(rows: pl.DataFrame, path: Path) -> None:
    """Sorted, zstd-compressed, statistics on: unchanged rows give byte-identical files."""
    with atomic_path(path) as tmp:
        rows.sort(*KEY).write_parquet(tmp, compression="zstd", statistics=True)


def read_probe_file(path: Path) -> pl.DataFrame:
    if not path.exists():
        return empty()
    return _read_partition(path)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o644)  # mkstemp's 0600 would make the published files private
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def last_date(rows: pl.DataFrame) -> dt.date | None:
    value = rows.get_column("date").max()
    return value if isinstance(value, dt.date) else None
