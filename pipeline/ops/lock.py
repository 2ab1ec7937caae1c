"""One operator command at a time in a checkout: the lock taken before anything is touched.

DVC's own lock is taken only once `dvc repro` starts, but an operator command works before that
(it puts params.yaml back after a killed run, finishes an interrupted commit, sets one-off
params): a second command doing the same meanwhile would undo the first one's params or delete
its staged files. The lock is an advisory `flock` on a small file, released by the kernel when
the process ends, however it ends: a killed command never leaves it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError

LOCK_FILE = Path(".pipeline.lock")


class BusyError(PipelineError):
    """Another operator command is running in this checkout."""


@contextlib.contextmanager
def operator_lock(path: Path = LOCK_FILE) -> Iterator[None]:
    """Hold the checkout's operator lock for the block; fail at once if another command has it."""
    with path.open("a+", encoding="utf-8") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.seek(0)
            holder = held.read().strip() or "unknown"
            raise BusyError(
                f"another make update, backfill or audit is running here (pid {holder}): "
                "wait for it to finish, then run this again"
            ) from None
        held.seek(0)
        held.truncate()
        held.write(f"{os.getpid()}\n")
        held.flush()
        yield
