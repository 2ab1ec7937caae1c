"""The report stage: listing spans with their status, summary metrics, plot data, and DVC's view.

Unit tests run on small hand-built datasets; the e2e test runs the real `dvc repro`, `dvc
metrics show`, `dvc plots show` and `make report` on the emulator and checks every figure
against the universe's ground truth.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import polars as pl
import pytest
import yaml

from devtools.emulator import Emulator, Universe
from devtools.scratch import ScratchProject
from pipeline.config import load_config
from pipeline.dataset.changes import CHANGES_SCHEMA
from pipeline.dataset.spans import spans_with_status
from pipeline.dataset.store import write_frame
from pipeline.entry import run_stage
from pipeline.report.data import (
    AVAILABILITY_BY_MONTH,
    AVAILABLE_PER_DAY,
    LISTINGS_PER_MONTH,
    MISSING_PER_DAY,
    availability_by_month,
    available_per_day,
    listings_per_month,
    missing_per_day,
)
from pipeline.report.figures import FIGURES, VOLUME_COLOURS
from pipeline.stages import report
from pipeline.stages.report import REPORT_SPANS_SCHEMA, change_counts, summary
from pipeline.symbols import is_delivery
from tests.support import ONE_DAY, ROOT, D, commit_dataset, dates, frame, row, write_params
from tests.test_report_page import bars, step_lines, svgs

# as_of 2024-01-11: rows run through 2024-01-10. Spans split on gaps longer than 2 days.
AS_OF = D("2024-01-11")
LAST = AS_OF - ONE_DAY
MAX_GAP = 2


def january(first: int, last: int) -> set[dt.date]:
    return {dt.date(2024, 1, day) for day in range(first, last + 1)}


# Each symbol's days with a file; its rows run from the first of them through LAST.
FILES = {
    "AAAUSDT": january(1, 10) - {D("2024-01-05")},  # a one-day gap inside its span
    "OLDUSDT": january(1, 3),  # no file for 7 days: delisted
    "EDGEUSDT": january(1, 8),  # no file for exactly MAX_GAP days: still listed
    "GONEUSDT": january(1, 7),  # one day more: delisted
    "BACKUSDT": january(1, 2) | january(6, 10),  # 3 days without: delisted, then relisted
    "NEARUSDT": january(3, 10),  # listed 7 days before LAST: not new
    "NEWUSDT": january(4, 10),  # listed 6 days before LAST: new
}


def hand_rows() -> pl.DataFrame:
    return frame(
        *(
            row(str(day), symbol, day in files)
            for symbol, files in FILES.items()
            for day in dates(min(files), LAST)
        )
    )


def spans_frame(*spans: tuple) -> pl.DataFrame:
    return pl.DataFrame(
        [
            (s, D(first), D(last), available, missing, status)
            for s, first, last, available, missing, status in spans
        ],
        schema=REPORT_SPANS_SCHEMA,
        orient="row",
    )


HAND_SPANS = spans_frame(
    ("AAAUSDT", "2024-01-01", "2024-01-10", 9, 1, "listed"),
    ("BACKUSDT", "2024-01-01", "2024-01-02", 2, 0, "delisted"),
    ("BACKUSDT", "2024-01-06", "2024-01-10", 5, 0, "listed"),
    ("EDGEUSDT", "2024-01-01", "2024-01-08", 8, 0, "listed"),
    ("GONEUSDT", "2024-01-01", "2024-01-07", 7, 0, "delisted"),
    ("NEARUSDT", "2024-01-03", "2024-01-10", 8, 0, "listed"),
    ("NEWUSDT", "2024-01-04", "2024-01-10", 7, 0, "listed"),
    ("OLDUSDT", "2024-01-01", "2024-01-03", 3, 0, "delisted"),
)


def test_spans_are_listed_while_the_days_since_their_last_file_could_be_a_gap():
    spans = spans_with_status(hand_rows().lazy(), LAST, MAX_GAP).collect()
    assert spans.schema == pl.Schema(REPORT_SPANS_SCHEMA)
    assert spans.equals(HAND_SPANS)


def test_available_per_day_counts_the_symbols_with_a_file_on_each_date():
    per_day = available_per_day(hand_rows().lazy()).collect()
    dates = sorted(january(1, 10))
    expected = [sum(day in files for files in FILES.values()) for day in dates]
    assert per_day.equals(pl.DataFrame({"date": dates, "symbols": expected}))
    assert per_day.row(4) == (D("2024-01-05"), 4)  # EDGE, GONE, NEAR, NEW; AAA missing


def test_listings_per_month_count_span_starts_and_delisted_span_ends_with_empty_months():
    spans = spans_frame(
        # The dataset's first month: its spans were mostly listed before it, and are left out.
        ("FIRSTUSDT", "2023-10-01", "2024-02-03", 126, 0, "listed"),
        ("AAAUSDT", "2023-10-30", "2023-11-02", 4, 0, "delisted"),
        ("AAAUSDT", "2024-01-20", "2024-02-03", 15, 0, "listed"),  # a relisting is a listing
        ("BBBUSDT", "2023-11-05", "2024-02-03", 91, 0, "listed"),  # listed: no delisting
        ("CCCUSDT", "2024-01-01", "2024-01-31", 31, 0, "delisted"),
    )
    per_month = listings_per_month(spans.lazy(), D("2024-02-03")).collect()
    assert per_month.to_dicts() == [
        {"month": "2023-11", "listings": 1, "delistings": 1},
        {"month": "2023-12", "listings": 0, "delistings": 0},
        {"month": "2024-01", "listings": 2, "delistings": 1},
        {"month": "2024-02", "listings": 0, "delistings": 0},
    ]


def test_a_dataset_within_one_month_has_no_listing_month():
    spans = spans_with_status(hand_rows().lazy(), LAST, MAX_GAP)
    assert listings_per_month(spans, LAST).collect().height == 0


def test_missing_per_day_counts_listed_symbols_without_a_file_and_files_published_late():
    spans = spans_with_status(hand_rows().lazy(), LAST, MAX_GAP).collect()
    log = changes_frame(
        {**change("appeared", dt.datetime(2024, 1, 3, tzinfo=dt.UTC)), "symbol": "BACKUSDT"},
        change("appeared", dt.datetime(2024, 1, 3, tzinfo=dt.UTC)),
        change("removed", dt.datetime(2024, 1, 4, tzinfo=dt.UTC)),
        change("appeared", dt.datetime(2024, 1, 5, tzinfo=dt.UTC)),  # AAA again: once
        {**change("replaced", dt.datetime(2024, 1, 5, tzinfo=dt.UTC)), "date": D("2024-01-04")},
    )
    per_day = missing_per_day(hand_rows().lazy(), spans.lazy(), log.lazy(), LAST).collect()
    missing = {D("2024-01-05"): 1, D("2024-01-09"): 1, D("2024-01-10"): 1}
    assert per_day.to_dicts() == [
        {
            "date": day,
            # AAA's one-day gap; EDGE's days since its last file (its span is still listed).
            # Not OLD's and GONE's after their delisting, nor BACK's between its two spans.
            "missing": missing.get(day, 0),
            "published_late": 2 if day == D("2024-01-02") else 0,  # AAA, BACK
        }
        for day in sorted(january(1, 10))
    ]


def test_availability_by_month_is_the_share_of_listed_days_with_a_file_in_listing_order():
    spans = spans_with_status(hand_rows().lazy(), LAST, MAX_GAP)
    cells = availability_by_month(hand_rows().lazy(), spans, LAST).collect()
    assert cells.to_dicts() == [
        {"month": "2024-01", "symbol": s, "first_date": D(f), "days": d, "files": f_, "share": r}
        for s, f, d, f_, r in [
            ("AAAUSDT", "2024-01-01", 10, 9, 0.9),
            ("BACKUSDT", "2024-01-01", 7, 7, 1.0),  # 2 + 5: not the 3 days between its spans
            ("EDGEUSDT", "2024-01-01", 10, 8, 0.8),  # listed through LAST, no file since the 8th
            ("GONEUSDT", "2024-01-01", 7, 7, 1.0),
            ("OLDUSDT", "2024-01-01", 3, 3, 1.0),
            ("NEARUSDT", "2024-01-03", 8, 8, 1.0),
            ("NEWUSDT", "2024-01-04", 7, 7, 1.0),
        ]
    ]


def test_availability_by_month_leaves_out_the_months_a_symbol_was_not_listed():
    last = D("2024-04-20")
    files = {*dates("2024-01-20", "2024-02-05"), *dates("2024-04-10", "2024-04-15")}
    rows = frame(*(row(str(day), "XUSDT", day in files) for day in dates("2024-01-20", last)))
    spans = spans_with_status(rows.lazy(), last, 30)
    cells = availability_by_month(rows.lazy(), spans, last).collect()
    assert cells.select("month", "days", "files", "share").rows() == [
        ("2024-01", 12, 12, 1.0),
        ("2024-02", 5, 5, 1.0),  # delisted on the 5th: a full month until then, no hole
        # No March: between a delisting and a relisting.
        ("2024-04", 11, 6, 0.545),  # relisted on the 10th; no file since the 15th yet
    ]


def test_no_rows_give_no_spans_days_or_months():
    rows = frame().lazy()
    spans = spans_with_status(rows, LAST, MAX_GAP)
    collected = pl.collect_all(
        [
            spans,
            available_per_day(rows),
            listings_per_month(spans, LAST),
            missing_per_day(rows, spans, changes_frame().lazy(), LAST),
            availability_by_month(rows, spans, LAST),
        ]
    )
    assert [part.height for part in collected] == [0, 0, 0, 0, 0]
    assert summary(frame(), collected[0], LAST) == {
        "symbols": 0,
        "available_yesterday": 0,
        "rows": 0,
        "first_date": None,
        "last_date": None,
        "new_listings_last_7_days": 0,
    }


def test_summary_counts_symbols_rows_dates_and_new_listings_of_the_last_7_days():
    rows = hand_rows()
    assert summary(rows, HAND_SPANS, LAST) == {
        "symbols": 7,
        "available_yesterday": 4,  # AAA, BACK, NEAR, NEW
        "rows": 7 * 10 - 2 - 3,  # NEAR from the 3rd, NEW from the 4th
        "first_date": "2024-01-01",
        "last_date": "2024-01-10",
        "new_listings_last_7_days": 2,  # NEW (on LAST - 6) and BACK's relisting
    }


def change(kind: str, detected_at: dt.datetime) -> dict:
    return {"detected_at": detected_at, "date": D("2024-01-02"), "symbol": "AAAUSDT", "kind": kind}


def changes_frame(*changes: dict) -> pl.DataFrame:
    return pl.DataFrame(list(changes), schema=CHANGES_SCHEMA)


def test_change_counts_by_kind_and_detected_on_the_7_days_up_to_as_of():
    since = dt.datetime(2024, 1, 5, tzinfo=dt.UTC)  # as_of 2024-01-11 - 6 days
    log = changes_frame(
        change("appeared", since - dt.timedelta(microseconds=1)),
        change("appeared", since),
        change("removed", since + dt.timedelta(days=30)),  # a run later than its as_of
        change("appeared", dt.datetime(2023, 6, 1, tzinfo=dt.UTC)),
    )
    assert change_counts(log, AS_OF) == {
        "changes_total": 4,
        "changes_appeared": 3,
        "changes_removed": 1,
        "changes_replaced": 0,
        "changes_last_7_days": 2,
    }
    assert set(change_counts(changes_frame(), AS_OF).values()) == {0}


@pytest.fixture
def project(tmp_path, monkeypatch):
    write_params(
        tmp_path,
        {
            "dataset": {"start_date": "2024-01-01"},
            "run": {"as_of": AS_OF.isoformat()},
            "spans": {"max_gap_days": MAX_GAP},
        },
    )
    monkeypatch.chdir(tmp_path)
    config = load_config()
    commit_dataset(hand_rows(), config.paths.dataset, config.dataset, previous=frame())
    return tmp_path


def test_the_stage_writes_spans_summary_and_plot_data(project):
    config = load_config()
    log = changes_frame(change("replaced", dt.datetime(2024, 1, 10, 7, tzinfo=dt.UTC)))
    write_frame(log, config.paths.changes, order=("detected_at",))
    assert run_stage("report", report.run) == 0

    spans = pl.read_parquet(config.paths.spans)
    assert spans.equals(HAND_SPANS)
    text = config.paths.summary.read_text(encoding="utf-8")
    metrics = json.loads(text)
    assert metrics == {
        **summary(hand_rows(), HAND_SPANS, LAST),
        "changes_total": 1,
        "changes_appeared": 0,
        "changes_removed": 0,
        "changes_replaced": 1,
        "changes_last_7_days": 1,
        # The run the report page shades the lookback window of (params.yaml's 20 days,
        # from no earlier than dataset.start_date).
        "as_of": "2024-01-11",
        "lookback_start": "2024-01-01",
    }
    assert text == json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    per_day = (config.paths.plots / AVAILABLE_PER_DAY).read_text().splitlines()
    assert per_day[0] == "date,symbols"
    assert per_day[1:3] == ["2024-01-01,5", "2024-01-02,5"]
    assert len(per_day) == 1 + 10
    per_month = (config.paths.plots / LISTINGS_PER_MONTH).read_text().splitlines()
    assert per_month == ["month,listings,delistings"]  # the dataset's first month only
    missing = (config.paths.plots / MISSING_PER_DAY).read_text().splitlines()
    assert missing[0] == "date,missing,published_late"
    assert [line for line in missing[1:] if not line.endswith(",0,0")] == [
        "2024-01-05,1,0",
        "2024-01-09,1,0",
        "2024-01-10,1,0",
    ]
    cells = pl.read_csv(config.paths.plots / AVAILABILITY_BY_MONTH, try_parse_dates=True)
    assert cells.equals(
        availability_by_month(hand_rows().lazy(), HAND_SPANS.lazy(), LAST).collect()
    )


def test_no_change_log_yet_counts_no_change(project):
    assert run_stage("report", report.run) == 0
    metrics = json.loads(load_config().paths.summary.read_text())
    assert {key: value for key, value in metrics.items() if key.startswith("changes")} == {
        "changes_total": 0,
        "changes_appeared": 0,
        "changes_removed": 0,
        "changes_replaced": 0,
        "changes_last_7_days": 0,
    }


def test_a_damaged_partition_stops_the_stage_with_one_line_and_writes_nothing(project, caplog):
    config = load_config()
    partition = config.paths.dataset / "2024-01.parquet"
    partition.write_bytes(b"not parquet")
    assert run_stage("report", report.run) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"{partition} is not a readable Parquet file (ComputeError): "
        "restore it with `dvc checkout` or `dvc pull`"
    ]
    written = [config.paths.spans, config.paths.summary, config.paths.plots]
    assert not any(path.exists() for path in written)


def test_make_report_without_plot_data_says_to_run_the_pipeline(project):
    result = ScratchProject(project).make("report")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert errors[0].endswith(
        " ops ERROR no plot data in metrics/plots: run the pipeline first (make update)"
    )
    assert not (project / "reports").exists()


def declared(entries: list) -> dict[str, dict]:
    """A stage's outs or metrics as {path: properties}."""
    return {
        path: props
        for entry in entries
        for path, props in (entry.items() if isinstance(entry, dict) else [(entry, {})])
    }


PLOT_FILES = (AVAILABLE_PER_DAY, LISTINGS_PER_MONTH, MISSING_PER_DAY, AVAILABILITY_BY_MONTH)


def test_dvc_yaml_declares_the_report_outputs_and_draws_every_plot_file():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stage = dvc["stages"]["report"]
    files = [f"${{paths.plots}}/{name}" for name in PLOT_FILES]
    outs = declared(stage["outs"])
    assert set(outs) == {"${paths.spans}", *files}
    # Git-tracked, like the metrics: the scheduled workflow commits metrics/.
    assert [outs[name]["cache"] for name in files] == [False] * len(files)
    # The page shades the lookback window: its length is an input of the stage.
    assert "update.lookback_days" in stage["params"]
    assert declared(stage["metrics"])["${paths.summary}"]["cache"] is False
    # A plot draws the file it is named after, or the files its `y` maps to columns.
    drawn = [
        set(props["y"]) if isinstance(props["y"], dict) else {name}
        for plot in dvc["plots"]
        for name, props in plot.items()
    ]
    assert set(files) <= set().union(*drawn)
    templates = {props["template"] for plot in dvc["plots"] for props in plot.values()}
    assert all((ROOT / template).is_file() for template in templates)


# End to end: the real `dvc repro` against the emulator, then DVC's own views of the report.

E2E_START = D("2022-01-01")
E2E_AS_OF = D("2024-06-01")
SPANS_MAX_GAP = 30  # params.yaml's spans.max_gap_days


def gap_dates(first: str, days: int) -> list[str]:
    return [str(D(first) + ONE_DAY * i) for i in range(days)]


E2E_UNIVERSE = {
    "today": E2E_AS_OF.isoformat(),
    "symbols": {
        "BTCUSDT": {"spans": [["2019-09-25", None]], "missing": ["2023-03-03", "2024-05-20"]},
        "OLDUSDT": {"spans": [["2022-03-01", "2023-02-28"]]},
        "AGAINUSDT": {"spans": [["2022-01-01", "2022-06-30"], ["2023-09-01", None]]},
        # 30 days without a file stay inside the span; 31 end it.
        "GAPUSDT": {
            "spans": [["2023-01-01", None]],
            "missing": gap_dates("2023-03-01", 30) + gap_dates("2023-08-01", 31),
        },
        "QUIETUSDT": {"spans": [["2023-06-01", "2024-05-10"]]},  # 21 days without: listed
        "LATEUSDT": {"spans": [["2023-01-01", None]], "late": {"2024-05-30": "2024-06-02"}},
        "NEWUSDT": {"spans": [["2024-05-27", None]]},
        "币安人生USDT": {"spans": [["2024-05-10", None]]},
        "BTCUSDT_240628": {"spans": [["2024-01-01", "2024-06-28"]]},
    },
}


def truth_spans(universe: Universe, last: dt.date) -> pl.DataFrame:
    """Listing spans from the universe's files, independently of pipeline.dataset.spans."""
    spans = []
    for symbol in universe.symbols:
        files = [d for d in universe.available_dates(symbol) if E2E_START <= d <= last]
        if is_delivery(symbol) or not files:
            continue
        start = files[0]
        for previous, day in zip(files, [*files[1:], None], strict=True):
            if day is None or (day - previous).days - 1 > SPANS_MAX_GAP:
                days = sum(start <= d <= previous for d in files)
                status = "listed" if (last - previous).days <= SPANS_MAX_GAP else "delisted"
                spans.append(
                    (symbol, start, previous, days, (previous - start).days + 1 - days, status)
                )
                start = day
    return pl.DataFrame(spans, schema=REPORT_SPANS_SCHEMA, orient="row").sort(
        "symbol", "first_date"
    )


def truth_per_day(universe: Universe, last: dt.date) -> dict[str, int]:
    files = [set(universe.available_dates(s)) for s in universe.symbols if not is_delivery(s)]
    return {
        str(day): sum(day in symbol_files for symbol_files in files)
        for day in dates(E2E_START, last)
    }


def truth_per_month(spans: pl.DataFrame) -> dict[tuple[str, str], int]:
    """{(month, "listings" | "delistings"): count}, months without either and the dataset's
    first month left out."""
    rows = spans.iter_rows(named=True)
    counts = Counter(
        key
        for span in rows
        for key in [
            (f"{span['first_date']:%Y-%m}", "listings"),
            *([(f"{span['last_date']:%Y-%m}", "delistings")] * (span["status"] == "delisted")),
        ]
    )
    return {key: n for key, n in counts.items() if key[0] != f"{E2E_START:%Y-%m}"}


def plotted(values: list[dict], x: str) -> dict:
    """A DVC plot's data points: {x: y} for one series, {(x, series): y} for several."""
    if "dvc_inferred_y_value" in values[0]:
        return {(v[x], v["field"]): int(v["dvc_inferred_y_value"]) for v in values}
    return {v[x]: int(v["symbols"]) for v in values}


def nonzero(points: dict) -> dict:
    return {key: value for key, value in points.items() if value}


def check_report(project: ScratchProject, universe: Universe, as_of: dt.date) -> dict:
    """The report's outputs and DVC's views of them against the universe; the summary."""
    last = as_of - ONE_DAY
    spans = truth_spans(universe, last)
    assert pl.read_parquet(project.root / "data/spans.parquet").equals(spans)

    metrics = json.loads(project.read("metrics/summary.json"))
    per_day = truth_per_day(universe, last)
    assert metrics["symbols"] == spans["symbol"].n_unique()
    assert metrics["available_yesterday"] == per_day[str(last)]
    assert metrics["rows"] == project.dataset().height
    assert (metrics["first_date"], metrics["last_date"]) == (str(E2E_START), str(last))
    new = spans.filter(pl.col("first_date") > last - 7 * ONE_DAY)
    assert metrics["new_listings_last_7_days"] == new.height
    (workspace,) = json.loads(project.run("dvc", "metrics", "show", "--json").stdout).values()
    assert workspace["data"]["metrics/summary.json"]["data"] == metrics

    plots = json.loads(project.run("dvc", "plots", "show", "--json").stdout)["data"]
    daily = plots["metrics/plots/available_per_day.csv"][0]["content"]
    assert daily["encoding"]["x"]["type"] == "temporal"
    assert plotted(daily["data"]["values"], "date") == per_day
    monthly = plots["listings_per_month"][0]["content"]["data"]["values"]
    assert nonzero(plotted(monthly, "month")) == truth_per_month(spans)
    missing = plots["missing_per_day"][0]["content"]
    assert missing["encoding"]["x"]["type"] == "temporal"
    assert {v["date"] for v in missing["data"]["values"]} == set(per_day)
    heatmap = plots["metrics/plots/availability_by_month.csv"][0]["content"]
    cells = pl.read_csv(project.root / "metrics/plots/availability_by_month.csv")
    assert len(heatmap["data"]["values"]) == cells.height
    assert set(cells["symbol"]) == set(spans["symbol"])
    return metrics


@pytest.mark.e2e
def test_dvc_repro_reports_spans_metrics_and_plots_of_the_universe(tmp_path):
    universe = Universe.from_dict(E2E_UNIVERSE)
    with Emulator(universe) as emulator:
        project = ScratchProject.create(
            tmp_path / "repo",
            {
                "vision": {
                    "listing_url": emulator.listing_url,
                    "download_url": emulator.download_url,
                },
                "dataset": {"start_date": E2E_START.isoformat()},
                "run": {"as_of": E2E_AS_OF.isoformat()},
                "update": {"lookback_days": 5},
                "probe": {"workers": 8, "timeout_s": 5, "retries": 4, "backoff_s": 0.01},
            },
        )
        result = project.repro()
        assert "Running stage 'report'" in result.stdout
        metrics = check_report(project, universe, E2E_AS_OF)
        spans = pl.read_parquet(project.root / "data/spans.parquet")
        # What the universe was built to show, read from the ground truth above.
        assert spans.filter(pl.col("symbol") == "GAPUSDT")["first_date"].to_list() == [
            D("2023-01-01"),
            D("2023-09-01"),
        ]
        assert spans.filter(pl.col("symbol") == "QUIETUSDT")["status"].to_list() == ["listed"]
        assert metrics["new_listings_last_7_days"] == 1  # NEWUSDT
        assert metrics["changes_total"] == 0

        made = project.make("report")
        page = project.root / "reports/index.html"
        assert made.returncode == 0, made.stderr
        assert made.stdout.splitlines()[-1] == page.as_uri()
        drawn = svgs(page.read_text(encoding="utf-8"))
        assert list(drawn) == [figure.anchor for figure in FIGURES]
        assert nonzero(bars(drawn["listings-per-month"])) == truth_per_month(spans)
        # The volume stage's plot data, drawn: a point for each day with volume.
        volume = pl.read_csv(project.root / "metrics/plots/volume_per_day.csv")
        traded = volume.filter(pl.col("quote_volume") > 0).height
        runs = step_lines(drawn["volume-per-day"], VOLUME_COLOURS["quote_volume"])
        assert sum(map(len, runs)) == traded > 0

        # The next day: a late file appears, a file is removed and one re-uploaded.
        next_day = E2E_AS_OF + ONE_DAY
        universe = (
            universe.with_today(next_day)
            .without_file("BTCUSDT", "2024-05-29")
            .with_reupload("AGAINUSDT", "2024-05-28", on=next_day)
        )
        emulator.set_universe(universe)
        project.set_params({"run": {"as_of": next_day.isoformat()}})
        project.repro()
        metrics = check_report(project, universe, next_day)
        assert {key: value for key, value in metrics.items() if key.startswith("changes")} == {
            "changes_total": 3,
            "changes_appeared": 1,
            "changes_removed": 1,
            "changes_replaced": 1,
            "changes_last_7_days": 3,
        }
