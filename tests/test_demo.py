import re
from pathlib import Path

import pytest

from devtools import demo

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def test_demo_shows_the_new_symbol_backfilled_and_the_rest_on_the_window(capsys, tmp_path):
    untouched = {name: (ROOT / name).read_bytes() for name in ("params.yaml", "symbols.json")}
    had_dataset = (ROOT / "data" / "availability").exists()
    assert demo.main(["--symbols", "12", "--keep", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert out.count("stages run: discover, detect_gaps, backfill, update") == 2
    assert "detect_gaps found: DEMONEWUSDT" in out
    requests = int(re.search(r"DEMONEWUSDT: (\d+) listing requests", out).group(1))
    assert requests == 2  # 700 days = 1400 keys = two pages
    others = re.search(r"the other (\d+) symbols: (\d+) requests \(at most 1 each", out)
    assert others is not None and others.group(1) == others.group(2)
    assert "newest listings:" in out
    # The user's own checkout was not touched: the scratch project holds the outputs.
    assert (tmp_path / "demo" / "data" / "availability").is_dir()
    assert {name: (ROOT / name).read_bytes() for name in untouched} == untouched
    assert (ROOT / "data" / "availability").exists() == had_dataset
