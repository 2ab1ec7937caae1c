"""symbols.json: the symbols in scope, canonical so that an unchanged list is unchanged bytes."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pipeline.config import Contracts
from pipeline.errors import PipelineError
from pipeline.store import write_text

# Delivery (quarterly) contracts carry their expiry date: BTCUSDT_250328.
DELIVERY_SUFFIX = re.compile(r"_\d{6}$")


class SymbolsError(PipelineError):
    """symbols.json is missing or not a valid symbol list."""


def is_delivery(symbol: str) -> bool:
    return DELIVERY_SUFFIX.search(symbol) is not None


def in_scope(symbols: Iterable[str], contracts: Contracts) -> list[str]:
    """The symbols this dataset tracks, sorted by code point (S3's key order)."""
    return sorted(s for s in set(symbols) if contracts == "all" or not is_delivery(s))


def render(symbols: Iterable[str]) -> str:
    return json.dumps({"symbols": sorted(symbols)}, ensure_ascii=False, indent=2) + "\n"


def write_symbols(path: Path, symbols: Iterable[str]) -> bool:
    """Write the list if it changed; return whether it did."""
    text = render(symbols)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    write_text(path, text)
    return True


def read_symbols(path: Path) -> list[str]:
    """The validated list; every problem is reported with how to fix it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SymbolsError(f"{path} not found: run the discover stage (`dvc repro`)") from None
    except json.JSONDecodeError as exc:
        raise SymbolsError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}): "
            "fix it or restore it with `git checkout`"
        ) from None
    symbols = data.get("symbols") if isinstance(data, dict) else None
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        raise SymbolsError(f'{path} must be an object {{"symbols": [...]}} with a list of strings')
    if any(not s.strip() or s != s.strip() or "/" in s for s in symbols):
        raise SymbolsError(f"{path} has an empty or malformed symbol name: remove it")
    duplicates = sorted(s for s, count in Counter(symbols).items() if count > 1)
    if duplicates:
        raise SymbolsError(
            f"{path} lists {', '.join(duplicates[:5])} more than once: remove the copies"
        )
    if symbols != sorted(symbols):
        raise SymbolsError(f"{path} is not sorted: rewrite it with `python -m pipeline.discover`")
    return symbols


def read_json_list(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        raise SymbolsError(f"{path} is missing or not valid JSON: rerun `dvc repro`") from None
    if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
        raise SymbolsError(f"{path} must be a JSON array of symbol names: rerun `dvc repro`")
    return data


def render_list(symbols: Iterable[str]) -> str:
    return json.dumps(sorted(symbols), ensure_ascii=False, indent=2) + "\n"


def preview(symbols: Iterable[str], limit: int = 10) -> str:
    """A short, log-friendly rendering of a possibly long list of names."""
    names = sorted(symbols)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
