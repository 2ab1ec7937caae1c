"""A query's result as text: an aligned table, a JSON array of objects, or CSV.

Dates and times are ISO 8601 in every format (`2024-03-01`, `2024-03-01T06:00:00+00:00`); a
missing value is empty in a table or CSV and null in JSON. An empty result is a header alone,
or `[]`.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Callable

import polars as pl

COLUMN_GAP = "  "


def render(rows: pl.DataFrame, fmt: str, *, record: bool = False) -> str:
    """`rows` in `fmt`; a `record` (one row of named figures) is a table of name/value lines."""
    if fmt == "table":
        return _record(rows) if record else _table(rows)
    return FORMATS[fmt](rows)


def _json(rows: pl.DataFrame) -> str:
    # Only dates and times become text: numbers, booleans and nulls stay JSON's own.
    temporal = [name for name, dtype in rows.schema.items() if dtype.is_temporal()]
    as_iso = rows.with_columns(_iso(rows, name) for name in temporal)
    return json.dumps(as_iso.to_dicts(), ensure_ascii=False, indent=2) + "\n"


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
    return rows.with_columns(
        (_iso(rows, name) if dtype.is_temporal() else pl.col(name).cast(pl.String)).fill_null("")
        for name, dtype in rows.schema.items()
    )


def _iso(rows: pl.DataFrame, name: str) -> pl.Expr:
    if rows.schema[name] == pl.Date:
        return pl.col(name).dt.to_string("%Y-%m-%d")
    return pl.col(name).dt.to_string("%Y-%m-%dT%H:%M:%S%:z")


FORMATS: dict[str, Callable[[pl.DataFrame], str]] = {"table": _table, "json": _json, "csv": _csv}
