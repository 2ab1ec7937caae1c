"""Verified downloads behind `responses` (sizes, ETags, CHECKSUMs, headers, retries, request
counts), and the kline layout's keys the volume stage lists and downloads."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from functools import partial
from urllib.parse import unquote, urlsplit

import polars as pl
import pytest
import requests
import responses
from polars.testing import assert_frame_equal

from devtools.emulator import klines as emulated_klines
from devtools.emulator import server as emulator_server
from devtools.emulator.universe import KlineRow, Universe
from pipeline.vision.client import ObjectAnswer, VisionClient
from pipeline.vision.download import (
    Downloader,
    DownloadError,
    ListedFile,
    UnlistedFile,
    VerificationError,
    announced_file,
    bare_etag,
    check_body,
    parse_checksum,
)
from pipeline.vision.layout import KlineLayout, checksum_key, file_name
from pipeline.volume.klines import parse_kline_zips
from tests.support import URL, Bucket, s3_error

DOWNLOAD = "https://data.example.test"
KEY = "data/futures/um/daily/klines/BTCUSDT/1d/BTCUSDT-1d-2024-03-02.zip"
BODY = b"PK\x03\x04 a zip's bytes, as stored"
MD5 = hashlib.md5(BODY).hexdigest()
SHA = hashlib.sha256(BODY).hexdigest()
MULTIPART = "0123456789abcdef0123456789abcdef-2"
CHECKSUM = f"{SHA}  BTCUSDT-1d-2024-03-02.zip\n".encode()
ZIP = {"content_type": "application/zip"}


def client(*, retries: int = 2) -> VisionClient:
    return VisionClient(URL, timeout_s=5, retries=retries, backoff_s=0, pool_size=4)


def downloader(vision: VisionClient | None = None, **options) -> Downloader:
    return Downloader(vision or client(), DOWNLOAD + "/", **options)


def listed(etag: str = MD5, size: int = len(BODY), key: str = KEY) -> ListedFile:
    return ListedFile(key=key, size=size, etag=etag)


def serve(body: bytes = BODY, *, etag: str | None = MD5, key: str = KEY, **options) -> None:
    """The file as S3 serves it: its bytes, Content-Length and quoted ETag."""
    headers = {"Content-Length": str(len(body))}
    if etag is not None:
        headers["ETag"] = f'"{etag}"'
    responses.get(f"{DOWNLOAD}/{key}", body=body, headers=headers, **{**ZIP, **options})


def serve_checksum(body: bytes = CHECKSUM, **options) -> None:
    responses.get(f"{DOWNLOAD}/{KEY}.CHECKSUM", body=body, **options)


def urls() -> list[str]:
    return [call.request.url for call in responses.calls]


def refusal(call: Callable[[], object], error: type[DownloadError]) -> str:
    """The one-line message of the `error` (that very class, not a subclass) `call` raises."""
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error
    message = str(caught.value)
    assert "\n" not in message
    return message


def refused(fetcher: Downloader, file: ListedFile, error: type[DownloadError]) -> str:
    return refusal(lambda: fetcher.fetch(file), error)


# --- good files -----------------------------------------------------------------------------


@responses.activate
def test_a_single_part_file_is_verified_by_its_md5_in_one_get():
    serve()
    fetcher = downloader()
    assert fetcher.fetch(listed()) == BODY
    assert urls() == [f"{DOWNLOAD}/{KEY}"]
    counts = fetcher.counts
    assert (counts.files, counts.file_gets, counts.checksum_gets, counts.bytes) == (
        1,
        1,
        0,
        len(BODY),
    )
    assert (fetcher.client.requests, fetcher.client.retries) == (1, 0)


@responses.activate
def test_a_multipart_file_is_verified_by_its_checksum():
    serve(etag=MULTIPART)
    serve_checksum()
    fetcher = downloader()
    assert fetcher.fetch(listed(MULTIPART)) == BODY
    assert urls() == [f"{DOWNLOAD}/{KEY}", f"{DOWNLOAD}/{KEY}.CHECKSUM"]
    assert (fetcher.counts.file_gets, fetcher.counts.checksum_gets) == (1, 1)
    assert fetcher.client.requests == 2


@responses.activate
def test_checksums_always_doubles_the_gets():
    for day in (1, 2, 3):
        key = KEY.replace("03-02", f"03-0{day}")
        body = BODY + bytes([day])
        serve(body, etag=hashlib.md5(body).hexdigest(), key=key)
        checksum = f"{hashlib.sha256(body).hexdigest()}  {file_name(key)}\n"
        responses.get(f"{DOWNLOAD}/{checksum_key(key)}", body=checksum)
    fetcher = downloader(checksums="always")
    for day in (1, 2, 3):
        key = KEY.replace("03-02", f"03-0{day}")
        body = BODY + bytes([day])
        assert fetcher.fetch(listed(hashlib.md5(body).hexdigest(), len(body), key)) == body
    assert (fetcher.counts.files, fetcher.counts.file_gets, fetcher.counts.checksum_gets) == (
        3,
        3,
        3,
    )
    assert fetcher.client.requests == 6


@responses.activate
def test_keys_are_sent_percent_encoded():
    key = KEY.replace("BTCUSDT", "币安人生USDT")
    serve(key=key)
    assert downloader().fetch(listed(key=key)) == BODY
    assert urls() == [f"{DOWNLOAD}/{requests.utils.quote(key)}"]


@responses.activate
def test_headers_may_be_absent_and_a_weak_etag_header_is_read():
    serve(etag=None)
    assert downloader().fetch(listed()) == BODY
    responses.reset()
    responses.get(f"{DOWNLOAD}/{KEY}", body=BODY, headers={"ETag": f'W/"{MD5.upper()}"'})
    assert downloader().fetch(listed()) == BODY


# --- mismatches -----------------------------------------------------------------------------


@responses.activate
def test_a_size_mismatch_is_refused_after_a_second_get():
    serve()
    fetcher = downloader()
    message = refused(fetcher, listed(size=1200), VerificationError)
    assert message == f"{KEY}: Content-Length {len(BODY)} != listed size 1200 (on a second GET too)"
    assert len(responses.calls) == 2
    assert (fetcher.counts.refetches, fetcher.counts.files) == (1, 0)


def test_a_body_of_another_size_is_refused():
    with pytest.raises(VerificationError, match=rf"^{KEY}: size {len(BODY)} != listed 1200$"):
        check_body(listed(size=1200), BODY)


@responses.activate
def test_an_md5_mismatch_is_refused():
    other = bytes(reversed(BODY))
    serve(other, etag=None)
    message = refused(downloader(), listed(), VerificationError)
    other_md5 = hashlib.md5(other).hexdigest()
    assert message == f"{KEY}: md5 {other_md5} != ETag {MD5} (on a second GET too)"
    assert len(responses.calls) == 2


@responses.activate
def test_a_corrupted_transfer_is_fetched_again_once():
    serve(bytes(reversed(BODY)), etag=None)
    serve()
    fetcher = downloader()
    assert fetcher.fetch(listed()) == BODY
    assert len(responses.calls) == 2
    assert (fetcher.counts.files, fetcher.counts.file_gets, fetcher.counts.refetches) == (1, 2, 1)


@responses.activate
def test_a_sha256_mismatch_is_refused():
    serve(etag=MULTIPART)
    wrong = "f" * 64
    serve_checksum(f"{wrong}  BTCUSDT-1d-2024-03-02.zip\n".encode())
    message = refused(downloader(), listed(MULTIPART), VerificationError)
    assert message == f"{KEY}: sha256 {SHA} != CHECKSUM {wrong} (on a second GET too)"
    assert len(responses.calls) == 4


@responses.activate
def test_a_missing_checksum_of_a_multipart_file_is_an_error():
    serve(etag=MULTIPART)
    serve_checksum(status=404, body=s3_error("NoSuchKey"))
    message = refused(downloader(), listed(MULTIPART), DownloadError)
    assert message == (
        f"{KEY}.CHECKSUM: HTTP 404 from {DOWNLOAD}/{KEY}.CHECKSUM; "
        "the .CHECKSUM verifying BTCUSDT-1d-2024-03-02.zip could not be fetched"
    )


def test_a_checksum_file_must_name_the_file_and_hold_one_digest():
    name = "BTCUSDT-1d-2024-03-02.zip"
    assert parse_checksum("c", f"{SHA.upper()} *{name}".encode(), name) == SHA
    with pytest.raises(VerificationError, match=r"^c: CHECKSUM names 'other.zip', not '"):
        parse_checksum("c", f"{SHA}  other.zip\n".encode(), name)
    with pytest.raises(VerificationError, match=r"^c: not a CHECKSUM file \(expected '<sha256>"):
        parse_checksum("c", b"<html>hello</html>", name)
    with pytest.raises(VerificationError, match=r"^c: not a CHECKSUM file"):
        parse_checksum("c", CHECKSUM * 2, name)


@responses.activate
def test_an_html_page_answered_200_is_refused():
    page = b"<html><body>Welcome to the proxy</body></html>"
    responses.get(f"{DOWNLOAD}/{KEY}", body=page, content_type="text/html; charset=utf-8")
    message = refused(downloader(), listed(), VerificationError)
    assert message == (
        f"{KEY}: HTTP 200 with an HTML page, not the file, from {DOWNLOAD}/{KEY}; "
        "check vision.download_url and any proxy in front of it (on a second GET too)"
    )


@responses.activate
def test_a_redirect_is_refused_not_followed():
    elsewhere = "https://login.example.test/portal"
    responses.get(f"{DOWNLOAD}/{KEY}", status=302, headers={"Location": elsewhere})
    responses.get(elsewhere, body=BODY, headers={"ETag": f'"{MD5}"'}, **ZIP)
    message = refused(downloader(), listed(), DownloadError)
    assert message == (
        f"{KEY}: download failed (HTTP 302, not S3: text/plain) from {DOWNLOAD}/{KEY}: "
        f"redirected to {elsewhere!r}, which is not followed; check vision.download_url and "
        "any proxy in front of it"
    )
    assert refusal(lambda: downloader().fetch_unlisted(KEY), DownloadError) == message
    assert urls() == [f"{DOWNLOAD}/{KEY}"] * 2


@responses.activate
def test_another_object_is_refused_by_its_etag_header():
    other = "ffffffffffffffffffffffffffffffff"
    serve(etag=other)
    message = refused(downloader(), listed(), VerificationError)
    assert message.startswith(f"{KEY}: ETag {other} != listed ETag {MD5} (a different object")


@responses.activate
def test_a_listed_etag_that_verifies_nothing_is_refused_without_a_request():
    message = refused(downloader(), listed("not-an-etag"), VerificationError)
    assert message == f"{KEY}: listed ETag 'not-an-etag' is neither an MD5 nor a multipart ETag"
    assert len(responses.calls) == 0


# --- files fetched without a listing: verified by their answer's headers ----------------------


def refused_unlisted(fetcher: Downloader, error: type[DownloadError]) -> str:
    return refusal(lambda: fetcher.fetch_unlisted(KEY), error)


@responses.activate
def test_an_unlisted_file_is_verified_by_its_headers_which_give_its_size_and_etag():
    serve()
    fetcher = downloader()
    assert fetcher.fetch_unlisted(KEY) == UnlistedFile(KEY, len(BODY), MD5, BODY)
    assert urls() == [f"{DOWNLOAD}/{KEY}"]
    counts = fetcher.counts
    assert (counts.files, counts.file_gets, counts.unlisted_gets, counts.not_found) == (1, 1, 1, 0)
    assert (counts.checksum_gets, counts.multipart, counts.bytes) == (0, 0, len(BODY))
    assert fetcher.client.requests == 1


@responses.activate
def test_an_unlisted_multipart_file_is_verified_by_its_checksum():
    serve(etag=MULTIPART)
    serve_checksum()
    fetcher = downloader()
    assert fetcher.fetch_unlisted(KEY) == UnlistedFile(KEY, len(BODY), MULTIPART, BODY)
    assert urls() == [f"{DOWNLOAD}/{KEY}", f"{DOWNLOAD}/{KEY}.CHECKSUM"]
    assert (fetcher.counts.checksum_gets, fetcher.counts.multipart) == (1, 1)


@responses.activate
def test_an_unlisted_file_whose_md5_is_not_its_etag_header_is_refused_after_a_second_get():
    other = bytes(reversed(BODY))
    serve(other)  # the ETag header of BODY, the bytes of another
    fetcher = downloader()
    message = refused_unlisted(fetcher, VerificationError)
    other_md5 = hashlib.md5(other).hexdigest()
    assert message == f"{KEY}: md5 {other_md5} != ETag {MD5} (on a second GET too)"
    assert (len(responses.calls), fetcher.counts.refetches, fetcher.counts.files) == (2, 1, 0)


@responses.activate
def test_an_unlisted_file_corrupted_once_is_fetched_again():
    serve(bytes(reversed(BODY)))
    serve()
    fetcher = downloader()
    assert fetcher.fetch_unlisted(KEY) == UnlistedFile(KEY, len(BODY), MD5, BODY)
    assert (fetcher.counts.file_gets, fetcher.counts.refetches) == (2, 1)


def test_an_unlisted_file_whose_body_is_not_its_content_length_is_refused():
    # A well-behaved transport never hands such a body over (a short read is a broken
    # connection), so the check is made on an answer as the client returns it.
    answer = ObjectAnswer(
        200, {"Content-Length": "1200", "ETag": f'"{MD5}"'}, BODY, f"{DOWNLOAD}/{KEY}"
    )
    announced = announced_file(KEY, answer)
    assert announced == ListedFile(KEY, 1200, MD5)
    with pytest.raises(VerificationError) as caught:
        check_body(announced, BODY, size_from="Content-Length")
    assert str(caught.value) == f"{KEY}: size {len(BODY)} != Content-Length 1200"


@responses.activate
@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"ETag": f'"{MD5}"'}, "no Content-Length header: its size cannot be verified"),
        ({"Content-Length": str(len(BODY))}, "no ETag header: its bytes cannot be verified"),
        (
            {"Content-Length": str(len(BODY)), "ETag": '"zz"'},
            "listed ETag 'zz' is neither an MD5 nor a multipart ETag",
        ),
        (
            {"Content-Length": str(len(BODY)), "ETag": f'"{MD5}"', "Content-Encoding": "br"},
            "sent with Content-Encoding 'br': its Content-Length is not the file's size, "
            "which cannot be verified",
        ),
    ],
)
def test_an_unlisted_file_without_the_headers_that_verify_it_is_refused(headers, problem):
    responses.get(f"{DOWNLOAD}/{KEY}", body=BODY, headers=headers, **ZIP)
    fetcher = downloader()
    message = refused_unlisted(fetcher, VerificationError)
    assert message == f"{KEY}: {problem} (on a second GET too)"
    assert (len(responses.calls), fetcher.counts.files) == (2, 0)


@responses.activate
def test_an_unlisted_file_not_out_yet_is_pending_not_an_error():
    responses.get(f"{DOWNLOAD}/{KEY}", status=404, body=s3_error("NoSuchKey"))
    fetcher = downloader()
    assert fetcher.fetch_unlisted(KEY) is None
    counts = fetcher.counts
    assert (counts.not_found, counts.unlisted_gets, counts.files, counts.refetches) == (1, 1, 0, 0)
    assert (len(responses.calls), fetcher.client.requests) == (1, 1)


@responses.activate
def test_an_unlisted_file_answered_by_anything_else_is_an_error():
    responses.get(f"{DOWNLOAD}/{KEY}", status=404, body="<html>Not Found</html>")
    message = refused_unlisted(downloader(), DownloadError)
    assert message == (
        f"{KEY}: HTTP 404 from {DOWNLOAD}/{KEY}, not the file nor S3's NoSuchKey "
        "(check vision.download_url and any proxy in front of it)"
    )
    responses.reset()
    responses.get(f"{DOWNLOAD}/{KEY}", status=403, body=s3_error("AccessDenied"))
    assert "HTTP 403" in refused_unlisted(downloader(), DownloadError)


# --- statuses and retries -------------------------------------------------------------------


@responses.activate
def test_a_404_is_an_error_at_once():
    responses.get(f"{DOWNLOAD}/{KEY}", status=404, body=s3_error("NoSuchKey"))
    fetcher = downloader()
    with pytest.raises(DownloadError) as caught:
        fetcher.fetch(listed())
    # Not a verification failure: no second GET.
    assert type(caught.value) is DownloadError
    assert str(caught.value) == (
        f"{KEY}: HTTP 404 from {DOWNLOAD}/{KEY}; it was listed "
        "(removed since? check vision.download_url and any proxy in front of it)"
    )
    assert (len(responses.calls), fetcher.client.requests, fetcher.counts.refetches) == (1, 1, 0)


@responses.activate
def test_503s_are_retried_then_the_file_is_verified():
    responses.get(f"{DOWNLOAD}/{KEY}", status=503, body=s3_error("SlowDown"))
    responses.get(f"{DOWNLOAD}/{KEY}", status=500, body=s3_error("InternalError"))
    serve()
    fetcher = downloader()
    assert fetcher.fetch(listed()) == BODY
    assert (len(responses.calls), fetcher.client.requests, fetcher.client.retries) == (3, 3, 2)
    assert (fetcher.counts.file_gets, fetcher.counts.refetches) == (1, 0)


@responses.activate
def test_retries_spent_is_a_download_error_naming_the_file():
    responses.get(f"{DOWNLOAD}/{KEY}", status=503, body=s3_error("SlowDown"))
    fetcher = downloader(client(retries=1))
    message = refused(fetcher, listed(), DownloadError)
    assert message == (
        f"{KEY}: download failed after 1 retry (HTTP 503 SlowDown) from {DOWNLOAD}/{KEY}"
    )
    assert (fetcher.client.requests, fetcher.client.retries) == (2, 1)


@responses.activate
def test_a_connection_failure_is_retried():
    responses.get(f"{DOWNLOAD}/{KEY}", body=requests.ConnectionError("reset"))
    serve()
    fetcher = downloader()
    assert fetcher.fetch(listed()) == BODY
    assert (fetcher.client.requests, fetcher.client.retries) == (2, 1)


def test_an_unknown_checksum_policy_is_refused():
    with pytest.raises(ValueError, match="checksums must be one of"):
        downloader(checksums="sometimes")


def test_bare_etag():
    assert bare_etag(' "ABC" ') == "abc"
    assert bare_etag('W/"abc-2"') == "abc-2"


# --- kline layout ---------------------------------------------------------------------------

KLINES = KlineLayout(market="um", interval="1d")
MONTHLY = "data/futures/um/monthly/klines/BTCUSDT/1d/"
DAILY = "data/futures/um/daily/klines/BTCUSDT/1d/"


def test_kline_layout_names_prefixes_and_keys():
    assert KLINES.monthly_prefix("BTCUSDT") == MONTHLY
    assert KLINES.daily_prefix("BTCUSDT") == DAILY
    assert KLINES.monthly_key("BTCUSDT", dt.date(2024, 3, 17)) == MONTHLY + "BTCUSDT-1d-2024-03.zip"
    assert KLINES.daily_key("BTCUSDT", dt.date(2024, 3, 2)) == DAILY + "BTCUSDT-1d-2024-03-02.zip"
    assert checksum_key(KEY) == KEY + ".CHECKSUM"
    assert file_name(KEY) == "BTCUSDT-1d-2024-03-02.zip"
    assert KlineLayout(market="cm", interval="1d").monthly_root == "data/futures/cm/monthly/klines/"


def test_kline_layout_reads_the_period_of_a_key_and_nothing_else():
    monthly = MONTHLY + "BTCUSDT-1d-2024-03.zip"
    assert KLINES.month_of("BTCUSDT", monthly) == dt.date(2024, 3, 1)
    assert KLINES.day_of("BTCUSDT", KEY) == dt.date(2024, 3, 2)
    foreign = [
        monthly + ".CHECKSUM",
        MONTHLY + "BTCUSDT-1d-2024-13.zip",
        MONTHLY + "BTCUSDT-1d-2024-3.zip",
        MONTHLY + "BTCUSDT-1h-2024-03.zip",
        KEY,
        MONTHLY + "BTCUSDT-1d-2024-03-02.zip",
    ]
    assert [KLINES.month_of("BTCUSDT", key) for key in foreign] == [None] * len(foreign)
    assert KLINES.month_of("BTC", monthly.replace("BTCUSDT", "BTC", 1)) is None
    assert KLINES.day_of("BTCUSDT", monthly) is None
    assert KLINES.day_of("BTCUSDT", KEY + ".CHECKSUM") is None
    assert KLINES.day_of("BTCUSDT", KEY.replace("03-02", "02-30")) is None


def test_kline_layout_start_after_skips_a_period_and_every_earlier_one():
    month = dt.date(2024, 3, 1)
    after = KLINES.after_month("BTCUSDT", month)
    march = KLINES.monthly_key("BTCUSDT", month)
    april = KLINES.monthly_key("BTCUSDT", dt.date(2024, 4, 1))
    assert checksum_key(march) < after < april
    assert KLINES.after_month("BTCUSDT", dt.date(2024, 12, 31)) == MONTHLY + "BTCUSDT-1d-2025-01"
    after_day = KLINES.after_day("BTCUSDT", dt.date(2024, 2, 29))
    assert checksum_key(DAILY + "BTCUSDT-1d-2024-02-29.zip") < after_day
    assert after_day < DAILY + "BTCUSDT-1d-2024-03-01.zip"


# --- the emulator's 1d files ----------------------------------------------------------------


def multipart_symbol(month: str) -> str:
    """A symbol whose monthly file of `month` the emulator uploads in two parts."""
    names = (f"M{i}USDT" for i in range(10_000))
    return next(name for name in names if emulated_klines.is_multipart(name, month))


def listed_files(vision: VisionClient, prefix: str, period_of) -> dict[dt.date, ListedFile]:
    """The zips under `prefix` by period (month or day), as the listing shows them."""
    files = {}
    for page in vision.iter_pages(prefix, subject=prefix):
        for key, size, etag in zip(page.keys, page.sizes, page.etags, strict=True):
            period = period_of(key)
            if period is not None:
                files[period] = ListedFile(key=key, size=int(size), etag=etag)
    return files


def files_to_fetch(vision: VisionClient, symbol: str, first_fresh_day: dt.date) -> list[ListedFile]:
    """Every monthly file, then the daily files from `first_fresh_day` on."""
    months = listed_files(vision, KLINES.monthly_prefix(symbol), partial(KLINES.month_of, symbol))
    days = listed_files(vision, KLINES.daily_prefix(symbol), partial(KLINES.day_of, symbol))
    fresh = [days[day] for day in sorted(days) if day >= first_fresh_day]
    return [months[month] for month in sorted(months)] + fresh


def volume_rows(frame: pl.DataFrame, symbol: str, files: list[ListedFile]) -> pl.DataFrame:
    """Parsed rows with the columns the emulator's ground truth has."""
    source = pl.col("source")
    return frame.with_columns(
        symbol=pl.lit(symbol),
        source_etag=source.replace_strict({file.key: file.etag for file in files}),
        source_size=source.replace_strict({file.key: file.size for file in files}),
    ).select(KlineRow._fields)


def emulated_object(universe: Universe):
    """A `responses` callback answering a GET of a key as the emulator serves it."""

    def answer(request):
        key = unquote(urlsplit(request.url).path.lstrip("/"))
        meta = universe.meta(key)
        headers = {"ETag": f'"{meta.etag}"', "Content-Length": str(meta.size)}
        return 200, headers, universe.body(key)

    return answer


def test_the_emulators_1d_files_verify_and_parse_to_its_ground_truth():
    """Monthly files, then the daily files of the days after the last month: verified (a
    multipart one through its CHECKSUM), parsed (2021 files have no header, 2022's have one),
    equal to the emulator's rows; one GET each, and one more for the multipart file."""
    multipart = multipart_symbol("2021-12")
    universe = Universe(today=dt.date(2022, 2, 20), specs={})
    for symbol in ("BTCUSDT", multipart):
        universe = universe.with_symbol(symbol, [(dt.date(2021, 11, 15), dt.date(2022, 2, 10))])
    bucket = Bucket()
    bucket.universe = universe.prepare()
    with responses.RequestsMock() as mock:
        bucket.register(mock)
        download = re.compile(re.escape(DOWNLOAD) + "/.*")
        mock.add_callback(responses.GET, download, emulated_object(bucket.universe))
        vision = client()
        fetcher = downloader(vision)
        checksummed = []
        for symbol in ("BTCUSDT", multipart):
            files = files_to_fetch(vision, symbol, dt.date(2022, 2, 1))
            assert [file.key for file in files[:3]] == [
                KLINES.monthly_key(symbol, dt.date(y, m, 1))
                for y, m in ((2021, 11), (2021, 12), (2022, 1))
            ]
            listing_requests = vision.requests
            frame = parse_kline_zips([(file.key, fetcher.fetch(file)) for file in files])
            checksums = [file.key for file in files if file.multipart]
            assert vision.requests - listing_requests == len(files) + len(checksums)
            checksummed += checksums
            truth = [row._asdict() for row in universe.kline_rows(symbol)]
            got = volume_rows(frame, symbol, files)
            assert_frame_equal(got, pl.DataFrame(truth, schema=got.schema))
    assert KLINES.monthly_key(multipart, dt.date(2021, 12, 1)) in checksummed
    assert checksummed == [
        KLINES.monthly_key(symbol, dt.date.fromisoformat(month + "-01"))
        for symbol in ("BTCUSDT", multipart)
        for month in ("2021-11", "2021-12", "2022-01")
        if emulated_klines.is_multipart(symbol, month)
    ]
    assert (fetcher.counts.checksum_gets, fetcher.counts.refetches) == (len(checksummed), 0)


def test_a_checksum_names_a_non_ascii_file_in_utf8():
    name = "币安人生USDT-1d-2024-05.zip"
    digest = "ab" * 32
    body = f"{digest}  {name}\n".encode()
    assert parse_checksum(f"data/{name}.CHECKSUM", body, name) == digest


@responses.activate
def test_an_emulated_multipart_file_with_a_corrupted_body_is_caught_by_its_checksum():
    """The emulator's corrupt_body fault (same size, other bytes) on a monthly file uploaded in
    two parts: no MD5 to compare, so the .CHECKSUM's SHA-256 refuses it, naming the file, after
    a second GET; nothing is returned. (The emulator's prefix faults also hit the .CHECKSUM,
    whose key extends the zip's, so its fault is applied here to the zip's bytes alone.)"""
    symbol = multipart_symbol("2021-12")
    universe = Universe(today=dt.date(2022, 2, 20), specs={})
    universe = universe.with_symbol(symbol, [(dt.date(2021, 11, 15), dt.date(2022, 2, 10))])
    universe = universe.prepare()
    key = KLINES.monthly_key(symbol, dt.date(2021, 12, 1))
    meta, body = universe.meta(key), universe.body(key)
    file = ListedFile(key=key, size=meta.size, etag=meta.etag)
    assert file.multipart
    corrupted = emulator_server._corrupted(body)
    assert len(corrupted) == len(body) and corrupted != body
    headers = {"ETag": f'"{meta.etag}"', "Content-Length": str(meta.size)}
    responses.get(f"{DOWNLOAD}/{key}", body=corrupted, headers=headers, **ZIP)
    responses.get(f"{DOWNLOAD}/{checksum_key(key)}", body=universe.body(checksum_key(key)))
    fetcher = downloader()
    message = refused(fetcher, file, VerificationError)
    sha = hashlib.sha256(corrupted).hexdigest()
    expected = hashlib.sha256(body).hexdigest()
    assert message == f"{key}: sha256 {sha} != CHECKSUM {expected} (on a second GET too)"
    assert urls() == [f"{DOWNLOAD}/{key}", f"{DOWNLOAD}/{checksum_key(key)}"] * 2
    counts = fetcher.counts
    assert (counts.files, counts.file_gets, counts.checksum_gets, counts.refetches) == (0, 2, 2, 1)
