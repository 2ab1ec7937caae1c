"""The DVC remotes: `read`, committed, which consumers read; `write`, per machine, which publishes.

Consumers (`dvc get`, `dvc import`, `dvc artifacts get`, a clone's `make pull`) see only what git
holds, so the remote they read is in the committed .dvc/config: `read`, the project's default.
The publisher's remote and its credentials stay on the publisher's machine, in
.dvc/config.local (git ignores it): `write`, that machine's default, so its pulls and pushes go
to the store it owns. Until the publisher runs `make configure-remote READ_URL=…`, `read` is a
placeholder under `.invalid`, a top-level domain that never resolves (RFC 6761): a consumer's
DVC error names it, and the operator commands treat it as no remote at all.

Everything is done through the `dvc remote` CLI: no module under pipeline/ imports DVC.
"""

from __future__ import annotations

import argparse
import subprocess
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from pipeline.errors import PipelineError

READ = "read"
WRITE = "write"
PLACEHOLDER_DOMAIN = ".invalid"
# What consumers can read with the locked dependencies: dvc-http is in requirements.lock, dvc-s3
# in requirements-s3.lock.
READ_SCHEMES = ("https", "http", "s3")
# The write remote is the publisher's own; any remote type DVC has a plugin for will do.
WRITE_SCHEMES = (*READ_SCHEMES, "gs", "azure", "ssh", "webdav", "webdavs", "file")
NO_REMOTE = "no DVC remote configured: add one with `dvc remote add -d NAME URL`, then rerun"


def add_commands(commands: argparse._SubParsersAction) -> None:
    """`configure-remote` and `publish`, among `python -m pipeline.ops`'s commands."""
    configure_remote = commands.add_parser(
        "configure-remote",
        help="set the DVC remote consumers read (committed) and/or this machine's write remote",
        description=f"Set the remote {READ!r} that consumers read, in the committed .dvc/config, "
        f"and/or this machine's remote {WRITE!r} that `publish` pushes to, in "
        ".dvc/config.local (git ignores it); each becomes its file's default remote.",
        epilog="example: make configure-remote READ_URL=https://bucket.s3.eu-west-1.amazonaws.com"
        "/vision-availability WRITE_URL=s3://bucket/vision-availability",
    )
    configure_remote.add_argument(
        "--read-url", metavar="URL", help=f"{', '.join(READ_SCHEMES)}; anyone may read it"
    )
    configure_remote.add_argument(
        "--write-url", metavar="URL", help="the same store, as this machine writes it"
    )
    commands.add_parser(
        "publish",
        help="upload the data dvc.lock records (dvc push) to the write remote, else the default",
        description=f"dvc push -r {WRITE} when this machine has that remote, else to the default "
        "remote (refused while that is the committed placeholder).",
    )


def check_read_url(url: str) -> str:
    """`url` if consumers can read it from the committed config, else a one-line refusal."""
    parts = _url_parts(url, "READ_URL", READ_SCHEMES)
    if parts.username is not None or parts.password is not None:
        raise PipelineError(
            f"READ_URL {url!r} holds credentials: it is committed (.dvc/config), so give a URL "
            "anyone may read; the write remote keeps credentials (WRITE_URL, config.local)"
        )
    if is_placeholder(url):
        raise PipelineError(f"READ_URL {url!r} is under {PLACEHOLDER_DOMAIN}, which never resolves")
    return url


def check_write_url(url: str) -> str:
    """`url` if it names a remote DVC can write to from any directory, else a one-line refusal."""
    if url.startswith("/"):
        _check_text(url, "WRITE_URL")
        return url
    _url_parts(url, "WRITE_URL", WRITE_SCHEMES, local_ok=True)
    return url


def _check_text(url: str, name: str) -> None:
    if not url or any(c.isspace() or not c.isprintable() for c in url):
        raise PipelineError(f"{name} {url!r} is empty or holds spaces or control characters")


def _url_parts(url: str, name: str, schemes: tuple[str, ...], *, local_ok: bool = False):
    """The parts of an absolute URL of one of `schemes`, with a host (a path for file://)."""
    _check_text(url, name)
    allowed = ", ".join(f"{s}://" for s in schemes) + (" or an absolute path" if local_ok else "")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises only when read)
    except ValueError as exc:
        raise PipelineError(f"{name} {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in schemes:
        # A relative path would be resolved from .dvc/, and means nothing to `dvc get`.
        raise PipelineError(f"{name} {url!r} is not a URL DVC can use here: give {allowed}")
    if parts.scheme == "file":
        if parts.netloc or not PurePosixPath(parts.path).is_absolute():
            raise PipelineError(f"{name} {url!r} is not file:///absolute/path")
    elif not parts.hostname:
        raise PipelineError(f"{name} {url!r} names no host (or bucket)")
    if parts.query or parts.fragment:
        # DVC appends object paths to the URL: a query or fragment would end up in the middle.
        raise PipelineError(f"{name} {url!r} has a query or fragment (?…, #…): DVC cannot use it")
    return parts


def is_placeholder(url: str) -> bool:
    """Whether `url` is the committed placeholder (or any URL under .invalid): not a remote."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    return host == PLACEHOLDER_DOMAIN[1:] or host.endswith(PLACEHOLDER_DOMAIN)


def configure(read_url: str | None, write_url: str | None) -> None:
    """Set the committed read remote and/or this machine's write remote, each as the default
    of its config file; both URLs are checked before either is changed."""
    if read_url is None and write_url is None:
        raise PipelineError("give READ_URL=URL and/or WRITE_URL=URL (make configure-remote)")
    read = None if read_url is None else check_read_url(read_url)
    write = None if write_url is None else check_write_url(write_url)
    if read is not None:
        _dvc("remote", "add", "--project", "--force", "--default", READ, read)
    if write is not None:
        _dvc("remote", "add", "--local", "--force", "--default", WRITE, write)


@dataclass(frozen=True)
class Remotes:
    """The configured remotes (every config file merged), name -> URL, and the default's name."""

    urls: dict[str, str]
    default: str | None


def remotes() -> Remotes:
    """What `dvc config --list` says (one DVC process, which costs most of a second)."""
    urls: dict[str, str] = {}
    default = None
    # `key=value` lines, one config file after another (system, global, project, local): a
    # later file overrides an earlier one, as DVC merges them. (`dvc remote list` would be
    # shorter, but it wraps long lines at the terminal's width.)
    for line in _dvc("config", "--list").splitlines():
        key, _, value = line.partition("=")
        if key == "core.remote":
            default = value
        elif key.startswith("remote.") and key.endswith(".url"):
            urls[key.removeprefix("remote.").removesuffix(".url")] = value
    return Remotes(urls, default if default in urls else None)


def pull_source(configured: Remotes | None = None) -> str | None:
    """The remote `dvc pull` reads (the default), or None when there is no real one: no remote,
    no default, or the committed placeholder."""
    configured = configured or remotes()
    name = configured.default
    if name is None or is_placeholder(configured.urls[name]):
        return None
    return name


def check_pull_source() -> None:
    """Refuse, in one line, a pull that has no remote to read."""
    configured = remotes()
    if pull_source(configured) is None:
        name = configured.default
        if name is not None:
            raise PipelineError(_placeholder_message(name, configured.urls[name]))
        raise PipelineError(NO_REMOTE)


def push_target() -> str:
    """The remote `make publish` pushes to: `write` when this machine has one, else the default
    (a publisher who reads and writes the same store); refused when that is the placeholder."""
    configured = remotes()
    if WRITE in configured.urls:
        return WRITE
    name = configured.default
    if name is None:
        raise PipelineError(
            "no DVC remote to publish to: set one with make configure-remote WRITE_URL=URL"
        )
    if is_placeholder(configured.urls[name]):
        raise PipelineError(_placeholder_message(name, configured.urls[name]))
    return name


def _placeholder_message(name: str, url: str) -> str:
    return (
        f"the DVC remote {name!r} is still the placeholder {url}: the publisher sets it with "
        "make configure-remote READ_URL=URL [WRITE_URL=URL] (docs/publishing.md)"
    )


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise PipelineError(f"cannot run dvc ({exc.strerror}): run through make (.venv)") from None


def _dvc(*args: str) -> str:
    """A quick `dvc` command's output; its last error line, in one line, when it fails."""
    result = _run(["dvc", *args])
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise PipelineError(f"dvc {' '.join(args[:2])} failed: {reason}")
    return result.stdout
