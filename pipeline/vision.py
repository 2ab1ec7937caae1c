"""The Binance Vision client: where files live, listing them page by page, and retries.

Binance Vision is an S3 bucket. A daily file's existence, size, ETag and Last-Modified all come
from the S3 listing of its symbol's folder, one page per ~500 days, which is why this project
lists instead of sending one HEAD per (symbol, date).
"""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import unquote_plus
from xml.sax.saxutils import unescape

import polars as pl
import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from pipeline.config import KLINE_DATA_TYPES, Config
from pipeline.errors import PipelineError

S3_NAMESPACE = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# S3 returns at most this many entries per listing page, whatever max-keys asks for.
PAGE_SIZE = 1000
RETRY_STATUSES = (429, 500, 502, 503, 504)
XML_CONTENT_TYPES = ("application/xml", "text/xml")


class VisionError(PipelineError):
    """A listing request failed for good, or its answer could not be understood."""


@dataclass(frozen=True)
class Layout:
    """Where one dataset's daily files live in the bucket, and how they are named."""

    market: str
    data_type: str
    interval: str

    @classmethod
    def from_config(cls, config: Config) -> Layout:
        ds = config.dataset
        return cls(market=ds.market, data_type=ds.data_type, interval=ds.interval)

    @property
    def root(self) -> str:
        """The folder whose subfolders are the symbols."""
        return f"data/futures/{self.market}/daily/{self.data_type}/"

    def _has_interval(self) -> bool:
        return self.data_type in KLINE_DATA_TYPES

    def symbol_prefix(self, symbol: str) -> str:
        folder = f"{symbol}/{self.interval}/" if self._has_interval() else f"{symbol}/"
        return self.root + folder

    def _stem(self, symbol: str) -> str:
        kind = self.interval if self._has_interval() else self.data_type
        return f"{self.symbol_prefix(symbol)}{symbol}-{kind}-"

    def start_after(self, symbol: str, day: dt.date) -> str:
        """A listing start that sorts after every key of earlier days and before `day`'s keys."""
        return self._stem(symbol) + day.isoformat()

    def day_of(self, symbol: str, key: str) -> dt.date | None:
        """The date of a daily zip of `symbol`; None for anything else (checksums, strays)."""
        stem = self._stem(symbol)
        if len(key) != len(stem) + len("YYYY-MM-DD.zip") or not key.startswith(stem):
            return None
        if not key.endswith(".zip"):
            return None
        try:
            return dt.date.fromisoformat(key[len(stem) : -len(".zip")])
        except ValueError:
            return None

    def daily_files(self, symbol: str, objects: pl.DataFrame) -> pl.DataFrame:
        """`day_of` over a whole listing at once: `symbol`'s daily zips, dated.

        Checksums and stray keys are dropped; the file columns stay text (LISTED_COLUMNS).
        """
        day_text = pl.col("key").str.slice(-len("YYYY-MM-DD.zip"), len("YYYY-MM-DD"))
        zip_key = pl.concat_str(pl.lit(self._stem(symbol)), day_text, pl.lit(".zip"))
        return (
            objects.filter(pl.col("key") == zip_key)
            .select(
                pl.lit(symbol, dtype=pl.String).alias("symbol"),
                "size",
                "etag",
                "last_modified",
                date=day_text.str.to_date("%Y-%m-%d", strict=False),
            )
            .drop_nulls("date")
        )

    def symbol_of(self, common_prefix: str) -> str:
        return common_prefix[len(self.root) :].rstrip("/")


LISTED_COLUMNS = ("key", "size", "etag", "last_modified")
"""A page's objects, as S3 wrote them: text, with keys decoded and ETags unquoted.

Typing (`typed_file_columns`) is left to the caller, so that it runs once over a whole probe
instead of once per page: per-page work is what bounds a backfill's CPU time.
"""
S3_TIMESTAMP = "%Y-%m-%dT%H:%M:%S%.fZ"


def typed_file_columns() -> list[pl.Expr]:
    """`size` and `last_modified` as the dataset stores them."""
    return [
        pl.col("size").cast(pl.Int64).alias("file_size_bytes"),
        pl.col("last_modified").str.to_datetime(S3_TIMESTAMP, time_zone="UTC", time_unit="us"),
    ]


@dataclass(frozen=True)
class ListingPage:
    objects: pl.DataFrame
    """One row per listed object, in key order, with the text columns LISTED_COLUMNS."""
    keys: list[str]
    """The same keys as a list, for the few that callers inspect one by one."""
    common_prefixes: list[str]
    is_truncated: bool
    continuation: str | None
    """What the next page's request continues from (V2 token or V1 marker); None at the end."""


EMPTY_PAGE = ListingPage(
    objects=pl.DataFrame(schema=dict.fromkeys(LISTED_COLUMNS, pl.String)),
    keys=[],
    common_prefixes=[],
    is_truncated=False,
    continuation=None,
)


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
        list_api: int = 2,
    ) -> None:
        self.listing_url = listing_url.rstrip("/")
        self.timeout_s = timeout_s
        self.list_api = list_api
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
        if response.status_code == 404 and _s3_error_code(response.content) != "NoSuchBucket":
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
            return parse_listing(response.content, list_api=self.list_api)
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
        params = {"prefix": prefix, "encoding-type": "url", "max-keys": str(PAGE_SIZE)}
        if delimiter:
            params["delimiter"] = delimiter
        if self.list_api == 2:
            params["list-type"] = "2"
            if continuation:
                params["continuation-token"] = continuation
            elif start_after:
                params["start-after"] = start_after
        elif continuation or start_after:
            params["marker"] = continuation or start_after or ""
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
        code = None if attempt.failure else _s3_error_code(attempt.response.content)
        causes.append(f"HTTP {attempt.response.status_code}" + (f" {code}" if code else ""))
    if attempt.failure is not None:
        causes.append(_reason(attempt.failure))
    if budget is not None:
        causes.append(f"out of the {budget:g}s retry budget")
    retried = f" after {retries} retries" if retries else ""
    return f"{subject}: listing failed{retried} ({', '.join(causes)}) from {shown}"


class ListingParseError(Exception):
    """The body of a listing is not a ListBucketResult we can read."""


@dataclass(frozen=True)
class _RawPage:
    """A listing page's fields as XML text (entity-decoded, not yet url-decoded or typed)."""

    keys: list[str]
    last_modified: list[str]
    etags: list[str]
    sizes: list[str]
    common_prefixes: list[str]
    truncated: str | None
    encoding: str | None
    next_token: str | None
    next_marker: str | None


def parse_listing(body: bytes, *, list_api: int = 2) -> ListingPage:
    """Parse one ListObjects (V1 or V2) page, decoding `encoding-type=url` names.

    Parsing is the CPU hot path of a backfill. A page in S3's canonical shape is read with one
    regular expression that also checks each field's format, and the match count is checked
    against the number of entries. Anything else (errors, damage, an unusual but valid shape)
    goes through ElementTree, which gives the precise error, and is checked field by field.
    """
    raw = _scan_canonical(body) or _checked(_scan_tree(body))
    decode = unquote_plus if raw.encoding == "url" else _identity
    # Most pages have nothing to decode (ASCII names): skip a thousand no-op calls.
    encoded = decode is not _identity and any("%" in key or "+" in key for key in raw.keys)
    keys = [decode(key) for key in raw.keys] if encoded else raw.keys
    objects = pl.DataFrame(
        {"key": keys, "size": raw.sizes, "etag": raw.etags, "last_modified": raw.last_modified},
        schema=dict.fromkeys(LISTED_COLUMNS, pl.String),
    )
    if raw.truncated not in ("true", "false"):
        raise ListingParseError("missing IsTruncated")
    common_prefixes = [decode(prefix) for prefix in raw.common_prefixes]
    is_truncated = raw.truncated == "true"
    continuation = None
    if is_truncated:
        last_key = keys[-1] if keys else None
        continuation = _continuation(raw, decode, last_key, common_prefixes, list_api)
    return ListingPage(
        objects=objects,
        keys=keys,
        common_prefixes=common_prefixes,
        is_truncated=is_truncated,
        continuation=continuation,
    )


_CANONICAL_ROOT = f'<ListBucketResult xmlns="{S3_NAMESPACE[1:-1]}">'
# One entry in S3's element order; elements S3 may add between ETag and Size (such as
# ChecksumAlgorithm) are skipped. The ETag's quotes stay outside its group.
_SIZE_TEXT = r"[0-9]{1,18}"
_TIMESTAMP_TEXT = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z"
# One whole <Contents> element in S3's order. Simple elements may stand between ETag and Size
# (ChecksumAlgorithm) and after Size (StorageClass), and an Owner after that; each must close
# with its own name. Groups 1, 2, 3 and 5 are the key, last-modified, ETag (unquoted) and size.
_CONTENTS = re.compile(
    rf"<Contents>\s*<Key>([^<&\r]*)</Key>\s*<LastModified>({_TIMESTAMP_TEXT})</LastModified>"
    r'\s*<ETag>(?:&quot;|")?([^<&"]*)(?:&quot;|")?</ETag>'
    r"(?:\s*<(?!Size>)(\w+)>[^<]*</\4>)*"
    rf"\s*<Size>({_SIZE_TEXT})</Size>"
    r"(?:\s*<(?!Owner>)(\w+)>[^<]*</\6>|\s*<Owner>(?:\s*<(\w+)>[^<]*</\7>)*\s*</Owner>)*"
    r"\s*</Contents>"
)
_COMMON_PREFIX = re.compile(r"<CommonPrefixes>\s*<Prefix>([^<]*)</Prefix>\s*</CommonPrefixes>")
_PAGE_FIELD = re.compile(
    r"<(IsTruncated|EncodingType|NextContinuationToken|NextMarker)>([^<]*)</\1>"
)
_XML_ENTITIES = {"&quot;": '"', "&apos;": "'"}


def _scan_canonical(body: bytes) -> _RawPage | None:
    """The fast path; None when the page is not in the shape it can vouch for."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if (
        _CANONICAL_ROOT not in text[:300]
        or not text.rstrip().endswith("</ListBucketResult>")
        or text.count("<ListBucketResult") != 1
    ):
        return None
    entries = _CONTENTS.findall(text)
    # A key with an entity, a comment or CDATA anywhere breaks a match: the count tells.
    if len(entries) != text.count("<Contents>"):
        return None
    prefix_count = text.count("<CommonPrefixes>")
    prefixes = _COMMON_PREFIX.findall(text) if prefix_count else []
    if len(prefixes) != prefix_count:
        return None
    columns = [list(column) for column in zip(*entries, strict=True)] if entries else [[]] * 7
    keys, last_modified, etags, _, sizes, _, _ = columns
    found = _PAGE_FIELD.findall(text)
    fields = dict(found)
    if len(fields) != len(found):  # a page field given twice: not a page we can vouch for
        return None
    return _RawPage(
        keys=keys,
        last_modified=last_modified,
        etags=etags,
        sizes=sizes,
        common_prefixes=[_unescape(prefix) for prefix in prefixes],
        truncated=fields.get("IsTruncated"),
        encoding=fields.get("EncodingType"),
        next_token=_unescape(fields["NextContinuationToken"])
        if "NextContinuationToken" in fields
        else None,
        next_marker=_unescape(fields["NextMarker"]) if "NextMarker" in fields else None,
    )


def _unescape(text: str) -> str:
    return unescape(text, _XML_ENTITIES) if "&" in text else text


def _checked(raw: _RawPage) -> _RawPage:
    for name, values, pattern in (
        ("Size", raw.sizes, _SIZE_TEXT),
        ("LastModified", raw.last_modified, _TIMESTAMP_TEXT),
    ):
        bad = next((v for v in values if not re.fullmatch(pattern, v)), None)
        if bad is not None:
            raise ListingParseError(f"bad object entry: {name} {bad!r}")
    return raw


def _scan_tree(body: bytes) -> _RawPage:
    """The reference path: ElementTree, with a precise error for anything unreadable."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ListingParseError(f"malformed XML: {exc}") from None
    if root.tag == "Error":
        raise ListingParseError(f"S3 error {root.findtext('Code', '?')}")
    if root.tag != f"{S3_NAMESPACE}ListBucketResult":
        raise ListingParseError(f"unexpected root element {root.tag!r}")
    ns = S3_NAMESPACE
    entries = list(root.iterfind(f"{ns}Contents"))

    def column(tag: str) -> list[str]:
        return [entry.findtext(f"{ns}{tag}") or "" for entry in entries]

    return _RawPage(
        keys=column("Key"),
        last_modified=column("LastModified"),
        etags=[etag.strip('"') for etag in column("ETag")],
        sizes=column("Size"),
        common_prefixes=[
            node.text or "" for node in root.iterfind(f"{ns}CommonPrefixes/{ns}Prefix")
        ],
        truncated=root.findtext(f"{ns}IsTruncated"),
        encoding=root.findtext(f"{ns}EncodingType"),
        next_token=root.findtext(f"{ns}NextContinuationToken"),
        next_marker=root.findtext(f"{ns}NextMarker"),
    )


def _continuation(
    raw: _RawPage,
    decode: Callable[[str], str],
    last_key: str | None,
    common_prefixes: list[str],
    list_api: int,
) -> str | None:
    if list_api == 2:
        return raw.next_token
    # V1: S3 sends NextMarker only with a delimiter; otherwise continue from the last key.
    if raw.next_marker:
        return decode(raw.next_marker)
    candidates = [*common_prefixes[-1:], *([last_key] if last_key else [])]
    return max(candidates, default=None)


def _identity(text: str) -> str:
    return text


def _s3_error_code(body: bytes) -> str | None:
    try:
        return ET.fromstring(body).findtext("Code")
    except ET.ParseError:
        return None


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
