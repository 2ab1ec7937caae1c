"""Asking vision-query in process, as the query tests do."""

from __future__ import annotations

import pytest

from pipeline.query import cli


def ask(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, standard output and standard error of one `vision-query` call."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def answer(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The standard output of a call that must succeed quietly."""
    code, out, err = ask(capsys, *argv)
    assert (code, err) == (0, ""), err
    return out
