"""Hand-written S3 ListObjects documents, shaped as the S3 API reference shows them."""

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
    next_marker: str | None = None,
    url_encode: bool = True,
    sizes: dict[str, int] | None = None,
) -> str:
    """A V2 page when `token` or nothing is given, V1 when `next_marker` is."""
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
        f"<NextMarker>{encode(next_marker)}</NextMarker>" if next_marker else "",
    ]
    parts += [contents(k, size=(sizes or {}).get(k, 1234), url_encode=url_encode) for k in keys]
    parts += [
        f"<CommonPrefixes><Prefix>{encode(p)}</Prefix></CommonPrefixes>" for p in common_prefixes
    ]
    parts.append("</ListBucketResult>")
    return "".join(parts)


def error(code: str, message: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>R1</RequestId></Error>"
    )
