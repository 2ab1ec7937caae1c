"""The report page (`make report`): five pictures drawn from the plot data, offline, checked by
their data: the page's SVGs are parsed back into what they show and compared with the CSVs.

The project here is a three-month dataset built by hand: a hole of a whole month inside a
listing span, a delisting, a listing, a late file, and files not published yet at the end;
beside it, the volume stage's plot data of a volume dataset growing by three orders of
magnitude, with a day of no volume.
tests/test_report_browser.py opens the same page in a real browser.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import load_config
from pipeline.dataset.changes import CHANGES_SCHEMA
from pipeline.dataset.store import write_frame
from pipeline.entry import run_stage
from pipeline.ops import cli
from pipeline.report.data import (
    AVAILABILITY_BY_MONTH,
    AVAILABLE_PER_DAY,
    LISTINGS_PER_MONTH,
    MISSING_PER_DAY,
)
from pipeline.report.figures import (
    FIGURES,
    HEIGHT,
    PENDING,
    VOLUME_COLOURS,
    WIDTH,
    Window,
    available_spec,
)
from pipeline.stages import report
from pipeline.stages.volume import per_day
from pipeline.volume.schema import VOLUME_PER_DAY
from tests.support import D, commit_dataset, days, frame, write_params

START, AS_OF = "2023-11-15", D("2024-02-21")
LAST = "2024-02-20"
LOOKBACK_START = "2024-02-01"  # as_of - 20 days (params.yaml's update.lookback_days)
MAX_GAP = 40  # a month without a file stays inside a span: a hole in the map
SYMBOLS = ("AAAUSDT", "GONEUSDT", "HOLEUSDT", "LATEUSDT", "NEWUSDT")  # in order of listing


def page_rows() -> pl.DataFrame:
    return frame(
        *days("AAAUSDT", START, LAST, missing=["2023-12-25"]),
        *days("GONEUSDT", START, LAST, missing=map(str, pl_dates("2023-12-06", LAST))),
        *days("HOLEUSDT", START, LAST, missing=map(str, pl_dates("2024-01-01", "2024-01-31"))),
        *days("LATEUSDT", START, LAST, missing=["2024-02-18", "2024-02-19", "2024-02-20"]),
        *days("NEWUSDT", "2023-12-10", LAST),
    )


def pl_dates(first: str, last: str) -> list[dt.date]:
    return pl.date_range(D(first), D(last), eager=True).to_list()


NO_VOLUME_DAY = D("2024-01-01")  # every symbol's volume 0: no place on a log axis, no share


def volume_rows() -> pl.LazyFrame:
    """(date, symbol, quote_volume) of 12 symbols from START through LAST.

    Each of V00..V09 trades 10^(6 + 3t) USDT a day, t running from 0 to 1 over the days: a
    thousandfold growth; V10 and V11 each trade 4t times that, so the top 10's share falls
    from 100 % to about 10 / 12 (at t = 1/4, where they catch up), then rises to 16 / 18.
    """
    symbols = pl.LazyFrame({"symbol": [f"V{k:02}USDT" for k in range(12)]})
    days = pl.LazyFrame({"date": pl_dates(START, LAST)})
    t = (pl.col("date") - D(START)).dt.total_days() / (D(LAST) - D(START)).days
    growth = pl.lit(10.0).pow(6 + 3 * t)
    late = pl.col("symbol").is_in(["V10USDT", "V11USDT"])
    return days.join(symbols, how="cross").select(
        "date",
        "symbol",
        quote_volume=pl.when(pl.col("date") == NO_VOLUME_DAY)
        .then(0.0)
        .when(late)
        .then(growth * 4 * t)
        .otherwise(growth),
    )


def build_project(root: Path) -> Path:
    """A project whose dataset is page_rows() and whose change log has one late file."""
    write_params(
        root,
        {
            "dataset": {"start_date": START},
            "run": {"as_of": AS_OF.isoformat()},
            "spans": {"max_gap_days": MAX_GAP},
        },
    )
    config = load_config(root / "params.yaml")
    config_paths = {name: root / getattr(config.paths, name) for name in ("dataset", "changes")}
    commit_dataset(page_rows(), config_paths["dataset"], config.dataset, previous=frame())
    late = {
        "detected_at": dt.datetime(2024, 2, 14, tzinfo=dt.UTC),
        "date": D("2024-02-10"),
        "symbol": "AAAUSDT",
        "kind": "appeared",
    }
    write_frame(
        pl.DataFrame([late], schema=CHANGES_SCHEMA), config_paths["changes"], order=("detected_at",)
    )
    # The volume stage's plot data, as its per_day writes it (the report stage does not).
    plots = root / config.paths.plots
    plots.mkdir(parents=True, exist_ok=True)
    per_day(volume_rows()).write_csv(plots / VOLUME_PER_DAY)
    return root


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_project(tmp_path)
    assert run_stage("report", report.run) == 0
    return tmp_path


def make_page(out: Path, capsys) -> tuple[int, str]:
    code = cli.main(["report", "--out", str(out)])
    return code, capsys.readouterr().out


# --- reading the page back ------------------------------------------------------------------


class Page(HTMLParser):
    """A page's sections (id -> heading, caption, SVG text), and every tag and URL it holds."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.urls: list[str] = []
        self.sections: dict[str, dict[str, str]] = {}
        self.meta: dict[str, str] = {}
        self._section: str | None = None
        self._field: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags[tag] += 1
        self.urls += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v]
        if tag == "meta" and attributes.get("http-equiv"):
            self.meta[attributes["http-equiv"] or ""] = attributes.get("content") or ""
        if tag == "section":
            self._section = attributes["id"]
            self.sections[self._section] = {"h2": "", "caption": "", "text": ""}
        elif tag == "h2":
            self._field = "h2"
        elif tag == "p" and attributes.get("class") == "caption":
            self._field = "caption"
        elif tag == "text":
            self._field = "text"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "p", "text"):
            if self._field == "text" and self._section:
                self.sections[self._section]["text"] += "\n"
            self._field = None
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._section and self._field:
            self.sections[self._section][self._field] += data


def svgs(text: str) -> dict[str, str]:
    """Each section's SVG source, by section id."""
    return dict(re.findall(r'<section id="([^"]+)">.*?(<svg.*?</svg>)', text, re.S))


def labels_of(svg: str) -> list[str]:
    return [line.strip() for line in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


def mark_paths(svg: str, role: str) -> list[str]:
    """The path elements of the mark groups of one kind (`mark-rect`, `mark-line`)."""
    groups = re.findall(rf'<g class="{role} role-mark[^"]*"[^>]*>(.*?)</g>', svg, re.S)
    return [path for group in groups for path in re.findall(r"<path[^>]*/>", group)]


def step_lines(svg: str, colour: str) -> list[list[tuple[float, float]]]:
    """The points of the step-after line stroked in `colour`, one list per unbroken run.

    A run is `M p0`, then two commands a point (across to its x, up or down to its y).
    """
    (path,) = [p for p in mark_paths(svg, "mark-line") if f'stroke="{colour}"' in p]
    (d,) = re.findall(r' d="([^"]*)"', path)
    runs = []
    for run in re.findall(r"M[^M]*", d):
        xy = [tuple(map(float, p.split(","))) for p in re.findall(r"[ML]([^ML]+)", run)]
        runs.append([xy[0], *xy[2::2]])
    return runs


BAR_LABEL = re.compile(
    r'aria-label="month \(year-month\): ([\d-]+); [^:]*: [\u2212-]?(\d+); series: (\w+)"'
)


def bars(svg: str) -> dict[tuple[str, str], int]:
    """The listings picture's bars as {(month, series): spans}, from their ARIA labels."""
    found = {}
    for path in mark_paths(svg, "mark-rect"):
        label = BAR_LABEL.search(path)
        if label:
            month, count, series = label.groups()
            found[(month, series)] = abs(int(count))
    return found


# --- the page -------------------------------------------------------------------------------


def test_make_report_writes_one_page_with_the_five_pictures_and_nothing_to_fetch(project, capsys):
    code, out = make_page(project / "reports", capsys)
    page_path = project / "reports/index.html"
    assert code == 0
    assert out.splitlines()[-1] == page_path.as_uri()
    text = page_path.read_text(encoding="utf-8")
    page = Page(text)
    assert list(page.sections) == [figure.anchor for figure in FIGURES]
    assert [s["h2"] for s in page.sections.values()] == [figure.title for figure in FIGURES]
    assert [s["caption"] for s in page.sections.values()] == [f.caption for f in FIGURES]
    assert page.tags["svg"] == 5
    # Self-contained: no script, stylesheet, image or frame to load, and a policy refusing any.
    assert not {"script", "link", "img", "iframe", "object"} & set(page.tags)
    assert page.urls == []
    assert page.meta["Content-Security-Policy"].startswith("default-src 'none'")
    assert f"As of {AS_OF} (files through {LAST}; the lookback window from {LOOKBACK_START}" in text


def test_time_axes_carry_the_year_and_the_lookback_window_is_shaded(project, capsys):
    make_page(project / "reports", capsys)
    text = (project / "reports/index.html").read_text(encoding="utf-8")
    sections = svgs(text)
    for anchor in ("available-per-day", "listings-per-month", "missing-per-day", "volume-per-day"):
        dates = [t for t in labels_of(sections[anchor]) if re.fullmatch(r"\d{4}-\d{2}", t)]
        assert {"2023-12", "2024-01", "2024-02"} <= set(dates), anchor
        month_names = {"Oct", "Nov", "Dec", "Jan", "Feb", "October", "December", "January"}
        assert not month_names & set(labels_of(sections[anchor])), anchor
    for anchor in ("available-per-day", "missing-per-day", "volume-per-day"):
        assert PENDING in labels_of(sections[anchor])
        (shade,) = [p for p in mark_paths(sections[anchor], "mark-rect")]
        assert f'aria-label="from: Feb 01, 2024; to: Feb 20, 2024; label: {PENDING}"' in shade
    # The heatmap: a year under the first month and under each January, no other label.
    heat_x = [t for t in labels_of(sections["availability-heatmap"]) if re.fullmatch(r"\d{4}", t)]
    assert heat_x == ["2023", "2024"]


def test_the_spec_shades_the_lookback_window_through_the_last_date():
    window = Window(as_of=AS_OF, lookback_start=D(LOOKBACK_START))
    data = pl.DataFrame({"date": ["2024-02-19", "2024-02-20"], "symbols": [5, 4]})
    spec = available_spec(data, window)
    shade, line = spec["layer"]
    assert shade["data"]["values"] == [{"from": LOOKBACK_START, "to": LAST, "label": PENDING}]
    assert line["data"]["values"] == data.to_dicts()
    assert line["encoding"]["x"]["axis"]["format"] == "%Y-%m-%d"  # two days: by day, with year


def test_listings_are_coloured_bars_without_the_first_month(project, capsys):
    make_page(project / "reports", capsys)
    text = (project / "reports/index.html").read_text(encoding="utf-8")
    drawn = bars(svgs(text)["listings-per-month"])
    # NEWUSDT listed in December; GONEUSDT delisted then (last file on the 5th). November,
    # the dataset's first month, would count all four symbols listed then: it is left out.
    assert {key: n for key, n in drawn.items() if n} == {
        ("2023-12", "listings"): 1,
        ("2023-12", "delistings"): 1,
    }
    assert {month for month, _ in drawn} == {"2023-12", "2024-01", "2024-02"}
    csv = pl.read_csv(project / "metrics/plots" / LISTINGS_PER_MONTH)
    assert {(m, "listings"): n for m, n in csv.select("month", "listings").rows()} | {
        (m, "delistings"): n for m, n in csv.select("month", "delistings").rows()
    } == drawn
    fills = set(re.findall(r'fill="(#[0-9a-f]{6})"', svgs(text)["listings-per-month"]))
    assert {"#2ca02c", "#d62728"} <= fills  # two colours, not two dashes of one


def test_missing_files_per_day_show_outages_late_files_and_unpublished_days(project):
    missing = pl.read_csv(project / "metrics/plots" / MISSING_PER_DAY)
    nonzero = missing.filter((pl.col("missing") > 0) | (pl.col("published_late") > 0))
    expected = [
        ("2023-12-25", 1, 0),  # AAA's outage
        *[(str(d), 1, 0) for d in pl_dates("2024-01-01", "2024-01-31")],  # HOLE's month
        ("2024-02-10", 0, 1),  # AAA's file published late
        ("2024-02-18", 1, 0),  # LATE's last three days, not published yet
        ("2024-02-19", 1, 0),
        ("2024-02-20", 1, 0),
    ]
    assert nonzero.rows() == expected
    assert missing.height == len(pl_dates(START, LAST))


def test_the_heatmap_has_a_cell_per_symbol_month_in_listing_order_with_the_hole(project, capsys):
    make_page(project / "reports", capsys)
    svg = svgs((project / "reports/index.html").read_text(encoding="utf-8"))["availability-heatmap"]
    cells = pl.read_csv(project / "metrics/plots" / AVAILABILITY_BY_MONTH)
    assert len(mark_paths(svg, "mark-rect")) == cells.height
    # Rows in the order of first listing: NEWUSDT, listed in December, last.
    assert [t for t in labels_of(svg) if t.endswith("USDT")] == list(SYMBOLS)
    # GONEUSDT: November and December (delisted on the 5th), nothing after.
    gone = cells.filter(pl.col("symbol") == "GONEUSDT")
    assert gone.select("month", "days", "files").rows() == [("2023-11", 16, 16), ("2023-12", 5, 5)]
    # HOLEUSDT's January: a month without a file inside its span, in the darkest colour.
    paths = mark_paths(svg, "mark-rect")
    hole_at = pl.col("symbol") == "HOLEUSDT", pl.col("month") == "2024-01"
    index = cells.with_row_index().filter(*hole_at)["index"].item()
    assert cells.row(index)[3:] == (31, 0, 0.0)  # days, files, share
    assert 'fill="rgb(127, 0, 0)"' in paths[index]


def test_the_volume_picture_draws_every_day_of_the_volume_stage_plot_data(project, capsys):
    make_page(project / "reports", capsys)
    svg = svgs((project / "reports/index.html").read_text(encoding="utf-8"))["volume-per-day"]
    labels = labels_of(svg)
    assert {"quote volume per day (USDT, log scale)", "top-10 symbols' share"} <= set(labels)
    assert {"quote volume", "top-10 share", PENDING} <= set(labels)
    # A tick at each power of ten from below the least volume (10 x 1M) to above the greatest
    # (18 x 1B).
    decades = ["10M", "100M", "1B", "10B", "100B"]
    assert [t for t in labels if re.fullmatch(r"\d+[MB]", t)] == decades
    percents = [t for t in labels if t.endswith("%")]
    assert (percents[0], percents[-1]) == ("0%", "100%")  # the right axis: the whole range

    data = pl.read_csv(project / "metrics/plots" / VOLUME_PER_DAY, try_parse_dates=True)
    assert data.columns == ["date", "quote_volume", "top_share", "symbols"]
    assert data.height == len(pl_dates(START, LAST))
    gap = data.with_row_index().filter(pl.col("date") == NO_VOLUME_DAY)
    assert gap.select("quote_volume", "top_share").row(0) == (0.0, None)
    before, after = (
        data.filter(pl.col("date") < NO_VOLUME_DAY),
        data.filter(pl.col("date") > NO_VOLUME_DAY),
    )
    total = step_lines(svg, VOLUME_COLOURS["quote_volume"])
    share = step_lines(svg, VOLUME_COLOURS["top_share"])
    # Each line breaks at the day of no volume: one point per other day, in date order.
    assert (
        [len(run) for run in total]
        == [len(run) for run in share]
        == [
            before.height,
            after.height,
        ]
    )
    drawn = pl.concat([before, after])
    days = (drawn["date"] - D(START)).dt.total_days()
    x = WIDTH * days / (D(LAST) - D(START)).days
    # Log scale from 10^7 up to 10^11; the share from 0 up to 1.
    y_total = HEIGHT * (11 - drawn["quote_volume"].log10()) / 4
    y_share = HEIGHT * (1 - drawn["top_share"])
    for run, y in ((total, y_total), (share, y_share)):
        points = pl.DataFrame([p for r in run for p in r], schema=["x", "y"], orient="row")
        assert (points["x"] - x).abs().max() < 0.01
        assert (points["y"] - y).abs().max() < 0.01
    # What volume_rows() was made to show: a thousandfold growth, a share that moves.
    assert drawn["quote_volume"].max() / drawn["quote_volume"].min() > 1000
    assert drawn["top_share"].max() == 1.0
    assert drawn["top_share"].min() == pytest.approx(10 / 12, abs=0.01)


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (
            lambda p: (p / "metrics/summary.json").unlink(),
            "no metrics/summary.json: run the pipeline first (make update)",
        ),
        (
            lambda p: (p / "metrics/summary.json").write_text(json.dumps({"symbols": 1})),
            "metrics/summary.json has no valid as_of and lookback_start (KeyError('as_of')): "
            "it is older than the report page: rerun make update",
        ),
        (
            lambda p: (p / "metrics/plots" / MISSING_PER_DAY).unlink(),
            f"no plot data metrics/plots/{MISSING_PER_DAY}: run the pipeline first (make update)",
        ),
        (
            lambda p: (p / "metrics/plots" / VOLUME_PER_DAY).unlink(),
            f"no plot data metrics/plots/{VOLUME_PER_DAY}: run the pipeline first (make update)",
        ),
        (
            lambda p: (p / "metrics/plots" / AVAILABLE_PER_DAY).write_text(
                "date,n\n2024-01-01,3\n"
            ),
            f"metrics/plots/{AVAILABLE_PER_DAY} lacks the column symbols: rerun make update",
        ),
    ],
    ids=["no summary", "old summary", "no plot file", "no volume file", "wrong columns"],
)
def test_bad_plot_data_stops_with_one_line_and_writes_no_page(
    project, capsys, caplog, damage, error
):
    damage(project)
    code, _ = make_page(project / "reports", capsys)
    assert code == 1
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [error]
    assert not (project / "reports/index.html").exists()
