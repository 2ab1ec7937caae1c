"""The dataset store: monthly partitions, checked before they are read, written atomically.

The dataset is a directory of one Parquet file per month (`2024-01.parquet`), so a daily run
rewrites only the months it touched and DVC caches only those files again.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl

from pipeline.atomic import TEMPORARY_SUFFIX, atomic_path, write_failure, writing
from pipeline.dataset.commit import Commit
from pipeline.dataset.merge import first_files
from pipeline.dataset.schema import KEY, SCHEMA, empty, month_of
from pipeline.dvc_lock import DVC_LOCK, recorded_output
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.config import DatasetConfig

# Within a partition rows are ordered by symbol, in row groups small enough that a query for
# one symbol's timeline skips most of each file by the row groups' min/max statistics.
PARTITION_ORDER = ("symbol", "date")
ROW_GROUP_ROWS = 1000
PARTITION_SUFFIX = ".parquet"


class StoreError(PipelineError):
    """The dataset on disk is missing, unreadable, or does not follow the contract."""


class Identified(Protocol):
    """What a dataset's params say it holds (`_dataset.json`): the availability dataset's
    DatasetConfig, or another dataset of the same layout (the volume dataset's)."""

    def identity(self) -> dict[str, str]: ...


Schema = Mapping[str, pl.DataType]


def partition_path(dataset: Path, month: str) -> Path:
    return dataset / f"{month}{PARTITION_SUFFIX}"


def partition_files(dataset: Path) -> list[Path]:
    return sorted(dataset.glob(f"*{PARTITION_SUFFIX}")) if dataset.is_dir() else []


IDENTITY_FILE = "_dataset.json"
PARTITION_NAME = re.compile(r"\d{4}-\d{2}\.parquet")


@dataclass(frozen=True)
class Summary:
    """What a run needs to know about the whole dataset, read from three columns only."""

    symbols: set[str]
    last_date: dt.date | None
    first_files: pl.DataFrame  # symbol, first_file
    available_files: int = 0  # rows with available=true: the files the dataset tracks

    @classmethod
    def nothing(cls) -> Summary:
        """The summary of a dataset with no rows yet."""
        return cls(
            symbols=set(),
            last_date=None,
            first_files=pl.DataFrame(schema={"symbol": pl.String, "first_file": pl.Date}),
        )


def summarize(dataset: Path, params: DatasetConfig, *, lock: Path = DVC_LOCK) -> Summary:
    """Check that the dataset is whole and ours, then summarise it without loading it.

    A dataset that dvc.lock records is never read as empty or partial when files are missing
    (a fresh clone, a CI runner, an interrupted checkout): that would silently truncate
    history. Nor is a dataset of other params merged into: that would mix two datasets.
    """
    files = checked_files(dataset, params, lock=lock)
    if not files:
        return Summary.nothing()
    rows = pl.scan_parquet(files).select("symbol", "date", "available")
    symbols, totals, firsts, *spans = pl.collect_all(
        [
            rows.select(pl.col("symbol").unique()),
            rows.select(pl.col("date").max(), pl.col("available").sum()),
            first_files(rows),
            # A row in another month's file may also be in its own: the key would be there twice.
            *(_date_span(path) for path in files),
        ]
    )
    for path, span in zip(files, spans, strict=True):
        months = {f"{day:%Y-%m}" for day in span.row(0) if day is not None}
        if months - {path.name.removesuffix(PARTITION_SUFFIX)}:
            _read_partition(path)  # refused, with a misplaced row named
    return Summary(
        symbols=set(symbols.get_column("symbol").to_list()),
        last_date=totals["date"].item(),
        first_files=firsts,
        available_files=int(totals["available"].item() or 0),
    )


def _date_span(path: Path) -> pl.LazyFrame:
    return pl.scan_parquet(path).select(
        pl.col("date").min().alias("first"), pl.col("date").max().alias("last")
    )


def _refuse_misplaced(path: Path, date: dt.date, rows: pl.DataFrame) -> None:
    symbol = rows["symbol"][0]
    raise StoreError(
        f"{path} holds rows of another month (e.g. {date} {symbol}, which belongs in "
        f"{date:%Y-%m}{PARTITION_SUFFIX}): restore it with `dvc checkout` or `dvc pull`"
    )


def read_months(dataset: Path, months: Iterable[str], *, schema: Schema = SCHEMA) -> pl.DataFrame:
    """The rows of the given months (those that exist), each partition validated."""
    paths = [partition_path(dataset, month) for month in sorted(set(months))]
    frames = [_read_partition(path, schema) for path in paths if path.exists()]
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=dict(schema))


def checked_files(
    dataset: Path, params: Identified, *, lock: Path = DVC_LOCK, schema: Schema = SCHEMA
) -> list[Path]:
    """The partitions, once the dataset is known to be whole, ours and of `schema`."""
    files = partition_files(dataset)
    _check_no_stray_file(dataset)
    _check_complete(dataset, files, lock)
    if files:
        _check_identity(dataset, params)
        for path in files:
            _check_schema(path, pl.read_parquet_schema, schema)
    return files


def _check_no_stray_file(dataset: Path) -> None:
    """Only month partitions and the identity file belong in the dataset's folder.

    DVC records the whole folder: anything else would be recorded, restored and published as
    part of the dataset. The hidden temporary files of an interrupted write are ours.
    """
    if not dataset.is_dir():
        return
    for path in sorted(dataset.iterdir()):
        name = path.name
        if name.startswith(".") and name.endswith(TEMPORARY_SUFFIX) and path.is_file():
            continue
        if name == IDENTITY_FILE or (PARTITION_NAME.fullmatch(name) and path.is_file()):
            continue
        raise StoreError(
            f"{path} does not belong in the dataset (only YYYY-MM{PARTITION_SUFFIX} and "
            f"{IDENTITY_FILE} do): move it out of {dataset}"
        )


def _check_complete(dataset: Path, files: list[Path], lock: Path) -> None:
    entry = recorded_output(_as_recorded(dataset, lock), lock) or recorded_output(dataset, lock)
    if entry is None:
        return
    # Only the files DVC records count: a temporary file left by a killed run must not
    # stand in for a missing partition.
    on_disk = len(files) + (dataset / IDENTITY_FILE).is_file()
    if on_disk == 0:
        raise StoreError(
            f"{dataset} is recorded in {lock} but missing here: "
            "run `dvc pull` (or `make pull`) first"
        )
    recorded = entry.get("nfiles")
    if isinstance(recorded, int) and on_disk < recorded:
        raise StoreError(
            f"{dataset} has {on_disk} of the {recorded} files {lock} records: "
            "run `dvc checkout` (or `dvc pull`) first"
        )


def _as_recorded(dataset: Path, lock: Path) -> Path:
    """`dataset` as DVC names its outputs in `lock`, relative to the lock's folder: `../data/x`,
    seen from a subfolder of the repository, is `data/x`. Outside that folder, left as is."""
    here, base = dataset.resolve(), lock.resolve().parent
    return here.relative_to(base) if here.is_relative_to(base) else dataset


def _check_identity(dataset: Path, params: Identified) -> None:
    """Refuse to merge into a dataset built with other `dataset.*` params."""
    path = dataset / IDENTITY_FILE
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        refuse_denied_read(exc, path)
        found = None
    if not isinstance(found, dict):
        raise StoreError(
            f"{path} is missing or unreadable, so {dataset} cannot be matched to params.yaml: "
            "restore it with `dvc checkout`"
        )
    if found != params.identity():
        raise StoreError(
            f"{dataset} holds {_describe_identity(found)} but params.yaml asks for "
            f"{_describe_identity(params.identity())}: move {dataset} aside to build a new dataset"
        )


def _describe_identity(identity: dict[str, str]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(identity.items()))


def _read_partition(path: Path, schema: Schema = SCHEMA) -> pl.DataFrame:
    """A partition, refused if it holds rows of another month: their key may be there too."""
    rows = _read_rows(path, schema)
    misplaced = rows.filter(month_of() != path.name.removesuffix(PARTITION_SUFFIX))
    if not misplaced.is_empty():
        _refuse_misplaced(path, misplaced["date"][0], misplaced)
    return rows


def _read_rows(path: Path, schema: Schema = SCHEMA) -> pl.DataFrame:
    """Dataset rows, refused if they break the contract a merge relies on (one row per key)."""
    rows: pl.DataFrame = _check_schema(path, pl.read_parquet, schema)
    duplicated = rows.filter(pl.struct(*KEY).is_duplicated())
    if not duplicated.is_empty():
        date, symbol = duplicated.row(0)[:2]
        raise StoreError(
            f"{path} has {duplicated.height} rows sharing a (date, symbol), e.g. {date} {symbol}: "
            "restore it with `dvc checkout` or `dvc pull`"
        )
    return rows


def _check_schema(path: Path, read: Callable[[Path], Any], schema: Schema = SCHEMA) -> Any:
    """`read(path)` (a frame or a schema), refused unless it has `schema`'s columns."""
    try:
        result = read(path)
    except Exception as exc:  # polars raises several types for a damaged file
        refuse_denied_read(exc, path)
        raise StoreError(
            f"{path} is not a readable Parquet file ({type(exc).__name__}): "
            "restore it with `dvc checkout` or `dvc pull`"
        ) from None
    found = result.schema if isinstance(result, pl.DataFrame) else result
    if dict(found) != dict(schema):
        raise StoreError(
            f"{path} has columns {_describe(found)}, expected {_describe(schema)}: "
            "restore it with `dvc checkout` or `dvc pull`"
        )
    return result


def refuse_denied_read(exc: BaseException, path: Path) -> None:
    """Raise a one-line error when the permissions (not damage) stopped a read of `path`.

    A file we may not read is not damaged: `dvc checkout` would not help, a chmod would.
    """
    failure = write_failure(exc, path, verb="read")
    if failure is not None:
        raise failure from None


def _describe(schema: pl.Schema | Schema) -> str:
    return ", ".join(f"{name}:{dtype}" for name, dtype in schema.items())


def write_dataset(
    merged: pl.DataFrame,
    dataset: Path,
    params: Identified,
    *,
    previous: pl.DataFrame,
    commit: Commit,
) -> list[str]:
    """Stage the months whose rows differ from `previous` in `commit`; return those months.

    Unchanged months are not rewritten, so their files (and DVC's cache) stay as they were.
    Every changed month is written to a temporary file of `commit`, the caller's commit of
    all its files, which renames them into place together, crash-atomically
    (pipeline.dataset.commit).
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
    identity_text = json.dumps(params.identity(), indent=2, sort_keys=True) + "\n"
    identity_path = dataset / IDENTITY_FILE
    if not identity_path.exists() or identity_path.read_text(encoding="utf-8") != identity_text:
        commit.new_file(identity_path).write_text(identity_text, encoding="utf-8")
    for month in changed:
        path = partition_path(dataset, month)
        if month in new_parts:
            write_frame(new_parts[month], commit.new_file(path))
        else:
            commit.remove(path)
    return changed


def _by_month(rows: pl.DataFrame) -> dict[str, pl.DataFrame]:
    keyed = rows.sort(*PARTITION_ORDER).with_columns(month_of().alias("_month"))
    return {
        str(month): part.drop("_month")
        for (month,), part in keyed.group_by("_month", maintain_order=True)
    }


def write_parquet(rows: pl.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        write_frame(rows, tmp)


def write_frame(
    rows: pl.DataFrame, path: Path, *, order: tuple[str, ...] = PARTITION_ORDER
) -> None:
    """Sorted, zstd-compressed, statistics on: unchanged rows give byte-identical files."""
    with writing(path):  # a full disk names the file, not "parquet: ... transport error"
        rows.sort(*order).write_parquet(
            path, compression="zstd", statistics=True, row_group_size=ROW_GROUP_ROWS
        )


def read_probe_file(path: Path) -> pl.DataFrame:
    if not path.exists():
        return empty()
    return _read_rows(path)
