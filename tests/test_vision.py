"""The listing client and parser: hand-made pages behind `responses` (pagination, errors,
damaged and unusual documents), and the emulator's own pages read through the in-process bucket."""

import datetime as dt
import socket
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from devtools.emulator.server import listing_body
from pipeline.vision import client as vision_client
from pipeline.vision import listing as vision_listing
from pipeline.vision.client import BackoffRetry, VisionClient, VisionError
from pipeline.vision.listing import ListingPage, ListingParseError, parse_listing
from tests.s3xml import NS, listing
from tests.support import LAYOUT, URL, dates, raw_http_server
from tests.support import s3_error as error

BASE = URL
LIST_URL = BASE + "/"
XML = {"content_type": "application/xml"}


def client(*, retries: int = 2) -> VisionClient:
    return VisionClient(BASE, timeout_s=5, retries=retries, backoff_s=0, pool_size=4)


def query(call) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(call.request.url).query).items()}


def btc_page() -> str:
    """A one-day page of BTCUSDT's folder, as S3 answers a listing of it."""
    return listing(keys_for("BTCUSDT", 1), prefix=LAYOUT.symbol_prefix("BTCUSDT"))


def keys_for(symbol: str, days: int, start: dt.date = dt.date(2020, 1, 1)) -> list[str]:
    prefix = LAYOUT.symbol_prefix(symbol)
    out = []
    for offset in range(days):
        name = f"{symbol}-1m-{start + dt.timedelta(days=offset)}.zip"
        out += [prefix + name, prefix + name + ".CHECKSUM"]
    return out


def test_layout_names_keys_and_parses_dates():
    assert LAYOUT.root == "data/futures/um/daily/klines/"
    assert LAYOUT.symbol_prefix("BTCUSDT") == "data/futures/um/daily/klines/BTCUSDT/1m/"
    key = "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02-29.zip"
    assert LAYOUT.start_after("BTCUSDT", dt.date(2024, 3, 1)) < key.replace("02-29", "03-01")
    assert LAYOUT.start_after("BTCUSDT", dt.date(2024, 3, 1)) > key + ".CHECKSUM"
    assert LAYOUT.day_of("BTCUSDT", key) == dt.date(2024, 2, 29)
    assert LAYOUT.day_of("BTCUSDT", key + ".CHECKSUM") is None
    assert LAYOUT.day_of("BTC", key) is None
    assert LAYOUT.symbol_of(LAYOUT.root + "BTCUSDT/") == "BTCUSDT"


@responses.activate
def test_v2_pagination_follows_continuation_tokens_across_1000_key_pages():
    keys = keys_for("BTCUSDT", 1100)  # 2200 keys: three pages
    prefix = LAYOUT.symbol_prefix("BTCUSDT")
    responses.get(
        LIST_URL, body=listing(keys[:1000], prefix=prefix, truncated=True, token="t1"), **XML
    )
    responses.get(
        LIST_URL, body=listing(keys[1000:2000], prefix=prefix, truncated=True, token="t2"), **XML
    )
    responses.get(LIST_URL, body=listing(keys[2000:], prefix=prefix), **XML)
    with client() as vision:
        pages = list(vision.iter_pages(prefix, start_after="S", subject="BTCUSDT"))
    assert [len(p.keys) for p in pages] == [1000, 1000, 200]
    assert [k for p in pages for k in p.keys] == keys
    sent = [query(call) for call in responses.calls]
    assert sent[0]["start-after"] == "S" and "continuation-token" not in sent[0]
    assert sent[1]["continuation-token"] == "t1" and "start-after" not in sent[1]
    assert sent[2]["continuation-token"] == "t2"
    assert all(q["list-type"] == "2" and q["encoding-type"] == "url" for q in sent)
    assert all(q["max-keys"] == "1000" and q["prefix"] == prefix for q in sent)
    assert vision.requests == 3 and vision.retries == 0


@responses.activate
def test_folders_are_listed_across_pages_by_continuation_token():
    root = LAYOUT.root
    first = listing(common_prefixes=[root + "AUSDT/"], prefix=root, truncated=True, token="t1")
    responses.get(LIST_URL, body=first, **XML)
    responses.get(LIST_URL, body=listing(common_prefixes=[root + "BUSDT/"], prefix=root), **XML)
    with client() as vision:
        found = vision.list_common_prefixes(root, subject="symbols")
    assert found == [root + "AUSDT/", root + "BUSDT/"]
    sent = [query(call) for call in responses.calls]
    assert [q.get("continuation-token") for q in sent] == [None, "t1"]
    assert all(q["delimiter"] == "/" and q["prefix"] == root for q in sent)


@responses.activate
def test_non_ascii_names_are_percent_encoded_and_decoded():
    symbol = "币安人生USDT"
    prefix = LAYOUT.symbol_prefix(symbol)
    keys = keys_for(symbol, 2)
    responses.get(LIST_URL, body=listing(keys, prefix=prefix), **XML)
    with client() as vision:
        page = vision.list_page(
            prefix, start_after=LAYOUT.start_after(symbol, dt.date(2020, 1, 1)), subject=symbol
        )
    assert page.keys == keys
    days = [LAYOUT.day_of(symbol, key) for key in page.keys[::2]]
    assert days == dates("2020-01-01", "2020-01-02")
    url = responses.calls[0].request.url
    assert "%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9F" in url  # 币安人生, UTF-8 percent-encoded
    assert query(responses.calls[0])["prefix"] == prefix


def test_parse_listing_without_url_encoding_reads_plain_xml_names():
    keys = ["data/futures/um/daily/klines/龙虾USDT/1m/龙虾USDT-1m-2026-01-01.zip"]
    page = parse_listing(listing(keys, url_encode=False, size=77).encode())
    assert page == ListingPage(
        keys=keys,
        sizes=["77"],
        etags=["abc123"],
        last_modified=["2024-01-02T03:04:05.000Z"],
        common_prefixes=[],
        is_truncated=False,
        continuation=None,
        prefix="",
    )


@responses.activate
def test_a_missing_bucket_is_an_error_naming_the_listing_url():
    responses.get(LIST_URL, status=404, body=error("NoSuchBucket"), **XML)
    with (
        client() as vision,
        pytest.raises(VisionError, match=r"failed \(HTTP 404 NoSuchBucket\) from"),
    ):
        vision.list_page(LAYOUT.symbol_prefix("BTCUSDT"), subject="BTCUSDT")


@responses.activate
def test_transient_503_slowdown_is_retried_and_counted():
    responses.get(LIST_URL, status=503, body=error("SlowDown"), **XML)
    responses.get(LIST_URL, status=500, body=error("InternalError"), **XML)
    responses.get(LIST_URL, body=btc_page(), **XML)
    with client(retries=3) as vision:
        page = vision.list_page(LAYOUT.symbol_prefix("BTCUSDT"), subject="BTCUSDT")
    assert len(page.keys) == 2
    assert len(responses.calls) == 3
    assert (vision.requests, vision.retries) == (3, 2)


@responses.activate
def test_a_connection_failure_that_outlasts_the_retries_is_one_line_with_the_url():
    responses.get(LIST_URL, body=requests.ConnectionError("reset"))
    with client(retries=1) as vision, pytest.raises(VisionError) as failure:
        vision.list_page(LAYOUT.symbol_prefix("BTCUSDT"), subject="BTCUSDT")
    assert str(failure.value).startswith(
        "BTCUSDT: listing failed after 1 retry (connection failed)"
    )
    assert (len(responses.calls), vision.requests, vision.retries) == (2, 2, 1)
    assert "https://s3.example.test/data.binance.vision/?list-type=2&prefix=data%2Ffutures" in str(
        failure.value
    )


@responses.activate
def test_persistent_failure_names_symbol_url_and_status():
    responses.get(LIST_URL, status=503, body=error("SlowDown"), **XML)
    with client(retries=2) as vision, pytest.raises(VisionError) as failure:
        vision.list_page(LAYOUT.symbol_prefix("BTCUSDT"), subject="BTCUSDT")
    message = str(failure.value)
    assert message.startswith(
        "BTCUSDT: listing failed after 2 retries (HTTP 503 SlowDown) from https://s3."
    )
    assert "prefix=data%2Ffutures%2Fum%2Fdaily%2Fklines%2FBTCUSDT%2F1m%2F" in message
    assert len(responses.calls) == 3
    assert "\n" not in message


@responses.activate
def test_403_is_not_retried():
    responses.get(LIST_URL, status=403, body=error("AccessDenied"), **XML)
    with (
        client(retries=3) as vision,
        pytest.raises(
            VisionError, match=r"^symbols: listing failed \(HTTP 403 AccessDenied\) from"
        ),
    ):
        vision.list_page("x/", subject="symbols")
    assert len(responses.calls) == 1


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (
            "<ListBucketResult xmlns=",
            "application/xml",
            "unreadable listing (HTTP 200, malformed XML",
        ),
        (
            error("InternalError"),
            "application/xml",
            "unreadable listing (HTTP 200, S3 error InternalError)",
        ),
        ("<html>gateway</html>", "text/html", "content type 'text/html', not XML"),
        (
            listing(keys_for("BTCUSDT", 1)).replace("<IsTruncated>false</IsTruncated>", ""),
            "application/xml",
            "missing IsTruncated",
        ),
        (
            listing(keys_for("BTCUSDT", 1)).replace("<Size>1234</Size>", "<Size>big</Size>"),
            "application/xml",
            "bad object entry",
        ),
    ],
)
@responses.activate
def test_unusable_200_answers_stop_with_the_symbol_and_url(body, content_type, message):
    responses.get(LIST_URL, body=body, content_type=content_type)
    with client() as vision, pytest.raises(VisionError) as failure:
        vision.list_page(LAYOUT.symbol_prefix("BTCUSDT"), subject="BTCUSDT")
    assert str(failure.value).startswith("BTCUSDT: ")
    assert message in str(failure.value)
    assert BASE in str(failure.value)


def canonical_pages() -> list[str]:
    keys = [*keys_for("BTCUSDT", 3), "data/futures/um/daily/klines/A B+USDT/1m/x.zip"]
    return [
        listing(keys, truncated=True, token="tok&amp;1"),
        listing(keys_for("币安人生USDT", 2), url_encode=False),
        listing(common_prefixes=["data/a/", "data/b c/"], truncated=True, token="data/b c/"),
        listing([]),
        # S3 adds ChecksumAlgorithm between ETag and Size for newer uploads.
        listing(keys).replace("</ETag>", "</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm>"),
        # Pretty-printed XML, as some S3-compatible servers send.
        listing(keys).replace("><", ">\n  <"),
    ]


@pytest.mark.parametrize("body", canonical_pages())
def test_fast_scan_agrees_with_the_elementtree_reference(body, monkeypatch):
    assert vision_listing._scan_canonical(body.encode()) is not None
    fast = parse_listing(body.encode())
    monkeypatch.setattr(vision_listing, "_scan_canonical", lambda _body: None)
    assert parse_listing(body.encode()) == fast


def test_keys_with_xml_entities_take_the_reference_path_and_come_back_whole():
    keys = ["data/a&b/x.zip", "data/a<b/y.zip"]
    body = listing(keys, url_encode=False).encode()
    assert vision_listing._scan_canonical(body) is None
    assert parse_listing(body).keys == keys


@pytest.mark.parametrize(
    "body",
    [
        listing(keys_for("BTCUSDT", 3))[:-200],  # cut mid-entry: no closing root
        listing(keys_for("BTCUSDT", 3)).replace("<Size>1234</Size>", "<Size>1234</Sze>", 1),
    ],
)
def test_damaged_pages_fall_back_to_the_reference_parser_and_fail(body):
    assert vision_listing._scan_canonical(body.encode()) is None
    with pytest.raises(ListingParseError, match="malformed XML"):
        parse_listing(body.encode())


NS_ROOT = f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NS}">'
ENCODED = "data/futures/um/daily/klines/%E5%B8%81USDT/1m/%E5%B8%81USDT-1m-2024-01-01.zip"


def entry(key: str, extra: str = "") -> str:
    return (
        f"<Contents><Key>{key}</Key><LastModified>2024-01-02T03:04:05.000Z</LastModified>"
        f"<ETag>&quot;e&quot;</ETag>{extra}<Size>5</Size></Contents>"
    )


def outcome(body: bytes) -> object:
    try:
        page = parse_listing(body)
    except ListingParseError as exc:
        return f"error: {str(exc).split(':')[0]}"
    return page


@pytest.mark.parametrize(
    "body",
    [
        # The response syntax in S3's reference puts some page fields after the entries.
        NS_ROOT
        + "<IsTruncated>true</IsTruncated>"
        + entry(ENCODED)
        + "<EncodingType>url</EncodingType><NextContinuationToken>T</NextContinuationToken>"
        "</ListBucketResult>",
        NS_ROOT
        + "<IsTruncated>false</IsTruncated>"
        + entry(ENCODED).replace("</ETag>", "</ETag><StorageClass>X</Bogus>")
        + "</ListBucketResult>",
        NS_ROOT
        + "<IsTruncated>false</IsTruncated>"
        + entry("k")[: -len("</Contents>")]
        + "</ListBucketResult>",
        NS_ROOT
        + "<IsTruncated>false</IsTruncated>"
        + entry("k")
        + "</ListBucketResult>"
        + NS_ROOT
        + "<IsTruncated>true</IsTruncated></ListBucketResult>",
        NS_ROOT + "<IsTruncated>false</IsTruncated>" + entry("a\r\nb") + "</ListBucketResult>",
        NS_ROOT
        + "<IsTruncated>true</IsTruncated><NextContinuationToken>A</NextContinuationToken>"
        + entry("k")
        + "<NextContinuationToken>B</NextContinuationToken></ListBucketResult>",
        NS_ROOT
        + "<IsTruncated>false</IsTruncated>"
        + entry("k").replace("</Size>", "</Size><Owner><ID>x</ID></Owner>")
        + "</ListBucketResult>",
    ],
    ids=["fields-after", "mismatched-tag", "unclosed", "two-roots", "crlf-key", "twice", "owner"],
)
def test_unusual_or_damaged_pages_read_exactly_as_the_reference_parser_reads_them(
    body, monkeypatch
):
    fast = outcome(body.encode())
    monkeypatch.setattr(vision_listing, "_scan_canonical", lambda _body: None)
    assert fast == outcome(body.encode())


def test_the_first_retry_already_backs_off_and_retry_after_is_capped():
    retry = BackoffRetry(backoff_factor=0.5, backoff_jitter=0, backoff_max=4, retry_after_cap=3)
    assert retry.get_backoff_time() == 0
    waits = []
    for _ in range(5):
        retry = retry.new(history=(*retry.history, None))
        waits.append(retry.get_backoff_time())
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert retry.parse_retry_after("3600") == 3
    assert retry.parse_retry_after("1") == 1


@pytest.fixture
def flaky_server():
    """A raw HTTP server: the first `cut` answers break off mid-body, then a real page."""
    state = {"cut": 0, "served": 0}
    body = btc_page().encode()

    def answer(conn: socket.socket, served: int) -> None:
        state["served"] = served
        with conn:
            conn.recv(65536)
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            cut = served <= state["cut"]
            conn.sendall(head.encode() + (body[:50] if cut else body))

    with raw_http_server(answer) as url:
        yield url, state


def test_a_response_cut_short_midway_is_retried(flaky_server):
    url, state = flaky_server
    state["cut"] = 2
    with VisionClient(url, timeout_s=5, retries=3, backoff_s=0, pool_size=1) as client:
        page = client.list_page(LAYOUT.symbol_prefix("BTCUSDT"), subject="BTCUSDT")
    assert len(page.keys) == 2
    assert (state["served"], client.requests, client.retries) == (3, 3, 2)


def test_a_response_always_cut_short_fails_after_the_retries(flaky_server):
    url, state = flaky_server
    state["cut"] = 99
    expected = (
        r"^BTCUSDT: listing failed after 2 retries \(HTTP 200, response cut short\) from http://127"
    )
    with (
        VisionClient(url, timeout_s=5, retries=2, backoff_s=0, pool_size=1) as client,
        pytest.raises(VisionError, match=expected),
    ):
        client.list_page(LAYOUT.symbol_prefix("BTCUSDT"), subject="BTCUSDT")
    assert state["served"] == 3


@responses.activate
def test_retry_after_is_honoured_up_to_the_cap(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(vision_client.time, "sleep", waits.append)
    throttled = {"status": 503, "body": error("SlowDown"), **XML}
    responses.get(LIST_URL, headers={"Retry-After": "2"}, **throttled)
    responses.get(LIST_URL, headers={"Retry-After": "3600"}, **throttled)
    responses.get(LIST_URL, body=btc_page(), **XML)
    with client(retries=3) as throttled_client:
        throttled_client.list_page(LAYOUT.symbol_prefix("BTCUSDT"), subject="BTCUSDT")
    assert waits == [2, 5]  # the second is capped at probe.timeout_s
    assert (throttled_client.requests, throttled_client.retries) == (3, 2)


@pytest.fixture
def black_hole():
    """A server that accepts connections and never answers: a dead endpoint."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/data.binance.vision"
    listener.close()


def test_a_dead_endpoint_fails_within_timeout_times_retries(black_hole):
    # Unbounded, 5 attempts of 0.25 s with backoffs of 0.2 to 1.6 s would take over 4 s; the
    # budget is 0.25 s x 4 retries, so the client gives up once the next wait would pass it.
    with (
        VisionClient(black_hole, timeout_s=0.25, retries=4, backoff_s=0.2, pool_size=1) as dead,
        pytest.raises(VisionError) as failure,
    ):
        dead.list_page(LAYOUT.symbol_prefix("BTCUSDT"), subject="BTCUSDT")
    message = str(failure.value)
    # How many retries fit depends on the machine's load; that the budget ends them does not.
    assert message.startswith("BTCUSDT: listing failed ")
    assert "(timed out, out of the 1s retry budget) from http://127.0.0.1:" in message
    assert dead.requests < 5


# The emulator's pages, as the in-process bucket answers them.


def test_the_emulators_pages_are_read_whole_across_its_continuation_tokens(empty_bucket):
    empty_bucket.add_days("币安人生USDT", "2020-01-01", "2023-01-04")  # 1100 days: 3 pages
    prefix = LAYOUT.symbol_prefix("币安人生USDT")
    with client() as vision:
        pages = list(vision.iter_pages(prefix, subject="币安人生USDT"))
    assert [len(page.keys) for page in pages] == [1000, 1000, 200]
    universe = empty_bucket.universe
    listed = [key for page in pages for key in page.keys]
    assert listed == [
        empty_bucket.key("币安人生USDT", str(day)) + suffix
        for day in dates("2020-01-01", "2023-01-04")
        for suffix in ("", ".CHECKSUM")
    ]
    metas = [universe.meta(key) for key in listed]
    assert [size for page in pages for size in page.sizes] == [str(m.size) for m in metas]
    assert [etag for page in pages for etag in page.etags] == [m.etag for m in metas]
    assert [s for page in pages for s in page.last_modified] == [
        m.last_modified.strftime("%Y-%m-%dT%H:%M:%S.000Z") for m in metas
    ]
    tokens = [q.get("continuation-token") for q in empty_bucket.queries]
    assert tokens == [None, pages[0].continuation, pages[1].continuation]
    assert pages[-1].continuation is None


@pytest.mark.parametrize("encoding", [["url"], []], ids=["url-encoded", "plain"])
def test_the_emulators_pages_take_the_fast_path_and_read_as_the_reference_does(
    empty_bucket, monkeypatch, encoding
):
    empty_bucket.add_days("A B+USDT", "2024-01-01", "2024-01-03")
    empty_bucket.add_days("币安人生USDT", "2024-01-01", "2024-01-03")
    queries = [
        {"list-type": ["2"], "prefix": [LAYOUT.root], "delimiter": ["/"], "max-keys": ["1"]},
        {"list-type": ["2"], "prefix": [LAYOUT.symbol_prefix("A B+USDT")]},
        {"list-type": ["2"], "prefix": [LAYOUT.symbol_prefix("币安人生USDT")], "max-keys": ["3"]},
    ]
    bodies = [
        listing_body(empty_bucket.universe, {**q, "encoding-type": encoding} if encoding else q)
        for q in queries
    ]
    assert all(vision_listing._scan_canonical(body) is not None for body in bodies)
    fast = [parse_listing(body) for body in bodies]
    monkeypatch.setattr(vision_listing, "_scan_canonical", lambda _body: None)
    assert [parse_listing(body) for body in bodies] == fast
    assert fast[0].common_prefixes == [LAYOUT.root + "A B+USDT/"] and fast[0].is_truncated
    assert fast[1].keys[0] == empty_bucket.key("A B+USDT", "2024-01-01")
    assert fast[2].keys[2] == empty_bucket.key("币安人生USDT", "2024-01-02")
