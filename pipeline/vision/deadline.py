"""One deadline per listing attempt, over connect, headers and body.

requests hands urllib3 a timeout per socket read and nothing else: a server sending one byte
every half second never trips it. So the connection's response headers are read under an alarm
that shuts the socket down at the deadline (one watchdog thread for the process), and the body
is read in chunks, each allowed only what is left of the deadline.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError, ContentDecodingError
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError
from urllib3.response import HTTPResponse

# How much of a body one read asks for; a read returns whatever has arrived, up to this.
BODY_CHUNK = 64 * 1024


# The deadline of the request this thread is making, for the connection that reads its
# headers: requests hands urllib3 a timeout per socket read, and nothing else, but a request
# runs in its caller's thread from start to end, so the thread's context can carry it.
_HEADERS_DEADLINE: ContextVar[float | None] = ContextVar("headers_deadline", default=None)


def get_headers(
    session: requests.Session, url: str, params: dict[str, str], deadline: float
) -> requests.Response:
    token = _HEADERS_DEADLINE.set(deadline)
    try:
        # A redirect is an answer, not a detour: where it points is not the bucket configured.
        return session.get(
            url, params=params, timeout=_remaining(deadline), stream=True, allow_redirects=False
        )
    finally:
        _HEADERS_DEADLINE.reset(token)


class _Alarm:
    """A socket to shut down at its deadline, unless disarmed first."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._disarmed = False
        self._fired = False

    def fire(self) -> None:
        with self._lock:
            if self._disarmed:
                return
            self._fired = True
            # Shutting the socket down ends a read under way (it sees the end of the stream).
            # The plain socket's shutdown, also under TLS: ssl.SSLSocket's drops its TLS state
            # under the reader. OSError: closed already, so no read is waiting on it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def disarm(self) -> bool:
        """True if the alarm fired first: the socket is shut down."""
        with self._lock:
            self._disarmed = True
            return self._fired


class _Watchdog:
    """Fires alarms at their deadlines, from one thread for the whole process.

    A threading.Timer per request would start a thread for every listing page (~0.5 ms of CPU
    each, on a backfill of ~2,800 pages that is CPU-bound already).
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: list[tuple[float, int, _Alarm]] = []  # a heap, earliest deadline first
        self._order = itertools.count()  # breaks ties: alarms do not compare
        self._thread: threading.Thread | None = None

    def arm(self, sock: socket.socket, deadline: float) -> _Alarm:
        alarm = _Alarm(sock)
        with self._wake:
            heapq.heappush(self._due, (deadline, next(self._order), alarm))
            if self._thread is None or not self._thread.is_alive():  # none yet, or forked
                self._thread = threading.Thread(
                    target=self._run, name="listing-watchdog", daemon=True
                )
                self._thread.start()
            elif self._due[0][2] is alarm:  # earlier than what the thread waits for
                self._wake.notify()
        return alarm

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, alarm = heapq.heappop(self._due)
            alarm.fire()  # a no-op for the alarms disarmed in time, nearly all of them


_WATCHDOG = _Watchdog()


def _response_by_deadline(
    sock: socket.socket | None, read_response: Callable[[], HTTPResponse]
) -> HTTPResponse:
    """`read_response()` (the status line and headers), cut off at the request's deadline.

    A socket timeout bounds each read, not the headers: a proxy sending one header byte
    every 0.4 s would hold a worker for as long as it likes.
    """
    deadline = _HEADERS_DEADLINE.get()
    if deadline is None or sock is None:
        return read_response()
    alarm = _WATCHDOG.arm(sock, deadline)
    try:
        response = read_response()
    except Exception as exc:
        if alarm.disarm():
            # Whatever the shut-down socket made http.client raise; urllib3 reports a
            # TimeoutError while reading the headers as a read timeout, retried as one.
            raise TimeoutError("the response headers did not arrive in time") from exc
        raise
    if alarm.disarm():
        # Cut off after the last header read, or within them: the headers may be partial.
        response.close()
        raise TimeoutError("the response headers did not arrive in time")
    return response


class _HeaderDeadlineConnection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        return _response_by_deadline(self.sock, super().getresponse)


class _HeaderDeadlineTLSConnection(HTTPSConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        return _response_by_deadline(self.sock, super().getresponse)


class _HeaderDeadlinePool(HTTPConnectionPool):
    ConnectionCls = _HeaderDeadlineConnection


class _HeaderDeadlineTLSPool(HTTPSConnectionPool):
    ConnectionCls = _HeaderDeadlineTLSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter, over connections that read response headers by a deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _HeaderDeadlinePool,
            "https": _HeaderDeadlineTLSPool,
        }


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.01)


def _limit_next_read(raw: HTTPResponse, deadline: float) -> None:
    """Let the next read of `raw` wait only what is left of `deadline`.

    The socket is looked up before every read, never kept: urllib3 closes the connection, or
    hands it back to its pool, when the body ends or the peer hangs up, and a socket kept from
    before could be closed (settimeout then fails with EBADF) or another request's. A closed
    one is left alone: the read that follows says what happened.
    """
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(_remaining(deadline))


def read_body(response: requests.Response, deadline: float) -> bytes:
    """The whole body by `deadline`, read as it arrives.

    A socket timeout bounds each read, not the body: a server sending a byte every half
    second would never trip it. So each read may wait only what is left of the deadline.
    """
    raw = response.raw
    chunks = []
    try:
        while True:
            if time.monotonic() >= deadline:
                raise requests.ReadTimeout("the body did not arrive within the timeout")
            _limit_next_read(raw, deadline)
            chunk = raw.read1(BODY_CHUNK, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    # As requests itself maps urllib3's errors while reading a body.
    except ReadTimeoutError as exc:
        raise requests.ReadTimeout(exc) from exc
    except ProtocolError as exc:
        raise ChunkedEncodingError(exc) from exc
    except DecodeError as exc:
        raise ContentDecodingError(exc) from exc
