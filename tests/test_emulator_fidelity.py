"""The emulator lists like S3: compared page by page with moto's S3 server on the same keys.

Object contents, ETags and sizes differ between the two (moto stores what we upload); only the
listing structure is compared: keys per page, page boundaries, IsTruncated, CommonPrefixes,
continuation, and key encoding. Where moto is known to depart from documented S3 (see
/work/shared/reference/README.md), the emulator is checked against the S3 documentation.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, replace
from urllib.parse import unquote_plus

import pytest
import requests

from devtools.emulator import BUCKET, Emulator, Universe

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")
moto_core = pytest.importorskip("moto.core")
moto_s3 = pytest.importorskip("moto.s3.models")
DEFAULT_ACCOUNT_ID = moto_core.DEFAULT_ACCOUNT_ID
s3_backends = moto_s3.s3_backends

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
ROOT = "data/futures/um/daily/klines/"
BTC = ROOT + "BTCUSDT/1m/"
NON_ASCII = ROOT + "币安人生USDT/1m/"


@pytest.fixture(scope="module")
def universe() -> Universe:
    """A few symbols: BTCUSDT alone holds more than 1000 keys."""
    return Universe.from_dict(
        {
            "today": "2021-03-01",
            "symbols": {
                "BTCUSDT": {"spans": [["2019-09-25", None]], "missing": ["2020-03-12"]},
                "BTCUSDT_210326": {"spans": [["2020-12-25", "2021-03-26"]]},
                "ETHUSDT": {"spans": [["2021-02-01", None]], "missing": ["2021-02-14"]},
                "币安人生USDT": {"spans": [["2021-02-10", None]]},
                "1000SHIBUSDT": {"spans": [["2021-02-20", "2021-02-24"]]},
            },
        }
    )


def bucket_keys(universe: Universe) -> list[str]:
    """The intervals' and the 1d klines' daily files, and the monthly 1d files."""
    keys = []
    for symbol in universe.symbols:
        for interval in ("1m", "1d"):
            for day in universe.available_dates(symbol):
                zip_key = f"{ROOT}{symbol}/{interval}/{symbol}-{interval}-{day}.zip"
                keys += [zip_key, zip_key + ".CHECKSUM"]
    for symbol in universe.specs:
        for month in universe.kline_months(symbol):
            zip_key = f"{universe.monthly_root}{symbol}/1d/{symbol}-1d-{month}.zip"
            keys += [zip_key, zip_key + ".CHECKSUM"]
    return keys


@pytest.fixture(scope="module")
def moto_url(universe: Universe) -> Iterator[str]:
    """moto's S3 server on loopback, holding the universe's keys (with placeholder bodies)."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.setenv(name, "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            port = server.get_host_and_port()[1]
            url = f"http://127.0.0.1:{port}"
            s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            # The server runs in this process: its backend takes the keys directly (a put over
            # HTTP costs milliseconds, seconds for the ~1,300 keys).
            backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
            for key in bucket_keys(universe):
                backend.put_object(BUCKET, key, b"x")
            assert s3.list_objects_v2(Bucket=BUCKET, MaxKeys=1)["KeyCount"] == 1
            yield f"{url}/{BUCKET}"
        finally:
            server.stop()


@pytest.fixture(scope="module")
def emulator_url(universe: Universe) -> Iterator[str]:
    with Emulator(universe) as emulator:
        yield emulator.listing_url


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@dataclass(frozen=True)
class Listing:
    """What a client can rely on in one page; tokens are opaque, so only their presence."""

    prefix: str
    keys: tuple[str, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    key_count: int | None
    has_next_token: bool
    next_marker: str | None
    next_token: str | None

    def structure(self) -> Listing:
        """The page without the parts that are opaque or differ by design."""
        return replace(self, next_marker=None, next_token=None)


def parse_listing(body: bytes) -> Listing:
    """The single parser both servers' pages go through."""
    root = ET.fromstring(body)
    assert root.tag == f"{NS}ListBucketResult"
    decode = unquote_plus if root.findtext(f"{NS}EncodingType") == "url" else str

    def text(tag: str) -> str | None:
        value = root.findtext(f"{NS}{tag}")
        return None if value is None else decode(value)

    key_count = root.findtext(f"{NS}KeyCount")
    return Listing(
        prefix=text("Prefix") or "",
        keys=tuple(decode(e.text or "") for e in root.iterfind(f"{NS}Contents/{NS}Key")),
        common_prefixes=tuple(
            decode(e.text or "") for e in root.iterfind(f"{NS}CommonPrefixes/{NS}Prefix")
        ),
        is_truncated=root.findtext(f"{NS}IsTruncated") == "true",
        key_count=None if key_count is None else int(key_count),
        has_next_token=root.find(f"{NS}NextContinuationToken") is not None,
        next_marker=text("NextMarker"),
        next_token=root.findtext(f"{NS}NextContinuationToken"),
    )


def fetch(http: requests.Session, url: str, params: dict[str, str]) -> tuple[Listing, str]:
    response = http.get(url, params=params, timeout=30)
    assert response.status_code == 200, response.text
    return parse_listing(response.content), response.text


def walk_v2(http: requests.Session, url: str, params: dict[str, str]) -> list[Listing]:
    pages = []
    query = {"list-type": "2", **params}
    while True:
        page, _ = fetch(http, url, query)
        pages.append(page)
        if not page.is_truncated:
            return pages
        assert page.next_token, "a truncated V2 page must carry NextContinuationToken"
        query = {"list-type": "2", **params, "continuation-token": page.next_token}


def walk_v1_by_last_key(http: requests.Session, url: str, params: dict[str, str]) -> list[Listing]:
    """V1 without a delimiter, continued as the S3 docs say: from the last key returned."""
    pages = []
    query = dict(params)
    while True:
        page, _ = fetch(http, url, query)
        pages.append(page)
        if not page.is_truncated:
            return pages
        query = {**params, "marker": page.keys[-1]}


V2_CASES = [
    pytest.param({"prefix": BTC}, id="symbol-over-1000-keys"),
    pytest.param({"prefix": BTC, "max-keys": "333"}, id="symbol-small-pages"),
    pytest.param({"prefix": ""}, id="whole-bucket"),
    pytest.param({"prefix": ROOT, "delimiter": "/"}, id="symbols"),
    pytest.param({"prefix": ROOT, "delimiter": "/", "max-keys": "2"}, id="symbols-2-per-page"),
    pytest.param({"prefix": ROOT + "BTCUSDT", "delimiter": "/"}, id="partial-symbol-name"),
    pytest.param({"prefix": "data/", "delimiter": "/"}, id="intermediate-folder"),
    pytest.param({"prefix": BTC + "BTCUSDT-1m-2020-0", "delimiter": "-"}, id="delimiter-in-names"),
    pytest.param({"prefix": BTC, "start-after": BTC + "BTCUSDT-1m-2020-06-15.zip"}, id="start-mid"),
    pytest.param(
        {"prefix": ROOT, "delimiter": "/", "start-after": BTC + "BTCUSDT-1m-2020-06-15.zip"},
        id="start-inside-common-prefix",
    ),
    pytest.param({"prefix": NON_ASCII}, id="non-ascii"),
    pytest.param({"prefix": NON_ASCII, "encoding-type": "url"}, id="non-ascii-url-encoded"),
    pytest.param({"prefix": ROOT, "delimiter": "/", "encoding-type": "url"}, id="prefixes-encoded"),
    pytest.param({"prefix": "data/spot/"}, id="unknown-prefix"),
]


@pytest.mark.parametrize("params", V2_CASES)
def test_v2_pages_match_moto(
    http: requests.Session, moto_url: str, emulator_url: str, params: dict[str, str]
) -> None:
    ours = walk_v2(http, emulator_url, params)
    theirs = walk_v2(http, moto_url, params)
    assert [p.structure() for p in ours] == [p.structure() for p in theirs]


def test_v2_walks_cross_the_page_boundary_once(
    http: requests.Session, emulator_url: str, universe: Universe
) -> None:
    pages = walk_v2(http, emulator_url, {"prefix": BTC})
    keys = [key for page in pages for key in page.keys]
    assert [len(page.keys) for page in pages] == [1000, len(keys) - 1000]
    assert keys == sorted(set(keys)) == [k for k in bucket_keys(universe) if k.startswith(BTC)]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"prefix": BTC}, id="symbol-over-1000-keys"),
        pytest.param({"prefix": BTC, "max-keys": "400"}, id="symbol-small-pages"),
        pytest.param({"prefix": "", "marker": BTC + "BTCUSDT-1m-2021-01-01.zip"}, id="marker"),
        pytest.param({"prefix": NON_ASCII}, id="non-ascii"),
        pytest.param({"prefix": NON_ASCII, "encoding-type": "url"}, id="non-ascii-url-encoded"),
    ],
)
def test_v1_key_pages_match_moto(
    http: requests.Session, moto_url: str, emulator_url: str, params: dict[str, str]
) -> None:
    ours = walk_v1_by_last_key(http, emulator_url, params)
    theirs = walk_v1_by_last_key(http, moto_url, params)
    assert [p.structure() for p in ours] == [p.structure() for p in theirs]
    # Documented S3: no NextMarker without a delimiter. moto departs here and sends an opaque
    # one on truncated pages, so the emulator is held to the S3 documentation instead.
    assert all(page.next_marker is None for page in ours)


def test_v1_with_delimiter_counts_common_prefixes_like_s3(
    http: requests.Session, moto_url: str, emulator_url: str
) -> None:
    params = {"prefix": ROOT, "delimiter": "/"}
    ours, _ = fetch(http, emulator_url, params)
    theirs, _ = fetch(http, moto_url, params)
    assert ours.structure() == theirs.structure()  # everything fits in one page: no departure

    # Documented S3: each CommonPrefix counts toward max-keys, and a truncated page with a
    # delimiter names its last entry in NextMarker. moto departs (it returns all five prefixes
    # untruncated), so the emulator is held to the S3 documentation instead.
    small = {**params, "max-keys": "2"}
    pages = []
    while True:
        page, _ = fetch(http, emulator_url, small)
        pages.append(page)
        if not page.is_truncated:
            break
        assert page.next_marker == page.common_prefixes[-1]
        small = {**params, "max-keys": "2", "marker": page.next_marker}
    assert [len(page.common_prefixes) for page in pages] == [2, 2, 1]
    assert tuple(cp for page in pages for cp in page.common_prefixes) == theirs.common_prefixes
    assert pages[-1].next_marker is None


@pytest.mark.parametrize("list_type", ["1", "2"])
def test_non_ascii_keys_are_encoded_only_when_asked(
    http: requests.Session, moto_url: str, emulator_url: str, list_type: str
) -> None:
    for encoding in (None, "url"):
        params = {"prefix": NON_ASCII, "max-keys": "3"}
        if list_type == "2":
            params["list-type"] = "2"
        if encoding:
            params["encoding-type"] = encoding
        (ours, our_text), (theirs, their_text) = (
            fetch(http, emulator_url, params),
            fetch(http, moto_url, params),
        )
        assert ours.keys == theirs.keys
        assert ours.keys[0].startswith(NON_ASCII + "币安人生USDT-1m-")
        for text in (our_text, their_text):
            assert ("%E5%B8%81%E5%AE%89" in text) == (encoding == "url")
            assert ("<Key>" + NON_ASCII in text) == (encoding is None)
