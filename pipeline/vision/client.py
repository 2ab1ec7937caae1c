"""The listing client: ListObjectsV2 pages over one pooled session, with retries and a budget.

A daily file's existence, size, ETag and Last-Modified all come from the S3 listing of its
symbol's folder, one page per ~500 days, which is why this project lists instead of sending one
HEAD per (symbol, date).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.vision.listing import (
    EMPTY_PAGE,
    PAGE_SIZE,
    ListingPage,
    ListingParseError,
    parse_listing,
    s3_error_code,
)

RETRY_STATUSES = (429, 500, 502, 503, 504)
XML_CONTENT_TYPES = ("application/xml", "text/xml")


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
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=pool_size, pool_block=True, max_retries=0
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
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

    def iter_pages(
        self,
        prefix: str,
        *,
        start_after: str | None = None,
        delimiter: str | None = None,
        subject: str,
    ) -> Iterator[ListingPage]:
        """Pages of a listing, in key order, until the end; stop consuming to stop listing.

        `subject` names what is being listed (a symbol, "symbols") in error messages.
        """
        continuation: str | None = None
        while True:
            page = self.list_page(
                prefix,
                start_after=start_after,
                delimiter=delimiter,
                continuation=continuation,
                subject=subject,
            )
            yield page
            if not page.is_truncated:
                return
            if page.continuation is None:
                raise VisionError(
                    f"{subject}: truncated listing of {prefix} gave nothing to continue from"
                )
            continuation = page.continuation

    def list_common_prefixes(self, prefix: str, *, subject: str) -> list[str]:
        """Every folder directly under `prefix`, following pagination to the end."""
        return [
            common
            for page in self.iter_pages(prefix, delimiter="/", subject=subject)
            for common in page.common_prefixes
        ]

    def list_page(
        self,
        prefix: str,
        *,
        start_after: str | None = None,
        delimiter: str | None = None,
        continuation: str | None = None,
        subject: str,
    ) -> ListingPage:
        params = self._page_params(prefix, start_after, delimiter, continuation)
        response = self._get(params, subject)
        if response.status_code == 404 and s3_error_code(response.content) != "NoSuchBucket":
            # Binance Vision answers 404 for a folder that holds no files. A missing bucket
            # is a wrong vision.listing_url, never "no files": that would blank every symbol.
            return EMPTY_PAGE
        if response.status_code != 200:
            url = self.listing_url + "/"
            raise VisionError(_failure(subject, url, params, _Attempt(response, None), 0))
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type not in XML_CONTENT_TYPES:
            raise VisionError(
                f"{subject}: listing answered HTTP 200 with content type {content_type!r}, "
                f"not XML, from {response.url}"
            )
        try:
            return parse_listing(response.content)
        except ListingParseError as exc:
            raise VisionError(
                f"{subject}: unreadable listing (HTTP 200, {exc}) from {response.url}"
            ) from None

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

    def _get(self, params: dict[str, str], subject: str) -> requests.Response:
        """One listing request, retried on transient faults until the retries or budget run out.

        Returns the response, which may be an error status no retry can change (a 404, a 403)
        for the caller to judge; raises VisionError once the retries or the budget run out.
        """
        url = self.listing_url + "/"
        retry = self.retry
        deadline = time.monotonic() + self.budget_s
        while True:
            self._count(retried=retry is not self.retry)
            attempt = _attempt(self.session, url, params, deadline, self.timeout_s)
            fault = _transport_fault(attempt.failure) if attempt.failure else None
            answer = None if attempt.failure or attempt.response is None else attempt.response.raw
            if attempt.failure is not None and fault is None:
                _give_up(subject, url, params, retry, attempt)
            if answer is not None and not retry.is_retry(
                "GET", answer.status, "Retry-After" in answer.headers
            ):
                return attempt.response
            try:
                retry = retry.increment("GET", url, response=answer, error=fault)
            except MaxRetryError:
                _give_up(subject, url, params, retry, attempt)
            wait = retry.wait_for(answer)
            if time.monotonic() + wait >= deadline:
                _give_up(subject, url, params, retry, attempt, budget=self.budget_s)
            time.sleep(wait)

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

    def wait_for(self, response: BaseHTTPResponse | None) -> float:
        """How long to wait before the next attempt: the server's Retry-After, else backoff."""
        retry_after = None
        if response is not None and self.respect_retry_after_header:
            retry_after = self.get_retry_after(response)
        return self.get_backoff_time() if retry_after is None else retry_after


@dataclass(frozen=True)
class _Attempt:
    """One try of a request: the response (if headers came back) and what went wrong, if any."""

    response: requests.Response | None
    failure: requests.RequestException | None


def _attempt(
    session: requests.Session,
    url: str,
    params: dict[str, str],
    deadline: float,
    timeout_s: float,
) -> _Attempt:
    response = None
    try:
        timeout = max(min(timeout_s, deadline - time.monotonic()), 0.01)
        response = session.get(url, params=params, timeout=timeout, stream=True)
        # The body is read here, so a response that breaks off midway keeps its status.
        _ = response.content
    except requests.RequestException as exc:
        if response is not None:
            response.close()
        return _Attempt(response, exc)
    return _Attempt(response, None)


def _give_up(
    subject: str,
    url: str,
    params: dict[str, str],
    retry: Retry,
    attempt: _Attempt,
    *,
    budget: float | None = None,
) -> NoReturn:
    raise VisionError(_failure(subject, url, params, attempt, len(retry.history), budget=budget))


def _failure(
    subject: str,
    url: str,
    params: dict[str, str],
    attempt: _Attempt,
    retries: int,
    *,
    budget: float | None = None,
) -> str:
    """One line naming what was listed, every cause known (status, S3 code, fault), the URL."""
    shown = requests.Request("GET", url, params=params).prepare().url
    causes = []
    if attempt.response is not None:
        code = None if attempt.failure else s3_error_code(attempt.response.content)
        causes.append(f"HTTP {attempt.response.status_code}" + (f" {code}" if code else ""))
    if attempt.failure is not None:
        causes.append(_reason(attempt.failure))
    if budget is not None:
        causes.append(f"out of the {budget:g}s retry budget")
    retried = f" after {retries} retries" if retries else ""
    return f"{subject}: listing failed{retried} ({', '.join(causes)}) from {shown}"


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
    if isinstance(exc, requests.Timeout) or isinstance(reason, ReadTimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, ChunkedEncodingError):
        return "response cut short"
    if isinstance(exc, requests.exceptions.RetryError):
        return "too many retries"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__
