"""One ListObjectsV2 page, read into plain records: keys decoded, ETags unquoted, text as sent.

Parsing is the CPU hot path of a backfill. A page in S3's canonical shape is read with one
regular expression that also checks each field's format, and the match count is checked against
the number of entries. Anything else (errors, damage, an unusual but valid shape) goes through
ElementTree, which gives the precise error, and is checked field by field.
"""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import unquote_plus
from xml.sax.saxutils import unescape

S3_NAMESPACE = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# S3 returns at most this many entries per listing page, whatever max-keys asks for.
PAGE_SIZE = 1000


class ListingParseError(Exception):
    """The body of a listing is not a ListBucketResult we can read."""


@dataclass(frozen=True)
class ListingPage:
    """A page's objects as parallel columns of text, in key order, and where to go next.

    Columns rather than one record per object: a backfill reads ~2.8 million objects, and the
    prober turns the columns into one frame per page without touching each object.
    """

    keys: list[str]
    sizes: list[str]
    etags: list[str]
    last_modified: list[str]
    common_prefixes: list[str]
    is_truncated: bool
    continuation: str | None
    """The NextContinuationToken to ask for the next page with; None at the end."""
    prefix: str | None = None
    """The <Prefix> the page echoes (decoded); None when it echoes none."""
    encoding_type: str | None = None
    """The <EncodingType> the page echoes: "url" when its names came url-encoded."""

    def last_entry(self) -> str | None:
        """The greatest key or common prefix on the page: where the next page must start after."""
        ends = [entries[-1] for entries in (self.keys, self.common_prefixes) if entries]
        return max(ends, default=None)


@dataclass(frozen=True)
class _RawPage:
    """A listing page's fields as XML text (entity-decoded, not yet url-decoded)."""

    keys: list[str]
    last_modified: list[str]
    etags: list[str]
    sizes: list[str]
    common_prefixes: list[str]
    truncated: str | None
    encoding: str | None
    next_token: str | None
    prefix: str | None


def parse_listing(body: bytes) -> ListingPage:
    """Parse one ListObjectsV2 page, decoding the names of an `encoding-type=url` answer."""
    raw = _scan_canonical(body) or _checked(_scan_tree(body))
    decode = unquote_plus if raw.encoding == "url" else _identity
    # Most pages have nothing to decode (ASCII names): skip a thousand no-op calls.
    encoded = decode is not _identity and any("%" in key or "+" in key for key in raw.keys)
    if raw.truncated not in ("true", "false"):
        raise ListingParseError("missing IsTruncated")
    is_truncated = raw.truncated == "true"
    return ListingPage(
        keys=[decode(key) for key in raw.keys] if encoded else raw.keys,
        sizes=raw.sizes,
        etags=raw.etags,
        last_modified=raw.last_modified,
        common_prefixes=[decode(prefix) for prefix in raw.common_prefixes],
        is_truncated=is_truncated,
        continuation=raw.next_token if is_truncated else None,
        prefix=None if raw.prefix is None else decode(raw.prefix),
        encoding_type=raw.encoding,
    )


def page_problem(
    page: ListingPage,
    *,
    prefix: str,
    delimiter: str | None,
    after: str | None,
    previous_token: str | None,
) -> str | None:
    """Why `page` is no answer to a url-encoded listing of `prefix`, or None if it is one.

    S3 guarantees each of these; an answer that breaks one comes from something that is not
    S3 (a proxy, a CDN, a broken mirror), and trusting it would record its errors as data.
    `after` is the start-after of a first page or the previous page's last entry, and
    `previous_token` the continuation token this page was asked for with.
    """
    if page.encoding_type != "url":
        return "encoding-type=url asked for but not echoed"
    if page.prefix != prefix:
        return f"prefix {prefix!r} asked for, {page.prefix!r} echoed"
    misplaced = _misplaced(page, prefix, delimiter)
    if misplaced is not None:
        return misplaced
    for kind, entries in (("key", page.keys), ("common prefix", page.common_prefixes)):
        unordered = _unordered(entries)
        if unordered is not None:
            return f"{kind} {unordered!r} out of order"
    if page.is_truncated:
        if not page.continuation:
            return "truncated without a continuation token"
        if page.continuation == previous_token:
            return f"continuation token {page.continuation!r} repeats the previous one"
        if not page.keys and not page.common_prefixes:
            return "truncated with no key and no common prefix on it"
    starts = [entries[0] for entries in (page.keys, page.common_prefixes) if entries]
    first = min(starts, default=None)
    if first is not None and after is not None and first <= after:
        return f"{first!r} does not come after {after!r}"
    return None


def _unordered(entries: list[str]) -> str | None:
    """The first entry not strictly after the one before it, if any."""
    # sorted() on sorted input is one linear pass in C: a backfill checks millions of keys.
    if entries == sorted(entries) and len(set(entries)) == len(entries):
        return None
    return next(b for a, b in itertools.pairwise(entries) if b <= a)


def _misplaced(page: ListingPage, prefix: str, delimiter: str | None) -> str | None:
    """The first key or common prefix that a listing of `prefix` could not hold, named."""
    for key in page.keys:
        if not key.startswith(prefix):
            return f"key {key!r} outside {prefix!r}"
        if delimiter and delimiter in key[len(prefix) :]:
            return f"key {key!r} should have been rolled into a common prefix"
    for common in page.common_prefixes:
        name = common[len(prefix) : -len(delimiter)] if delimiter else ""
        if (
            not delimiter
            or not common.startswith(prefix)
            or not common.endswith(delimiter)
            or not name
            or delimiter in name
        ):
            return f"common prefix {common!r} is not one folder under {prefix!r}"
    return None


def s3_error_code(body: bytes) -> str | None:
    """The Code of an S3 <Error> document; None for anything else."""
    try:
        return ET.fromstring(body).findtext("Code")
    except ET.ParseError:
        return None


_CANONICAL_ROOT = f'<ListBucketResult xmlns="{S3_NAMESPACE[1:-1]}">'
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
_HEAD_PREFIX = re.compile(r"<Prefix>([^<]*)</Prefix>")
_PAGE_FIELD = re.compile(r"<(IsTruncated|EncodingType|NextContinuationToken)>([^<]*)</\1>")
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
    # The page's own <Prefix> stands before its entries in S3's order; anything else (none,
    # <Prefix/>, one after the entries) is left to the reference path.
    if text.count("<Prefix>") != prefix_count + 1:
        return None
    head_end = min(
        (at for at in (text.find("<Contents>"), text.find("<CommonPrefixes>")) if at >= 0),
        default=len(text),
    )
    echoed = _HEAD_PREFIX.search(text, 0, head_end)
    if echoed is None:
        return None
    found = _PAGE_FIELD.findall(text)
    fields = dict(found)
    if len(fields) != len(found):  # a page field given twice: not a page we can vouch for
        return None
    token = fields.get("NextContinuationToken")
    return _RawPage(
        keys=keys,
        last_modified=last_modified,
        etags=etags,
        sizes=sizes,
        common_prefixes=[_unescape(prefix) for prefix in prefixes],
        truncated=fields.get("IsTruncated"),
        encoding=fields.get("EncodingType"),
        next_token=None if token is None else _unescape(token),
        prefix=_unescape(echoed.group(1)),
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
        prefix=root.findtext(f"{ns}Prefix"),
    )


def _identity(text: str) -> str:
    return text
