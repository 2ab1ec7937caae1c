"""Faults injected into a real `dvc repro` on the emulator: what survives, what stops, and how.

Transient faults (503 SlowDown, connection resets) at the rates the issue names must give the
dataset of a clean run, each costing one retry that the run's summary counts. A permanent
fault (broken or foreign answers with status 200, a body cut short, a 503 every time) must stop
the run with one line naming the symbol, the URL and the status, and leave every file the
pipeline writes byte for byte as it was. Two runs at once must not corrupt anything either.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.emulator import Emulator, Knobs, Universe
from devtools.scratch import SOURCE, ScratchProject
from pipeline.vision.client import VisionClient, VisionError
from tests.test_e2e import AS_OF, LAYOUT, assert_matches_universe, emulated_params
from tests.test_e2e import UNIVERSE as AWKWARD

pytestmark = pytest.mark.e2e

# The end-to-end universe (page boundaries, relistings, non-ASCII) and 30 plain symbols, so
# that a first run makes enough requests (74) for fault rates of a few percent to bite.
UNIVERSE = {
    **AWKWARD,
    "symbols": {
        **AWKWARD["symbols"],
        **{f"F{n:02d}USDT": {"spans": [["2022-01-01", None]]} for n in range(30)},
    },
}
RETRIES = 4
# The fault generator's seed. Which request meets which draw depends on thread timing, but
# not how many draws a run takes: with this seed the clean run's 74 requests meet 13 503s and
# 2 resets, and the first request of all, discover's, is one of the 503s.
SEED = 43
# What the pipeline writes; logs/ is left out, as a failed run is expected to log.
WRITTEN = ("data", "metrics", "symbols.json", "dvc.lock")


@pytest.fixture(scope="module")
def emulator():
    with Emulator(Universe.from_dict(UNIVERSE)) as server:
        yield server


@pytest.fixture(scope="module")
def template(tmp_path_factory, emulator):
    return ScratchProject.create(
        tmp_path_factory.mktemp("template") / "repo",
        emulated_params(emulator, retries=RETRIES),
    )


@dataclass(frozen=True)
class Baseline:
    """A project after a clean first run, committed, and the requests that run made."""

    project: ScratchProject
    requests: int


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, template, emulator) -> Baseline:
    emulator.set_knobs(Knobs())
    emulator.reset_counters()
    project = template.copy(tmp_path_factory.mktemp("baseline") / "repo")
    project.repro()
    project.commit("first run")
    return Baseline(project, emulator.counters()["requests"])


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.set_universe(Universe.from_dict(UNIVERSE))
    emulator.set_knobs(Knobs())
    emulator.reset_counters()


def snapshot(project: ScratchProject) -> dict[str, str]:
    """The SHA-256 of every file the pipeline writes, by path."""
    tops = [project.root / name for name in WRITTEN]
    files = [file for top in tops for file in [top, *sorted(top.rglob("*"))] if file.is_file()]
    return {
        file.relative_to(project.root).as_posix(): hashlib.sha256(file.read_bytes()).hexdigest()
        for file in files
    }


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The paths written, added or removed between two snapshots."""
    return sorted(
        path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
    )


def reported_retries(output: str) -> int:
    """The retries the stages' summaries report, summed over the stages."""
    return sum(int(n) for n in re.findall(r"\((\d+) retries\)", output))


def without_timestamps(project: ScratchProject):
    return project.dataset().drop("probe_timestamp").sort("date", "symbol")


# --- transient faults -----------------------------------------------------------------------


def test_the_issues_fault_rates_give_the_clean_runs_dataset_and_every_retry_is_counted(
    template, baseline, emulator, tmp_path
):
    # S3 sends no Retry-After, so the client backs off.
    knobs = Knobs(slowdown_rate=0.10, reset_rate=0.02, retry_after_s=None, seed=SEED)
    emulator.set_knobs(knobs)
    project = template.copy(tmp_path / "repo")
    result = project.repro()

    counters = emulator.counters()
    injected = counters["faults"]["slowdown"] + counters["faults"]["reset"]
    assert counters["faults"]["slowdown"] > 0 and counters["faults"]["reset"] > 0
    # Each fault cost exactly one more request than the clean run made, no more.
    assert counters["requests"] == baseline.requests + injected
    # ... and the run's summary counts every one of them, discover's included.
    assert reported_retries(result.stderr) == injected, result.stderr
    assert without_timestamps(project).equals(without_timestamps(baseline.project))
    assert_matches_universe(project, Universe.from_dict(UNIVERSE), AS_OF)


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

    # Without Retry-After the zero backoff would retry at once; with it, each retry waits 1 s.
    requests, seconds = failed_listing(retry_after_s=1, timeout_s=5, retries=2)
    assert requests == 3 and 2 <= seconds < 5
    # An hour is capped to the 1 s timeout: the client retries instead of sleeping (or giving
    # up at once because an hour does not fit its budget).
    requests, seconds = failed_listing(retry_after_s=3600, timeout_s=1, retries=2)
    assert requests >= 2 and 1 <= seconds < 5


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
    baseline, emulator, tmp_path, fault
):
    symbol, says = PERMANENT[fault]
    project = baseline.project.copy(tmp_path / "repo")
    before = snapshot(project)
    emulator.set_knobs(Knobs(prefix_faults={LAYOUT.symbol_prefix(symbol): fault}))

    result = project.repro(check=False)

    assert result.returncode != 0
    line = failure_line(result.stderr, symbol)
    assert all(part in line for part in says), line
    assert_names_the_listing_url(line, emulator, symbol)
    assert emulator.counters()["faults"][fault] > 0
    assert changed_files(before, snapshot(project)) == []


def test_a_fault_in_discovery_leaves_symbols_json_as_it_was(baseline, emulator, tmp_path):
    project = baseline.project.copy(tmp_path / "repo")
    before = snapshot(project)
    emulator.set_knobs(Knobs(prefix_faults={LAYOUT.root: "error_document"}))

    result = project.repro(check=False)

    assert result.returncode != 0
    line = failure_line(result.stderr, "symbols")
    assert "S3 error InternalError" in line and emulator.listing_url in line, line
    assert changed_files(before, snapshot(project)) == []


def test_a_permanent_fault_in_a_first_run_writes_no_dataset(template, emulator, tmp_path):
    project = template.copy(tmp_path / "repo")
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


def dvc_status_is_clean(project: ScratchProject) -> bool:
    """Nothing to rerun but the stages that always run: dvc.lock records what is on disk."""
    status = json.loads(project.run("dvc", "status", "--json").stdout)
    return all(reasons == ["always changed"] for reasons in status.values())


def with_make(project: ScratchProject) -> ScratchProject:
    """The project's Makefile, with the virtual environment it would build marked as built.

    `make update` then runs exactly what it runs in a checkout (`dvc remote list`, then `dvc
    repro`) with the DVC of the interpreter running the tests, and never installs anything.
    """
    for name in ("Makefile", "requirements.lock"):
        shutil.copy2(SOURCE / name, project.root / name)
    venv = project.root / ".venv"
    (venv / "bin").mkdir(parents=True)
    for marker in (".python", ".installed-runtime"):
        (venv / marker).touch()
    dry_run = project.run("make", "--dry-run", "update").stdout
    assert "pip" not in dry_run and "dvc repro" in dry_run, dry_run
    return project


def start(project: ScratchProject, *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def hold_until(condition: Callable[[], bool], running: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert running.poll() is None, running.communicate()
        assert time.monotonic() < deadline, "the first run never reached the held listing"
        time.sleep(0.02)


def throttle(emulator: Emulator, symbol: str) -> None:
    """Hold every run listing `symbol` in its update: a 503 with Retry-After 5 s, every time.

    5 s is the cap (probe.timeout_s): a run is held for about (RETRIES - 1) x 5 s before it
    gives up, and clearing the knobs lets it go on within 5 s.
    """
    prefix = LAYOUT.symbol_prefix(symbol)
    emulator.set_knobs(Knobs(retry_after_s=5, prefix_faults={prefix: "slowdown"}))


def slowdowns(emulator: Emulator) -> int:
    return emulator.counters()["faults"]["slowdown"]


def test_a_second_make_update_fails_fast_while_the_first_runs_and_nothing_is_corrupted(
    baseline, emulator, tmp_path
):
    project = with_make(baseline.project.copy(tmp_path / "repo"))
    throttle(emulator, "ETHUSDT")
    first = start(project, "make", "update")
    try:
        hold_until(lambda: slowdowns(emulator) > 0, first)  # the first is inside its update
        second = project.run("make", "update", check=False)
        first_still_held = first.poll() is None
    finally:
        emulator.set_knobs(Knobs())
        _, err = first.communicate(timeout=60)

    assert second.returncode != 0
    # DVC's lock on the stages' files, not its repository lock (which a running stage does not
    # hold), is what stops it: the first's update reads data/backfill.parquet, which the
    # second's backfill would write.
    assert "' is busy, it is being blocked by:" in second.stderr, second.stderr
    assert re.search(r"\(PID \d+\): \S*dvc repro", second.stderr), second.stderr
    assert first_still_held  # the second did not wait for the first
    assert first.returncode == 0, err
    assert_matches_universe(project, Universe.from_dict(UNIVERSE), AS_OF)
    assert dvc_status_is_clean(project)
    assert not [p for p in (project.root / "data").rglob("*") if p.name.endswith(".tmp")]


def test_update_run_by_hand_during_dvc_repro_takes_no_lock(baseline, emulator, tmp_path):
    """Not a guarantee but a record: nothing stops a stage run by hand beside `dvc repro`.

    The repro is held inside its update (before it reads the months it merges into) while the
    hand run lists and writes the whole dataset; then the repro finishes.
    """
    project = baseline.project.copy(tmp_path / "repo")
    throttle(emulator, "ETHUSDT")  # the hand run fits in one 5 s wait of the repro
    held = LAYOUT.symbol_prefix("ETHUSDT")
    repro = start(project, "dvc", "repro")
    try:
        hold_until(lambda: slowdowns(emulator) > 0, repro)
        emulator.set_knobs(Knobs())
        listed_by_repro = emulator.counters()["by_prefix"][held]
        by_hand = project.run(sys.executable, "-m", "pipeline.update", check=False)
        listed_meanwhile = emulator.counters()["by_prefix"][held] - listed_by_repro
    finally:
        emulator.set_knobs(Knobs())
        _, err = repro.communicate(timeout=60)

    assert by_hand.returncode == 0, by_hand.stderr  # it ran beside the repro, unhindered
    assert listed_meanwhile == 1, "the repro woke before the hand run ended: no sequence"
    assert repro.returncode == 0, err
    assert_matches_universe(project, Universe.from_dict(UNIVERSE), AS_OF)
    assert dvc_status_is_clean(project)
    assert not [p for p in (project.root / "data").rglob("*") if p.name.endswith(".tmp")]


def test_a_repair_during_dvc_repro_fails_at_once_and_changes_nothing(baseline, emulator, tmp_path):
    project = baseline.project.copy(tmp_path / "repo")
    throttle(emulator, "ETHUSDT")
    repro = start(project, "dvc", "repro")
    try:
        hold_until(lambda: slowdowns(emulator) > 0, repro)  # the repro is inside its update
        before = snapshot(project)
        repair = project.run(
            sys.executable, "-m", "pipeline.backfill", "--symbols", "BTCUSDT", check=False
        )
        during = snapshot(project)
    finally:
        emulator.set_knobs(Knobs())
        _, err = repro.communicate(timeout=60)

    assert repair.returncode == 1
    assert "another DVC command is running in this repository (" in repair.stderr
    assert "wait for it to finish, then run this again" in repair.stderr
    assert changed_files(before, during) == []
    assert repro.returncode == 0, err
    assert_matches_universe(project, Universe.from_dict(UNIVERSE), AS_OF)
