"""Hand-written S3 ListObjectsV2 documents, shaped as the S3 API reference shows them.

For the parser's and the client's unit tests, which need pages the emulator never sends:
chosen tokens, damaged or unusual documents. Every other test lists the in-process bucket.
"""

from __future__ import annotations

from urllib.parse import quote
from xml.sax.saxutils import escape

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def contents(key: str, *, size: int = 1234, etag: str = "abc123", url_encode: bool) -> str:
    shown = quote(key, safe="/") if url_encode else escape(key)
    return (
        f"<Contents><Key>{shown}</Key><LastModified>2024-01-02T03:04:05.000Z</LastModified>"
        f"<ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
    )


def listing(
    keys: list[str] = (),  # type: ignore[assignment]
    *,
    prefix: str = "",
    common_prefixes: list[str] = (),  # type: ignore[assignment]
    truncated: bool = False,
    token: str | None = None,
    url_encode: bool = True,
    size: int = 1234,
) -> str:
    """A ListObjectsV2 page of `keys` (each of `size` bytes) and `common_prefixes`."""
    encode = (lambda s: quote(s, safe="/")) if url_encode else escape
    parts = [
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NS}">',
        "<Name>data.binance.vision</Name>",
        f"<Prefix>{encode(prefix)}</Prefix>",
        f"<KeyCount>{len(keys) + len(common_prefixes)}</KeyCount>",
        "<MaxKeys>1000</MaxKeys>",
        "<EncodingType>url</EncodingType>" if url_encode else "",
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
        f"<NextContinuationToken>{token}</NextContinuationToken>" if token else "",
    ]
    parts += [contents(k, size=size, url_encode=url_encode) for k in keys]
    parts += [
        f"<CommonPrefixes><Prefix>{encode(p)}</Prefix></CommonPrefixes>" for p in common_prefixes
    ]
    parts.append("</ListBucketResult>")
    return "".join(parts)
