"""A listing that does not answer as S3 does stops the run before it writes anything.

Each fault of the issue ("Believe no answer blindly") is injected into the emulator the day
after a clean first run. Both the daily `dvc repro` and `python -m pipeline.ops audit` (the
whole history, relisted) must exit non-zero with one line naming the cause and the listing URL,
and leave every file the pipeline writes byte for byte as it was. Before, the 404s read as
"no files" (every file logged as removed), the looping token paged forever, the trickling body
never timed out, foreign prefixes became symbols, and a bad Retry-After crashed the run.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from devtools.emulator import Emulator, Knobs, Universe
from devtools.emulator.server import LOOP_TOKEN, OTHER_MARKET_FOLDER
from devtools.scratch import ScratchProject
from tests.e2e_support import LAYOUT, changed_files, snapshot

pytestmark = pytest.mark.e2e

AS_OF = "2024-06-01"
NEXT_DAY = "2024-06-02"
# Small: three symbols, five months. The non-ASCII one has url-encoded keys.
UNIVERSE: dict[str, Any] = {
    "today": AS_OF,
    "symbols": {
        "BTCUSDT": {"spans": [["2023-06-01", None]]},
        "ETHUSDT": {"spans": [["2024-01-01", None]]},
        "币安人生USDT": {"spans": [["2024-05-10", None]]},
    },
}
ROOT = LAYOUT.root
ETH = LAYOUT.symbol_prefix("ETHUSDT")
NON_ASCII = LAYOUT.symbol_prefix("币安人生USDT")
# fault: (the prefix it is injected at, what is listed there (the line's subject), the cause)
FAULTS: dict[str, tuple[str, str, str]] = {
    "not_found_html": (ETH, "ETHUSDT", "(HTTP 404, not S3: text/html)"),
    "no_such_key": (ETH, "ETHUSDT", "(HTTP 404 NoSuchKey)"),
    "looping_token": (ROOT, "symbols", f"continuation token {LOOP_TOKEN!r} repeats"),
    "empty_token": (ETH, "ETHUSDT", "truncated without a continuation token"),
    "trickle": (ETH, "ETHUSDT", "(HTTP 200, timed out"),
    "prefix_empty": (ROOT, "symbols", "common prefix '' is not one folder under"),
    "prefix_nested": (ROOT, "symbols", f"common prefix '{ROOT}A/B/' is not one folder under"),
    "prefix_other_market": (
        ROOT,
        "symbols",
        f"common prefix '{OTHER_MARKET_FOLDER}' is not one folder under",
    ),
    "key_outside_prefix": (ETH, "ETHUSDT", f"key '{OTHER_MARKET_FOLDER}1m/"),
    "no_encoding_echo": (NON_ASCII, "币安人生USDT", "encoding-type=url asked for but not echoed"),
    "bad_retry_after": (ETH, "ETHUSDT", "listing failed after 1 retry (HTTP 503 SlowDown)"),
}


@pytest.fixture(scope="module")
def emulator():
    with Emulator(Universe.from_dict(UNIVERSE)) as server:
        yield server


@pytest.fixture(scope="module")
def built(tmp_path_factory, emulator) -> ScratchProject:
    """A project after a clean first run, set to run the next day; committed."""
    params = {
        "vision": {"listing_url": emulator.listing_url, "download_url": emulator.download_url},
        "dataset": {"start_date": "2024-01-01"},
        "run": {"as_of": AS_OF},
        "update": {"lookback_days": 5},
        # One retry, no wait; a timeout short enough for the trickling body to fail quickly,
        # long enough for any other answer on a loaded machine (the budget is one timeout).
        "probe": {"workers": 2, "timeout_s": 3, "retries": 1, "backoff_s": 0},
    }
    project = ScratchProject.create(tmp_path_factory.mktemp("distrust") / "repo", params)
    # The rerun is the steady state: its backfill empties what the first run's backfilled.
    for _ in ("first run", "rerun"):
        result = project.repro(check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    project.set_params({"run": {"as_of": NEXT_DAY}})
    project.commit("two runs; tomorrow's date")
    emulator.set_universe(Universe.from_dict(UNIVERSE).with_today(NEXT_DAY))
    return project


def cause_line(output: str, subject: str) -> str:
    """The one line of the output naming `subject` ("ETHUSDT: ...")."""
    lines = [line for line in output.splitlines() if f"{subject}: " in line]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("command", ["repro", "audit"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_listing_s3_would_never_send_stops_the_run_and_writes_nothing(
    built, emulator, tmp_path, fault, command
):
    prefix, subject, cause = FAULTS[fault]
    project = built.copy(tmp_path / "repo")
    before = snapshot(project)
    emulator.set_knobs(Knobs(prefix_faults={prefix: fault}))
    emulator.reset_counters()
    started = time.monotonic()
    try:
        if command == "repro":
            result = project.repro(check=False)
        else:
            result = project.run(sys.executable, "-m", "pipeline.ops", "audit", check=False)
    finally:
        emulator.set_knobs(Knobs())

    assert result.returncode != 0, result.stdout + result.stderr
    line = cause_line(result.stderr, subject)
    assert cause in line and emulator.listing_url in line, line
    assert emulator.counters()["faults"][fault] > 0
    assert changed_files(before, snapshot(project)) == []
    # A bound, not a measure: no listing without end, no endless body.
    assert time.monotonic() - started < 180
