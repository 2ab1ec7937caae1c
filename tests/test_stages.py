"""The four stages run in process against the in-process bucket, in a scratch working directory."""

import datetime as dt
import json
import re
from pathlib import Path
from urllib.parse import unquote

import polars as pl
import pytest

from pipeline.checkpoint import Checkpoint
from pipeline.config import load_config
from pipeline.dataset.changes import read_changes
from pipeline.entry import run_stage
from pipeline.prober import LISTED_FILES
from pipeline.stages import backfill, detect_gaps, discover, update, validate
from tests.support import (
    STAGES,
    D,
    dataset,
    dates,
    files_outside_logs,
    read_json,
    run_all,
    set_as_of,
    set_params,
)

NO_FILES = pl.DataFrame(schema=LISTED_FILES)


def detect_the_gaps() -> set[str]:
    """Run the stages before backfill; the symbols it will backfill."""
    assert [run_stage(name, body) for name, body in STAGES[:2]] == [0, 0]
    return set(json.loads(Path("data/gaps.json").read_text()))


def test_first_run_builds_the_whole_history(workspace, bucket):
    assert run_all() == [0, 0, 0, 0]
    assert json.loads(Path("symbols.json").read_text()) == {"symbols": ["BTCUSDT", "币安人生USDT"]}
    assert json.loads(Path("data/gaps.json").read_text()) == ["BTCUSDT", "币安人生USDT"]
    rows = dataset()
    btc = rows.filter(pl.col("symbol") == "BTCUSDT")
    assert btc["date"].min() == D("2023-01-01") and btc["date"].max() == D("2024-05-31")
    assert btc.filter(~pl.col("available"))["date"].to_list() == [D("2023-03-03")]
    new = rows.filter(pl.col("symbol") == "币安人生USDT")
    assert new["date"].to_list() == dates("2024-05-20", "2024-05-31")
    assert rows.select("date", "symbol").is_unique().all()
    assert sorted(p.name for p in Path("data/availability").iterdir())[:2] == [
        "2023-01.parquet",
        "2023-02.parquet",
    ]
    # Backfilled symbols reach as_of - 1 already: update does not list them again.
    assert bucket.list_calls("BTCUSDT") == 2


def test_next_day_probes_only_the_window_and_late_files_flip(workspace, bucket):
    assert run_all() == [0, 0, 0, 0]
    before = len(bucket.queries)
    bucket.add_days("BTCUSDT", "2024-06-01", "2024-06-01")
    bucket.add_days("币安人生USDT", "2024-06-01", "2024-06-01")
    set_as_of("2024-06-03")  # 2024-06-02 not published yet
    assert run_stage("update", update.run) == 0
    assert len(bucket.queries) - before == 2
    rows = dataset().filter(pl.col("date") >= D("2024-06-01"))
    assert rows.select("date", "symbol", "available").sort("date", "symbol").rows() == [
        (D("2024-06-01"), "BTCUSDT", True),
        (D("2024-06-01"), "币安人生USDT", True),
        (D("2024-06-02"), "BTCUSDT", False),
        (D("2024-06-02"), "币安人生USDT", False),
    ]
    bucket.add_days("BTCUSDT", "2024-06-02", "2024-06-02")  # published late
    set_as_of("2024-06-04")
    assert run_stage("update", update.run) == 0
    flipped = dataset().filter(pl.col("date") == D("2024-06-02"), pl.col("symbol") == "BTCUSDT")
    assert flipped["available"].to_list() == [True]


def test_update_catches_up_when_runs_were_missed(workspace, bucket):
    assert run_all() == [0, 0, 0, 0]
    bucket.add_days("BTCUSDT", "2024-06-01", "2024-07-30")
    set_as_of("2024-07-31")  # 60 days later, lookback is only 5
    assert run_stage("update", update.run) == 0
    btc = dataset().filter(pl.col("symbol") == "BTCUSDT")
    assert btc["date"].max() == D("2024-07-30")
    assert btc.height == (D("2024-07-30") - D("2023-01-01")).days + 1


def test_unchanged_bucket_leaves_symbols_json_byte_identical(workspace, bucket):
    assert run_stage("discover", discover.run) == 0
    first = Path("symbols.json").stat().st_mtime_ns
    assert run_stage("discover", discover.run) == 0
    assert Path("symbols.json").stat().st_mtime_ns == first


def test_empty_gaps_make_no_request(workspace, bucket):
    Path("data").mkdir()
    Path("data/gaps.json").write_text("[]\n")
    assert run_stage("backfill", backfill.run) == 0
    assert len(bucket.queries) == 0
    assert pl.read_parquet("data/backfill.parquet").is_empty()


def test_backfill_lists_only_the_symbols_of_gaps_json_the_dataset_lacks(workspace, bucket, caplog):
    assert run_all() == [0, 0, 0, 0]
    Path("data/gaps.json").write_text('[\n  "BTCUSDT",\n  "币安人生USDT"\n]\n')
    bucket.queries.clear()
    caplog.clear()
    assert run_stage("backfill", backfill.run) == 0
    assert bucket.queries == [] and pl.read_parquet("data/backfill.parquet").is_empty()
    assert "no symbol lacks history (2 in gaps.json already have history)" in caplog.text
    bucket.add_days("LATERUSDT", "2024-05-30", "2024-05-31")
    Path("data/gaps.json").write_text('[\n  "BTCUSDT",\n  "LATERUSDT"\n]\n')
    assert run_stage("backfill", backfill.run) == 0
    assert bucket.listed_symbols() == {"LATERUSDT"}
    later = pl.read_parquet("data/backfill.parquet")
    assert later.select("date", "symbol").rows() == [
        (D("2024-05-30"), "LATERUSDT"),
        (D("2024-05-31"), "LATERUSDT"),
    ]


def test_a_failed_update_leaves_every_file_untouched(workspace, bucket, caplog):
    assert run_all() == [0, 0, 0, 0]
    set_as_of("2024-06-03")
    before = files_outside_logs()
    bucket.failure = (503, "SlowDown")
    assert run_stage("update", update.run) == 1
    assert files_outside_logs() == before
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    # Both symbols' listings fail at once: the run stops on whichever failed first.
    assert re.match(
        r"(BTCUSDT|币安人生USDT): listing failed \(HTTP 503 SlowDown\) from https://s3\.example\.test/",
        errors[0],
    )


def test_dataset_recorded_in_dvc_lock_but_missing_stops_with_the_fix(workspace, bucket, caplog):
    Path("symbols.json").write_text('{"symbols": ["BTCUSDT"]}')
    Path("dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  update:\n    outs:\n    - path: data/availability\n"
    )
    assert run_stage("detect_gaps", detect_gaps.run) == 1
    assert run_stage("update", update.run) == 1
    assert not Path("data/gaps.json").exists()
    assert not Path("data/availability").exists()
    missing = "data/availability is recorded in dvc.lock but missing here: run `dvc pull`"
    assert caplog.text.count(missing) == 2  # from each stage
    assert len(bucket.queries) == 0


def test_bad_params_fail_before_any_request(workspace, bucket, caplog):
    set_params({"dataset": {"market": "spot"}})
    assert run_stage("discover", discover.run) == 1
    assert "params.yaml: dataset.market must be one of um, cm (got 'spot')" in caplog.text
    assert len(bucket.queries) == 0
    assert not Path("symbols.json").exists()


def test_rerun_lists_the_window_of_symbols_backfilled_earlier(workspace, bucket):
    assert run_all() == [0, 0, 0, 0]
    before = len(bucket.queries)
    assert run_stage("update", update.run) == 0
    assert len(bucket.queries) - before == 2


def test_each_stage_logs_what_it_did_to_the_rotating_log_file(workspace, bucket):
    assert run_all() == [0, 0, 0, 0]
    log = Path("logs/pipeline.log").read_text(encoding="utf-8")
    assert " discover INFO discovered 2 symbols with 1 requests (0 retries): 2 new" in log
    assert " detect_gaps INFO 2 of 2 symbols need their full history" in log
    assert " backfill INFO backfilled 2 symbols (2023-01-01 to 2024-05-31)" in log
    assert " update INFO probed 0 symbols" in log


def test_discover_repairs_a_hand_broken_symbols_json(workspace, bucket):
    Path("symbols.json").write_text('{"symbols": ["ZZZ", "AAA"]}')
    assert run_stage("discover", discover.run) == 0
    assert json.loads(Path("symbols.json").read_text()) == {"symbols": ["BTCUSDT", "币安人生USDT"]}


def test_an_unexpected_error_is_one_line_on_stderr_and_a_traceback_in_the_log(
    workspace, monkeypatch, capsys
):
    def boom(config):
        raise OSError("No space left on device\nsecond line")

    assert run_stage("update", boom) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].endswith("update ERROR unexpected OSError: No space left on device")
    log = Path("logs/pipeline.log").read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in log


def test_a_symbol_whose_backfill_found_nothing_gets_its_whole_history_later(workspace, bucket):
    bucket.add_days("LATEUSDT", "2024-06-01", "2024-06-01")  # only a file after as_of - 1
    assert run_all() == [0, 0, 0, 0]
    assert "LATEUSDT" in json.loads(Path("symbols.json").read_text())["symbols"]
    assert dataset().filter(pl.col("symbol") == "LATEUSDT").is_empty()
    # Its older files appear later, far outside the lookback window; symbols.json is unchanged.
    bucket.add_days("LATEUSDT", "2024-04-01", "2024-06-02")
    set_as_of("2024-06-03")
    assert run_stage("update", update.run) == 0
    late = dataset().filter(pl.col("symbol") == "LATEUSDT")
    assert late["date"].min() == D("2024-04-01") and late["date"].max() == D("2024-06-02")
    assert late["available"].all()


def test_a_backfill_made_for_a_later_as_of_is_clipped(workspace, bucket):
    assert run_all() == [0, 0, 0, 0]
    Path("data/availability").rename("data/old")
    set_as_of("2024-03-01")
    assert run_stage("update", update.run) == 0
    assert dataset()["date"].max() == D("2024-02-29")


def test_an_as_of_before_the_dataset_is_refused(workspace, bucket, caplog):
    assert run_all() == [0, 0, 0, 0]
    set_as_of("2024-03-01")
    assert run_stage("update", update.run) == 1
    assert "the dataset already has 2024-05-31, after run.as_of - 1 (2024-02-29)" in caplog.text


def test_update_logs_the_changes_in_its_window_once(workspace, bucket):
    assert run_all() == [0, 0, 0, 0]
    assert read_changes(Path("data/changes.parquet")).is_empty()
    bucket.remove_day("BTCUSDT", "2024-05-30")
    gone = bucket.meta("BTCUSDT", "2024-05-30")
    before = bucket.meta("币安人生USDT", "2024-05-31")
    after = bucket.reupload("币安人生USDT", "2024-05-31", on="2024-06-01")
    for _ in range(2):
        assert run_stage("update", update.run) == 0
    changes = read_changes(Path("data/changes.parquet"))
    assert changes.select("date", "symbol", "kind", "old_size", "new_size", "new_etag").rows() == [
        (D("2024-05-30"), "BTCUSDT", "removed", gone.size, None, None),
        (D("2024-05-31"), "币安人生USDT", "replaced", before.size, after.size, after.etag),
    ]
    assert read_json("metrics/update.json")["changes_logged"] == 0  # the second run found none


def test_update_rewrites_only_the_months_it_touched_and_delisted_rows_go_on(workspace, bucket):
    bucket.add_days("GONEUSDT", "2023-01-01", "2023-06-30")
    assert run_all() == [0, 0, 0, 0]
    old = Path("data/availability/2023-05.parquet").stat().st_mtime_ns
    bucket.add_days("BTCUSDT", "2024-06-01", "2024-06-01")
    set_as_of("2024-06-02")
    assert run_stage("update", update.run) == 0
    assert Path("data/availability/2023-05.parquet").stat().st_mtime_ns == old
    gone = dataset().filter(pl.col("symbol") == "GONEUSDT")
    assert gone["date"].max() == D("2024-06-01")
    assert not gone.filter(pl.col("date") > D("2023-06-30"))["available"].any()


def test_a_backfill_that_fails_midway_resumes_without_listing_finished_symbols_again(
    workspace, bucket
):
    for n in range(8):
        bucket.add_days(f"NEW{n}USDT", "2023-06-01", "2024-05-31")
    gaps = detect_the_gaps()
    bucket.failing_symbols = {"NEW5USDT"}
    assert run_stage("backfill", backfill.run) == 1
    checkpoint = Path("data/.backfill.parquet.checkpoint")
    finished = {unquote(path.stem) for path in checkpoint.glob("*.parquet")}
    assert finished and "NEW5USDT" not in finished and not Path("data/backfill.parquet").exists()

    bucket.failing_symbols = set()
    bucket.queries.clear()
    assert run_stage("backfill", backfill.run) == 0
    assert bucket.listed_symbols() == gaps - finished
    assert not checkpoint.exists()
    resumed = pl.read_parquet("data/backfill.parquet")
    assert resumed.select("date", "symbol").is_unique().all()

    assert run_stage("backfill", backfill.run) == 0  # from scratch: the checkpoint is gone
    assert bucket.listed_symbols() == gaps
    clean = pl.read_parquet("data/backfill.parquet")
    assert resumed.drop("probe_timestamp").equals(clean.drop("probe_timestamp"))
    stamps = resumed.group_by(pl.col("symbol").is_in(list(finished))).agg(
        pl.col("probe_timestamp").max()
    )
    earlier, later = stamps.sort("symbol", descending=True).get_column("probe_timestamp")
    assert earlier < later  # resumed rows keep the time they were really listed


def test_a_checkpoint_is_used_only_for_the_dates_it_was_made_for(workspace, bucket):
    detect_the_gaps()
    for as_of, relisted in (
        ("2024-06-01", {"币安人生USDT"}),
        ("2024-05-31", {"BTCUSDT", "币安人生USDT"}),
    ):
        set_as_of("2024-06-01")
        Checkpoint.for_backfill(load_config()).save("BTCUSDT", NO_FILES, dt.datetime.now(dt.UTC))
        set_as_of(as_of)
        bucket.queries.clear()
        assert run_stage("backfill", backfill.run) == 0
        assert bucket.listed_symbols() == relisted
        assert not Path("data/.backfill.parquet.checkpoint").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"symbols": ["BTCUSDT",', "symbols.json is not valid JSON (line 1, column 24): fix it"),
        ('{"symbols": ["A", "B", "A"]}', "symbols.json lists A more than once: remove the copies"),
        ('{"symbols": ["B", "A"]}', "symbols.json is not sorted: `make update` rewrites it"),
        ('{"symbols": ["A", " "]}', "symbols.json has an empty or malformed symbol name: remove"),
        ('["A"]', 'symbols.json must be an object {"symbols": [...]} with a list of strings'),
    ],
)
@pytest.mark.parametrize(("stage", "body"), STAGES[1:4:2])
def test_a_hand_broken_symbols_json_stops_the_stage_and_writes_nothing(
    workspace, bucket, caplog, stage, body, text, message
):
    assert run_all() == [0, 0, 0, 0]
    Path("symbols.json").write_text(text)
    set_as_of("2024-06-02")
    before = files_outside_logs()
    caplog.clear()
    assert run_stage(stage, body) == 1
    assert files_outside_logs() == before
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("probe.workers", "many", "probe.workers must be a whole number (got 'many')"),
        ("dataset.data_type", "candles", "dataset.data_type must be one of aggTrades,"),
        ("dataset.start_date", "2024-07-01", "dataset.start_date must be before run.as_of"),
    ],
)
@pytest.mark.parametrize(("stage", "body"), STAGES)
def test_bad_params_stop_every_stage_before_it_writes_or_requests(
    workspace, bucket, caplog, stage, body, key, value, message
):
    assert run_all() == [0, 0, 0, 0]
    section, name = key.split(".")
    set_params({section: {name: value}})
    before, requests = files_outside_logs(), len(bucket.queries)
    caplog.clear()
    assert run_stage(stage, body) == 1
    assert files_outside_logs() == before and len(bucket.queries) == requests
    assert message in caplog.text


def rewrite_latest_partition(damage: str) -> Path:
    path = sorted(Path("data/availability").glob("*.parquet"))[-1]
    rows = pl.read_parquet(path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "schema":
        rows.drop("etag").write_parquet(path)
    else:
        pl.concat([rows, rows.head(2)]).write_parquet(path)
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "is not a readable Parquet file (ComputeError): restore it with `dvc"),
        ("schema", "probe_timestamp:Datetime(time_unit='us', time_zone='UTC'), expected date:"),
        ("duplicates", "has 4 rows sharing a (date, symbol), e.g. 2024-05-01 BTCUSDT: restore"),
    ],
)
def test_a_damaged_partition_stops_update_and_nothing_is_written(
    workspace, bucket, caplog, damage, message
):
    assert run_all() == [0, 0, 0, 0]
    path = rewrite_latest_partition(damage)
    set_as_of("2024-06-02")
    before, requests = files_outside_logs(), len(bucket.queries)
    caplog.clear()
    assert run_stage("update", update.run) == 1
    assert files_outside_logs() == before
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(str(path)) and message in errors[0]
    if damage != "duplicates":  # found before any request; duplicates when the month is read
        assert len(bucket.queries) == requests


def test_update_writes_what_it_probed_to_its_run_metrics(workspace, bucket):
    assert run_all() == [0, 0, 0, 0]
    first_run = {
        "as_of": "2024-06-01",
        "last_date": "2024-05-31",
        "window_first": "2024-05-27",
        "repair": None,
        "symbols_probed": 0,  # both backfilled through 2024-05-31 in this run
        "requests": 0,
        "retries": 0,
        "rows_merged": 517 + 12,  # BTCUSDT since 2023-01-01, 币安人生USDT since 2024-05-20
        "months_rewritten": 17,
        "changes_logged": 0,
        "symbols_without_files": [],
    }
    assert read_json("metrics/update.json") == first_run
    assert run_stage("update", update.run) == 0
    assert read_json("metrics/update.json") == {
        **first_run,
        "symbols_probed": 2,
        "requests": 2,
        "rows_merged": 10,
        "months_rewritten": 1,
    }
    text = Path("metrics/update.json").read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_validate_after_a_run_writes_its_metrics_and_warns_of_figures(workspace, bucket, caplog):
    assert run_all() == [0, 0, 0, 0]
    caplog.clear()
    assert run_stage("validate", validate.run) == 0
    assert read_json("metrics/validation.json") == {
        "ok": True,
        "as_of": "2024-06-01",
        "rows": 529,
        "symbols": 2,
        "violations": dict.fromkeys(
            [
                "duplicate_keys",
                "null_fields",
                "dates_out_of_range",
                "rows_before_first_file",
                "rows_missing",
                "available_rows_incomplete",
                "unavailable_rows_with_file",
                "symbols_missing",
            ],
            0,
        ),
        "figures": {
            "missing_days_in_spans": 1,
            "delisting_candidates": 0,
            "late_dates": 0,
            "symbols_without_files": 0,
            "future_probe_timestamps": 0,
        },
        "samples": {
            "duplicate_keys": [],
            "null_fields": [],
            "dates_out_of_range": [],
            "rows_before_first_file": [],
            "rows_missing": [],
            "available_rows_incomplete": [],
            "unavailable_rows_with_file": [],
            "symbols_missing": [],
            "missing_days_in_spans": [{"date": "2023-03-03", "symbol": "BTCUSDT"}],
            "delisting_candidates": [],
            "late_dates": [],
            "symbols_without_files": [],
            "future_probe_timestamps": [],
        },
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "missing_days_in_spans 1: days without a file inside listing spans "
        "(gaps of at most 30 days), e.g. 2023-03-03 BTCUSDT"
    ]


def test_a_symbol_update_found_no_file_for_is_reported_and_validate_accepts_it(
    workspace, bucket, caplog
):
    bucket.add_days("LATEUSDT", "2024-06-01", "2024-06-01")  # only a file after as_of - 1
    assert run_all() == [0, 0, 0, 0]
    assert read_json("metrics/update.json")["symbols_without_files"] == ["LATEUSDT"]
    caplog.clear()
    assert run_stage("validate", validate.run) == 0
    metrics = read_json("metrics/validation.json")
    assert metrics["ok"] and metrics["violations"]["symbols_missing"] == 0
    assert metrics["samples"]["symbols_without_files"] == [{"symbol": "LATEUSDT"}]
    assert (
        "symbols_without_files 1: symbols of symbols.json with no file up to 2024-05-31, "
        "e.g. LATEUSDT" in caplog.text
    )


def test_validate_fails_with_one_line_naming_each_broken_check(workspace, bucket, capsys):
    assert run_all() == [0, 0, 0, 0]
    may = Path("data/availability/2024-05.parquet")
    rows = pl.read_parquet(may)
    rows.filter(pl.col("date") != D("2024-05-25")).write_parquet(may)  # both symbols lose it
    march = Path("data/availability/2023-03.parquet")
    rows = pl.read_parquet(march)
    rows.with_columns(etag=pl.col("etag").fill_null("stale")).write_parquet(march)
    capsys.readouterr()
    assert run_stage("validate", validate.run) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert errors[0].endswith(
        "validate ERROR the dataset breaks its contract: rows_missing 2, "
        "unavailable_rows_with_file 1; the first offending rows are in metrics/validation.json"
    )
    metrics = read_json("metrics/validation.json")
    assert metrics["ok"] is False
    assert {k: v for k, v in metrics["violations"].items() if v} == {
        "rows_missing": 2,
        "unavailable_rows_with_file": 1,
    }
    assert metrics["samples"]["rows_missing"] == [
        {"date": "2024-05-25", "symbol": "BTCUSDT"},
        {"date": "2024-05-25", "symbol": "币安人生USDT"},
    ]
    assert metrics["samples"]["unavailable_rows_with_file"] == [
        {"date": "2023-03-03", "symbol": "BTCUSDT"}
    ]


def test_validate_reads_only_a_dataset_the_store_accepts(workspace, bucket, caplog):
    assert run_all() == [0, 0, 0, 0]
    Path("data/availability/_dataset.json").unlink()
    assert run_stage("validate", validate.run) == 1
    assert "data/availability/_dataset.json is missing or unreadable" in caplog.text
    assert not Path("metrics/validation.json").exists()
