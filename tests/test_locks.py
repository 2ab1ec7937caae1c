"""Two writers never meet: one operator command per checkout, and a replay never touches a live
commit's files (what would otherwise happen when a second `make update` starts during a run)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from pipeline.dataset.commit import journal_path, replay, staged_commit
from pipeline.ops.lock import BusyError, operator_lock


def hold_operator_lock(path: Path, locked, release) -> None:
    with operator_lock(path):
        locked.set()
        release.wait(10)


def test_a_second_operator_command_fails_at_once_naming_the_first(tmp_path):
    lock = tmp_path / ".pipeline.lock"
    context = multiprocessing.get_context("fork")
    locked, release = context.Event(), context.Event()
    first = context.Process(target=hold_operator_lock, args=(lock, locked, release))
    first.start()
    try:
        assert locked.wait(10)
        busy = pytest.raises(BusyError, match=rf"running here \(pid {first.pid}\): wait")
        with busy, operator_lock(lock):
            pytest.fail("two operator commands held the lock")
    finally:
        release.set()
        first.join(10)
    with operator_lock(lock):  # released with its holder, however it ended
        assert lock.read_text().strip() == str(os.getpid())


def test_a_killed_holder_leaves_the_lock_free(tmp_path):
    lock = tmp_path / ".pipeline.lock"
    context = multiprocessing.get_context("fork")
    locked, release = context.Event(), context.Event()
    holder = context.Process(target=hold_operator_lock, args=(lock, locked, release))
    holder.start()
    assert locked.wait(10)
    holder.kill()
    holder.join(10)
    with operator_lock(lock):
        pass


def test_a_replay_leaves_a_live_commit_alone_and_finishes_it_after(tmp_path):
    dataset = tmp_path / "data" / "availability"
    dataset.mkdir(parents=True)
    journal = journal_path(dataset)
    with staged_commit(journal) as commit:
        staged = commit.new_file(dataset / "2024-01.parquet")
        staged.write_bytes(b"new")
        # Another command starts meanwhile: the staged file is not a leftover to delete.
        assert replay(journal, [dataset]) is False
        assert staged.read_bytes() == b"new"
    assert (dataset / "2024-01.parquet").read_bytes() == b"new"
    assert not staged.exists() and not journal.exists()
    assert replay(journal, [dataset]) is False  # nothing left to finish
