"""A backfill killed with SIGKILL midway, then `dvc repro` again: it resumes where it stopped.

A first run of a copy of the session's template (tests/conftest.py `built`), on a universe of
its own served by the session's emulator.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from devtools.emulator import Emulator, Knobs, Universe
from devtools.scratch import ScratchProject
from tests import e2e_support as e2e
from tests.e2e_support import AS_OF, LAYOUT, assert_matches_universe

pytestmark = pytest.mark.e2e

SYMBOLS = [f"S{n:02d}USDT" for n in range(40)]
UNIVERSE = {
    "today": AS_OF.isoformat(),
    "market": "um",
    "data_type": "klines",
    "intervals": ["1m"],
    "symbols": {symbol: {"spans": [["2023-06-01", None]]} for symbol in SYMBOLS},
}
CHECKPOINT = Path("data/.backfill.parquet.checkpoint")


@pytest.fixture
def project(tmp_path, built, emulator) -> ScratchProject:
    emulator.set_universe(Universe.from_dict(UNIVERSE))
    # Slow enough (150 ms a page, 2 workers: ~3 s of backfill) to be killed midway.
    emulator.set_knobs(Knobs(latency_ms=150))
    project = built.template.copy(tmp_path / "repo")
    project.set_params({"probe": {"workers": 2}})
    return project


def kill_once_checkpointed(project: ScratchProject, emulator: Emulator, symbols: int) -> set[str]:
    """Run `dvc repro`, SIGKILL it (and its stage) once `symbols` are checkpointed."""
    folder = project.root / CHECKPOINT
    e2e.kill_repro_once(project, emulator, folder, "*.parquet", symbols, within_s=180)
    return {unquote(path.stem) for path in folder.glob("*.parquet")}


def test_a_killed_backfill_resumes_without_listing_finished_symbols_again(project, emulator):
    finished = kill_once_checkpointed(project, emulator, symbols=6)
    assert 6 <= len(finished) < len(SYMBOLS)
    assert not (project.root / "data" / "backfill.parquet").exists()

    emulator.set_knobs(Knobs())
    emulator.reset_counters()
    project.repro()
    listed = emulator.counters()["by_prefix"]
    # Finished symbols are not listed again: not by backfill, and not by update, whose
    # window the backfill already covered.
    assert {s for s in SYMBOLS if listed.get(LAYOUT.symbol_prefix(s))} == set(SYMBOLS) - finished
    assert all(listed.get(LAYOUT.symbol_prefix(s)) == 1 for s in set(SYMBOLS) - finished)
    assert not (project.root / CHECKPOINT).exists()
    rows = project.dataset()
    assert rows.select("date", "symbol").is_unique().all()
    assert_matches_universe(project, Universe.from_dict(UNIVERSE), AS_OF)
    resumed = rows.filter(rows["symbol"].is_in(list(finished)))["probe_timestamp"].max()
    relisted = rows.filter(~rows["symbol"].is_in(list(finished)))["probe_timestamp"].min()
    assert resumed < relisted  # resumed rows keep the time they were really listed
