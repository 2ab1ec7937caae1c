"""A crash-atomic commit of several files: after a kill at any point, all of them or none.

A run's new files (the changed months, `_dataset.json`, the change log) are written to hidden
temporary files beside their targets and flushed to disk. Then a small journal, written
atomically, lists every rename and deletion with each new file's size and SHA-256; only then
are the renames and deletions applied, and the journal removed last.

`replay` is the first step of every writer (each stage and `python -m pipeline.ops`):
- a journal present: the commit had begun, so it is finished. A rename already done is
  recognised by its target's hash, so replaying twice (a kill during replay) is harmless;
- temporary files without a journal: the commit never began, the old state stands, and
  they are deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.atomic import (
    TEMPORARY_SUFFIX,
    fsync_directory,
    fsync_file,
    temporary_beside,
    write_json,
)
from pipeline.errors import PipelineError

JOURNAL_VERSION = 1


class CommitError(PipelineError):
    """A commit's journal cannot be finished: the files it lists are not what it says."""


class CommitInterrupted(KeyboardInterrupt):
    """Ctrl-C arrived while the files were being replaced; the journal lets the next run finish."""


def journal_path(dataset: Path) -> Path:
    """Beside the dataset, hidden and outside it: `data/.availability.commit.json`."""
    return dataset.with_name(f".{dataset.name}.commit.json")


def temporary_files(target: Path) -> list[Path]:
    """The temporary files a write of `target` leaves when killed (inside it, for a folder)."""
    if target.is_dir():
        return sorted(target.glob(f".*{TEMPORARY_SUFFIX}"))
    return sorted(target.parent.glob(f".{target.name}.*{TEMPORARY_SUFFIX}"))


@dataclass
class Commit:
    """The new files and deletions of one commit; nothing is replaced before `apply`."""

    journal: Path
    renames: list[tuple[Path, Path]] = field(default_factory=list)  # (temporary, target)
    removals: list[Path] = field(default_factory=list)

    def new_file(self, target: Path) -> Path:
        """A hidden temporary file beside `target` to write its new content into."""
        temporary = temporary_beside(target)
        self.renames.append((temporary, target))
        return temporary

    def remove(self, target: Path) -> None:
        self.removals.append(target)

    def discard(self) -> None:
        """Delete the temporary files: the commit will not happen."""
        for temporary, _ in self.renames:
            temporary.unlink(missing_ok=True)

    def apply(self) -> None:
        """Make the new files durable, journal the switch, switch, forget the journal."""
        if not self.renames and not self.removals:
            return
        entries = []
        for temporary, target in self.renames:
            fsync_file(temporary)
            entries.append(
                {
                    "temporary": str(temporary),
                    "target": str(target),
                    "size": temporary.stat().st_size,
                    "sha256": _sha256(temporary),
                }
            )
        journal = {
            "version": JOURNAL_VERSION,
            "renames": entries,
            "removals": [str(path) for path in self.removals],
        }
        try:
            # Whole or absent, and durable: the renames start only once it is on disk.
            write_json(self.journal, journal, durable=True)
            _finish(self.journal, journal)
        except BaseException as exc:
            if not self.journal.exists():  # the switch never began: the old state stands
                self.discard()
                raise
            if isinstance(exc, KeyboardInterrupt):
                raise CommitInterrupted(
                    f"interrupted while replacing the dataset's files: {self.journal} lists "
                    "the rest, and the next run (make update, or any stage) finishes it first"
                ) from None
            raise


@contextlib.contextmanager
def staged_commit(journal: Path) -> Iterator[Commit]:
    """A commit applied when the block succeeds; its temporary files deleted when it fails.

    The writer's lock is held from the first temporary file to the journal's removal, so a
    replay started meanwhile (another command) leaves this commit's files alone.
    """
    with _writer_lock(journal, wait=True):
        commit = Commit(journal)
        try:
            yield commit
        except BaseException:
            commit.discard()
            raise
        commit.apply()


def replay(journal: Path, targets: Iterable[Path]) -> bool:
    """Finish the commit `journal` lists, if any; delete `targets`' temporary files left over.

    Returns whether a commit was finished. Idempotent: a kill while replaying is replayed.
    Nothing is touched while a live writer holds the lock: its files are not leftovers.
    """
    if not journal.parent.is_dir():  # nothing was ever written there
        return False
    with _writer_lock(journal, wait=False) as free:
        if not free:
            return False
        finished = journal.exists()
        if finished:
            _finish(journal, _read_journal(journal))
        for target in [*targets, journal]:
            for leftover in temporary_files(target):
                leftover.unlink(missing_ok=True)
        return finished


@contextlib.contextmanager
def _writer_lock(journal: Path, *, wait: bool) -> Iterator[bool]:
    """An advisory lock beside the journal, released by the kernel however its holder ends.

    Yields whether it is held; without `wait`, a lock held elsewhere yields False at once.
    """
    lock = journal.with_name(f"{journal.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def finish_interrupted_commit(dataset: Path, *others: Path) -> None:
    """The first step of every writer: a dataset (and the files committed with it, such as
    the change log), whole and consistent."""
    journal = journal_path(dataset)
    if replay(journal, [dataset, *others]):
        logging.getLogger(__name__).warning(
            "finished the commit of %s that a killed run had begun (%s)", dataset, journal.name
        )


def _finish(journal: Path, recorded: dict[str, list]) -> None:
    """Apply the journal's renames and deletions, then remove it."""
    directories = {journal.parent}
    for entry in recorded["renames"]:
        temporary, target = Path(entry["temporary"]), Path(entry["target"])
        directories.add(target.parent)
        if temporary.exists():
            temporary.replace(target)
        elif not _holds(target, entry["size"], entry["sha256"]):
            raise CommitError(
                f"{target} is not the file {journal} committed, and its new version "
                f"{temporary.name} is gone: restore the dataset with `dvc checkout`, "
                f"then delete {journal}"
            )
    for name in recorded["removals"]:
        path = Path(name)
        directories.add(path.parent)
        path.unlink(missing_ok=True)
    for directory in directories:
        fsync_directory(directory)  # the renames are durable before the journal goes
    journal.unlink()
    fsync_directory(journal.parent)


def _read_journal(journal: Path) -> dict[str, list]:
    try:
        recorded = json.loads(journal.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict) or recorded.get("version") != JOURNAL_VERSION:
        raise CommitError(
            f"{journal} (an interrupted commit's journal) is unreadable: restore the dataset "
            "with `dvc checkout`, then delete it"
        )
    return recorded


def _holds(path: Path, size: int, sha256: str) -> bool:
    return path.is_file() and path.stat().st_size == size and _sha256(path) == sha256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
