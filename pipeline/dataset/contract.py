"""The dataset's contract on rows: the checks every row must pass, wherever it is read.

validate runs them over the whole dataset; the update stage's commit gate runs the checks that
hold for any set of months (`row_violations`) over the months it is about to write, so a run
that would break the contract writes nothing, and refuses a run that would remove more files
than params allow (`check_removals`).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from pipeline.config import Config, RemovalLimit
from pipeline.dataset.schema import KEY
from pipeline.errors import PipelineError


def row_violations(rows: pl.LazyFrame, first: dt.date, last: dt.date) -> dict[str, pl.LazyFrame]:
    """The checks that need no other month: each gives the offending items, sorted.

    The others (rows before a symbol's first file, rows missing) need its whole history.
    """
    profiles = symbol_profiles(rows, last)
    return {
        "duplicate_keys": duplicate_keys(rows, profiles),
        "null_fields": null_fields(rows),
        "dates_out_of_range": dates_out_of_range(rows, first, last),
        "available_rows_incomplete": available_rows_incomplete(rows),
        "unavailable_rows_with_file": unavailable_rows_with_file(rows),
    }


def symbol_profiles(rows: pl.LazyFrame, last: dt.date) -> pl.LazyFrame:
    """What the checks need to know of each symbol, in one pass over the rows.

    rows and distinct dates; first row; first file; last file through `last`; `covered`:
    distinct dates from the first file through `last`. Checks that need the rows themselves
    look only at the symbols this finds at fault, so a good dataset costs one group_by.
    """
    first_file = pl.col("date").filter(pl.col("available")).min()
    return rows.group_by("symbol").agg(
        rows=pl.len(),
        dates=pl.col("date").n_unique(),
        first_row=pl.col("date").min(),
        first_file=first_file,
        last_file=pl.col("date").filter(pl.col("available"), pl.col("date") <= last).max(),
        covered=pl.col("date").filter(pl.col("date").is_between(first_file, last)).n_unique(),
    )


def duplicate_keys(rows: pl.LazyFrame, profiles: pl.LazyFrame) -> pl.LazyFrame:
    """(date, symbol) keys held by more than one row."""
    at_fault = profiles.filter(pl.col("rows") > pl.col("dates")).select("symbol")
    return (
        rows.join(at_fault, on="symbol", how="semi")
        .group_by(*KEY)
        .agg(rows=pl.len())
        .filter(pl.col("rows") > 1)
        .sort(*KEY)
    )


def null_fields(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Rows lacking a value that every row has; such a row escapes every other check."""
    required = ("date", "symbol", "available", "probe_timestamp")
    return (
        rows.filter(pl.any_horizontal(pl.col(*required).is_null()))
        .select(*KEY)
        .sort(*KEY, nulls_last=True)
    )


def dates_out_of_range(rows: pl.LazyFrame, first: dt.date, last: dt.date) -> pl.LazyFrame:
    """Rows dated before dataset.start_date or after as_of - 1."""
    return rows.filter(~pl.col("date").is_between(first, last)).select(*KEY).sort(*KEY)


def available_rows_incomplete(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Available rows without the file's positive size, Last-Modified or ETag."""
    complete = (
        (pl.col("file_size_bytes") > 0)
        & pl.col("last_modified").is_not_null()
        & (pl.col("etag").str.len_bytes() > 0)
    )
    return rows.filter(pl.col("available"), ~complete.fill_null(False)).select(*KEY).sort(*KEY)


def unavailable_rows_with_file(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Rows without a file that still carry a size, Last-Modified or ETag."""
    file_facts = ("file_size_bytes", "last_modified", "etag")
    return (
        rows.filter(~pl.col("available"), pl.any_horizontal(pl.col(*file_facts).is_not_null()))
        .select(*KEY)
        .sort(*KEY)
    )


class GateError(PipelineError):
    """The gate before the commit: this run's result would damage the dataset."""


def check_contract(merged: pl.DataFrame, config: Config) -> None:
    """Refuse to write months that break the rows' contract (what validate would fail on)."""
    checks = row_violations(merged.lazy(), config.dataset.start_date, config.last_date)
    for name, found in zip(checks, pl.collect_all(list(checks.values())), strict=True):
        if not found.is_empty():
            first = " ".join(str(found[column][0]) for column in KEY)
            raise GateError(
                f"this run's merge breaks the dataset's contract ({name} {found.height}, "
                f"e.g. {first}): nothing was written; the log file has the run's details"
            )


def check_removals(changes: pl.DataFrame, available_files: int, limit: RemovalLimit) -> None:
    """Refuse a run that turns more available files into unavailable than `limit` allows.

    Binance removes files rarely: many at once is almost always a listing gone wrong.
    """
    removed = changes.filter(pl.col("kind") == "removed").height
    threshold = limit.threshold(available_files)
    if removed <= threshold or limit.allowed:
        return
    raise GateError(
        f"this run would turn {removed} of the dataset's {available_files} available files "
        f"into unavailable, more than the {threshold} allowed (update.max_removed_files, "
        "update.max_removed_share): nothing was written; if the bucket really removed them, "
        "accept it for one run with `make update ALLOW_REMOVALS=1` (or `make audit "
        "ALLOW_REMOVALS=1`)"
    )
