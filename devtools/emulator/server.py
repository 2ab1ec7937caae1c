"""An S3-compatible HTTP server for the emulated bucket, with fault knobs and request counters.

It answers what the pipeline asks of Binance Vision: ListObjects V1 and V2 on the path-style
bucket `/data.binance.vision`, and HEAD/GET of a key both there and at `/<key>` (the shape of a
download URL). Knobs inject the failures real S3 and the networks in front of it produce:
transient ones at random (503 SlowDown, connection resets) on every request, and permanent
ones for chosen prefixes (an S3 error document or broken XML with status 200, a body cut short
or trickling, an HTML page, a 404, a 503 or a 500 every time, and pages that break the
protocol: looping or empty continuation tokens, foreign prefixes and keys, no EncodingType
echo). Prefix faults hit listings whose prefix starts with the faulted prefix and HEADs and
GETs of keys that do, each kind where it makes sense (OBJECT_FAULTS, LISTING_FAULTS); two
corrupt a GET's bytes under headers that still promise the listed size and ETag. So retry
logic, the client's checks and error messages can be tested; counters let tests assert how
many requests a stage made ("list", "head", "get") and how many faults it met. Everything
under `/_emulator/` is control: never delayed, faulted or counted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
import random
import re
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, quote_plus, unquote, urlsplit
from xml.sax.saxutils import escape

from devtools.emulator.universe import (
    BUCKET,
    CHECKSUM_SUFFIX,
    ListPage,
    Universe,
    list_objects,
)

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_KEYS = 1000
BUCKET_PATH = "/" + BUCKET
CONTROL_PATH = "/_emulator/"
KINDS = ("list", "head", "get")
# What a listing under a faulted prefix answers, every time:
#   malformed       200, application/xml, the ListBucketResult cut in half
#   error_document  200, application/xml, an S3 <Error> document (InternalError)
#   truncated       200, Content-Length of the whole page, the connection closed halfway through
#   html            200, text/html: a captive portal's or a CDN's error page
#   slowdown        503 SlowDown (with the Retry-After knob)
#   internal_error  500 InternalError
#   not_found_html  404, text/html: a web server's or a CDN's "Not Found" page
#   no_such_key     404 NoSuchKey: an S3 error document, but not one a listing ever gets
#   bad_retry_after 503 SlowDown with "Retry-After: soon"
#   trickle         200, the page sent one byte every TRICKLE_INTERVAL_S
#   looping_token   the listing's first page whatever the token, truncated, its next token
#                   always LOOP_TOKEN: a client that follows it pages forever
#   empty_token     the page truncated, with an empty <NextContinuationToken/>
#   no_encoding_echo  the page without its <EncodingType>url</EncodingType> echo (names
#                   still url-encoded)
#   prefix_empty, prefix_nested, prefix_other_market
#                   the page with one more CommonPrefix: "", one two levels down
#                   ("{prefix}A/B/"), or OTHER_MARKET_FOLDER
#   key_outside_prefix  the page with one more key, under OTHER_MARKET_FOLDER
# What a HEAD or GET of a key under a faulted prefix answers: the same as a listing for the
# faults that replace the answer (error_document, html, slowdown, internal_error,
# not_found_html, no_such_key, bad_retry_after). The faults of a body hit a GET of an existing
# key only (a HEAD is answered truthfully): truncated and trickle send the object's bytes as
# they send a page; and, with the object's listed ETag and Last-Modified (object-only faults):
#   corrupt_body    its Content-Length, every 7th byte flipped: only the bytes' digests tell
#   short_body      the first half of its bytes, and a Content-Length that says so
# The protocol faults (malformed, the token, encoding and foreign-entry ones) are listing-only.
PREFIX_FAULTS = (
    "malformed",
    "error_document",
    "truncated",
    "html",
    "slowdown",
    "internal_error",
    "not_found_html",
    "no_such_key",
    "bad_retry_after",
    "trickle",
    "looping_token",
    "empty_token",
    "no_encoding_echo",
    "prefix_empty",
    "prefix_nested",
    "prefix_other_market",
    "key_outside_prefix",
    "corrupt_body",
    "short_body",
)
OBJECT_FAULTS = frozenset(PREFIX_FAULTS) - {
    "malformed",
    "looping_token",
    "empty_token",
    "no_encoding_echo",
    "prefix_empty",
    "prefix_nested",
    "prefix_other_market",
    "key_outside_prefix",
}
LISTING_FAULTS = frozenset(PREFIX_FAULTS) - {"corrupt_body", "short_body"}
# Faults of a body: a HEAD has none, and a 404 sends its own.
_BODY_FAULTS = frozenset({"truncated", "trickle", "corrupt_body", "short_body"})
# Counted by what was answered: a random 503 and a prefix's 503 are both a "slowdown".
FAULTS = ("slowdown", "reset", *(fault for fault in PREFIX_FAULTS if fault != "slowdown"))
TRICKLE_INTERVAL_S = 0.5
LOOP_TOKEN = "loop"
OTHER_MARKET_FOLDER = "data/futures/cm/daily/klines/BTCUSD_PERP/"
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_TOKEN_TAG = b"emulator-v1:"
_XML_ENTITIES = {'"': "&quot;"}
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~/-]*")
# How often the serving loop checks for stop(): short, so test fixtures tear down quickly.
_SHUTDOWN_POLL_S = 0.02
_PORTAL_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Network login</title></head>"
    b"<body><h1>Please sign in to continue</h1></body></html>\n"
)
_NOT_FOUND_PAGE = (
    b"<html>\r\n<head><title>404 Not Found</title></head>\r\n"
    b"<body>\r\n<center><h1>404 Not Found</h1></center>\r\n</body>\r\n</html>\r\n"
)
_NEXT_TOKEN = re.compile(rb"<NextContinuationToken>[^<]*</NextContinuationToken>")


@dataclass(frozen=True)
class Knobs:
    """Faults to inject into counted requests; the defaults inject none.

    `slowdown_rate` and `reset_rate` are fractions of requests, drawn from a generator seeded
    with `seed`. A 503 SlowDown carries `Retry-After: retry_after_s`, or no Retry-After when
    it is None (as S3 itself sends it). `prefix_faults` maps prefixes to one of PREFIX_FAULTS:
    a listing whose prefix starts with one of them, or a HEAD or GET of a key that does, always
    gets that fault, after any random fault drawn for the request. Of the faulted prefixes
    whose kind applies to the request (LISTING_FAULTS, OBJECT_FAULTS), the longest wins.
    """

    latency_ms: float = 0.0
    slowdown_rate: float = 0.0
    reset_rate: float = 0.0
    retry_after_s: int | None = 0
    prefix_faults: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms}")
        for name in ("slowdown_rate", "reset_rate"):
            rate = getattr(self, name)
            if not 0 <= rate <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if self.slowdown_rate + self.reset_rate > 1:
            raise ValueError("slowdown_rate + reset_rate must not exceed 1")
        # An HTTP Retry-After is whole seconds; clients reject anything else as a bad header.
        after = self.retry_after_s
        if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
            raise ValueError(f"retry_after_s must be whole seconds or None, got {after!r}")
        if after is not None and after < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {after}")
        unknown = {kind for kind in self.prefix_faults.values() if kind not in PREFIX_FAULTS}
        if unknown:
            raise ValueError(f"unknown prefix faults {sorted(unknown)}: use {PREFIX_FAULTS}")
        # Frozen means frozen: callers must not change the faults of a running emulator.
        object.__setattr__(self, "prefix_faults", MappingProxyType(dict(self.prefix_faults)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Knobs:
        """Fields not given keep their defaults; unknown fields are an error."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown knobs: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["prefix_faults"] = dict(self.prefix_faults)
        return d

    def prefix_fault(self, prefix: str, kinds: frozenset[str] = LISTING_FAULTS) -> str | None:
        """The fault of the longest faulted prefix that `prefix` starts with, among `kinds`."""
        matches = [
            faulted
            for faulted, kind in self.prefix_faults.items()
            if kind in kinds and prefix.startswith(faulted)
        ]
        return self.prefix_faults[max(matches, key=len)] if matches else None


class Counters:
    """Thread-safe tallies of the requests served, by kind, by prefix and by injected fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._by_kind: Counter[str] = Counter()
        self._by_prefix: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()

    def count(self, kind: str, prefix: str) -> None:
        with self._lock:
            self._requests += 1
            self._by_kind[kind] += 1
            self._by_prefix[prefix] += 1

    def fault(self, name: str) -> None:
        with self._lock:
            self._faults[name] += 1

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "by_kind": {kind: self._by_kind[kind] for kind in KINDS},
                "by_prefix": dict(sorted(self._by_prefix.items())),
                "faults": {name: self._faults[name] for name in FAULTS},
            }

    def reset(self) -> None:
        with self._lock:
            self._requests = 0
            self._by_kind.clear()
            self._by_prefix.clear()
            self._faults.clear()


class _State:
    """What every request handler shares; swapped wholesale so requests see one version."""

    def __init__(self, universe: Universe, knobs: Knobs) -> None:
        self.universe = universe.prepare()
        self.knobs = knobs
        self.counters = Counters()
        self._rng = random.Random(knobs.seed)
        self._lock = threading.Lock()
        self._request_ids = itertools.count(1)

    def set_universe(self, universe: Universe) -> None:
        self.universe = universe.prepare()  # index outside any lock; then one atomic swap

    def set_knobs(self, knobs: Knobs) -> None:
        with self._lock:
            self.knobs = knobs
            self._rng = random.Random(knobs.seed)

    def draw_fault(self) -> str | None:
        """'reset', 'slowdown' or None for the next request, per the current knobs."""
        with self._lock:
            knobs = self.knobs
            if not knobs.reset_rate and not knobs.slowdown_rate:
                return None
            draw = self._rng.random()
        if draw < knobs.reset_rate:
            return "reset"
        if draw < knobs.reset_rate + knobs.slowdown_rate:
            return "slowdown"
        return None

    def request_id(self) -> str:
        return f"{next(self._request_ids):016X}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # benchmarks open dozens of connections at once

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def busy(self) -> bool:
        """Whether a connection is open, or one waits to be accepted."""
        with self._open_lock:
            if self._open:
                return True
        waiting, _, _ = select.select([self.socket], [], [], 0)
        return bool(waiting)

    def close_open_connections(self) -> None:
        """End keep-alive connections too, so a stopped emulator answers nobody."""
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):  # already gone
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class _ListRequest:
    v2: bool
    prefix: str
    delimiter: str | None
    start_after: str | None  # V1 marker or V2 start-after, as sent
    token: str | None
    resume_after: str | None  # where the listing actually continues from
    max_keys: int
    url_encoded: bool


class BadRequestError(Exception):
    """A ListObjects request S3 refuses with 400 (`code` is S3's error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _parse_list_request(params: Mapping[str, list[str]]) -> _ListRequest:
    def param(name: str) -> str | None:
        values = params.get(name)
        return values[0] if values else None

    encoding = param("encoding-type")
    if encoding is not None and encoding != "url":
        raise BadRequestError("InvalidArgument", "Invalid Encoding Method specified in Request")
    max_keys_text = param("max-keys")
    try:
        max_keys = MAX_KEYS if max_keys_text is None else int(max_keys_text)
    except ValueError:
        raise BadRequestError("InvalidArgument", "Provided max-keys not an integer") from None
    if max_keys < 0:
        raise BadRequestError("InvalidArgument", "max-keys must be between 0 and 2147483647")
    v2 = param("list-type") == "2"
    start_after = param("start-after") if v2 else param("marker")
    token = param("continuation-token") if v2 else None
    return _ListRequest(
        v2=v2,
        prefix=param("prefix") or "",
        delimiter=param("delimiter") or None,
        start_after=start_after or None,
        token=token,
        resume_after=_decode_token(token) if token is not None else start_after or None,
        max_keys=min(max_keys, MAX_KEYS),
        url_encoded=encoding == "url",
    )


def _encode_token(last_returned: str) -> str:
    """An opaque V2 continuation token that carries the last entry returned."""
    return base64.urlsafe_b64encode(_TOKEN_TAG + last_returned.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        raw = base64.b64decode(token, altchars=b"-_", validate=True)
        if raw.startswith(_TOKEN_TAG):
            return raw[len(_TOKEN_TAG) :].decode()
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise BadRequestError("InvalidArgument", "The continuation token provided is incorrect")


def _s3_time(moment: datetime) -> str:
    """S3's LastModified form; hand-formatted because strftime costs microseconds per key."""
    return "%04d-%02d-%02dT%02d:%02d:%02d.000Z" % (  # noqa: UP031 - fastest formatting
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
    )


def _xml(text: str) -> str:
    return escape(text, _XML_ENTITIES)


def _url(text: str) -> str:
    """S3's `encoding-type=url`: form encoding that leaves '/' alone.

    Most keys need no escaping at all, and checking that is cheaper than quoting.
    """
    return text if _URL_SAFE.fullmatch(text) else quote_plus(text, safe="/")


def _render_listing(page: ListPage, request: _ListRequest) -> str:
    """The ListBucketResult document, with S3's elements in S3's order."""
    enc: Callable[[str], str] = _url if request.url_encoded else _xml
    head = [f'<ListBucketResult xmlns="{S3_NAMESPACE}">', f"<Name>{BUCKET}</Name>"]
    head.append(f"<Prefix>{enc(request.prefix)}</Prefix>")
    if request.v2:
        if request.start_after:
            head.append(f"<StartAfter>{enc(request.start_after)}</StartAfter>")
        if request.token is not None:
            head.append(f"<ContinuationToken>{_xml(request.token)}</ContinuationToken>")
        if page.is_truncated and page.last_returned is not None:
            token = _encode_token(page.last_returned)
            head.append(f"<NextContinuationToken>{token}</NextContinuationToken>")
        head.append(f"<KeyCount>{len(page.keys) + len(page.common_prefixes)}</KeyCount>")
    else:
        head.append(f"<Marker>{enc(request.start_after or '')}</Marker>")
        # S3 sends NextMarker only with a delimiter; without one, clients use the last key.
        if request.delimiter and page.is_truncated and page.last_returned is not None:
            head.append(f"<NextMarker>{enc(page.last_returned)}</NextMarker>")
    head.append(f"<MaxKeys>{request.max_keys}</MaxKeys>")
    if request.delimiter:
        head.append(f"<Delimiter>{enc(request.delimiter)}</Delimiter>")
    if request.url_encoded:
        head.append("<EncodingType>url</EncodingType>")
    head.append(f"<IsTruncated>{'true' if page.is_truncated else 'false'}</IsTruncated>")
    contents = [
        f"<Contents><Key>{enc(key)}</Key><LastModified>{_s3_time(meta.last_modified)}"
        f"</LastModified><ETag>&quot;{meta.etag}&quot;</ETag><Size>{meta.size}</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
        for key, meta in page.keys
    ]
    prefixes = [
        f"<CommonPrefixes><Prefix>{enc(common)}</Prefix></CommonPrefixes>"
        for common in page.common_prefixes
    ]
    return "".join([_XML_DECLARATION, *head, *contents, *prefixes, "</ListBucketResult>"])


def _damaged(body: bytes, fault: str, prefix: str) -> bytes:
    """The listing `body` as the prefix fault `fault` damages it (unchanged for the others)."""
    end = b"</ListBucketResult>"
    if fault == "malformed":
        return body[: len(body) // 2]
    if fault in ("looping_token", "empty_token"):
        token = LOOP_TOKEN if fault == "looping_token" else ""
        body = _NEXT_TOKEN.sub(b"", body).replace(b"<IsTruncated>false<", b"<IsTruncated>true<")
        tag = f"<NextContinuationToken>{token}</NextContinuationToken>".encode()
        return body.replace(b"<KeyCount>", tag + b"<KeyCount>", 1)
    if fault == "no_encoding_echo":
        return body.replace(b"<EncodingType>url</EncodingType>", b"")
    foreign = {
        "prefix_empty": "",
        "prefix_nested": prefix + "A/B/",
        "prefix_other_market": OTHER_MARKET_FOLDER,
    }
    if fault in foreign:
        extra = f"<CommonPrefixes><Prefix>{_xml(foreign[fault])}</Prefix></CommonPrefixes>"
        return body.replace(end, extra.encode() + end)
    if fault == "key_outside_prefix":
        key = f"{OTHER_MARKET_FOLDER}1m/BTCUSD_PERP-1m-2024-01-01.zip"
        extra = (
            f"<Contents><Key>{key}</Key><LastModified>2024-01-02T00:00:00.000Z</LastModified>"
            "<ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag><Size>1234</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
        return body.replace(end, extra.encode() + end)
    return body


def _corrupted(body: bytes) -> bytes:
    """`body` with every 7th byte flipped: same length, other bytes (a faulty proxy or disk)."""
    damaged = bytearray(body)
    for at in range(0, len(damaged), 7):
        damaged[at] ^= 0xFF
    return bytes(damaged)


def listing_body(universe: Universe, params: Mapping[str, list[str]]) -> bytes:
    """The ListBucketResult a ListObjects request with these query params gets, faults aside.

    What the server sends; tests also answer listings with it in process (behind `responses`).
    Raises BadRequestError for params S3 refuses.
    """
    request = _parse_list_request(params)
    page = list_objects(
        universe,
        prefix=request.prefix,
        delimiter=request.delimiter,
        start_after=request.resume_after,
        max_keys=request.max_keys,
    )
    return _render_listing(page, request).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; Nagle would hold the second for the client's ACK.
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self) -> str:
        return "AmazonS3"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests and benchmarks make thousands of requests."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    @property
    def state(self) -> _State:
        return self.server.state

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        body = self._read_body()
        if path.startswith(CONTROL_PATH):
            self._control(method, path[len(CONTROL_PATH) :], body)
        elif method not in ("GET", "HEAD"):
            self._send_error(405, "MethodNotAllowed", "The method is not allowed.", method)
        elif method == "GET" and path in (BUCKET_PATH, BUCKET_PATH + "/"):
            self._list(split.query)
        elif path.startswith(BUCKET_PATH + "/"):
            self._object(method, path[len(BUCKET_PATH) + 1 :])
        else:
            self._object(method, path[1:])

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # --- S3 ---------------------------------------------------------------------------------

    def _admit(self, method: str, kind: str, prefix: str) -> bool:
        """Count the request and apply latency and random faults; False if already answered."""
        state = self.state
        state.counters.count(kind, prefix)
        if state.knobs.latency_ms:
            time.sleep(state.knobs.latency_ms / 1000)
        fault = state.draw_fault()
        if fault is not None:
            state.counters.fault(fault)
        if fault == "reset":
            self._reset_connection()
            return False
        if fault == "slowdown":
            self._send_slowdown(method)
            return False
        return True

    def _send_slowdown(self, method: str) -> None:
        after = self.state.knobs.retry_after_s
        headers = {} if after is None else {"Retry-After": str(after)}
        self._send_error(
            503, "SlowDown", "Please reduce your request rate.", method, headers=headers
        )

    def _list(self, query: str) -> None:
        params = parse_qs(query, keep_blank_values=True)
        prefix = (params.get("prefix") or [""])[0]
        if not self._admit("GET", "list", prefix):
            return
        fault = self.state.knobs.prefix_fault(prefix)
        if fault is not None:
            self.state.counters.fault(fault)
            if self._answer_instead(fault):
                return
        if fault == "looping_token":
            params.pop("continuation-token", None)  # the loop: always the first page again
        try:
            body = listing_body(self.state.universe, params)
        except BadRequestError as exc:
            self._send_error(400, exc.code, exc.message, "GET")
            return
        if fault is not None:
            body = _damaged(body, fault, prefix)
        self._send(
            200,
            body,
            "application/xml",
            "GET",
            cut_short=fault == "truncated",
            trickle=fault == "trickle",
        )

    def _answer_instead(self, fault: str, method: str = "GET") -> bool:
        """Send the answer of a fault that replaces the answer; False for those that damage it."""
        internal = "We encountered an internal error. Please try again."
        if fault == "slowdown":
            self._send_slowdown(method)
        elif fault == "bad_retry_after":
            slow = "Please reduce your request rate."
            self._send_error(503, "SlowDown", slow, method, headers={"Retry-After": "soon"})
        elif fault == "not_found_html":
            self._send(404, _NOT_FOUND_PAGE, "text/html", method)
        elif fault == "no_such_key":
            self._send_error(404, "NoSuchKey", "The specified key does not exist.", method)
        elif fault == "internal_error":
            self._send_error(500, "InternalError", internal, method)
        elif fault == "error_document":
            self._send_error(200, "InternalError", internal, method)
        elif fault == "html":
            self._send(200, _PORTAL_PAGE, "text/html; charset=utf-8", method)
        else:
            return False
        return True

    def _object(self, method: str, key: str) -> None:
        if not self._admit(method, method.lower(), key[: key.rfind("/") + 1]):
            return
        kinds = OBJECT_FAULTS if method == "GET" else OBJECT_FAULTS - _BODY_FAULTS
        fault = self.state.knobs.prefix_fault(key, kinds)
        if fault is not None and fault not in _BODY_FAULTS:
            self.state.counters.fault(fault)
            self._answer_instead(fault, method)
            return
        universe = self.state.universe
        if not universe.has_object(key):
            self._send_error(404, "NoSuchKey", "The specified key does not exist.", method, key)
            return
        if fault is not None:
            self.state.counters.fault(fault)
        meta = universe.meta(key)
        content_type = "text/plain" if key.endswith(CHECKSUM_SUFFIX) else "application/zip"
        headers = {
            "ETag": f'"{meta.etag}"',
            "Last-Modified": format_datetime(meta.last_modified, usegmt=True),
            "Accept-Ranges": "bytes",
        }
        if method == "HEAD":
            self._send(200, b"", content_type, method, headers=headers, length=meta.size)
            return
        body = universe.body(key)
        if fault == "corrupt_body":
            body = _corrupted(body)
        elif fault == "short_body":
            body = body[: len(body) // 2]
        self._send(
            200,
            body,
            content_type,
            method,
            headers=headers,
            cut_short=fault == "truncated",
            trickle=fault == "trickle",
        )

    def _reset_connection(self) -> None:
        """Close with SO_LINGER(1, 0) so the kernel sends RST instead of a clean FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()
        self.rfile.close()  # drops the last reference, which really closes the socket

    def _send_error(
        self,
        status: int,
        code: str,
        message: str,
        method: str,
        key: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        request_id = self.state.request_id()
        key_element = f"<Key>{_xml(key)}</Key>" if key is not None else ""
        body = (
            f"{_XML_DECLARATION}<Error><Code>{code}</Code><Message>{_xml(message)}</Message>"
            f"{key_element}<RequestId>{request_id}</RequestId>"
            f"<HostId>{request_id.lower()}</HostId></Error>"
        ).encode()
        self._send(status, body, "application/xml", method, headers=headers, request_id=request_id)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        method: str,
        *,
        headers: Mapping[str, str] | None = None,
        length: int | None = None,
        request_id: str | None = None,
        cut_short: bool = False,
        trickle: bool = False,
    ) -> None:
        """Send a response; HEAD gets the headers of the GET it stands for, no body.

        `cut_short` promises the whole body but closes the connection halfway through it,
        as a dropped connection or a dying proxy does; `trickle` sends it a byte at a time.
        """
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("x-amz-request-id", request_id or self.state.request_id())
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if method == "HEAD":
            return
        if cut_short:
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif trickle:
            self._trickle(body)
        else:
            self.wfile.write(body)

    def _trickle(self, body: bytes) -> None:
        """Send `body` a byte every TRICKLE_INTERVAL_S, until done or the client hangs up."""
        self.close_connection = True
        for at in range(len(body)):
            try:
                self.wfile.write(body[at : at + 1])
            except OSError:  # the client gave up: the point of this fault
                return
            time.sleep(TRICKLE_INTERVAL_S)

    # --- control ----------------------------------------------------------------------------

    def _control(self, method: str, action: str, body: bytes) -> None:
        state = self.state
        try:
            if (method, action) == ("GET", "counters"):
                self._send_json(method, state.counters.snapshot())
            elif (method, action) == ("POST", "counters/reset"):
                state.counters.reset()
                self._send_json(method, {"ok": True})
            elif (method, action) == ("GET", "universe"):
                self._send(200, state.universe.to_json().encode(), "application/json", method)
            elif (method, action) == ("PUT", "universe"):
                state.set_universe(Universe.from_dict(json.loads(body)))
                self._send_json(method, {"ok": True, "symbols": len(state.universe.symbols)})
            elif (method, action) == ("GET", "knobs"):
                self._send_json(method, state.knobs.to_dict())
            elif (method, action) == ("PUT", "knobs"):
                state.set_knobs(Knobs.from_dict(json.loads(body)))
                self._send_json(method, {"ok": True})
            else:
                self._send_json(method, {"error": f"no control endpoint {method} {action}"}, 404)
        except (ValueError, TypeError) as exc:  # bad JSON, or a document of the wrong shape
            self._send_json(method, {"error": str(exc)}, 400)

    def _send_json(self, method: str, payload: Any, status: int = 200) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        self._send(status, body, "application/json", method)


class Emulator:
    """The emulator serving from a background thread of this process.

    `listing_url` plays the S3 endpoint of the bucket and `download_url` the public download
    host; both are on the same loopback port.
    """

    def __init__(
        self,
        universe: Universe,
        knobs: Knobs | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._state = _State(universe, knobs or Knobs())
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Emulator:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._server = _Server(self._address, self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _SHUTDOWN_POLL_S},
            name="vision-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_open_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._address[0]}:{self.port}"

    @property
    def listing_url(self) -> str:
        return f"{self.url}{BUCKET_PATH}"

    @property
    def download_url(self) -> str:
        return self.url

    @property
    def universe(self) -> Universe:
        return self._state.universe

    @property
    def knobs(self) -> Knobs:
        return self._state.knobs

    def set_universe(self, universe: Universe) -> None:
        self._state.set_universe(universe)

    def set_knobs(self, knobs: Knobs) -> None:
        self._state.set_knobs(knobs)

    def counters(self) -> dict[str, Any]:
        return self._state.counters.snapshot()

    def reset_counters(self) -> None:
        self._state.counters.reset()

    def wait_until_idle(self, *, quiet_s: float = 0.5, within_s: float = 30) -> None:
        """Wait until no connection is open or waiting, and no request came, for `quiet_s`.

        A client killed mid-request leaves requests behind: some in a handler's latency
        sleep, some still unread in a socket. They are counted when a handler gets to
        them, so counters reset before then would charge them to the next run.
        """
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        deadline = time.monotonic() + within_s
        seen = self._state.counters.requests
        quiet_since = time.monotonic()
        while True:
            time.sleep(_SHUTDOWN_POLL_S)
            now = time.monotonic()
            requests = self._state.counters.requests
            if requests != seen or self._server.busy():
                seen, quiet_since = requests, now
            elif now - quiet_since >= quiet_s:
                return
            if now > deadline:
                raise TimeoutError(f"the emulator was still busy after {within_s:g} s")
