"""Faults injected into a real `dvc repro` on the emulator: what survives, what stops, and how.

Transient faults (503 SlowDown, connection resets) at the rates the issue names must give the
dataset of a clean run, each costing one retry that the run's summary counts. A permanent
fault (broken or foreign answers with status 200, a body cut short, a 503 every time) must stop
the run with one line naming the symbol, the URL and the status, and leave every file the
pipeline writes byte for byte as it was. A second run started while one runs must fail at once
and change nothing. Daily runs start from the session's project (tests/conftest.py `built`),
first runs from its template.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.emulator import Emulator, Knobs
from pipeline.ops.lock import LOCK_FILE, operator_lock
from pipeline.ops.one_off import journal_path
from pipeline.vision.client import VisionClient, VisionError
from tests import e2e_support as e2e
from tests.e2e_support import AS_OF, LAYOUT, RETRIES, changed_files, snapshot

pytestmark = pytest.mark.e2e

# The session's universe (tests/e2e_support.py): page boundaries, relistings, non-ASCII, and 30
# plain symbols, so that a first run makes enough requests (74 listings for availability, about
# 2,200 more for volume) for fault rates of a few percent to bite. The fault generator's seed:
# which request meets which draw depends on thread timing, but not how many draws a run takes;
# with this seed the first request of all, discover's, is one of the 503s.
SEED = 43


def reported_retries(output: str) -> int:
    """The retries the stages' summaries report, summed over the stages."""
    return sum(int(n) for n in re.findall(r"\((\d+) retries\)", output))


# --- transient faults -----------------------------------------------------------------------


def test_the_issues_fault_rates_give_the_clean_runs_dataset_and_every_retry_is_counted(
    built, emulator, tmp_path
):
    # S3 sends no Retry-After, so the client backs off.
    knobs = Knobs(slowdown_rate=0.10, reset_rate=0.02, retry_after_s=None, seed=SEED)
    emulator.set_knobs(knobs)
    project = built.template.copy(tmp_path / "repo")
    # A first run makes about 2,300 requests. With the session's 4 retries, a 12% fault rate
    # stops one run in twenty on a request that meets five faults in a row; with 12 retries,
    # about one run in 400 million.
    project.set_params({"probe": {"retries": 12}})
    result = project.repro(check=False)

    assert result.returncode == 0, result.stderr
    counters = emulator.counters()
    injected = counters["faults"]["slowdown"] + counters["faults"]["reset"]
    assert counters["faults"]["slowdown"] > 0 and counters["faults"]["reset"] > 0
    # Each fault cost exactly one more request than the clean first run made, no more.
    assert counters["requests"] == built.first.counters["requests"] + injected
    # ... and the run's summary counts every one of them, discover's included.
    assert reported_retries(result.stderr) == injected, result.stderr
    rows = project.dataset()
    assert e2e.without_timestamps(rows).equals(e2e.without_timestamps(built.first.rows))
    e2e.assert_rows_match(rows, e2e.universe(), AS_OF)


def test_a_slowdowns_retry_after_is_honoured_up_to_the_request_timeout(emulator):
    def failed_listing(retry_after_s: int, timeout_s: float, retries: int) -> tuple[int, float]:
        """Requests made and seconds spent on a listing that is throttled every time."""
        prefix = LAYOUT.symbol_prefix("ETHUSDT")
        emulator.set_knobs(Knobs(retry_after_s=retry_after_s, prefix_faults={prefix: "slowdown"}))
        emulator.reset_counters()
        client = VisionClient(
            emulator.listing_url, timeout_s=timeout_s, retries=retries, backoff_s=0, pool_size=1
        )
        started = time.monotonic()
        with client, pytest.raises(VisionError, match="HTTP 503"):
            client.list_page(prefix, subject="ETHUSDT")
        return emulator.counters()["requests"], time.monotonic() - started

    # Without Retry-After the zero backoff would retry at once; with it, the retry waits 1 s.
    requests, seconds = failed_listing(retry_after_s=1, timeout_s=5, retries=1)
    assert requests == 2 and 1 <= seconds < 4
    # An hour is capped to the 2 s timeout: the client retries instead of sleeping (or giving
    # up at once because an hour does not fit its budget). The budget (2 s x 2 retries) ends
    # before the second retry's wait would.
    requests, seconds = failed_listing(retry_after_s=3600, timeout_s=2, retries=2)
    assert requests == 2 and 2 <= seconds < 8


# --- permanent faults -----------------------------------------------------------------------


def failure_line(output: str, symbol: str) -> str:
    """The one line of the output that names `symbol`."""
    lines = [line for line in output.splitlines() if f"{symbol}: " in line]
    assert len(lines) == 1, output
    return lines[0]


def assert_names_the_listing_url(line: str, emulator: Emulator, symbol: str) -> None:
    url = re.search(r" from (\S+)$", line)
    assert url is not None, line
    assert url[1].startswith(emulator.listing_url), line
    assert parse_qs(urlsplit(url[1]).query)["prefix"] == [LAYOUT.symbol_prefix(symbol)], line


PERMANENT = {
    # fault: (symbol, what the line must say besides the symbol and the URL)
    "malformed": ("ETHUSDT", ["unreadable listing", "HTTP 200", "malformed XML"]),
    "error_document": (
        "币安人生USDT",
        ["unreadable listing", "HTTP 200", "S3 error InternalError"],
    ),
    "truncated": (
        "ETHUSDT",
        ["listing failed", f"after {RETRIES} retries", "HTTP 200", "response cut short"],
    ),
    "html": ("ETHUSDT", ["HTTP 200", "content type 'text/html'", "not XML"]),
    "slowdown": ("ETHUSDT", ["listing failed", "HTTP 503 SlowDown", f"after {RETRIES} retries"]),
}


@pytest.mark.parametrize("fault", list(PERMANENT))
def test_a_permanent_fault_stops_a_daily_run_and_leaves_every_file_as_it_was(
    built, emulator, tmp_path, fault
):
    symbol, says = PERMANENT[fault]
    project = built.project.copy(tmp_path / "repo")
    before = snapshot(project)
    emulator.set_knobs(Knobs(prefix_faults={LAYOUT.symbol_prefix(symbol): fault}))

    result = project.repro(check=False)

    assert result.returncode != 0
    line = failure_line(result.stderr, symbol)
    assert all(part in line for part in says), line
    assert_names_the_listing_url(line, emulator, symbol)
    assert emulator.counters()["faults"][fault] > 0
    assert changed_files(before, snapshot(project)) == []


def test_a_fault_in_discovery_leaves_symbols_json_as_it_was(built, emulator, tmp_path):
    project = built.project.copy(tmp_path / "repo")
    before = snapshot(project)
    emulator.set_knobs(Knobs(prefix_faults={LAYOUT.root: "error_document"}))

    result = project.repro(check=False)

    assert result.returncode != 0
    line = failure_line(result.stderr, "symbols")
    assert "S3 error InternalError" in line and emulator.listing_url in line, line
    assert changed_files(before, snapshot(project)) == []


def test_a_permanent_fault_in_a_first_run_writes_no_dataset(built, emulator, tmp_path):
    project = built.template.copy(tmp_path / "repo")
    emulator.set_knobs(Knobs(prefix_faults={LAYOUT.symbol_prefix("PAGEUSDT"): "truncated"}))

    result = project.repro(check=False)

    assert result.returncode != 0
    line = failure_line(result.stderr, "PAGEUSDT")
    assert "response cut short" in line and "HTTP 200" in line, line
    assert_names_the_listing_url(line, emulator, "PAGEUSDT")
    assert "Running stage 'update'" not in result.stdout
    assert not (project.root / "data" / "availability").exists()
    assert not (project.root / "data" / "backfill.parquet").exists()


# --- two runs at once -----------------------------------------------------------------------


def hold_until(condition: Callable[[], bool], running: subprocess.Popen[str]) -> None:
    # A bound on waiting, not a measure: on a loaded machine three stages run before the hold.
    deadline = time.monotonic() + 180
    while not condition():
        assert running.poll() is None, running.communicate()
        assert time.monotonic() < deadline, "the first run never reached the held listing"
        time.sleep(0.02)


def slowdowns(emulator: Emulator) -> int:
    return emulator.counters()["faults"]["slowdown"]


def test_a_make_command_during_dvc_repro_fails_at_once_on_dvcs_lock_and_changes_nothing(
    built, emulator, tmp_path
):
    """DVC keeps a `dvc repro` and an operator command apart: the command fails on DVC's lock of
    the files the running update uses (its discover would write them), writes nothing, and puts
    params.yaml back; the run goes on, unharmed. Two operator commands do not even get that far:
    the second fails on the checkout's operator lock, naming the first."""
    project = built.project.copy(tmp_path / "repo")
    # Hold the run in its update: ETHUSDT's listing gets a 503 with Retry-After 10 s, every
    # time, for up to 20 retries: 200 s, far longer than the commands below take on a loaded
    # machine. Clearing the knobs lets it go on within 10 s.
    project.set_params({"probe": {"retries": 20, "timeout_s": 10}})
    project.commit("hold the run for up to 200 s")
    prefix = LAYOUT.symbol_prefix("ETHUSDT")
    emulator.set_knobs(Knobs(retry_after_s=10, prefix_faults={prefix: "slowdown"}))
    running = e2e.start(project, "dvc", "repro")
    try:
        hold_until(lambda: slowdowns(emulator) > 0, running)  # the run is inside its update
        before = snapshot(project, "params.yaml", journal_path(project.params_path).name)
        seconds = [project.make("update"), project.make("backfill", "SYMBOLS=BTCUSDT")]
        with operator_lock(project.root / LOCK_FILE):  # as a running `make update` holds it
            third = project.make("audit")
        during = snapshot(project, "params.yaml", journal_path(project.params_path).name)
        still_held = running.poll() is None
    finally:
        emulator.set_knobs(Knobs())
        _, err = e2e.finish(running)

    for second in seconds:
        assert second.returncode != 0
        # DVC's lock on the stages' files, not its repository lock (which a running stage
        # does not hold), is what stops it.
        assert "' is busy, it is being blocked by:" in second.stderr, second.stderr
        assert re.search(r"\(PID \d+\): \S*dvc repro", second.stderr), second.stderr
    assert third.returncode != 0
    busy = f"another make update, backfill or audit is running here (pid {os.getpid()})"
    assert busy in third.stderr, third.stderr
    assert "Running stage" not in third.stdout
    assert changed_files(before, during) == []  # params.yaml too, and no journal left
    assert still_held  # the commands did not wait for the run
    assert running.returncode == 0, err
    e2e.assert_matches_universe(project, e2e.universe(), AS_OF)
    assert e2e.lock_params(project)["run.repair"] is None
    assert e2e.dvc_status_is_clean(project)
    assert e2e.no_temporary_files(project)
