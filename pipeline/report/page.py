"""The report page: the plot data the report and volume stages wrote, drawn into one HTML file.

Every figure of pipeline.report.figures is rendered to SVG by vl-convert (which bundles its
own Vega: no network, no browser) and inlined, so the page opens offline, anywhere; its
Content-Security-Policy forbids it to load anything. It is drawn from the committed plot data
and metrics/summary.json alone, so it can be made again from any commit.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import polars as pl
import vl_convert

from pipeline.atomic import write_text
from pipeline.errors import PipelineError
from pipeline.report.figures import FIGURES, Figure, Window

PAGE_NAME = "index.html"
TITLE = "Binance Vision: daily files of USDT-M futures"
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin: 2em 0 0.2em; }
p.caption { margin: 0 0 0.8em; color: #555; }
figure { margin: 0; overflow-x: auto; }
"""


def read_window(summary: Path) -> tuple[Window, dict[str, Any]]:
    """The run the plot data is of, and the summary, from the report stage's metrics."""
    try:
        metrics = json.loads(summary.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"no {summary}: run the pipeline first (make update)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{summary} is not readable JSON ({exc}): rerun make update") from None
    try:
        window = Window(
            as_of=dt.date.fromisoformat(metrics["as_of"]),
            lookback_start=dt.date.fromisoformat(metrics["lookback_start"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PipelineError(
            f"{summary} has no valid as_of and lookback_start ({exc!r}): it is older than "
            "the report page: rerun make update"
        ) from None
    return window, metrics


def read_plot(plots: Path, figure: Figure) -> pl.DataFrame:
    """A figure's plot data: the columns it reads, checked; dates left as ISO strings."""
    path = plots / figure.file
    try:
        data = pl.read_csv(path, infer_schema=False)
    except FileNotFoundError:
        raise PipelineError(f"no plot data {path}: run the pipeline first (make update)") from None
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise PipelineError(f"{path} is not readable CSV ({first_line(exc)})") from None
    missing = [name for name in figure.columns if name not in data.columns]
    if missing:
        raise PipelineError(f"{path} lacks the column {', '.join(missing)}: rerun make update")
    try:
        return data.select(checked(name, dtype) for name, dtype in figure.columns.items())
    except pl.exceptions.PolarsError as exc:
        raise PipelineError(f"{path} holds a bad value ({first_line(exc)})") from None


def checked(name: str, dtype: pl.DataType) -> pl.Expr:
    """A column of strings cast to `dtype`; a value that is not one fails (strict)."""
    column = pl.col(name)
    if dtype == pl.Date():
        return column.str.to_date("%Y-%m-%d").dt.to_string("%Y-%m-%d")
    return column.cast(dtype)


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def render(figure: Figure, data: pl.DataFrame, window: Window) -> str:
    """A figure as an SVG element."""
    return vl_convert.vegalite_to_svg(figure.spec(data, window))


def section(figure: Figure, svg: str) -> str:
    return (
        f'<section id="{figure.anchor}">\n<h2>{html.escape(figure.title)}</h2>\n'
        f'<p class="caption">{html.escape(figure.caption)}</p>\n<figure>\n{svg}\n</figure>\n'
        "</section>\n"
    )


def page(sections: list[str], window: Window, metrics: dict[str, Any]) -> str:
    facts = (
        f"As of {window.as_of} (files through {window.last_date}; the lookback window from "
        f"{window.lookback_start} may still get files): {metrics.get('symbols', 0)} symbols, "
        f"{metrics.get('available_yesterday', 0)} with a file on {window.last_date}."
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        # Nothing to fetch: the page holds all it shows, and may load nothing else.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        f"<title>{html.escape(TITLE)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(TITLE)}</h1>\n<p>{html.escape(facts)}</p>\n"
        + "".join(sections)
        + "</body>\n</html>\n"
    )


def write_page(plots: Path, summary: Path, out: Path) -> Path:
    """Draw every figure from `plots` and `summary` into `out`/index.html; its path."""
    window, metrics = read_window(summary)
    frames = [(figure, read_plot(plots, figure)) for figure in FIGURES]
    sections = [section(f, render(f, data, window)) for f, data in frames]
    target = out / PAGE_NAME
    out.mkdir(parents=True, exist_ok=True)
    write_text(target, page(sections, window, metrics))
    return target
