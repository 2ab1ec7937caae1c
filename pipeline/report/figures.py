"""The report page's pictures: one Vega-Lite spec per plot-data file (pipeline.report.data).

A figure is its plot file and the columns it reads, a title, a one-line caption and a function
from the file's rows to a Vega-Lite spec with the data inline; FIGURES lists them in page
order, so another picture is one more spec function and one more entry. Dates stay ISO
strings, read as UTC, so that a day never shifts with the time zone of whoever renders it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipeline.report.data import (
    AVAILABILITY_BY_MONTH,
    AVAILABLE_PER_DAY,
    LISTINGS_PER_MONTH,
    MISSING_PER_DAY,
)
from pipeline.volume.schema import VOLUME_PER_DAY

Spec = dict[str, Any]
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"  # an identifier: never fetched
WIDTH = 900
HEIGHT = 260
PENDING = "may still be published"
PENDING_COLOUR = "#e3e3e3"
# No two pictures share a colour (the browser test finds each picture by its colours).
LISTING_COLOURS = {"listings": "#2ca02c", "delistings": "#d62728"}
MISSING_COLOURS = {"missing": "#9467bd", "published_late": "#ff7f0e"}
# The heatmap: a row per symbol, a column per month; full months calm, holes loud.
CELL_HEIGHT = 8
CELL_WIDTH = 9
SHARE_COLOURS = {0.0: "#7f0000", 0.5: "#fc8d59", 1.0: "#9ecae1"}
VOLUME_COLOURS = {"quote_volume": "#8c564b", "top_share": "#e377c2"}
VOLUME_LABELS = {"quote_volume": "quote volume", "top_share": "top-10 share"}
# Volume grows by orders of magnitude from 2019 on: a log axis, labelled 10M, 1B, 100B (SI
# prefixes, but B for billions where Vega's `~s` would write G).
VOLUME_LABEL_EXPR = "replace(format(datum.value, '~s'), 'G', 'B')"
# A time axis spanning more than this many days is labelled by month, shorter ones by day;
# one tick every 1, 2, 3, 6 or 12 months, the fewest that keep at most MAX_TICKS of them.
MONTH_LABELS_AFTER_DAYS = 92
MONTH_STEPS = (1, 2, 3, 6, 12)
MAX_TICKS = 12
DAYS_PER_MONTH = 30.44


@dataclass(frozen=True)
class Window:
    """The run the data is of: its as_of, its last date and its lookback window's first date."""

    as_of: dt.date
    lookback_start: dt.date

    @property
    def last_date(self) -> dt.date:
        return self.as_of - dt.timedelta(days=1)


@dataclass(frozen=True)
class Figure:
    anchor: str  # the HTML id of its section
    file: str  # its plot data, in paths.plots
    columns: dict[str, pl.DataType]  # what the spec reads of it (pl.Date: an ISO date)
    title: str
    caption: str
    spec: Callable[[pl.DataFrame, Window], Spec]


def values(data: pl.DataFrame) -> list[dict[str, Any]]:
    """Inline Vega data: the rows as JSON-ready dicts, dates as ISO strings."""
    dates = [name for name, dtype in data.schema.items() if dtype.is_temporal()]
    return data.with_columns(pl.col(dates).dt.to_string("%Y-%m-%d")).to_dicts()


def time_axis(first: str | None, last: str | None) -> Spec:
    """A UTC time axis (dates or months as ISO strings) whose every label carries the year.

    Short spans of dates get Vega's own ticks, labelled by day; months, and longer spans, a
    tick on the first of every 1, 2, 3, 6 or 12 months (January, then), labelled by month or,
    yearly, by year.
    """
    base = {"title": None, "labelOverlap": True}
    if first is None or last is None:
        return {**base, "format": "%Y-%m-%d"}
    days = (month_or_date(last) - month_or_date(first)).days
    if days <= MONTH_LABELS_AFTER_DAYS and len(first) > len("YYYY-MM"):
        return {**base, "format": "%Y-%m-%d"}
    months = days / DAYS_PER_MONTH
    step = next((s for s in MONTH_STEPS if months / s <= MAX_TICKS), MONTH_STEPS[-1])
    return {
        **base,
        "format": "%Y" if step == MONTH_STEPS[-1] else "%Y-%m",
        "tickCount": {"interval": "month", "step": step},
    }


def month_or_date(text: str) -> dt.date:
    """`YYYY-MM-DD`, or `YYYY-MM` as its first day."""
    return dt.date.fromisoformat(text if len(text) > len("YYYY-MM") else f"{text}-01")


def date_x(field: str, data: pl.DataFrame, **extra: Any) -> Spec:
    """A temporal x of a column of ISO dates or months, read as UTC."""
    column = data.get_column(field).cast(pl.String)
    return {
        "field": field,
        "type": "temporal",
        "scale": {"type": "utc"},
        "axis": time_axis(column.min(), column.max()),
        **extra,
    }


def count_y(field: str, title: str) -> Spec:
    """A count: no ticks between whole numbers."""
    return {"field": field, "type": "quantitative", "title": title, "axis": {"tickMinStep": 1}}


def pending_layer(window: Window) -> Spec:
    """The lookback window, shaded and named in the legend: its days may still get files."""
    return {
        "data": {
            "values": [
                {
                    "from": window.lookback_start.isoformat(),
                    "to": window.last_date.isoformat(),
                    "label": PENDING,
                }
            ]
        },
        "mark": {"type": "rect", "opacity": 0.8},
        "encoding": {
            "x": {"field": "from", "type": "temporal", "scale": {"type": "utc"}},
            "x2": {"field": "to"},
            "color": {
                "field": "label",
                "type": "nominal",
                "scale": {"range": [PENDING_COLOUR]},
                "legend": {"title": None, "orient": "top-left"},
            },
        },
    }


def series_colour(colours: dict[str, str], labels: dict[str, str]) -> Spec:
    return {
        "field": "series",
        "type": "nominal",
        "scale": {"domain": [labels[k] for k in colours], "range": list(colours.values())},
        "legend": {"title": None, "orient": "top"},
    }


def available_spec(data: pl.DataFrame, window: Window) -> Spec:
    line = {
        "data": {"values": values(data)},
        "mark": {"type": "line", "interpolate": "step-after", "color": "#1f77b4"},
        "encoding": {
            "x": date_x("date", data),
            "y": count_y("symbols", "symbols with a file"),
        },
    }
    return layered(window, line)


def missing_spec(data: pl.DataFrame, window: Window) -> Spec:
    labels = {"missing": "still missing", "published_late": "published late"}
    lines = {
        "data": {"values": values(data)},
        "transform": [
            {"fold": list(labels), "as": ["key", "files"]},
            {"calculate": f"{json.dumps(labels)}[datum.key]", "as": "series"},
        ],
        "mark": {"type": "line", "interpolate": "step-after"},
        "encoding": {
            "x": date_x("date", data),
            "y": count_y("files", "files"),
            "color": series_colour(MISSING_COLOURS, labels),
        },
    }
    return layered(window, lines)


def decades(volume: pl.Series) -> Spec:
    """A log scale from the power of ten below the least positive volume to the one above the
    greatest, ticked and gridded at each power of ten only (in-between ticks crowd the axis).
    """
    axis = {"labelExpr": VOLUME_LABEL_EXPR, "titleColor": VOLUME_COLOURS["quote_volume"]}
    positive = volume.filter(volume > 0)
    if positive.is_empty():
        return {"scale": {"type": "log"}, "axis": axis}
    low = math.floor(math.log10(positive.min()))
    high = max(math.ceil(math.log10(positive.max())), low + 1)
    ticks = [10.0**power for power in range(low, high + 1)]
    return {
        "scale": {"type": "log", "domain": [ticks[0], ticks[-1]], "nice": False},
        "axis": {**axis, "values": ticks},
    }


def volume_spec(data: pl.DataFrame, window: Window) -> Spec:
    """Total quote volume (log, left axis) and the top-10 symbols' share of it (right, 0-100 %).

    A day without volume has no place on a log axis, nor a share: both lines break there.
    """
    colour = {
        "scale": {"domain": list(VOLUME_LABELS.values()), "range": list(VOLUME_COLOURS.values())},
        "legend": {"title": None, "orient": "top"},
    }
    step = {"type": "line", "interpolate": "step-after"}
    total = {
        # Null, not filtered out: a gap in the line rather than a bridge over the day.
        "transform": [
            {"calculate": "datum.quote_volume > 0 ? datum.quote_volume : null", "as": "volume"}
        ],
        "mark": step,
        "encoding": {
            "x": date_x("date", data),
            "y": {
                "field": "volume",
                "type": "quantitative",
                "title": "quote volume per day (USDT, log scale)",
                **decades(data.get_column("quote_volume")),
            },
            "color": {"datum": VOLUME_LABELS["quote_volume"], **colour},
        },
    }
    share = {
        "mark": step,
        "encoding": {
            "x": date_x("date", data),
            "y": {
                "field": "top_share",
                "type": "quantitative",
                "title": "top-10 symbols' share",
                "scale": {"domain": [0, 1]},
                "axis": {
                    "orient": "right",
                    "format": ".0%",
                    "grid": False,
                    "titleColor": VOLUME_COLOURS["top_share"],
                },
            },
            "color": {"datum": VOLUME_LABELS["top_share"], **colour},
        },
    }
    lines = {
        "data": {"values": values(data.select("date", "quote_volume", "top_share"))},
        "layer": [total, share],
        "resolve": {"scale": {"y": "independent"}},
    }
    return layered(window, lines)


def layered(window: Window, *layers: Spec) -> Spec:
    """Data layers over the shaded lookback window, each with a legend of its own."""
    return {
        "$schema": SCHEMA,
        "width": WIDTH,
        "height": HEIGHT,
        "layer": [pending_layer(window), *layers],
        "resolve": {"scale": {"color": "independent"}},
    }


def listings_spec(data: pl.DataFrame, window: Window) -> Spec:
    """Listings up, delistings down, a bar of each per month."""
    labels = {"listings": "listings", "delistings": "delistings"}
    return {
        "$schema": SCHEMA,
        "width": WIDTH,
        "height": HEIGHT,
        "data": {"values": values(data)},
        "transform": [
            {"fold": list(labels), "as": ["series", "count"]},
            {
                "calculate": "datum.series == 'delistings' ? -datum.count : datum.count",
                "as": "spans",
            },
        ],
        "mark": {"type": "bar"},
        "encoding": {
            "x": date_x("month", data, timeUnit="utcyearmonth"),
            "y": count_y("spans", "delistings ↓   listings ↑"),
            "color": series_colour(LISTING_COLOURS, labels),
        },
    }


def heatmap_spec(data: pl.DataFrame, window: Window) -> Spec:
    """A cell per symbol and month, the symbols in the order of their first file (the data's)."""
    return {
        "$schema": SCHEMA,
        "data": {"values": values(data.select("month", "symbol", "share"))},
        "width": {"step": CELL_WIDTH},
        "height": {"step": CELL_HEIGHT},
        # No ARIA label per cell: it would triple the page's size, for a picture read by eye.
        "mark": {"type": "rect", "aria": False},
        "encoding": {
            "x": {
                "field": "month",
                "type": "ordinal",
                "sort": "ascending",
                # The year under each January (and the first month), nothing elsewhere.
                "axis": {
                    "title": None,
                    "orient": "top",
                    "labelAngle": 0,
                    "labelExpr": "substring(datum.value, 5) == '01' || datum.index == 0 "
                    "? substring(datum.value, 0, 4) : ''",
                },
            },
            "y": {
                "field": "symbol",
                "type": "ordinal",
                "sort": None,
                "axis": {"title": None, "labelFontSize": CELL_HEIGHT - 1, "ticks": False},
            },
            "color": {
                "field": "share",
                "type": "quantitative",
                "title": "share of days with a file",
                "scale": {
                    "domain": list(SHARE_COLOURS),
                    "range": list(SHARE_COLOURS.values()),
                    "interpolate": "rgb",
                },
                "legend": {"orient": "top", "format": ".0%"},
            },
        },
    }


FIGURES: tuple[Figure, ...] = (
    Figure(
        "available-per-day",
        AVAILABLE_PER_DAY,
        {"date": pl.Date(), "symbols": pl.Int64()},
        "Symbols with a file, per day",
        "How many symbols had a daily file on each date; the shaded days may still get files.",
        available_spec,
    ),
    Figure(
        "listings-per-month",
        LISTINGS_PER_MONTH,
        {"month": pl.String(), "listings": pl.Int64(), "delistings": pl.Int64()},
        "Listings and delistings, per month",
        "Listing spans starting (relistings too) and ending, by the month of their first and "
        "last file; the dataset's first month is left out.",
        listings_spec,
    ),
    Figure(
        "missing-per-day",
        MISSING_PER_DAY,
        {"date": pl.Date(), "missing": pl.Int64(), "published_late": pl.Int64()},
        "Missing files, per day",
        "Listed symbols without a file that day (outages; in the shaded days, files not "
        "published yet), and files that came after a run had found them missing.",
        missing_spec,
    ),
    Figure(
        "volume-per-day",
        VOLUME_PER_DAY,
        {"date": pl.Date(), "quote_volume": pl.Float64(), "top_share": pl.Float64()},
        "Quote volume per day",
        "The day's quote volume of all symbols, in USDT on a log scale (left), and the share "
        "of its 10 largest symbols in it (right); the shaded days may still get files.",
        volume_spec,
    ),
    Figure(
        "availability-heatmap",
        AVAILABILITY_BY_MONTH,
        {"month": pl.String(), "symbol": pl.String(), "share": pl.Float64()},
        "Availability by symbol and month",
        "Each symbol's share of its listed days with a file, per month, in the order of "
        "listing: blank where it was not listed, dark where files are missing.",
        heatmap_spec,
    ),
)
