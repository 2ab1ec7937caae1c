"""The change log: every file that appeared late, vanished or was re-uploaded, once each.

History is never rewritten silently. Whenever a run replaces rows the dataset already had,
the differences are appended to `data/changes.parquet`, one row per (date, symbol) changed:

- appeared: a day recorded without a file now has one (published late, or restored);
- removed: a day recorded with a file now has none (deleted from the bucket);
- replaced: the file is there, with another ETag, size or Last-Modified (re-uploaded).

New days and new symbols are growth, not changes, and are not logged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.atomic import atomic_path
from pipeline.config import Config
from pipeline.dataset.merge import differs, merge
from pipeline.dataset.schema import FILE_STATE, KEY
from pipeline.dataset.store import StoreError, Summary, write_dataset, write_frame

CHANGE_KINDS = ("appeared", "removed", "replaced")
CHANGES_SCHEMA: dict[str, pl.DataType] = {
    "detected_at": pl.Datetime("us", "UTC"),
    "date": pl.Date(),
    "symbol": pl.String(),
    "kind": pl.Enum(CHANGE_KINDS),
    "old_size": pl.Int64(),
    "new_size": pl.Int64(),
    "old_etag": pl.String(),
    "new_etag": pl.String(),
    "old_last_modified": pl.Datetime("us", "UTC"),
    "new_last_modified": pl.Datetime("us", "UTC"),
}
LOG_ORDER = ("detected_at", "symbol", "date")


def detect_changes(
    previous: pl.DataFrame,
    merged: pl.DataFrame,
    *,
    known_through: dt.date | None,
    detected_at: dt.datetime,
    tracked: set[str] | None = None,
) -> pl.DataFrame:
    """What `merged` changes of `previous` (rows of the same months), as change-log rows.

    `known_through` is the dataset's last date before the run: a key `previous` lacks is a
    change only if it lies within the known history of a symbol `previous` has (a file found
    before the symbol's recorded first file); later days are new. `tracked` names the
    symbols the whole dataset has, when `previous` holds only some of its months.
    """
    old = previous.select(*KEY, *FILE_STATE)
    new = merged.select(*KEY, *FILE_STATE)
    symbols = old.get_column("symbol").unique().to_list() if tracked is None else list(tracked)
    known_symbols = pl.DataFrame({"symbol": symbols}, schema={"symbol": pl.String})
    added = (
        new.join(old, on=list(KEY), how="anti")
        .join(known_symbols, on="symbol", how="semi")
        .filter(pl.col("date") <= (known_through or dt.date.min))
        .with_columns(pl.lit(False).alias("available_old"))
    )
    pairs = pl.concat(
        [
            old.join(new, on=list(KEY), how="left", suffix="_new").rename(
                {name: f"{name}_old" for name in FILE_STATE}
            ),
            added.rename({name: f"{name}_new" for name in FILE_STATE}),
        ],
        how="diagonal",
    )
    was, now = pl.col("available_old"), pl.col("available_new").fill_null(False)
    kind = (
        pl.when(~was & now)
        .then(pl.lit("appeared"))
        .when(was & ~now)
        .then(pl.lit("removed"))
        .when(was & now & differs("file_size_bytes", "etag", "last_modified"))
        .then(pl.lit("replaced"))
    )
    return (
        pairs.with_columns(kind=kind.cast(CHANGES_SCHEMA["kind"]))
        .drop_nulls("kind")
        .select(
            pl.lit(detected_at, dtype=CHANGES_SCHEMA["detected_at"]).alias("detected_at"),
            *KEY,
            "kind",
            old_size=pl.col("file_size_bytes_old"),
            new_size=pl.col("file_size_bytes_new"),
            old_etag=pl.col("etag_old"),
            new_etag=pl.col("etag_new"),
            old_last_modified=pl.col("last_modified_old"),
            new_last_modified=pl.col("last_modified_new"),
        )
        .sort(*KEY)
    )


def read_changes(path: Path) -> pl.DataFrame:
    """The change log; empty if no change was ever found."""
    if not path.exists():
        return pl.DataFrame(schema=CHANGES_SCHEMA)
    try:
        log = pl.read_parquet(path)
    except Exception:  # polars raises several types for a damaged file
        raise StoreError(
            f"{path} is not a readable Parquet file: restore it with `dvc checkout`"
        ) from None
    if dict(log.schema) != CHANGES_SCHEMA:
        raise StoreError(
            f"{path} is not a change log of this version: restore it with `dvc checkout`"
        )
    return log


def append_changes(path: Path, changes: pl.DataFrame, *, staged: contextlib.ExitStack[Any]) -> int:
    """Append `changes` to the log, renamed into place when `staged` closes; return the count.

    The caller stages the dataset's own writes on the same stack, so a change is logged
    exactly when the dataset takes it: a failed run logs nothing and a rerun finds it again.
    """
    if changes.is_empty() and path.exists():
        return 0
    # The first call writes the log even when empty: DVC expects every output to exist.
    log = pl.concat([read_changes(path), changes.select(list(CHANGES_SCHEMA))])
    # A run logs a key at most once, so this order is total: the same log, the same bytes.
    write_frame(log, staged.enter_context(atomic_path(path)), order=LOG_ORDER)
    return changes.height


def merge_and_log(
    config: Config,
    summary: Summary,
    previous: pl.DataFrame,
    *probed: pl.DataFrame,
    detected_at: dt.datetime,
) -> tuple[list[str], int]:
    """Merge `probed` into the months `previous` holds, log what changed, write both at once.

    Returns the months rewritten and the number of changes logged. The dataset's months and
    the change log are renamed into place together, after all were written.
    """
    merged = merge(previous, *probed, first_files=summary.first_files)
    changes = detect_changes(
        previous,
        merged,
        known_through=summary.last_date,
        detected_at=detected_at,
        tracked=summary.symbols,
    )
    with contextlib.ExitStack() as staged:
        rewritten = write_dataset(
            merged, config.paths.dataset, config.dataset, previous=previous, staged=staged
        )
        logged = append_changes(config.paths.changes, changes, staged=staged)
    return rewritten, logged
