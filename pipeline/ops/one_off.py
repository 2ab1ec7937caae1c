"""One-off params: a run's as_of, lookback and repair scope, in params.yaml for that run only.

DVC reads params from params.yaml and records the values a run used in dvc.lock, so a one-off
value has to be in params.yaml while `dvc repro` runs. Putting it there safely takes a journal:

1. the journal (params.yaml's text before and during the run) is written atomically;
2. params.yaml is replaced, atomically, by the one-off text;
3. after the run, params.yaml gets its text back and the journal is removed.

A run killed at any instant (SIGKILL included) leaves either no journal, or a journal that
says exactly what to put back. `recover`, which every command calls before anything else,
finishes the job: it never overwrites an edit made to params.yaml since.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.atomic import atomic_path, write_text
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


class OneOffError(PipelineError):
    """params.yaml cannot be set for one run, or put back after one."""


def journal_path(params: Path) -> Path:
    return params.with_name(f".{params.name}.one-off.json")


def recover(params: Path, *, interrupted: bool = True) -> bool:
    """Put params.yaml back as it was before an interrupted one-off run; say whether it did.

    `interrupted=False`: the run's own clean-up, which puts params.yaml back without a warning.
    """
    journal = journal_path(params)
    if not journal.exists():
        return False
    try:
        saved = json.loads(journal.read_text(encoding="utf-8"))
        before, during = saved["before"], saved["during"]
        if not isinstance(before, str) or not isinstance(during, str):
            raise TypeError("not texts")
    except (OSError, ValueError, KeyError, TypeError):
        raise OneOffError(
            f"{journal} (left by an interrupted one-off run) is unreadable: check {params} "
            f"against git (`git diff {params}`), then delete {journal}"
        ) from None
    current = _read(params) if params.exists() else None
    if current == during:
        _write(params, before)
        if interrupted:
            log.warning(
                "%s had the one-off params of an interrupted run: put back as before", params
            )
    elif current != before:
        raise OneOffError(
            f"{params} was edited after a one-off run was interrupted; its text from before "
            f"that run is in {journal}: compare the two, keep what you want, delete {journal}"
        )
    journal.unlink()
    return current == during


@contextlib.contextmanager
def one_off_params(params: Path, overrides: Mapping[str, Any]) -> Iterator[None]:
    """params.yaml with `overrides` ({"run.as_of": "2024-06-01", ...}) for the block only."""
    recover(params)
    if not overrides:
        yield
        return
    before = _read(params)
    during = render_overrides(before, overrides)
    journal = journal_path(params)
    write_text(journal, json.dumps({"before": before, "during": during}, ensure_ascii=False))
    _write(params, during)
    try:
        yield
    finally:
        recover(params, interrupted=False)


def _read(params: Path) -> str:
    """params.yaml's exact text: no newline translation, so CRLF line ends come back as such."""
    return params.read_bytes().decode("utf-8")


def _write(params: Path, text: str) -> None:
    with atomic_path(params) as tmp:
        tmp.write_bytes(text.encode("utf-8"))


def render_overrides(text: str, overrides: Mapping[str, Any]) -> str:
    """params.yaml's `text` with each dotted key of `overrides` set (sections must exist)."""
    params = yaml.safe_load(text)
    for key, value in overrides.items():
        *sections, name = key.split(".")
        node = params
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise OneOffError(f"params.yaml has no section {'.'.join(sections)} for {key}")
        node[name] = value
    header = "# One-off params of a running `make` command: put back when it ends.\n"
    return header + yaml.safe_dump(params, sort_keys=False, allow_unicode=True)
