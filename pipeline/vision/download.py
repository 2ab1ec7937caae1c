"""Verified downloads: a file's bytes, checked against what the listing said the file is.

The listing gives each key's size and ETag. For a single-part upload (every kline zip: they are
a few kB) the ETag is the MD5 of the bytes, so size + MD5 verify the body end to end against
S3's own record, and a .CHECKSUM adds nothing. A multipart ETag ("<hex>-<parts>") is no digest
of the bytes: then the .CHECKSUM file's SHA-256 is what verifies them. `checksums="always"`
fetches the .CHECKSUM for every file, one more GET each: it doubles the GETs of a download.

Before the body is read, the answer itself must be the file: status 200, and a Content-Length
or ETag header, when sent, that agrees with the listing (a proxy's 200 HTML page, or another
object, is refused). A file that fails verification is fetched once more (a transfer corrupted
on the way, a proxy's stale copy); a second failure is a VerificationError naming the key and
what differed, and nothing of it is returned.

A file GET without a listing (`fetch_unlisted`: a day the availability dataset says has files)
is verified against what S3 says in the answer instead: its Content-Length must be the body's
length and its ETag, when single-part, the body's MD5 (multipart: the .CHECKSUM's SHA-256);
an answer without either header cannot be verified and is refused. Those headers are then the
file's size and ETag, as a listing would show them. S3's 404 NoSuchKey means the file is not
out yet: no error, None.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

from pipeline.config import CHECKSUM_POLICIES, ChecksumPolicy
from pipeline.errors import PipelineError
from pipeline.vision.client import ObjectAnswer, VisionClient, VisionError
from pipeline.vision.layout import checksum_key, file_name
from pipeline.vision.listing import s3_error_code

_T = TypeVar("_T")
_SINGLE_PART_ETAG = re.compile(r"[0-9a-f]{32}")
_MULTIPART_ETAG = re.compile(r"[0-9a-f]{32}-[1-9][0-9]*")
# "<sha256 hex>  <file name>", as sha256sum writes it ("*" before the name: binary mode).
_CHECKSUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](\S+)\n?")
# A .CHECKSUM is one short line; anything much longer is not one.
CHECKSUM_MAX_BYTES = 1024


class DownloadError(PipelineError):
    """A listed file could not be fetched: a final error status, or retries spent."""


class VerificationError(DownloadError):
    """A file's bytes (or its answer's headers) differ from what the listing said it is."""


@dataclass(frozen=True)
class ListedFile:
    """A file as its listing showed it: the bytes fetched must be exactly these."""

    key: str
    size: int
    etag: str
    """Bare hex, as listed ("<md5>" or, for a multipart upload, "<hex>-<parts>")."""

    @property
    def multipart(self) -> bool:
        return _MULTIPART_ETAG.fullmatch(self.etag) is not None


@dataclass(frozen=True)
class UnlistedFile(ListedFile):
    """A file fetched without a listing: its verified bytes, and its size and ETag as its
    answer's headers gave them (what a listing shows)."""

    body: bytes


@dataclass
class DownloadCounts:
    """What a Downloader did, for the stage's metrics (requests and retries are the client's)."""

    files: int = 0
    """Files returned, verified."""
    file_gets: int = 0
    """Answered GETs of files (a refetch counts again)."""
    checksum_gets: int = 0
    refetches: int = 0
    """Files fetched a second time after failing verification once."""
    bytes: int = 0
    """Bytes of the files returned."""
    unlisted_gets: int = 0
    """Answered GETs of files not listed (part of file_gets; a 404 counts)."""
    not_found: int = 0
    """Files not listed whose GET found none (S3's 404 NoSuchKey): pending."""
    multipart: int = 0
    """Files returned whose ETag is multipart (each verified by its .CHECKSUM)."""


class Downloader:
    """Fetches listed files from `download_url` over a VisionClient's session and retries.

    Thread-safe, like the client: workers share one Downloader.
    """

    def __init__(
        self, client: VisionClient, download_url: str, *, checksums: ChecksumPolicy = "multipart"
    ) -> None:
        if checksums not in CHECKSUM_POLICIES:
            raise ValueError(f"checksums must be one of {CHECKSUM_POLICIES}, not {checksums!r}")
        self.client = client
        self.download_url = download_url.rstrip("/")
        self.checksums = checksums
        self.counts = DownloadCounts()
        self._lock = threading.Lock()

    def url(self, key: str) -> str:
        return f"{self.download_url}/{quote(key, safe='/')}"

    def fetch(self, listed: ListedFile) -> bytes:
        """The file's bytes, verified (module docstring); raises DownloadError otherwise."""
        _check_etag_format(listed)
        body = self._twice(listed.key, lambda: self._fetch_verified(listed))
        self._count(files=1, bytes=len(body), multipart=int(listed.multipart))
        return body

    def fetch_unlisted(self, key: str) -> UnlistedFile | None:
        """The file at `key`, verified against its answer's headers (module docstring); None
        when S3 answers 404 NoSuchKey. Raises DownloadError otherwise."""
        found = self._twice(key, lambda: self._fetch_unlisted(key))
        if found is None:
            self._count(not_found=1)
            return None
        self._count(files=1, bytes=len(found.body), multipart=int(found.multipart))
        return found

    def _twice(self, key: str, fetch: Callable[[], _T]) -> _T:
        """`fetch`, and once more if what came failed verification: a transfer can be damaged
        on the way; a second failure is the file's, and an error naming it."""
        try:
            return fetch()
        except VerificationError as first:
            self._count(refetches=1)
            try:
                return fetch()
            except VerificationError as second:
                raise VerificationError(_both_failures(key, first, second)) from None

    def _fetch_unlisted(self, key: str) -> UnlistedFile | None:
        answer = self._get(key)
        self._count(file_gets=1, unlisted_gets=1)
        if answer.status == 404 and s3_error_code(answer.body) == "NoSuchKey":
            return None
        announced = announced_file(key, answer)
        check_body(announced, answer.body, size_from="Content-Length")
        if self.checksums == "always" or announced.multipart:
            check_sha256(announced, answer.body, self._checksum(announced))
        return UnlistedFile(key, announced.size, announced.etag, answer.body)

    def _fetch_verified(self, listed: ListedFile) -> bytes:
        answer = self._get(listed.key)
        self._count(file_gets=1)
        check_answer(listed, answer)
        check_body(listed, answer.body)
        if self.checksums == "always" or listed.multipart:
            check_sha256(listed, answer.body, self._checksum(listed))
        return answer.body

    def _checksum(self, listed: ListedFile) -> str:
        """The SHA-256 the .CHECKSUM beside `listed` gives for it."""
        key = checksum_key(listed.key)
        answer = self._get(key)
        self._count(checksum_gets=1)
        if answer.status != 200:
            raise DownloadError(
                f"{key}: HTTP {answer.status} from {answer.url}; "
                f"the .CHECKSUM verifying {file_name(listed.key)} could not be fetched"
            )
        return parse_checksum(key, answer.body, file_name(listed.key))

    def _get(self, key: str) -> ObjectAnswer:
        try:
            return self.client.get_object(self.url(key), subject=key)
        except VisionError as exc:
            raise DownloadError(str(exc)) from None

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, amount in increments.items():
                setattr(self.counts, name, getattr(self.counts, name) + amount)


def check_answer(listed: ListedFile, answer: ObjectAnswer) -> None:
    """The answer must be the listed file: status 200, and headers that agree with the listing."""
    key = listed.key
    if answer.status != 200:
        raise DownloadError(
            f"{key}: HTTP {answer.status} from {answer.url}; it was listed "
            "(removed since? check vision.download_url and any proxy in front of it)"
        )
    _refuse_html_page(key, answer)
    length = _content_length(answer)
    if length is not None and length != str(listed.size):
        raise VerificationError(f"{key}: Content-Length {length} != listed size {listed.size}")
    etag = answer.headers.get("ETag")
    if etag is not None and bare_etag(etag) != listed.etag:
        raise VerificationError(
            f"{key}: ETag {bare_etag(etag)} != listed ETag {listed.etag} "
            "(a different object: re-uploaded since it was listed?)"
        )


def announced_file(key: str, answer: ObjectAnswer) -> ListedFile:
    """The file an answer to the GET of an unlisted `key` says it carries: its Content-Length
    and ETag headers, which must be there (nothing else can verify the body)."""
    if answer.status != 200:
        raise DownloadError(
            f"{key}: HTTP {answer.status} from {answer.url}, not the file nor S3's NoSuchKey "
            "(check vision.download_url and any proxy in front of it)"
        )
    _refuse_html_page(key, answer)
    encoding = answer.headers.get("Content-Encoding")
    if encoding is not None:
        raise VerificationError(
            f"{key}: sent with Content-Encoding {encoding!r}: its Content-Length is not the "
            "file's size, which cannot be verified"
        )
    length = answer.headers.get("Content-Length", "").strip()
    if not length.isdigit():
        shown = "no Content-Length header" if not length else f"Content-Length {length!r}"
        raise VerificationError(f"{key}: {shown}: its size cannot be verified")
    etag = answer.headers.get("ETag")
    if etag is None or not bare_etag(etag):
        raise VerificationError(f"{key}: no ETag header: its bytes cannot be verified")
    announced = ListedFile(key=key, size=int(length), etag=bare_etag(etag))
    _check_etag_format(announced)
    return announced


def _refuse_html_page(key: str, answer: ObjectAnswer) -> None:
    """A 200 carrying an HTML page is a proxy's or a portal's answer, never a zip."""
    content_type = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type == "text/html":
        raise VerificationError(
            f"{key}: HTTP 200 with an HTML page, not the file, from {answer.url}; "
            "check vision.download_url and any proxy in front of it"
        )


def _content_length(answer: ObjectAnswer) -> str | None:
    """The Content-Length of the bytes as stored; None when not sent, or not theirs (a body
    sent with a Content-Encoding has its encoded length there)."""
    if "Content-Encoding" in answer.headers:
        return None
    length = answer.headers.get("Content-Length")
    return None if length is None else length.strip()


def check_body(listed: ListedFile, body: bytes, *, size_from: str = "listed") -> None:
    """Size, and MD5 where the ETag is one; `size_from` names where the size was read."""
    if len(body) != listed.size:
        raise VerificationError(f"{listed.key}: size {len(body)} != {size_from} {listed.size}")
    if listed.multipart:
        return
    md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
    if md5 != listed.etag:
        raise VerificationError(f"{listed.key}: md5 {md5} != ETag {listed.etag}")


def check_sha256(listed: ListedFile, body: bytes, expected: str) -> None:
    sha256 = hashlib.sha256(body).hexdigest()
    if sha256 != expected:
        raise VerificationError(f"{listed.key}: sha256 {sha256} != CHECKSUM {expected}")


def parse_checksum(key: str, body: bytes, name: str) -> str:
    """The SHA-256 (lower-case hex) a .CHECKSUM body gives for the file `name`."""
    text = body[:CHECKSUM_MAX_BYTES].decode("utf-8", errors="replace")
    match = _CHECKSUM_LINE.fullmatch(text) if len(body) <= CHECKSUM_MAX_BYTES else None
    if match is None:
        raise VerificationError(
            f"{key}: not a CHECKSUM file (expected '<sha256>  {name}', got {text[:80]!r})"
        )
    if match.group(2) != name:
        raise VerificationError(f"{key}: CHECKSUM names {match.group(2)!r}, not {name!r}")
    return match.group(1).lower()


def bare_etag(header: str) -> str:
    """An ETag header's value without quotes (or a weak validator's W/), lower-case."""
    value = header.strip()
    value = value.removeprefix("W/")
    return value.strip('"').lower()


def _check_etag_format(listed: ListedFile) -> None:
    """A listed ETag must be a digest we can check, or a multipart one: else nothing verifies."""
    if _SINGLE_PART_ETAG.fullmatch(listed.etag) or listed.multipart:
        return
    raise VerificationError(
        f"{listed.key}: listed ETag {listed.etag!r} is neither an MD5 nor a multipart ETag"
    )


def _both_failures(key: str, first: VerificationError, second: VerificationError) -> str:
    """One line for a file that failed verification on both GETs."""
    if str(first) == str(second):
        return f"{second} (on a second GET too)"
    return f"{second} (first GET: {str(first).removeprefix(key + ': ')})"
