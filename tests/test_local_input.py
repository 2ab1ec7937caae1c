"""Local input is checked strictly: params.yaml, symbols.json, the disk, the clock, the query CLI.

A refused run exits 1 with one line naming the file or the key and the fix, and leaves every
file (data/, symbols.json, params.yaml) byte-identical; input refused before the run makes no
request.
"""

from __future__ import annotations

import datetime as dt
import errno
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import yaml

from devtools.scratch import ScratchProject
from pipeline.dataset.changes import read_changes
from pipeline.dataset.store import write_frame
from pipeline.entry import run_stage
from pipeline.logs import FILE_ONLY
from pipeline.ops import cli as ops
from pipeline.query import cli as query_cli
from pipeline.stages import detect_gaps, discover, update, validate
from pipeline.symbols import render
from tests import e2e_support as e2e
from tests.support import D, dataset, files_outside_logs, read_json, run_all, set_as_of

FUTURE = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)
ABSOLUTE = Path("/nonexistent-vision-availability/symbols.json")  # its folder must stay absent
STAGES = [("discover", discover.run), ("update", update.run), ("validate", validate.run)]


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The error lines an operator sees (the traceback goes to the log file only)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelname == "ERROR" and not getattr(record, FILE_ONLY, False)
    ]


def refused(caplog: pytest.LogCaptureFixture, stage: str, body: Callable[..., object]) -> str:
    """Run `stage`, which must exit 1 and write nothing; its one error line."""
    before = files_outside_logs()
    caplog.clear()
    assert run_stage(stage, body) == 1
    assert files_outside_logs() == before
    (error,) = error_lines(caplog)
    assert "\n" not in error
    return error


def edit_params(change: Callable[[dict], None]) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    change(params)
    Path("params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")


def setter(section: str, key: str, value: object) -> Callable[[dict], None]:
    return lambda params: params[section].__setitem__(key, value)


# --- params.yaml ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            setter("update", "lookbak_days", 3),
            "params.yaml: update.lookbak_days is not a known key; did you mean "
            "update.lookback_days?",
        ),
        (
            lambda params: params.__setitem__("prob", params["probe"]),
            "params.yaml: prob is not a known section; did you mean probe?",
        ),
        (
            setter("probe", "timeout_s", float("nan")),
            "params.yaml: probe.timeout_s must be a finite number (got nan)",
        ),
        (
            setter("probe", "backoff_s", float("inf")),
            "params.yaml: probe.backoff_s must be a finite number (got inf)",
        ),
        (
            setter("update", "lookback_days", 1_000_000),
            "params.yaml: update.lookback_days must be at most 36500 (got 1000000)",
        ),
        (
            setter("paths", "dataset", "../outside"),
            "params.yaml: paths.dataset must be a relative path inside the repository, "
            "like data/x (got '../outside')",
        ),
        (
            setter("paths", "changes", "data/../../changes.parquet"),
            "params.yaml: paths.changes must be a relative path inside the repository",
        ),
        (
            setter("paths", "symbols", str(ABSOLUTE)),
            "params.yaml: paths.symbols must be a relative path inside the repository",
        ),
    ],
    ids=["unknown-key", "unknown-section", "nan", "inf", "lookback-1e6", "dotdot", "escape", "abs"],
)
def test_bad_params_stop_every_stage_before_a_request_naming_the_key(
    workspace, bucket, caplog, change, message
):
    assert run_all() == [0, 0, 0, 0]
    edit_params(change)
    requests = len(bucket.queries)
    for stage, body in STAGES:
        assert refused(caplog, stage, body).startswith(message)
    assert len(bucket.queries) == requests
    assert not any(workspace.parent.glob("outside*")) and not ABSOLUTE.parent.exists()


def test_make_refuses_an_unquoted_yaml_date_before_dvc_sees_it(workspace, monkeypatch, capsys):
    text = Path("params.yaml").read_text(encoding="utf-8")
    unquoted = re.sub(r"start_date: '(\d{4}-\d{2}-\d{2})'", r"start_date: \1", text)
    assert unquoted != text
    Path("params.yaml").write_text(unquoted, encoding="utf-8")

    def no_dvc(*args: str) -> int:
        raise AssertionError(f"dvc {' '.join(args)} ran")

    monkeypatch.setattr(ops, "dvc", no_dvc)
    monkeypatch.setattr(ops, "pull_if_published", no_dvc)
    before = files_outside_logs()
    assert ops.main(["update"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(
        "ops ERROR params.yaml: dataset.start_date is an unquoted YAML date, which DVC cannot "
        'read: quote it ("2023-01-01")'
    )
    assert files_outside_logs() == before


# --- symbols.json -----------------------------------------------------------------------------


def test_symbols_json_with_bad_bytes_is_repaired_by_discover_and_named_elsewhere(
    workspace, bucket, caplog
):
    assert run_all() == [0, 0, 0, 0]
    good = Path("symbols.json").read_bytes()
    Path("symbols.json").write_bytes(good.replace(b"BTCUSDT", b"BTC\xffUSDT"))
    for stage, body in [("detect_gaps", detect_gaps.run), *STAGES[1:]]:
        assert refused(caplog, stage, body) == (
            "symbols.json is not UTF-8 text (byte 25): fix it or restore it with `git checkout`"
        )
    assert run_stage("discover", discover.run) == 0
    assert Path("symbols.json").read_bytes() == good == render(["BTCUSDT", "币安人生USDT"]).encode()


# --- the disk ---------------------------------------------------------------------------------


def next_day(bucket) -> None:
    """A run with something to write: a new day with files."""
    bucket.add_days("BTCUSDT", "2024-06-01", "2024-06-01")
    set_as_of("2024-06-02")


def test_a_full_disk_while_polars_writes_names_the_file_not_a_transport_error(
    workspace, bucket, caplog, monkeypatch
):
    assert run_all() == [0, 0, 0, 0]
    next_day(bucket)

    def full(self, *args, **kwargs):
        raise pl.exceptions.ComputeError(
            "parquet: File out of specification: underlying IO error: "
            "No space left on device (os error 28)"
        )

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    assert refused(caplog, "update", update.run) == (
        "cannot write data/availability/2024-05.parquet: no space left on device: "
        "free some disk space and rerun"
    )


def test_a_full_disk_on_an_atomic_write_names_the_file(workspace, bucket, caplog, monkeypatch):
    assert run_all() == [0, 0, 0, 0]
    bucket.add_days("NEWUSDT", "2024-05-30", "2024-05-31")  # symbols.json must change
    write_text = Path.write_text

    def full(self: Path, *args, **kwargs):
        if self.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    assert refused(caplog, "discover", discover.run) == (
        "cannot write symbols.json: no space left on device: free some disk space and rerun"
    )


def test_a_folder_that_denies_writing_names_the_file(workspace, bucket, caplog, monkeypatch):
    # The tests may run as root, whom a read-only folder does not stop: the refusal is mocked
    # where every new file begins, as the kernel gives it (EACCES, naming the file).
    assert run_all() == [0, 0, 0, 0]
    next_day(bucket)
    mkstemp = tempfile.mkstemp

    def read_only(suffix=None, prefix=None, dir=None, text=False):
        if Path(dir) == Path("data/availability"):
            raise PermissionError(
                errno.EACCES, "Permission denied", str(Path(dir) / f"{prefix}x1y2z3{suffix}")
            )
        return mkstemp(suffix, prefix, dir, text)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert refused(caplog, "update", update.run) == (
        "cannot write data/availability/2024-05.parquet: permission denied: "
        "check the permissions of the file and its folder, and rerun"
    )


def test_an_overflow_is_one_line_pointing_at_params(workspace, caplog):
    def overflow(config):
        raise OverflowError("date value out of range")

    assert run_stage("update", overflow) == 1
    assert error_lines(caplog)[0] == (
        "a number or date is out of range (date value out of range): "
        "check the numbers of params.yaml"
    )


# --- the clock --------------------------------------------------------------------------------


def stamp_in_the_future(*keys: tuple[str, str], available: bool | None = None) -> None:
    """Give the stored rows of `keys` (date, symbol) a probe_timestamp from a fast clock."""
    path = Path("data/availability/2024-05.parquet")
    rows = pl.read_parquet(path)
    hit = pl.struct("date", "symbol").is_in([{"date": D(d), "symbol": s} for d, s in keys])
    changes = {"probe_timestamp": pl.when(hit).then(pl.lit(FUTURE)).otherwise("probe_timestamp")}
    if available is not None:  # what the fast machine saw: no file yet
        for column in ("file_size_bytes", "last_modified", "etag"):
            changes[column] = pl.when(hit).then(None).otherwise(column)
        changes["available"] = pl.when(hit).then(available).otherwise("available")
    write_frame(rows.with_columns(**changes), path)


def test_a_stored_future_timestamp_loses_to_a_fresh_probe_and_validate_reports_it(
    workspace, bucket, caplog
):
    assert run_all() == [0, 0, 0, 0]
    # A fast machine saw no file yet on 05-31; the file is there now. 05-01 is outside the
    # window: never probed again, it keeps its stamp.
    stamp_in_the_future(("2024-05-31", "BTCUSDT"), available=False)
    stamp_in_the_future(("2024-05-01", "BTCUSDT"))
    assert run_stage("update", update.run) == 0
    row = dataset().filter(pl.col("date") == D("2024-05-31"), pl.col("symbol") == "BTCUSDT")
    assert row["available"].to_list() == [True]
    assert row["probe_timestamp"].to_list()[0] < dt.datetime.now(dt.UTC)
    appeared = read_changes(Path("data/changes.parquet")).filter(pl.col("kind") == "appeared")
    assert appeared.select("date", "symbol").rows() == [(D("2024-05-31"), "BTCUSDT")]
    caplog.clear()
    assert run_stage("validate", validate.run) == 0
    metrics = read_json("metrics/validation.json")
    assert metrics["figures"]["future_probe_timestamps"] == 1
    assert metrics["samples"]["future_probe_timestamps"] == [
        {"date": "2024-05-01", "symbol": "BTCUSDT", "probe_timestamp": "2099-01-01T00:00:00Z"}
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("future_probe_timestamps 1: rows probed later") for w in warnings)


# --- the query CLI ----------------------------------------------------------------------------


def test_the_query_cli_names_a_missing_month_of_a_built_dataset(workspace, bucket, capsys):
    assert run_all() == [0, 0, 0, 0]
    assert query_cli.main(["snapshot", "2024-03-05"]) == 0
    capsys.readouterr()
    Path("data/availability/2024-03.parquet").unlink()
    before = files_outside_logs()
    assert query_cli.main(["snapshot", "2024-03-05"]) == 1
    assert capsys.readouterr() == (
        "",
        "vision-query: error: data/availability/2024-03.parquet is missing, a month between "
        "2023-01 and 2024-05 (1 missing in all): restore it with `dvc checkout` or `dvc pull`\n",
    )
    assert files_outside_logs() == before


# --- end to end: `make update` on a built project ---------------------------------------------


@pytest.fixture
def project(tmp_path, built, emulator) -> ScratchProject:
    return built.project.copy(tmp_path / "repo")


def unquote_start_date(text: str) -> str:
    unquoted = re.sub(r"start_date: ['\"](\d{4}-\d{2}-\d{2})['\"]", r"start_date: \1", text)
    assert unquoted != text
    return unquoted


@pytest.mark.parametrize(
    ("edit", "flags", "message"),
    [
        (
            unquote_start_date,
            (),
            "params.yaml: dataset.start_date is an unquoted YAML date, which DVC cannot read: "
            'quote it ("2022-01-01")',
        ),
        (
            lambda text: text.replace("update:\n", "update:\n  lookbak_days: 3\n"),
            (),
            "params.yaml: update.lookbak_days is not a known key; did you mean "
            "update.lookback_days?",
        ),
        (
            lambda text: text,
            ("LOOKBACK_DAYS=1000000",),
            "params.yaml for this run: update.lookback_days must be at most 36500 (got 1000000)",
        ),
    ],
    ids=["yaml-date", "unknown-key", "lookback-1e6"],
)
def test_e2e_make_update_refuses_local_input_before_dvc_runs(
    project, emulator, edit, flags, message
):
    params = project.params_path
    params.write_text(edit(params.read_text(encoding="utf-8")), encoding="utf-8")
    before = e2e.snapshot(project, "params.yaml")
    result = project.make("update", *flags)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and errors[0].endswith(f"ops ERROR {message}"), result.stderr
    assert "Unsupported value" not in result.stdout + result.stderr
    assert e2e.snapshot(project, "params.yaml") == before
    assert emulator.counters()["requests"] == 0


def test_e2e_dvc_itself_calls_an_unquoted_date_an_unexpected_error(project, emulator):
    # Why make checks first: DVC's templating stops on the date with no fix, and `make update`
    # would meet it in `dvc pull` already.
    params = project.params_path
    params.write_text(unquote_start_date(params.read_text(encoding="utf-8")), encoding="utf-8")
    result = project.repro(check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "ERROR: unexpected error - Unsupported value of type 'date'" in output
    assert "quote" not in output
