"""The listing client: ListObjectsV2 pages over one pooled session, with retries and a budget.

A daily file's existence, size, ETag and Last-Modified all come from the S3 listing of its
symbol's folder, one page per ~500 days, which is why this project lists instead of sending one
HEAD per (symbol, date).
"""

from __future__ import annotations

import datetime as dt
import random
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit

import requests
from requests.exceptions import ChunkedEncodingError
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    MaxRetryError,
    NameResolutionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.vision.deadline import DeadlineAdapter, get_headers, read_body
from pipeline.vision.listing import (
    PAGE_SIZE,
    ListingPage,
    ListingParseError,
    page_problem,
    parse_listing,
    s3_error_code,
)

RETRY_STATUSES = (429, 500, 502, 503, 504)
XML_CONTENT_TYPES = ("application/xml", "text/xml")
# A Date header has whole seconds, cut down, and left the server a moment before we read it.
SERVER_CLOCK_TOLERANCE = dt.timedelta(seconds=2)
# A Date this far behind the local clock is no clock: a proxy's 1970, a Date cached by a CDN.
# Trusting it would stamp probes at that time, and an old probe_timestamp loses to every other.
SERVER_CLOCK_MAX_LAG = dt.timedelta(days=1)
# Discovery lists ~1000 folders under the root, 1-2 pages; this many pages is a listing that
# invents folders (each page moving forward) rather than one that has more of them.
DISCOVERY_PAGE_LIMIT = 100


class VisionError(PipelineError):
    """A listing request failed for good, or its answer could not be understood."""


class VisionClient:
    """Lists the bucket over one pooled session, retrying transient failures.

    Thread-safe: the prober shares one client across its worker threads.
    """

    def __init__(
        self,
        listing_url: str,
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        pool_size: int,
    ) -> None:
        self.listing_url = listing_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        # No proxies or .netrc from the environment: requests would look them up per request.
        self.session.trust_env = False
        # Every retry happens in `_get`, under one budget: a failure before the headers and one
        # midway through the body (which urllib3 never sees) are the same fault to us.
        adapter = DeadlineAdapter(
            pool_connections=1, pool_maxsize=pool_size, pool_block=True, max_retries=0
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._objects = ObjectGetter(self.session)
        self.retry = BackoffRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=retries,
            redirect=0,
            backoff_factor=backoff_s,
            backoff_jitter=backoff_s,
            backoff_max=max(backoff_s * 8, 1.0),
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            respect_retry_after_header=True,
            retry_after_cap=timeout_s,
        )
        # A dead or black-holed endpoint fails within this, however its retries are spent.
        self.budget_s = timeout_s * max(retries, 1)
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        # The latest the server's clock was seen to read (a Date header), and the monotonic
        # time it was read at.
        self._server_clock: tuple[dt.datetime, float] | None = None

    @classmethod
    def from_config(cls, config: Config) -> VisionClient:
        probe = config.probe
        return cls(
            config.vision.listing_url,
            timeout_s=probe.timeout_s,
            retries=probe.retries,
            backoff_s=probe.backoff_s,
            pool_size=probe.workers,
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> VisionClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def now(self) -> dt.datetime:
        """The time to stamp what was just listed with: never later than the server's clock."""
        with self._lock:
            clock = self._server_clock
        if clock is None:
            return probe_time(dt.datetime.now(dt.UTC), None)
        return probe_time(dt.datetime.now(dt.UTC), _carried(clock, time.monotonic()))

    def iter_pages(
        self,
        prefix: str,
        *,
        start_after: str | None = None,
        delimiter: str | None = None,
        subject: str,
    ) -> Iterator[ListingPage]:
        """Pages of a listing, in key order, until the end; stop consuming to stop listing.

        `subject` names what is being listed (a symbol, "symbols") in error messages. Every
        page must move the listing forward (`list_page` checks), so this ends.
        """
        continuation: str | None = None
        after = start_after
        while True:
            page = self.list_page(
                prefix,
                start_after=start_after,
                delimiter=delimiter,
                continuation=continuation,
                after=after,
                subject=subject,
            )
            yield page
            if not page.is_truncated:
                return
            continuation, after = page.continuation, page.last_entry()

    def list_common_prefixes(self, prefix: str, *, subject: str) -> list[str]:
        """Every folder directly under `prefix`, following pagination to the end.

        At most DISCOVERY_PAGE_LIMIT pages: a listing whose every page moves forward can still
        invent folders without end.
        """
        folders: list[str] = []
        pages = self.iter_pages(prefix, delimiter="/", subject=subject)
        for number, page in enumerate(pages, start=1):
            folders += page.common_prefixes
            if page.is_truncated and number == DISCOVERY_PAGE_LIMIT:
                raise VisionError(
                    f"{subject}: more than {DISCOVERY_PAGE_LIMIT} listing pages of folders, "
                    f"more than the bucket holds, from {self.listing_url}/ (prefix {prefix}); "
                    "check vision.listing_url and any proxy in front of it"
                )
        return folders

    def list_page(
        self,
        prefix: str,
        *,
        start_after: str | None = None,
        delimiter: str | None = None,
        continuation: str | None = None,
        after: str | None = None,
        subject: str,
    ) -> ListingPage:
        """One page, checked to be an answer to this request (`listing.page_problem`).

        `after` is the previous page's last entry when continuing; an empty folder is a page
        with no entries. Anything else (any 404 included) is a VisionError.
        """
        params = self._page_params(prefix, start_after, delimiter, continuation)
        attempt = self._get(params, subject)
        response = attempt.response
        assert response is not None
        if response.status_code != 200:
            # Not even a missing folder is a 404 on S3 (it lists as empty): a 404 is a wrong
            # URL or something in front of the bucket, and reading it as "no files" would
            # record every file of the symbol as removed.
            failure = _failure(subject, self.listing_url + "/", params, attempt, 0)
            raise VisionError(failure + _hint(response.status_code, s3_error_code(attempt.body)))
        content_type = _content_type(response)
        if content_type not in XML_CONTENT_TYPES:
            raise VisionError(
                f"{subject}: listing answered HTTP 200 with content type {content_type!r}, "
                f"not XML, from {response.url}"
            )
        try:
            page = parse_listing(attempt.body)
        except ListingParseError as exc:
            raise VisionError(
                f"{subject}: unreadable listing (HTTP 200, {exc}) from {response.url}"
            ) from None
        problem = page_problem(
            page,
            prefix=prefix,
            delimiter=delimiter,
            after=after if continuation else start_after,
            previous_token=continuation,
        )
        if problem is not None:
            raise VisionError(
                f"{subject}: not an S3 listing (HTTP 200, {problem}) from {response.url}; "
                "check vision.listing_url and any proxy in front of it"
            )
        return page

    def _page_params(
        self,
        prefix: str,
        start_after: str | None,
        delimiter: str | None,
        continuation: str | None,
    ) -> dict[str, str]:
        params = {
            "list-type": "2",
            "prefix": prefix,
            "encoding-type": "url",
            "max-keys": str(PAGE_SIZE),
        }
        if delimiter:
            params["delimiter"] = delimiter
        if continuation:
            params["continuation-token"] = continuation
        elif start_after:
            params["start-after"] = start_after
        return params

    def get_object(self, url: str, *, subject: str) -> ObjectAnswer:
        """One object's GET at `url`, with the listing's session, retries, budget and deadlines.

        Returns the final answer, whatever its status (a 404 or 403 is the caller's to judge)
        but a redirect; raises VisionError, naming `subject`, on a redirect or once the retries
        or the budget run out.
        """
        attempt = self._get({}, subject, url=url, action="download")
        response = attempt.response
        assert response is not None
        return ObjectAnswer(response.status_code, response.headers, attempt.body, response.url)

    def _get(
        self,
        params: dict[str, str],
        subject: str,
        *,
        url: str | None = None,
        action: str = "listing",
    ) -> _Attempt:
        """One listing request (or, given `url`, one object's GET), retried on transient faults
        until the retries or budget run out.

        Each attempt, body included, has probe.timeout_s; all attempts and the waits between
        them share the budget. Returns a complete answer, which may be an error status no retry
        can change (a 404, a 403) for the caller to judge; raises VisionError on a redirect
        (`_refuse_redirect`) or once the retries or the budget run out.
        """
        url = url or self.listing_url + "/"
        retry = self.retry
        budget_end = time.monotonic() + self.budget_s
        while True:
            self._count(retried=retry is not self.retry)
            deadline = min(time.monotonic() + self.timeout_s, budget_end)
            # An object's GET skips the Session's per-request machinery (ObjectGetter).
            getter = self._objects if action == "download" and not params else self.session
            attempt = _attempt(getter, url, params, deadline)
            if attempt.response is not None:
                self._note_server_clock(attempt.response.headers.get("Date"))
            fault = _transport_fault(attempt.failure) if attempt.failure else None
            answer = None if attempt.failure or attempt.response is None else attempt.response.raw
            if attempt.failure is not None and fault is None:
                _give_up(subject, url, params, retry, attempt, action=action)
            if answer is not None and not retry.is_retry(
                "GET", answer.status, "Retry-After" in answer.headers
            ):
                _refuse_redirect(subject, url, params, retry, attempt, action=action)
                return attempt
            try:
                following = retry.increment("GET", url, response=answer, error=fault)
            except MaxRetryError:
                _give_up(subject, url, params, retry, attempt, action=action)
            wait = following.wait_for(answer)
            if time.monotonic() + wait >= budget_end:
                # `retry`, not `following`: the retries made, not counting one never sent.
                _give_up(subject, url, params, retry, attempt, budget=self.budget_s, action=action)
            retry = following
            time.sleep(wait)

    def _note_server_clock(self, date_header: str | None) -> None:
        """Keeps the latest reading of the server's clock, not the last one to arrive.

        A Date is cut down to the second and was written before we read it, so each one, carried
        forward by the monotonic clock, is a lower bound of the server's clock: the greatest
        is the best. Workers' answers arrive in any order, and a stale Date (a cached answer)
        must not pull the clock back.
        """
        server_date = http_date(date_header)
        if server_date is None:
            return
        read_at = time.monotonic()
        with self._lock:
            known = self._server_clock
            if known is None or server_date > _carried(known, read_at):
                self._server_clock = (server_date, read_at)

    def _count(self, *, retried: bool) -> None:
        with self._lock:
            self.requests += 1
            self.retries += retried


class BackoffRetry(Retry):
    """urllib3's retry policy, with two departures from its defaults.

    The first retry already waits (urllib3 retries at once, so every worker would hit a
    throttling server again together), and a server's Retry-After is honoured only up to
    `retry_after_cap` seconds.
    """

    def __init__(self, *args: Any, retry_after_cap: float = 30.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.retry_after_cap = retry_after_cap

    def new(self, **kwargs: Any) -> BackoffRetry:
        # Retry copies itself on every attempt; the cap must travel with the copy.
        retry = super().new(**kwargs)
        retry.retry_after_cap = self.retry_after_cap
        return retry

    def get_backoff_time(self) -> float:
        attempts = len(self.history)
        if attempts == 0:
            return 0.0
        backoff = min(self.backoff_max, self.backoff_factor * 2 ** (attempts - 1))
        return backoff + random.uniform(0, self.backoff_jitter)

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.retry_after_cap)

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        """The server's Retry-After; None (so the ordinary backoff) when it is malformed.

        urllib3 raises on "soon", "-5" or "1.5": a bad header must not end the run.
        """
        try:
            return super().get_retry_after(response)
        except InvalidHeader:
            return None

    def wait_for(self, response: BaseHTTPResponse | None) -> float:
        """How long to wait before the next attempt: the server's Retry-After, else backoff."""
        retry_after = None
        if response is not None and self.respect_retry_after_header:
            retry_after = self.get_retry_after(response)
        return self.get_backoff_time() if retry_after is None else retry_after


def probe_time(local: dt.datetime, server: dt.datetime | None) -> dt.datetime:
    """When a probe happened: the local clock, but never later than the server's clock says.

    A machine whose clock runs fast would otherwise stamp rows in the future, and a future
    probe_timestamp beats every later probe. `server` is the server's clock now (from its Date
    header); None when no response carried one. A server clock more than SERVER_CLOCK_MAX_LAG
    behind is ignored: it is a stale or broken Date, not a clock.
    """
    if server is None or server < local - SERVER_CLOCK_MAX_LAG:
        return local
    return min(local, server + SERVER_CLOCK_TOLERANCE)


def _carried(clock: tuple[dt.datetime, float], now: float) -> dt.datetime:
    """A reading of the server's clock taken at monotonic `clock[1]`, carried forward to `now`."""
    server_date, read_at = clock
    return server_date + dt.timedelta(seconds=now - read_at)


def http_date(header: str | None) -> dt.datetime | None:
    """An HTTP Date header as an aware UTC datetime; None when absent or unreadable."""
    if not header:
        return None
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": RFC 5322's "UTC, source unknown"
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


@dataclass(frozen=True)
class ObjectAnswer:
    """The final answer to an object's GET: its status, headers and whole body."""

    status: int
    headers: Mapping[str, str]
    """Case-insensitive, as requests reads them."""
    body: bytes
    url: str


@dataclass(frozen=True)
class _Attempt:
    """One try of a request: the response (if headers came back), its whole body, and what
    went wrong, if anything."""

    response: requests.Response | None
    failure: requests.RequestException | None
    body: bytes = b""


class ObjectGetter:
    """GETs of objects straight through the session's adapter (the same pooled connections,
    the same header deadline and body reading), without what requests' Session adds on each
    request: merging cookies, hooks and environment settings, re-parsing and re-quoting the
    URL, the redirect machinery (no request of the client follows a redirect: `_get` refuses
    a 3xx, naming where it points). A volume backfill sends
    ~60,000 GETs of kB-sized files from one interpreter, where that machinery was about a
    third of the CPU time of each.

    `get` has `requests.Session.get`'s signature for `deadline.get_headers`; the URL must be
    complete and quoted already (no params).
    """

    def __init__(self, session: requests.Session) -> None:
        self.session = session
        self._headers = dict(session.headers)

    def get(
        self,
        url: str,
        *,
        params: dict[str, str],
        timeout: float,
        stream: bool,
        allow_redirects: bool,  # False from get_headers; this getter never follows one
    ) -> requests.Response:
        if params:
            raise ValueError("an object's URL carries no params")
        request = requests.PreparedRequest()
        request.method = "GET"
        request.url = url
        request.headers = CaseInsensitiveDict(self._headers)
        request.body = None
        request.hooks = {"response": []}
        adapter = self.session.get_adapter(url)
        session = self.session
        return adapter.send(
            request,
            stream=stream,
            timeout=timeout,
            verify=session.verify,
            cert=session.cert,
            proxies=session.proxies,
        )


def _attempt(
    session: requests.Session | ObjectGetter, url: str, params: dict[str, str], deadline: float
) -> _Attempt:
    """One request by `deadline`: the connect by its timeout, the headers by an alarm the
    connection arms (vision/deadline.py), the body by `read_body`."""
    response = None
    try:
        response = get_headers(session, url, params, deadline)
        # The body is read here, so a response that breaks off midway keeps its status.
        body = read_body(response, deadline)
    except requests.RequestException as exc:
        if response is not None:
            response.close()
        return _Attempt(response, exc)
    return _Attempt(response, None, body)


def _content_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip()


def _refuse_redirect(
    subject: str,
    url: str,
    params: dict[str, str],
    retry: Retry,
    attempt: _Attempt,
    *,
    action: str,
) -> None:
    """No request follows a redirect: a 3xx points away from the configured endpoint (a
    portal, another bucket), so it stops the run, naming where it points."""
    response = attempt.response
    assert response is not None
    if not 300 <= response.status_code < 400:
        return
    setting = "vision.listing_url" if action == "listing" else "vision.download_url"
    failure = _failure(subject, url, params, attempt, len(retry.history), action=action)
    raise VisionError(
        f"{failure}: redirected to {response.headers.get('Location')!r}, which is not "
        f"followed; check {setting} and any proxy in front of it"
    )


def _hint(status: int, code: str | None) -> str:
    """What to do about an answer no retry can change; empty when there is nothing to say."""
    if status == 404 and code == "NoSuchBucket":
        return ": no such bucket, check vision.listing_url"
    if status == 404:
        return (
            ": S3 lists a missing folder as empty, never as 404; "
            "check vision.listing_url and any proxy in front of it"
        )
    return ""


def _give_up(
    subject: str,
    url: str,
    params: dict[str, str],
    retry: Retry,
    attempt: _Attempt,
    *,
    budget: float | None = None,
    action: str = "listing",
) -> NoReturn:
    retries = len(retry.history)
    raise VisionError(
        _failure(subject, url, params, attempt, retries, budget=budget, action=action)
    )


def _failure(
    subject: str,
    url: str,
    params: dict[str, str],
    attempt: _Attempt,
    retries: int,
    *,
    budget: float | None = None,
    action: str = "listing",
) -> str:
    """One line naming what was listed (or downloaded: `action`), every cause known (status,
    S3 code, fault), the URL."""
    shown = requests.Request("GET", url, params=params).prepare().url
    causes = []
    response = attempt.response
    if response is not None and attempt.failure is not None:
        causes.append(f"HTTP {response.status_code}")
    elif response is not None:
        code = s3_error_code(attempt.body)
        # An error status without S3's <Error> document comes from something else: say what.
        not_s3 = f", not S3: {_content_type(response) or 'no content type'}"
        causes.append(f"HTTP {response.status_code}" + (f" {code}" if code else not_s3))
    if attempt.failure is not None:
        causes.append(_reason(attempt.failure))
    if budget is not None:
        causes.append(f"out of the {budget:g}s retry budget")
    retried = f" after {retries} {'retry' if retries == 1 else 'retries'}" if retries else ""
    return f"{subject}: {action} failed{retried} ({', '.join(causes)}) from {shown}"


def _transport_fault(exc: requests.RequestException) -> Exception | None:
    """The fault as urllib3's Retry classifies it; None for what no retry can fix."""
    if isinstance(exc, requests.ConnectTimeout):
        return ConnectTimeoutError(_reason(exc))
    if isinstance(exc, requests.Timeout | requests.ConnectionError | ChunkedEncodingError):
        return ProtocolError(_reason(exc))
    return None


def _reason(exc: requests.RequestException) -> str:
    """A short cause: requests' own messages nest whole tracebacks-worth of reprs."""
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.Timeout) or isinstance(reason, ReadTimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, ChunkedEncodingError):
        return "response cut short"
    if isinstance(exc, requests.exceptions.RetryError):
        return "too many retries"
    if isinstance(exc, requests.ConnectionError):
        return _connection_reason(reason)
    return type(exc).__name__


def _connection_reason(error: object) -> str:
    """Why no connection was made or kept, from what urllib3 raised: the cause an operator
    acts on differs (no network or DNS; nothing listening; a peer that hung up)."""
    if isinstance(error, NameResolutionError):
        return "DNS lookup failed"
    return _os_reason(_os_error(error))


def _os_reason(error: OSError | None) -> str:
    if isinstance(error, socket.gaierror):
        return "DNS lookup failed"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, TimeoutError):
        return "connect timed out"
    if error is not None and error.strerror:  # "network is unreachable", ...
        return f"connection failed: {error.strerror[:1].lower()}{error.strerror[1:]}"
    return "connection failed"


def _os_error(error: object, depth: int = 4) -> OSError | None:
    """The OSError under a urllib3 error: a NewConnectionError's cause, or the exception a
    ProtocolError carries (`ProtocolError("Connection aborted.", ConnectionResetError(...))`)."""
    if isinstance(error, OSError) or not isinstance(error, BaseException) or depth == 0:
        return error if isinstance(error, OSError) else None
    nested = [arg for arg in error.args if isinstance(arg, BaseException)]
    return _os_error(error.__cause__ or (nested[-1] if nested else None), depth - 1)


def unreachable(url: str, timeout_s: float) -> str | None:
    """Why no connection to `url`'s host and port opens ("DNS lookup failed", "connection
    refused", "connect timed out"), or None when one does. Sends nothing: it only connects."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
    except OSError as exc:
        return _os_reason(exc)
    return None
