"""A query's result as an aligned table, JSON, CSV, or a Parquet file.

Dates and times are ISO 8601 in every format (`2024-03-01`, `2024-03-01T06:00:00+00:00`); a
missing value is empty in a table or CSV and null in JSON. JSON gives an array of objects, or
one object for a single answer (a record, such as `stats`); a list (a span's missing dates) is
a JSON array, and in a table or CSV one cell, its dates joined by ", " with a run of
consecutive days written `first..last`. An empty result is a header alone, or `[]`. Parquet
keeps polars' own types.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Callable
from pathlib import Path

import polars as pl

from pipeline.atomic import atomic_path, write_text

COLUMN_GAP = "  "
BINARY_FORMATS = ("parquet",)


def render(rows: pl.DataFrame, fmt: str, *, record: bool = False) -> str:
    """`rows` in the text format `fmt`; a `record` (one row of named figures) is a table of
    name/value lines, and one JSON object."""
    if fmt == "table":
        return _record(rows) if record else _table(rows)
    if fmt == "json":
        return _json(rows, record=record)
    return TEXT_FORMATS[fmt](rows)


def write(rows: pl.DataFrame, fmt: str, path: Path, *, record: bool = False) -> None:
    """`rows` in `fmt` to the file `path`, atomically: a failed write leaves it as it was."""
    if fmt == "parquet":
        with atomic_path(path) as tmp:
            rows.write_parquet(tmp, compression="zstd", statistics=True)
    else:
        write_text(path, render(rows, fmt, record=record))


def _json(rows: pl.DataFrame, *, record: bool = False) -> str:
    # Only dates and times become text: numbers, booleans and nulls stay JSON's own.
    as_iso = rows.with_columns(
        _json_iso(name, dtype) for name, dtype in rows.schema.items() if _has_temporal(dtype)
    )
    found: object = as_iso.to_dicts()
    if record:
        found = found[0] if found else {}  # type: ignore[index]
    return json.dumps(found, ensure_ascii=False, indent=2) + "\n"


def _has_temporal(dtype: pl.DataType) -> bool:
    return dtype.is_temporal() or (
        isinstance(dtype, pl.List) and _has_temporal(dtype.inner)  # type: ignore[arg-type]
    )


def _json_iso(name: str, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.List):
        return pl.col(name).list.eval(_iso_expr(pl.element(), dtype.inner))  # type: ignore[arg-type]
    return _iso_expr(pl.col(name), dtype)


def _csv(rows: pl.DataFrame) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(rows.columns)
    writer.writerows(_as_text(rows).iter_rows())
    return out.getvalue()


def _table(rows: pl.DataFrame) -> str:
    text = _as_text(rows)
    cells = [rows.columns, *text.iter_rows()]
    widths = [max(_width(row[i]) for row in cells) for i in range(rows.width)]
    right = [dtype.is_numeric() for dtype in rows.dtypes]
    rule = ["-" * width for width in widths]
    lines = [cells[0], rule, *cells[1:]]
    return "".join(_line(line, widths, right) for line in lines)


def _record(rows: pl.DataFrame) -> str:
    text = _as_text(rows)
    width = max(map(_width, rows.columns))
    values = text.row(0) if text.height else ("",) * text.width
    return "".join(
        _line((name, value), [width, 0], [False, False])
        for name, value in zip(rows.columns, values, strict=True)
    )


def _line(cells: tuple[str, ...] | list[str], widths: list[int], right: list[bool]) -> str:
    padded = [
        _pad(cell, width, to_right)
        for cell, width, to_right in zip(cells, widths, right, strict=True)
    ]
    return COLUMN_GAP.join(padded).rstrip() + "\n"


def _pad(cell: str, width: int, to_right: bool) -> str:
    fill = " " * (width - _width(cell))
    return fill + cell if to_right else cell + fill


def _width(text: str) -> int:
    """Columns a terminal gives `text`: CJK characters (`币安人生USDT`) take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _as_text(rows: pl.DataFrame) -> pl.DataFrame:
    """Every column as text, as a table or CSV shows it."""
    return rows.with_columns(_text(rows, name, dtype) for name, dtype in rows.schema.items())


def _text(rows: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr | pl.Series:
    if dtype == pl.List(pl.Date):
        return _date_runs(rows.get_column(name))
    if isinstance(dtype, pl.List):
        return pl.col(name).list.eval(pl.element().cast(pl.String)).list.join(", ").fill_null("")
    text = _iso_expr(pl.col(name), dtype) if dtype.is_temporal() else pl.col(name).cast(pl.String)
    return text.fill_null("")


def _date_runs(lists: pl.Series) -> pl.Series:
    """Each sorted list of dates as one cell: `2024-01-05, 2024-01-20..2024-01-21`."""
    day = pl.col("day")
    starts_run = (day.diff().dt.total_days() != 1) | (pl.col("row") != pl.col("row").shift())
    runs = (
        lists.rename("day")
        .to_frame()
        .with_row_index("row")
        .explode("day")
        .drop_nulls("day")
        .with_columns(run=starts_run.fill_null(True).cum_sum())
        .group_by("run", maintain_order=True)
        .agg(pl.col("row").first(), first=day.first(), last=day.last())
        .with_columns(
            text=pl.when(pl.col("first") == pl.col("last"))
            .then(pl.col("first").dt.to_string("%Y-%m-%d"))
            .otherwise(
                pl.concat_str(
                    pl.col("first").dt.to_string("%Y-%m-%d"),
                    pl.col("last").dt.to_string("%Y-%m-%d"),
                    separator="..",
                )
            )
        )
        .group_by("row", maintain_order=True)
        .agg(pl.col("text").str.join(", "))
    )
    every_row = pl.Series("row", range(lists.len()), dtype=pl.UInt32).to_frame()
    cells = every_row.join(runs, on="row", how="left").sort("row").get_column("text")
    return cells.fill_null("").rename(lists.name)


def _iso_expr(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Date:
        return expr.dt.to_string("%Y-%m-%d")
    return expr.dt.to_string("%Y-%m-%dT%H:%M:%S%:z")


TEXT_FORMATS: dict[str, Callable[[pl.DataFrame], str]] = {
    "table": _table,
    "json": _json,
    "csv": _csv,
}
FORMATS = (*TEXT_FORMATS, *BINARY_FORMATS)
