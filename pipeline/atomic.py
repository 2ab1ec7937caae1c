"""Atomic file writes: a temporary file beside the target, renamed over it only on success."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError

# Temporary files are hidden (.name.xxx.tmp) and listed in .dvcignore, so DVC never hashes one.
TEMPORARY_SUFFIX = ".tmp"

# Failures of the disk or of the permissions, with what the operator can do about each.
DISK_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
WRITE_FAILURES = {
    errno.ENOSPC: "free some disk space and rerun",
    errno.EDQUOT: "free some disk space and rerun",
    errno.EROFS: "the file system is mounted read-only: run where it is writable",
    errno.EACCES: "check the permissions of the file and its folder, and rerun",
    errno.EPERM: "check the permissions of the file and its folder, and rerun",
}
# polars words an error of its (Rust) writer inside its own exception: "... (os error 28)".
RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class WriteError(PipelineError):
    """A file cannot be written or read: the disk is full, or the permissions forbid it."""


def write_failure(
    exc: BaseException, path: Path | None = None, *, verb: str = "write"
) -> WriteError | None:
    """`exc` as one line naming the file, when the disk or the permissions caused it.

    The file is the one the OSError names, else `path`; a hidden temporary file is named by
    the file it was going to replace, which is what the operator knows.
    """
    if isinstance(exc, OSError):
        number = exc.errno
        path = Path(os.fsdecode(exc.filename)) if exc.filename else path
    else:
        found = RUST_OS_ERROR.search(str(exc))
        number = int(found.group(1)) if found else None
    if number is None or number not in WRITE_FAILURES:
        return None
    reason = os.strerror(number)
    where = None if path is None else published_name(path)
    # Only a write meets a full disk, and only a write makes a temporary file.
    if number in DISK_FAILURES or (path is not None and path.name != (where or path).name):
        verb = "write"
    return WriteError(
        f"cannot {verb} {where or 'a file'}: {reason[:1].lower()}{reason[1:]}: "
        f"{WRITE_FAILURES[number]}"
    )


def published_name(path: Path) -> Path:
    """The file a hidden temporary file (`.NAME.RANDOM.tmp`) stands for; else `path`.

    Relative to the working directory when inside it, as params.yaml names the files.
    """
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    name = path.name
    if not (name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)):
        return path
    return path.with_name(name[1 : -len(TEMPORARY_SUFFIX)].rpartition(".")[0] or name)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a full disk or a denied permission inside the block into a WriteError naming `path`.

    polars reports a full disk as "ComputeError: parquet: ... (os error 28)", naming no file.
    """
    try:
        yield
    except Exception as exc:
        failure = write_failure(exc, path)
        if failure is None:
            raise
        raise failure from exc


def temporary_beside(target: Path) -> Path:
    """A new, empty, hidden temporary file beside `target` (`.NAME.RANDOM.tmp`), readable by all."""
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX, dir=target.parent
        )
    os.close(fd)
    temporary = Path(name)
    temporary.chmod(0o644)  # mkstemp's 0600 would make the published files private
    return temporary


@contextlib.contextmanager
def atomic_path(path: Path, *, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it only if the block succeeds.

    `durable`: the new content and the rename reach the disk before this returns (a journal
    that other renames rely on must survive a power cut, not only a kill).
    """
    tmp = temporary_beside(path)
    try:
        with writing(path):
            yield tmp
            if durable:
                fsync_file(tmp)
            tmp.replace(path)
            if durable:
                fsync_directory(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str, *, durable: bool = False) -> None:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, value: object, *, durable: bool = False) -> None:
    """Canonical JSON (sorted keys, UTF-8): unchanged values give unchanged bytes."""
    text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    write_text(path, text, durable=durable)


def fsync_file(path: Path) -> None:
    with path.open("rb") as data:
        os.fsync(data.fileno())


def fsync_directory(directory: Path) -> None:
    """Make the renames and deletions in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
