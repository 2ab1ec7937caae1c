"""A first run: quiet when nothing is wrong, and naming the cause when the bucket is unreachable.

Each cause of an unreachable bucket is a real socket situation on 127.0.0.1 (a closed port, a
listener that never answers, a listener whose backlog is full) or a name under `.invalid`,
which never resolves (RFC 6761): a DNS query, but no connection leaves the machine. The
first `make update` of a fresh project (no dvc.lock) must print none of DVC's "No file hash
info found" warnings, which a bare `dvc pull` prints for every output dvc.lock does not record.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import responses
from urllib3.exceptions import NewConnectionError, ProtocolError

from devtools.emulator import Emulator
from devtools.scratch import ScratchProject
from pipeline.ops import cli as ops_cli
from pipeline.vision.client import VisionClient, VisionError, unreachable
from tests import e2e_support as e2e
from tests.support import closed_port

HASH_WARNING = "No file hash info found"
BUCKET_PATH = "/data.binance.vision"
DNS_FAILURE = "nonexistent.invalid"


# --- real sockets on 127.0.0.1 --------------------------------------------------------------


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A listener that takes connections (the kernel completes them) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A listener whose backlog is full: a new connection's SYN goes unanswered (connect
    timeout), as with a black-holed host."""
    with contextlib.ExitStack() as held:
        listener = held.enter_context(socket.create_server(("127.0.0.1", 0), backlog=0))
        port = listener.getsockname()[1]
        for _ in range(64):  # fill the queue: until a connection is no longer completed
            filler = held.enter_context(socket.socket())
            filler.settimeout(0.2)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.fail("the listener's backlog never filled up")
        yield port


def list_once(url: str, *, timeout_s: float = 5.0) -> str:
    """The error of one listing of `url` (one retry), as the stages report it."""
    client = VisionClient(url, timeout_s=timeout_s, retries=1, backoff_s=0.0, pool_size=1)
    with client, pytest.raises(VisionError) as failure:
        client.list_page("data/futures/um/daily/klines/", subject="symbols")
    return str(failure.value)


def test_a_closed_port_is_named_connection_refused():
    with closed_port() as port:
        message = list_once(f"http://127.0.0.1:{port}{BUCKET_PATH}")
        assert unreachable(f"http://127.0.0.1:{port}{BUCKET_PATH}", 1.0) == "connection refused"
    assert message.startswith("symbols: listing failed after 1 retry (connection refused) from ")
    assert f"http://127.0.0.1:{port}{BUCKET_PATH}/?list-type=2" in message


def test_a_listener_that_never_answers_is_named_a_timeout():
    with silent_listener() as port:
        message = list_once(f"http://127.0.0.1:{port}{BUCKET_PATH}", timeout_s=0.2)
        # A connection opens: the host is reachable, the fault is the server's.
        assert unreachable(f"http://127.0.0.1:{port}{BUCKET_PATH}", 1.0) is None
    assert message.startswith("symbols: listing failed (timed out, out of the 0.2s retry budget)")


def test_a_full_backlog_is_named_a_connect_timeout():
    with full_backlog() as port:
        message = list_once(f"http://127.0.0.1:{port}{BUCKET_PATH}", timeout_s=0.2)
        assert unreachable(f"http://127.0.0.1:{port}{BUCKET_PATH}", 0.2) == "connect timed out"
    assert message.startswith("symbols: listing failed (connect timed out, out of the 0.2s")


def test_an_unresolvable_name_is_named_a_dns_failure():
    message = list_once(f"http://{DNS_FAILURE}{BUCKET_PATH}")
    assert message.startswith("symbols: listing failed after 1 retry (DNS lookup failed) from ")
    assert unreachable(f"https://{DNS_FAILURE}{BUCKET_PATH}", 1.0) == "DNS lookup failed"


# --- what requests raises for faults no local socket makes on demand --------------------------

LIST_URL = "https://s3.example.test/data.binance.vision/"


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (
            requests.ConnectionError(
                ProtocolError("Connection aborted.", ConnectionResetError(errno.ECONNRESET, "x"))
            ),
            "connection reset",
        ),
        (
            requests.ConnectionError(
                NewConnectionError(None, "Failed to establish a new connection")  # type: ignore[arg-type]
            ),
            "connection failed",
        ),
        (requests.ConnectTimeout("connect timed out"), "connect timed out"),
        (requests.ReadTimeout("read timed out"), "timed out"),
    ],
    ids=["reset", "new-connection", "connect-timeout", "read-timeout"],
)
@responses.activate
def test_each_transport_fault_is_named(error, cause):
    responses.get(LIST_URL, body=error)
    responses.get(LIST_URL, body=error)
    message = list_once(LIST_URL.rstrip("/"))
    assert message.startswith(f"symbols: listing failed after 1 retry ({cause}) from {LIST_URL}")


@responses.activate
def test_an_unreachable_network_is_named_by_its_os_error():
    unreachable_network = OSError(errno.ENETUNREACH, "Network is unreachable")
    refused = NewConnectionError(None, "Failed to establish a new connection")  # type: ignore[arg-type]
    refused.__cause__ = unreachable_network
    responses.get(LIST_URL, body=requests.ConnectionError(refused))
    responses.get(LIST_URL, body=requests.ConnectionError(refused))
    message = list_once(LIST_URL.rstrip("/"))
    assert "(connection failed: network is unreachable)" in message


# --- the first `make update` of a fresh project ------------------------------------------------


def fresh_project(root: Path, listing_url: str, *, remote: Path) -> ScratchProject:
    """A project as a fresh clone has it: no dvc.lock, no data, a DVC remote to pull from."""
    project = ScratchProject.create(
        root,
        {
            "vision": {"listing_url": listing_url, "download_url": listing_url},
            "probe": {"timeout_s": 2, "retries": 1, "backoff_s": 0.0},
        },
    )
    project.run("dvc", "remote", "add", "--default", "store", str(remote))
    project.commit("a DVC remote")
    assert not (root / "dvc.lock").exists()
    return project


def ops_error_lines(stderr: str) -> list[str]:
    return [line.split(" ERROR ", 1)[1] for line in stderr.splitlines() if " ops ERROR " in line]


@pytest.mark.e2e
def test_a_bare_dvc_pull_in_a_fresh_project_is_what_warns(tmp_path):
    """What the tests below guard against: DVC's warning, once per output."""
    project = fresh_project(tmp_path / "p", "http://127.0.0.1:9/x", remote=tmp_path / "store")
    pulled = project.run("dvc", "pull", "--allow-missing", "--force")
    assert pulled.stderr.count(HASH_WARNING) >= 5


@pytest.mark.e2e
def test_an_offline_first_update_names_the_refused_port_and_no_hash_warning(tmp_path):
    with closed_port() as port:
        url = f"http://127.0.0.1:{port}{BUCKET_PATH}"
        project = fresh_project(tmp_path / "p", url, remote=tmp_path / "store")
        result = project.make("update")
    assert result.returncode != 0
    assert HASH_WARNING not in result.stderr + result.stdout
    assert f"symbols: listing failed after 1 retry (connection refused) from {url}/?" in (
        result.stderr
    )
    assert ops_error_lines(result.stderr) == [
        f"cannot reach 127.0.0.1:{port} (connection refused): {ops_cli.LOOPBACK_HINT}"
    ]
    assert not (project.root / "data" / "availability").exists()


@pytest.mark.e2e
def test_an_offline_first_update_names_the_dns_failure_and_suggests_the_demo(tmp_path):
    url = f"https://{DNS_FAILURE}{BUCKET_PATH}"
    project = fresh_project(tmp_path / "p", url, remote=tmp_path / "store")
    result = project.make("update")
    assert result.returncode != 0
    assert HASH_WARNING not in result.stderr + result.stdout
    assert "symbols: listing failed after 1 retry (DNS lookup failed) from https://" in (
        result.stderr
    )
    assert ops_error_lines(result.stderr) == [
        f"cannot reach {DNS_FAILURE} (DNS lookup failed): no network? `make demo` runs the "
        "whole pipeline offline, against a local emulator of the bucket"
    ]


@pytest.mark.e2e
def test_a_failed_run_on_a_reachable_bucket_adds_no_hint(tmp_path):
    with silent_listener() as port:
        url = f"http://127.0.0.1:{port}{BUCKET_PATH}"
        project = fresh_project(tmp_path / "p", url, remote=tmp_path / "store")
        project.set_params({"probe": {"timeout_s": 0.2, "retries": 0}})
        result = project.make("update")
    assert result.returncode != 0
    assert "symbols: listing failed (timed out" in result.stderr
    assert ops_error_lines(result.stderr) == []


@pytest.mark.e2e
def test_an_update_after_a_first_run_killed_midway_pulls_only_what_dvc_lock_records(
    tmp_path, emulator: Emulator
):
    # A first run that got as far as discover: dvc.lock records that stage alone.
    project = ScratchProject.create(tmp_path / "p", e2e.emulated_params(emulator))
    project.run("dvc", "remote", "add", "--default", "store", str(tmp_path / "store"))
    project.repro("discover")
    bare = project.run("dvc", "pull", "--allow-missing", "--force")
    assert HASH_WARNING in bare.stderr  # every other stage's outputs

    result = project.make("update")
    assert result.returncode == 0, result.stdout + result.stderr
    assert HASH_WARNING not in result.stderr + result.stdout
    e2e.assert_matches_universe(project, e2e.universe(), e2e.AS_OF)


def test_recorded_stages_follow_dvc_yaml_and_skip_what_it_no_longer_has(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a: {cmd: x}\n  b: {cmd: x}\n  c: {cmd: x}\n", encoding="utf-8"
    )
    lock = tmp_path / "dvc.lock"
    stages_file = tmp_path / "dvc.yaml"
    assert ops_cli.recorded_stages(lock, stages_file) == []  # no dvc.lock: nothing recorded
    lock.write_text("schema: '2.0'\nstages:\n  c: {cmd: x}\n  gone: {cmd: x}\n  a: {cmd: x}\n")
    assert ops_cli.recorded_stages(lock, stages_file) == ["a", "c"]
    lock.write_text("stages: [\n", encoding="utf-8")
    with pytest.raises(ops_cli.PipelineError, match="is not DVC's YAML"):
        ops_cli.recorded_stages(lock, stages_file)
