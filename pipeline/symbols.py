"""symbols.json: the symbols in scope, canonical so that an unchanged list is unchanged bytes."""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TypeGuard

from pipeline.atomic import write_text
from pipeline.config import Contracts
from pipeline.errors import PipelineError

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
    """symbols.json's canonical text."""
    return _canonical({"symbols": sorted(symbols)})


def render_gaps(symbols: Iterable[str]) -> str:
    """gaps.json's canonical text: a plain array."""
    return _canonical(sorted(symbols))


def _canonical(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2) + "\n"


def write_symbols(path: Path, symbols: Iterable[str]) -> bool:
    """Write the list if it changed; return whether it did."""
    text = render(symbols)
    # Bytes, not text: a damaged file (not UTF-8) is then simply different, and replaced.
    if path.exists() and path.read_bytes() == text.encode("utf-8"):
        return False
    write_text(path, text)
    return True


def read_symbols(path: Path) -> list[str]:
    """symbols.json, validated; every problem is reported with how to fix it."""
    data = _load(path, fix="fix it or restore it with `git checkout`")
    symbols = data.get("symbols") if isinstance(data, dict) else None
    if not _is_name_list(symbols):
        raise SymbolsError(f'{path} must be an object {{"symbols": [...]}} with a list of strings')
    return _checked_names(path, symbols)


def read_gaps(path: Path) -> list[str]:
    """gaps.json (written by detect_gaps), validated like symbols.json."""
    data = _load(path, fix="rerun `dvc repro`")
    if not _is_name_list(data):
        raise SymbolsError(f"{path} must be a JSON array of symbol names: rerun `dvc repro`")
    return _checked_names(path, data)


def _load(path: Path, *, fix: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SymbolsError(f"{path} not found: run the pipeline (`dvc repro`)") from None
    except json.JSONDecodeError as exc:
        raise SymbolsError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}): {fix}"
        ) from None
    except UnicodeDecodeError as exc:  # before JSON is parsed: the bytes are not UTF-8 text
        raise SymbolsError(f"{path} is not UTF-8 text (byte {exc.start}): {fix}") from None


def _is_name_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(s, str) for s in value)


def _checked_names(path: Path, symbols: list[str]) -> list[str]:
    if any(not s.strip() or s != s.strip() or "/" in s for s in symbols):
        raise SymbolsError(f"{path} has an empty or malformed symbol name: remove it")
    duplicates = sorted(s for s, count in Counter(symbols).items() if count > 1)
    if duplicates:
        raise SymbolsError(
            f"{path} lists {', '.join(duplicates[:5])} more than once: remove the copies"
        )
    if symbols != sorted(symbols):
        raise SymbolsError(f"{path} is not sorted: `make update` rewrites it (discover)")
    return symbols


def preview(symbols: Iterable[str], limit: int = 10) -> str:
    """A short, log-friendly rendering of a possibly long list of names."""
    names = sorted(symbols)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def close_names(symbol: str, known: Iterable[str], limit: int = 3) -> list[str]:
    """Known names close to `symbol` (case aside), closest first, for a "did you mean" hint."""
    by_folded = {name.casefold(): name for name in known}
    close = difflib.get_close_matches(symbol.casefold(), list(by_folded), n=limit, cutoff=0.6)
    return [by_folded[name] for name in close]
