"""The merge: one row per (date, symbol), newest probe wins, from each first file on."""

from __future__ import annotations

import datetime as dt

import polars as pl

from pipeline.dataset.schema import FILE_STATE, KEY, SCHEMA


def merge(
    *frames: pl.DataFrame,
    first_files: pl.DataFrame | None = None,
    probed_at: dt.datetime | None = None,
) -> pl.DataFrame:
    """One row per (date, symbol): the newest probe wins; ties go to the later frame.

    Rows before a symbol's first available date are dropped, as the contract says: a symbol
    has rows from its first file onwards. `first_files` (symbol, first_file) adds what is
    known of first files outside `frames`, when they hold only part of the dataset.

    `probed_at` is the run's own probe time: a stored probe_timestamp later than it (written
    by a machine whose clock ran fast) counts as that time, since no probe can be newer than
    the run merging it. It then ties with the run's probes, and the run's probes, given later,
    win: a fast clock never outranks a fresh probe, yet its rows keep their place among older
    ones. The rows keep their stored timestamp: validate reports it.
    """
    ordered = pl.concat([frame.lazy() for frame in frames], how="vertical").with_row_index("_order")
    stamp = pl.col("probe_timestamp")
    if probed_at is not None:
        stamp = pl.min_horizontal(stamp, pl.lit(probed_at, dtype=SCHEMA["probe_timestamp"]))
    newest = ordered.sort(stamp, "_order").unique(subset=list(KEY), keep="last")
    return _from_first_file(newest.drop("_order"), first_files).sort(*KEY).collect()


def first_files(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Each symbol's first available date, as (symbol, first_file)."""
    return rows.filter(pl.col("available")).group_by("symbol").agg(first_file=pl.col("date").min())


def _from_first_file(rows: pl.LazyFrame, known: pl.DataFrame | None) -> pl.LazyFrame:
    firsts = first_files(rows)
    if known is not None:
        # A known first file on a date the merged rows hold is theirs to confirm: a newer
        # probe may have found that file removed, and then the first file moves later.
        outside = known.lazy().join(
            rows.select("symbol", first_file="date"), on=["symbol", "first_file"], how="anti"
        )
        firsts = pl.concat([firsts, outside]).group_by("symbol").agg(pl.col("first_file").min())
    return (
        rows.join(firsts, on="symbol", how="inner")
        .filter(pl.col("date") >= pl.col("first_file"))
        .drop("first_file")
    )


def differs(*columns: str, old: str = "_old", new: str = "_new") -> pl.Expr:
    """Whether any of `columns` differs (nulls included) between its two suffixed copies."""
    return pl.any_horizontal(pl.col(f"{c}{old}").ne_missing(pl.col(f"{c}{new}")) for c in columns)


def changed_rows(fresh: pl.DataFrame, previous: pl.DataFrame) -> pl.DataFrame:
    """The fresh rows that say something `previous` (the dataset's rows) does not.

    A key the dataset has counts if its file differs. A key it lacks always counts: merge
    drops those before a symbol's first file, and keeps the days after a first file found
    earlier than the dataset's (which the dataset never had rows for).
    """
    compared = fresh.join(
        previous.select(*KEY, *FILE_STATE), on=list(KEY), how="left", suffix="_old"
    )
    seen = pl.col("available_old").is_not_null()
    return compared.filter(~seen | differs(*FILE_STATE, old="_old", new="")).select(fresh.columns)
