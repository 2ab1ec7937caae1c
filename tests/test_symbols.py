import json

import pytest

from pipeline.symbols import (
    SymbolsError,
    close_names,
    in_scope,
    is_delivery,
    preview,
    read_gaps,
    read_symbols,
    render,
    render_gaps,
    write_symbols,
)
from tests.support import ROOT

REAL = [
    "BTCUSDT",
    "BTCUSDT_250328",
    "ETHUSDT",
    "ETHUSDT_260925",
    "币安人生USDT",
    "AERGOUSDTSETTLED",
]


def test_delivery_contracts_are_recognised_by_their_expiry_suffix():
    assert [s for s in REAL if is_delivery(s)] == ["BTCUSDT_250328", "ETHUSDT_260925"]
    assert not is_delivery("BTCUSD_PERP")
    assert not is_delivery("BTCUSDT_2503")


def test_scope_filters_delivery_and_sorts_by_code_point():
    assert in_scope(REAL, "perpetual") == ["AERGOUSDTSETTLED", "BTCUSDT", "ETHUSDT", "币安人生USDT"]
    assert in_scope([*REAL, "BTCUSDT"], "all") == sorted(set(REAL))


def test_rendering_is_canonical_utf8_with_nothing_that_changes_by_itself():
    text = render(["币安人生USDT", "BTCUSDT"])
    assert text == '{\n  "symbols": [\n    "BTCUSDT",\n    "币安人生USDT"\n  ]\n}\n'


def test_unchanged_list_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "symbols.json"
    assert write_symbols(path, ["B", "A"]) is True
    mtime = path.stat().st_mtime_ns
    assert write_symbols(path, ["A", "B"]) is False
    assert path.stat().st_mtime_ns == mtime
    assert read_symbols(path) == ["A", "B"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"is not valid JSON \(line 1, column 2\)"),
        ('["A"]', r'must be an object \{"symbols": \[...\]\}'),
        ('{"symbols": ["A", 3]}', "with a list of strings"),
        ('{"symbols": ["A", ""]}', "has an empty or malformed symbol name"),
        ('{"symbols": ["A", "B", "A"]}', "lists A more than once"),
        ('{"symbols": ["B", "A"]}', "is not sorted"),
    ],
)
def test_hand_edited_lists_are_refused_with_how_to_fix(tmp_path, content, message):
    path = tmp_path / "symbols.json"
    path.write_text(content)
    with pytest.raises(SymbolsError, match=message):
        read_symbols(path)


def test_committed_symbols_json_is_valid_and_canonical():
    path = ROOT / "symbols.json"
    symbols = read_symbols(path)
    assert len(symbols) >= 900
    assert "币安人生USDT" in symbols
    assert not any(is_delivery(s) for s in symbols)
    assert path.read_text(encoding="utf-8") == render(json.loads(path.read_text())["symbols"])


def test_close_names_are_the_closest_first_whatever_the_case():
    known = ["BTCUSDT", "BTCUSDC", "ETHUSDT", "币安人生USDT", "XRPUSDT"]
    assert close_names("btcusdc", known) == ["BTCUSDC", "BTCUSDT"]
    assert close_names("币安人生usdt", known) == ["币安人生USDT"]
    assert close_names("BTCUSD", known, limit=1) == ["BTCUSDT"]
    assert close_names("QQQ", known) == []


def test_preview_is_short():
    assert preview(["C", "A", "B"], limit=2) == "A, B, ... (1 more)"
    assert preview(["A"]) == "A"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"symbols": []}', "must be a JSON array of symbol names"),
        ('["B", "A"]', "is not sorted"),
        ("[", r"is not valid JSON \(line 1, column 2\): rerun `dvc repro`"),
    ],
)
def test_gaps_json_is_validated_like_symbols_json(tmp_path, content, message):
    path = tmp_path / "gaps.json"
    path.write_text(content)
    with pytest.raises(SymbolsError, match=message):
        read_gaps(path)


def test_gaps_json_round_trips(tmp_path):
    path = tmp_path / "gaps.json"
    path.write_text(render_gaps(["币安人生USDT", "BTCUSDT"]))
    assert read_gaps(path) == ["BTCUSDT", "币安人生USDT"]
    assert path.read_text() == '[\n  "BTCUSDT",\n  "币安人生USDT"\n]\n'


@pytest.mark.parametrize("read", [read_symbols, read_gaps])
def test_bytes_that_are_not_utf8_are_named_in_one_line_with_the_fix(tmp_path, read):
    path = tmp_path / "list.json"
    path.write_bytes(b'{"symbols": ["BTC\xff\xfeUSDT"]}')
    with pytest.raises(SymbolsError) as error:
        read(path)
    assert str(error.value).startswith(f"{path} is not UTF-8 text (byte 17): ")
    assert "\n" not in str(error.value)


def test_a_list_that_is_not_utf8_is_replaced_by_write_symbols(tmp_path):
    path = tmp_path / "symbols.json"
    path.write_bytes(b'{"symbols": ["A\xffB"]}\n')
    assert write_symbols(path, ["A"]) is True
    assert read_symbols(path) == ["A"]
