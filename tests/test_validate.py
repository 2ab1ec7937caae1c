"""The validate stage's checks and figures, and listing spans, on small hand-built datasets."""

import datetime as dt
import json
import re
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import Config, parse_config
from pipeline.dataset.spans import SPANS_SCHEMA, listing_spans
from pipeline.stages.validate import Report, RunMetricsError, read_without_files, validate
from tests import support
from tests.support import D, build_params, frame, row

# as_of 2024-01-11: rows run through 2024-01-10; the lookback window is 2024-01-06 .. 01-10.
AS_OF = "2024-01-11"
SMALL = {
    "dataset": {"start_date": "2024-01-01"},
    "run": {"as_of": AS_OF},
    "update": {"lookback_days": 5},
    "validate": {"stale_after_days": 3, "late_share": 0.5},
    "spans": {"max_gap_days": 2},
}


def config(**sections: dict) -> Config:
    return parse_config(build_params(SMALL, sections), today=D(AS_OF))


def days(symbol: str, first: str, last: str = "2024-01-10", *, missing: tuple = ()) -> list[dict]:
    """One row per day from `first` through `last` (default: as_of - 1), but the `missing`."""
    return support.days(symbol, first, last, missing=missing)


def january(first: int, last: int) -> tuple[str, ...]:
    """2024-01-{first} .. 2024-01-{last}, as the dates `days` takes."""
    return tuple(f"2024-01-{day:02d}" for day in range(first, last + 1))


def good_rows() -> list[dict]:
    return days("AAAUSDT", "2024-01-01", missing=("2024-01-05",)) + days("BBBUSDT", "2024-01-03")


def replaced(rows: list[dict], new: dict) -> list[dict]:
    """`rows` with the row of `new`'s (date, symbol) replaced by `new`."""
    key = (new["date"], new["symbol"])
    return [r for r in rows if (r["date"], r["symbol"]) != key] + [new]


def check(
    rows: list[dict],
    *,
    symbols: list[str] | None = None,
    without_files: tuple = (),
    settings: Config | None = None,
) -> Report:
    data = frame(*rows)
    listed = symbols if symbols is not None else sorted(set(data["symbol"].to_list()))
    return validate(data.lazy(), settings or config(), listed, list(without_files))


def violations(report: Report) -> dict[str, int]:
    return {name: finding.count for name, finding in report.violations.items() if finding.count}


def samples(report: Report, name: str) -> list[dict]:
    return {**report.violations, **report.figures}[name].samples


def test_a_good_dataset_breaks_no_check():
    report = check(good_rows())
    assert report.ok
    assert violations(report) == {}
    assert (report.rows, report.symbols) == (18, 2)
    assert report.metrics(config())["violations"] == dict.fromkeys(report.violations, 0)


def test_duplicate_keys():
    report = check([*good_rows(), row("2024-01-04", "AAAUSDT")])
    assert violations(report) == {"duplicate_keys": 1}
    assert samples(report, "duplicate_keys") == [
        {"date": "2024-01-04", "symbol": "AAAUSDT", "rows": 2}
    ]


def test_null_fields():
    broken = {**row("2024-01-04", "BBBUSDT"), "probe_timestamp": None}
    report = check(replaced(good_rows(), broken))
    assert violations(report) == {"null_fields": 1}
    assert samples(report, "null_fields") == [{"date": "2024-01-04", "symbol": "BBBUSDT"}]


def test_null_available_is_a_null_field_not_a_silently_skipped_row():
    broken = {**row("2024-01-04", "BBBUSDT"), "available": None}
    report = check(replaced(good_rows(), broken))
    assert violations(report) == {"null_fields": 1}


@pytest.mark.parametrize(
    ("day", "symbol"),
    [("2024-01-11", "AAAUSDT"), ("2023-12-31", "CCCUSDT")],
    ids=["after as_of - 1", "before dataset.start_date"],
)
def test_dates_out_of_range(day, symbol):
    report = check([*good_rows(), *days(symbol, day, day)], symbols=["AAAUSDT", "BBBUSDT"])
    assert violations(report)["dates_out_of_range"] == 1
    assert samples(report, "dates_out_of_range") == [{"date": day, "symbol": symbol}]


def test_rows_before_the_first_file():
    report = check([row("2024-01-02", "BBBUSDT", False), *good_rows()])
    assert violations(report) == {"rows_before_first_file": 1}
    assert samples(report, "rows_before_first_file") == [
        {"date": "2024-01-02", "symbol": "BBBUSDT"}
    ]


def test_a_symbol_without_any_file_has_all_its_rows_before_its_first_file():
    never = days("CCCUSDT", "2024-01-09", missing=("2024-01-09", "2024-01-10"))
    report = check([*good_rows(), *never])
    assert violations(report) == {"rows_before_first_file": 2}


def test_rows_missing_inside_a_history_and_at_its_end():
    rows = [r for r in good_rows() if (r["date"], r["symbol"]) != (D("2024-01-07"), "AAAUSDT")]
    rows = [r for r in rows if not (r["symbol"] == "BBBUSDT" and r["date"] > D("2024-01-08"))]
    report = check(rows)
    assert violations(report) == {"rows_missing": 3}
    assert samples(report, "rows_missing") == [
        {"date": "2024-01-07", "symbol": "AAAUSDT"},
        {"date": "2024-01-09", "symbol": "BBBUSDT"},
        {"date": "2024-01-10", "symbol": "BBBUSDT"},
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"file_size_bytes": 0},
        {"file_size_bytes": None},
        {"etag": None},
        {"etag": ""},
        {"last_modified": None},
    ],
    ids=str,
)
def test_available_rows_need_a_positive_size_a_last_modified_and_an_etag(fields):
    report = check(replaced(good_rows(), {**row("2024-01-06", "BBBUSDT"), **fields}))
    assert violations(report) == {"available_rows_incomplete": 1}
    assert samples(report, "available_rows_incomplete") == [
        {"date": "2024-01-06", "symbol": "BBBUSDT"}
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"file_size_bytes": 100},
        {"etag": "e"},
        {"last_modified": dt.datetime(2024, 1, 5, tzinfo=dt.UTC)},
    ],
    ids=str,
)
def test_unavailable_rows_carry_no_file_facts(fields):
    report = check(replaced(good_rows(), {**row("2024-01-05", "AAAUSDT", False), **fields}))
    assert violations(report) == {"unavailable_rows_with_file": 1}


def test_a_symbol_of_symbols_json_missing_from_the_dataset():
    report = check(good_rows(), symbols=["AAAUSDT", "BBBUSDT", "CCCUSDT"])
    assert violations(report) == {"symbols_missing": 1}
    assert samples(report, "symbols_missing") == [{"symbol": "CCCUSDT"}]
    assert report.figures["symbols_without_files"].count == 0


def test_a_symbol_update_found_no_file_for_is_a_figure_not_a_violation():
    report = check(
        good_rows(), symbols=["AAAUSDT", "BBBUSDT", "CCCUSDT"], without_files=("CCCUSDT",)
    )
    assert report.ok
    assert report.figures["symbols_without_files"].count == 1
    assert samples(report, "symbols_without_files") == [{"symbol": "CCCUSDT"}]


def test_every_broken_check_is_counted_at_once():
    rows = [*good_rows(), row("2024-01-04", "AAAUSDT"), row("2024-01-11", "BBBUSDT")]
    report = check(rows, symbols=["AAAUSDT", "BBBUSDT", "ZZZUSDT"])
    assert not report.ok
    assert violations(report) == {
        "duplicate_keys": 1,
        "dates_out_of_range": 1,
        "symbols_missing": 1,
    }


def test_missing_days_inside_listing_spans():
    # AAA: a 2-day gap (inside its span) and a 3-day one (longer than max_gap_days: it ends
    # the span, a relisting starts another).
    aaa = days("AAAUSDT", "2024-01-01", missing=("2024-01-03", "2024-01-04", *january(6, 8)))
    report = check([*aaa, *days("BBBUSDT", "2024-01-03")])
    assert report.figures["missing_days_in_spans"].count == 2
    assert samples(report, "missing_days_in_spans") == [
        {"date": "2024-01-03", "symbol": "AAAUSDT"},
        {"date": "2024-01-04", "symbol": "AAAUSDT"},
    ]
    spans = listing_spans(frame(*aaa).lazy(), D("2024-01-10"), 2).collect()
    assert spans["days_missing"].sum() == 2


def test_delisting_candidates_have_no_file_for_more_than_stale_after_days():
    rows = [
        *days("AAAUSDT", "2024-01-01"),
        *days("OLDUSDT", "2024-01-01", missing=january(7, 10)),  # 4 days without: a candidate
        *days("RECENTUSDT", "2024-01-01", missing=january(8, 10)),  # 3 days: not yet
        *days("OLDERUSDT", "2024-01-01", missing=january(3, 10)),
    ]
    report = check(rows)
    assert report.figures["delisting_candidates"].count == 2
    assert samples(report, "delisting_candidates") == [
        {"symbol": "OLDUSDT", "last_file": "2024-01-06"},
        {"symbol": "OLDERUSDT", "last_file": "2024-01-02"},
    ]


def test_late_dates_count_only_symbols_active_earlier_in_the_window():
    rows = [
        *days("PPPUSDT", "2024-01-01", missing=("2024-01-08", "2024-01-10")),
        *days("QQQUSDT", "2024-01-01", missing=("2024-01-10",)),
        *days("RRRUSDT", "2024-01-01"),
        *days("SSSUSDT", "2024-01-01"),
        # Listed on the window's last day: not active on it yet.
        *days("NEWUSDT", "2024-01-10"),
        # Gone before the window: never active in it.
        *days("GONEUSDT", "2024-01-01", missing=january(4, 10)),
    ]
    report = check(rows)
    # 2024-01-10: 2 of 4 active symbols missing (0.5 >= late_share); 01-08: 1 of 4, not late.
    assert report.figures["late_dates"].count == 1
    assert samples(report, "late_dates") == [{"date": "2024-01-10", "missing": 2, "active": 4}]


def test_a_date_missing_for_every_symbol_is_late_but_the_window_start_cannot_be():
    rows = [*days("AAAUSDT", "2024-01-01", missing=january(6, 7)), *days("BBBUSDT", "2024-01-01")]
    report = check(rows, settings=config(validate={"late_share": 0.5}))
    # 01-06 opens the window: nobody is active yet. On 01-07 only BBB is (it had 01-06).
    assert samples(report, "late_dates") == []
    rows = [*days("AAAUSDT", "2024-01-01", missing=january(7, 7)), *days("BBBUSDT", "2024-01-01")]
    report = check(rows, settings=config(validate={"late_share": 0.5}))
    assert samples(report, "late_dates") == [{"date": "2024-01-07", "missing": 1, "active": 2}]


def test_metrics_hold_counts_as_numbers_and_samples_for_every_check_and_figure():
    report = check([*good_rows(), row("2024-01-04", "AAAUSDT")])
    metrics = report.metrics(config())
    assert metrics["ok"] is False
    assert metrics["as_of"] == AS_OF
    assert (metrics["rows"], metrics["symbols"]) == (19, 2)
    assert metrics["violations"]["duplicate_keys"] == 1
    assert metrics["figures"] == {
        "missing_days_in_spans": 1,
        "delisting_candidates": 0,
        "late_dates": 0,
        "symbols_without_files": 0,
        "future_probe_timestamps": 0,
    }
    assert metrics["samples"].keys() == {*metrics["violations"], *metrics["figures"]}
    json.dumps(metrics)  # serialisable as it is


def test_an_empty_dataset_with_no_symbols_is_valid():
    report = validate(frame().lazy(), config(), [], [])
    assert report.ok and (report.rows, report.symbols) == (0, 0)


# listing_spans


def test_listing_spans_split_on_long_gaps_and_count_short_ones_as_missing():
    rows = frame(
        *days("AAAUSDT", "2024-01-01", missing=("2024-01-03", "2024-01-04", *january(6, 8))),
        *days("BBBUSDT", "2024-01-09"),
    )
    spans = listing_spans(rows.lazy(), D("2024-01-10"), 2).collect()
    assert dict(spans.schema) == SPANS_SCHEMA
    assert spans.rows() == [
        ("AAAUSDT", D("2024-01-01"), D("2024-01-05"), 3, 2),
        ("AAAUSDT", D("2024-01-09"), D("2024-01-10"), 2, 0),
        ("BBBUSDT", D("2024-01-09"), D("2024-01-10"), 2, 0),
    ]
    wider = listing_spans(rows.lazy(), D("2024-01-10"), 3).collect()
    assert wider.filter(pl.col("symbol") == "AAAUSDT").rows() == [
        ("AAAUSDT", D("2024-01-01"), D("2024-01-10"), 5, 5)
    ]


def test_listing_spans_count_absent_rows_as_missing_and_ignore_later_dates_and_copies():
    rows = frame(
        row("2024-01-01", "AAAUSDT"),
        row("2024-01-01", "AAAUSDT"),
        row("2024-01-03", "AAAUSDT"),  # 01-02 has no row at all
        row("2024-01-11", "AAAUSDT"),  # after last_date
        row("2024-01-02", "NOFILEUSDT", False),
    )
    spans = listing_spans(rows.lazy(), D("2024-01-10"), 30).collect()
    assert spans.rows() == [("AAAUSDT", D("2024-01-01"), D("2024-01-03"), 2, 1)]


# update's run metrics


def write_run_metrics(path: Path, **values: object) -> Path:
    path.write_text(json.dumps({"as_of": AS_OF, "symbols_without_files": [], **values}))
    return path


def test_run_metrics_give_the_symbols_update_found_no_file_for(tmp_path):
    path = write_run_metrics(tmp_path / "update.json", symbols_without_files=["CCCUSDT"])
    assert read_without_files(path, D(AS_OF)) == ["CCCUSDT"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "metrics/update.json not found: run the update stage first (`dvc repro`)"),
        ("{", "metrics/update.json is not valid JSON: rerun update (`dvc repro`)"),
        (
            '{"as_of": "2024-01-11"}',
            "metrics/update.json has no list of symbols_without_files: rerun update",
        ),
        (
            '{"as_of": "2024-01-10", "symbols_without_files": []}',
            "metrics/update.json is from an update for as_of 2024-01-10, not run.as_of 2024-01-11",
        ),
    ],
    ids=["missing", "not JSON", "no list", "another as_of"],
)
def test_unusable_run_metrics_stop_with_the_fix(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    path = Path("metrics/update.json")
    if text is not None:
        path.parent.mkdir()
        path.write_text(text)
    with pytest.raises(RunMetricsError, match="^" + re.escape(message)):
        read_without_files(path, D(AS_OF))


def test_stored_future_probe_timestamps_are_a_figure_with_samples_not_a_violation():
    now = support.T0 + dt.timedelta(hours=1)
    fast = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    rows = replaced(good_rows(), row("2024-01-04", "BBBUSDT", probed=fast))
    rows = replaced(rows, row("2024-01-02", "AAAUSDT", probed=fast))
    rows = replaced(rows, row("2024-01-03", "AAAUSDT", probed=now))  # not later than now
    data = frame(*rows)
    report = validate(data.lazy(), config(), ["AAAUSDT", "BBBUSDT"], [], now=now)
    assert report.ok
    assert report.figures["future_probe_timestamps"].count == 2
    assert samples(report, "future_probe_timestamps") == [
        {"date": "2024-01-02", "symbol": "AAAUSDT", "probe_timestamp": "2031-05-06T07:08:09Z"},
        {"date": "2024-01-04", "symbol": "BBBUSDT", "probe_timestamp": "2031-05-06T07:08:09Z"},
    ]
    json.dumps(report.metrics(config()))


def test_probe_timestamps_are_compared_with_the_clock_by_default():
    # T0 (2026-01-01) is in the past whenever this runs; a year 3000 stamp is not.
    rows = replaced(good_rows(), row("2024-01-04", "BBBUSDT", probed=dt.datetime(3000, 1, 1)))
    assert check(rows).figures["future_probe_timestamps"].count == 1
    assert check(good_rows()).figures["future_probe_timestamps"].count == 0
