"""The change log: every file that appeared late, vanished or was re-uploaded, once each.

History is never rewritten silently. Whenever a run replaces rows the dataset already had,
the differences are appended to `data/changes.parquet`, one row per (date, symbol) changed:

- appeared: a day recorded without a file now has one (published late, or restored);
- removed: a day recorded with a file now has none (deleted from the bucket);
- replaced: the file is there, with another ETag, size or Last-Modified (re-uploaded).

New days and new symbols are growth, not changes, and are not logged.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from pipeline.config import Config
from pipeline.dataset.commit import Commit, journal_path, staged_commit
from pipeline.dataset.contract import check_contract, check_removals
from pipeline.dataset.merge import differs, merge
from pipeline.dataset.schema import FILE_STATE, KEY
from pipeline.dataset.store import (
    StoreError,
    Summary,
    refuse_denied_read,
    write_dataset,
    write_frame,
)

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
    except Exception as exc:  # polars raises several types for a damaged file
        refuse_denied_read(exc, path)
        raise StoreError(
            f"{path} is not a readable Parquet file: restore it with `dvc checkout`"
        ) from None
    if dict(log.schema) != CHANGES_SCHEMA:
        raise StoreError(
            f"{path} is not a change log of this version: restore it with `dvc checkout`"
        )
    return log


def append_changes(path: Path, changes: pl.DataFrame, *, commit: Commit) -> int:
    """Append `changes` to the log, replaced when `commit` is applied; return the count.

    The caller puts the dataset's own files in the same commit, so a change is logged exactly
    when the dataset takes it: a failed or killed run logs nothing (or all, once the next run
    finishes its commit), and a rerun does not find it again.
    """
    if changes.is_empty() and path.exists():
        return 0
    # The first call writes the log even when empty: DVC expects every output to exist.
    log = pl.concat([read_changes(path), changes.select(list(CHANGES_SCHEMA))])
    # A run logs a key at most once, so this order is total: the same log, the same bytes.
    write_frame(log, commit.new_file(path), order=LOG_ORDER)
    return changes.height


def merge_and_log(
    config: Config,
    summary: Summary,
    previous: pl.DataFrame,
    *probed: pl.DataFrame,
    detected_at: dt.datetime,
) -> tuple[list[str], int]:
    """Merge `probed` into the months `previous` holds, log what changed, write both at once.

    Returns the months rewritten and the number of changes logged. Nothing is replaced unless
    the merged months pass the contract's row checks and the run turns no more available
    files into unavailable than params allow; then the dataset's months and the change log
    are committed together, crash-atomically.
    """
    merged = merge(previous, *probed, first_files=summary.first_files, probed_at=detected_at)
    check_contract(merged, config)
    changes = detect_changes(
        previous,
        merged,
        known_through=summary.last_date,
        detected_at=detected_at,
        tracked=summary.symbols,
    )
    check_removals(changes, summary.available_files, config.removals)
    with staged_commit(journal_path(config.paths.dataset)) as commit:
        rewritten = write_dataset(
            merged, config.paths.dataset, config.dataset, previous=previous, commit=commit
        )
        logged = append_changes(config.paths.changes, changes, commit=commit)
    return rewritten, logged
