"""The strict listing protocol: only a 200 ListBucketResult that answers the request is an answer.

Each rule is shown on hand-made pages behind `responses` (the message names the subject, the
rule broken and the URL), then each of the emulator's faults is shown refused by the client.
Also here: discovery's page cap, Retry-After that is no number, the deadline that covers
trickling headers and bodies, and the probe time that never passes the server's clock nor
follows a stale Date.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import time
from types import SimpleNamespace

import pytest
import responses
from requests.exceptions import ChunkedEncodingError
from urllib3.exceptions import ProtocolError

from devtools.emulator import Emulator, Knobs, Universe
from devtools.emulator.server import LOOP_TOKEN, OTHER_MARKET_FOLDER
from pipeline.prober import ProbeRange, probe
from pipeline.vision import client as vision_client
from pipeline.vision.client import (
    DISCOVERY_PAGE_LIMIT,
    SERVER_CLOCK_MAX_LAG,
    SERVER_CLOCK_TOLERANCE,
    VisionClient,
    VisionError,
    http_date,
    probe_time,
)
from pipeline.vision.deadline import read_body
from pipeline.vision.listing import ListingPage, page_problem
from tests.s3xml import listing
from tests.support import LAYOUT, URL, raw_http_server, s3_error

LIST_URL = URL + "/"
XML = {"content_type": "application/xml"}
SYMBOL = "BTCUSDT"
PREFIX = LAYOUT.symbol_prefix(SYMBOL)
ROOT = LAYOUT.root
UTC = dt.UTC
SPAN = {"spans": [["2024-01-01", None]]}


def client(*, retries: int = 0, timeout_s: float = 5, backoff_s: float = 0) -> VisionClient:
    return VisionClient(URL, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s, pool_size=2)


def key(day: int) -> str:
    return f"{PREFIX}{SYMBOL}-1m-2024-01-{day:02d}.zip"


def page(keys: list[str], **kwargs: object) -> str:
    """A page of BTCUSDT's folder; kwargs as tests.s3xml.listing takes them."""
    return listing(keys, **{"prefix": PREFIX, **kwargs})  # type: ignore[arg-type]


def refusal(*bodies: str, start_after: str | None = None) -> tuple[str, int]:
    """The one-line error listing BTCUSDT's folder to the end gives, and the requests made."""
    for body in bodies:
        responses.get(LIST_URL, body=body, **XML)
    with client() as vision, pytest.raises(VisionError) as failure:
        list(vision.iter_pages(PREFIX, start_after=start_after, subject=SYMBOL))
    message = str(failure.value)
    assert "\n" not in message
    return message, vision.requests


# --- what an answer is ------------------------------------------------------------------------


@responses.activate
def test_an_empty_folder_is_a_200_without_keys():
    responses.get(LIST_URL, body=page([]), **XML)
    with client() as vision:
        pages = list(vision.iter_pages(PREFIX, subject=SYMBOL))
    assert [(p.keys, p.is_truncated) for p in pages] == [([], False)]


@pytest.mark.parametrize(
    ("body", "content_type", "cause", "fix"),
    [
        (s3_error("NoSuchKey"), "application/xml", "HTTP 404 NoSuchKey", "never as 404"),
        ("<html>404 Not Found</html>", "text/html", "HTTP 404, not S3: text/html", "proxy"),
        (s3_error("NoSuchBucket"), "application/xml", "HTTP 404 NoSuchBucket", "no such bucket"),
    ],
    ids=["no-such-key", "html", "no-such-bucket"],
)
@responses.activate
def test_every_404_is_an_error_naming_the_url_status_and_code(body, content_type, cause, fix):
    responses.get(LIST_URL, status=404, body=body, content_type=content_type)
    with client(retries=3) as vision, pytest.raises(VisionError) as failure:
        vision.list_page(PREFIX, subject=SYMBOL)
    message = str(failure.value)
    assert message.startswith(f"{SYMBOL}: listing failed ({cause}) from {LIST_URL}?list-type=2")
    assert "vision.listing_url" in message and fix in message
    assert len(responses.calls) == 1  # no retry changes a 404


@responses.activate
def test_a_redirect_is_an_error_naming_where_it_points_and_is_not_followed():
    elsewhere = "https://other-bucket.example.test/"
    responses.get(LIST_URL, status=301, headers={"Location": elsewhere})
    responses.get(elsewhere, body=page([key(1)]), **XML)
    with client(retries=3) as vision, pytest.raises(VisionError) as failure:
        vision.list_page(PREFIX, subject=SYMBOL)
    message = str(failure.value)
    assert message.startswith(f"{SYMBOL}: listing failed (HTTP 301, not S3: text/plain) from")
    assert message.endswith(
        f": redirected to {elsewhere!r}, which is not followed; "
        "check vision.listing_url and any proxy in front of it"
    )
    assert [call.request.url.split("?")[0] for call in responses.calls] == [LIST_URL]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (listing([key(1)], prefix=ROOT), f"prefix {PREFIX!r} asked for, {ROOT!r} echoed"),
        (
            listing([key(1)]).replace("<Prefix></Prefix>", ""),
            f"prefix {PREFIX!r} asked for, None echoed",
        ),
        (page([key(1)], url_encode=False), "encoding-type=url asked for but not echoed"),
        (
            page([PREFIX + "币安.zip"]).replace("<EncodingType>url</EncodingType>", ""),
            "encoding-type=url asked for but not echoed",
        ),
        (
            page([key(1), OTHER_MARKET_FOLDER + "x.zip"]),
            f"key {OTHER_MARKET_FOLDER + 'x.zip'!r} outside {PREFIX!r}",
        ),
        (page([key(2), key(1)]), f"key {key(1)!r} out of order"),
        (page([key(1), key(1)]), f"key {key(1)!r} out of order"),
        (
            page([key(1)], common_prefixes=[PREFIX + "sub/"]),
            f"common prefix {PREFIX + 'sub/'!r} is not one folder under {PREFIX!r}",
        ),
        (page([key(1)], truncated=True), "truncated without a continuation token"),
        (
            page([key(1)], truncated=True).replace(
                "</IsTruncated>", "</IsTruncated><NextContinuationToken></NextContinuationToken>"
            ),
            "truncated without a continuation token",
        ),
        (
            page([key(1)], truncated=True).replace(
                "</IsTruncated>", "</IsTruncated><NextContinuationToken/>"
            ),
            "truncated without a continuation token",
        ),
        (page([], truncated=True, token="t1"), "truncated with no key and no common prefix on it"),
    ],
    ids=[
        "other-prefix",
        "no-prefix",
        "plain-names",
        "encoded-names",
        "key-outside",
        "unordered",
        "twice",
        "prefix-without-delimiter",
        "no-token",
        "empty-token",
        "empty-token-element",
        "empty-truncated-page",
    ],
)
@responses.activate
def test_a_200_that_answers_another_request_is_refused(body, problem):
    message, requests_made = refusal(body)
    assert message == (
        f"{SYMBOL}: not an S3 listing (HTTP 200, {problem}) from {responses.calls[0].request.url}"
        "; check vision.listing_url and any proxy in front of it"
    )
    assert requests_made == 1


# --- a listing moves forward ------------------------------------------------------------------


@responses.activate
def test_a_token_that_repeats_the_previous_one_stops_the_listing():
    message, requests_made = refusal(
        page([key(1)], truncated=True, token="t1"), page([key(2)], truncated=True, token="t1")
    )
    assert "continuation token 't1' repeats the previous one" in message
    assert requests_made == 2


@responses.activate
def test_a_page_must_start_after_the_previous_pages_last_entry():
    message, requests_made = refusal(
        page([key(1), key(2)], truncated=True, token="t1"), page([key(2), key(3)])
    )
    assert f"{key(2)!r} does not come after {key(2)!r}" in message
    assert requests_made == 2


@responses.activate
def test_the_first_page_must_start_after_start_after():
    message, _ = refusal(page([key(1), key(2)]), start_after=key(1))
    assert f"{key(1)!r} does not come after {key(1)!r}" in message


@responses.activate
def test_pages_that_move_forward_are_followed_to_the_end():
    responses.get(LIST_URL, body=page([key(1)], truncated=True, token="t1"), **XML)
    responses.get(LIST_URL, body=page([key(2)], truncated=True, token="t2"), **XML)
    responses.get(LIST_URL, body=page([key(3)]), **XML)
    with client() as vision:
        pages = list(vision.iter_pages(PREFIX, start_after=PREFIX, subject=SYMBOL))
    assert [p.keys for p in pages] == [[key(1)], [key(2)], [key(3)]]


def test_the_last_entry_of_a_page_is_its_greatest_key_or_prefix():
    entries = ListingPage([ROOT + "B"], [], [], [], [ROOT + "A/", ROOT + "C/"], True, "t")
    assert entries.last_entry() == ROOT + "C/"
    assert ListingPage([], [], [], [], [], False, None).last_entry() is None


def test_page_problem_accepts_what_s3_sends():
    good = ListingPage(
        [ROOT + "README"],
        ["1"],
        ["e"],
        ["2024-01-01T00:00:00.000Z"],
        [ROOT + "AUSDT/", ROOT + "币安人生USDT/"],
        True,
        "t2",
        prefix=ROOT,
        encoding_type="url",
    )
    assert page_problem(good, prefix=ROOT, delimiter="/", after=ROOT, previous_token="t1") is None


# --- discovery: one folder level, nothing foreign ---------------------------------------------


@pytest.mark.parametrize(
    "foreign",
    ["", ROOT + "A/B/", OTHER_MARKET_FOLDER, ROOT + "AUSDT", ROOT + "/"],
    ids=["empty", "two-levels", "other-market", "no-slash", "empty-name"],
)
@responses.activate
def test_discovery_refuses_a_common_prefix_that_is_not_one_folder_under_the_root(foreign):
    folders = [ROOT + "AUSDT/", foreign]
    responses.get(LIST_URL, body=listing(common_prefixes=folders, prefix=ROOT), **XML)
    with client() as vision, pytest.raises(VisionError) as failure:
        vision.list_common_prefixes(ROOT, subject="symbols")
    assert str(failure.value).startswith(
        f"symbols: not an S3 listing (HTTP 200, common prefix {foreign!r} "
        f"is not one folder under {ROOT!r}) from {LIST_URL}?"
    )


@responses.activate
def test_discovery_refuses_a_key_that_should_have_been_a_folder():
    responses.get(LIST_URL, body=listing([ROOT + "AUSDT/x.zip"], prefix=ROOT), **XML)
    with client() as vision, pytest.raises(VisionError, match="rolled into a common prefix"):
        vision.list_common_prefixes(ROOT, subject="symbols")


def endless_folders(request) -> tuple[int, dict[str, str], str]:
    """Discovery pages that each move forward and are truncated: S0001/, S0002/, ..."""
    token = request.params.get("continuation-token", "t0000")
    number = int(token[1:]) + 1
    folders = [f"{ROOT}S{number:04d}/"]
    body = listing(common_prefixes=folders, prefix=ROOT, truncated=True, token=f"t{number:04d}")
    return 200, {}, body


@responses.activate
def test_discovery_stops_at_the_page_cap_in_one_line_naming_the_url():
    responses.add_callback(
        responses.GET, LIST_URL, callback=endless_folders, content_type="application/xml"
    )
    with client() as vision, pytest.raises(VisionError) as failure:
        vision.list_common_prefixes(ROOT, subject="symbols")
    assert str(failure.value) == (
        f"symbols: more than {DISCOVERY_PAGE_LIMIT} listing pages of folders, more than the "
        f"bucket holds, from {LIST_URL} (prefix {ROOT}); "
        "check vision.listing_url and any proxy in front of it"
    )
    assert vision.requests == DISCOVERY_PAGE_LIMIT == 100


# --- Retry-After and deadlines -----------------------------------------------------------------


@pytest.mark.parametrize("header", ["soon", "-5", "1.5", ""])
@responses.activate
def test_a_malformed_or_negative_retry_after_falls_back_to_the_ordinary_backoff(
    header, monkeypatch
):
    waits: list[float] = []
    monkeypatch.setattr(vision_client.time, "sleep", waits.append)
    throttled = {"status": 503, "body": s3_error("SlowDown"), **XML}
    responses.get(LIST_URL, headers={"Retry-After": header}, **throttled)
    responses.get(LIST_URL, headers={"Retry-After": header}, **throttled)
    responses.get(LIST_URL, body=page([key(1)]), **XML)
    with client(retries=2, backoff_s=0.25) as vision:
        listed = vision.list_page(PREFIX, subject=SYMBOL)
    assert listed.keys == [key(1)]
    # The ordinary backoff: 0.25 s then 0.5 s, each with up to 0.25 s of jitter.
    assert len(waits) == 2
    assert 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 0.75


@pytest.fixture
def trickling_emulator():
    universe = Universe.from_dict({"today": "2024-01-10", "symbols": {SYMBOL: SPAN}})
    with Emulator(universe, Knobs(prefix_faults={PREFIX: "trickle"})) as server:
        yield server


def test_a_body_that_trickles_fails_within_the_timeout(trickling_emulator):
    url = trickling_emulator.listing_url
    started = time.monotonic()
    with (
        VisionClient(url, timeout_s=1, retries=0, backoff_s=0, pool_size=1) as vision,
        pytest.raises(VisionError) as failure,
    ):
        vision.list_page(PREFIX, subject=SYMBOL)
    elapsed = time.monotonic() - started
    # One byte every 0.5 s: a per-read timeout alone never fires, and the body takes minutes.
    # The bound leaves a loaded machine room above the 1 s deadline.
    assert elapsed < 4
    assert str(failure.value).startswith(f"{SYMBOL}: listing failed (HTTP 200, timed out")


@pytest.mark.parametrize("socket_left", [False, True], ids=["socket-dropped", "closed-socket-left"])
def test_a_connection_closed_between_two_reads_of_a_body_is_a_body_cut_short(socket_left):
    # CI once met it: urllib3 closed the connection under a truncated body after the first
    # read, and setting the next read's timeout on the socket kept from before raised EBADF,
    # which stopped the run instead of retrying it. The connection may drop its socket, or
    # keep the closed one (whose settimeout raises EBADF too).
    with socket.socket() as live:
        connection = SimpleNamespace(sock=live)
        reads = []

        def read1(amount: int, decode_content: bool) -> bytes:
            reads.append(amount)
            if len(reads) == 1:
                assert live.gettimeout() is not None  # this read had its deadline
                live.close()  # as urllib3 does when the peer hangs up mid-body
                connection.sock = live if socket_left else None
                return b"<ListBucketResult>"
            raise ProtocolError("IncompleteRead")

        raw = SimpleNamespace(connection=connection, read1=read1)
        with pytest.raises(ChunkedEncodingError):
            read_body(SimpleNamespace(raw=raw), time.monotonic() + 5)


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nX-Padding: " + b"x" * 40


@pytest.fixture
def slow_headers():
    """A raw HTTP server on 127.0.0.1. Its first `slow` answers send the bytes after
    `sent_at_once` (0: from the status line on) one every 0.2 s, for 16 s at most; later
    answers are a page at once. Every answer stops by itself, or when the client hangs up."""
    state = {"slow": 1, "sent_at_once": 0, "served": 0}
    body = page([key(1)]).encode()

    def answer(conn: socket.socket, served: int) -> None:
        state["served"] = served
        with conn:
            conn.recv(65536)
            if served > state["slow"]:
                length = f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                conn.sendall(HEAD + length + body)
                return
            at_once = state["sent_at_once"]
            with contextlib.suppress(OSError):  # the client hung up: its deadline passed
                conn.sendall(HEAD[:at_once])
                for byte in HEAD[at_once:][:80]:
                    time.sleep(0.2)
                    conn.sendall(bytes([byte]))

    with raw_http_server(answer) as url:
        yield url, state


@pytest.mark.parametrize("sent_at_once", [0, 17], ids=["status-line", "headers"])
def test_response_headers_that_trickle_fail_within_the_timeout(slow_headers, sent_at_once):
    url, state = slow_headers
    state["sent_at_once"] = sent_at_once
    started = time.monotonic()
    with (
        VisionClient(url, timeout_s=1, retries=0, backoff_s=0, pool_size=1) as vision,
        pytest.raises(VisionError) as failure,
    ):
        vision.list_page(PREFIX, subject=SYMBOL)
    # Each byte comes within the 1 s socket timeout: only the attempt's deadline ends it,
    # long before the 16 s the headers would trickle for (room for a loaded machine).
    assert time.monotonic() - started < 4
    assert str(failure.value).startswith(f"{SYMBOL}: listing failed (timed out) from {url}/?")


def test_response_headers_that_always_trickle_fail_after_the_retries_made(slow_headers):
    url, state = slow_headers
    state["slow"] = 99
    with (
        VisionClient(url, timeout_s=2, retries=2, backoff_s=0, pool_size=1) as vision,
        pytest.raises(VisionError) as failure,
    ):
        vision.list_page(PREFIX, subject=SYMBOL)
    # Two attempts of 2 s spend the 4 s budget: one retry was made, the next never sent.
    assert str(failure.value).startswith(
        f"{SYMBOL}: listing failed after 1 retry (timed out, out of the 4s retry budget) from "
    )
    assert (state["served"], vision.requests) == (2, 2)


def test_response_headers_that_trickle_are_retried_as_a_timeout(slow_headers):
    url, state = slow_headers
    # The retry has the 2 s the first attempt left of the budget: room for a loaded machine.
    with VisionClient(url, timeout_s=2, retries=2, backoff_s=0, pool_size=1) as vision:
        listed = vision.list_page(PREFIX, subject=SYMBOL)
    assert listed.keys == [key(1)]
    assert (state["served"], vision.requests, vision.retries) == (2, 2, 1)


# --- the emulator's faults, refused by the client ---------------------------------------------


@pytest.fixture(scope="module")
def faulty():
    universe = Universe.from_dict(
        {"today": "2024-01-10", "symbols": {SYMBOL: SPAN, "币安人生USDT": SPAN}}
    )
    with Emulator(universe) as server:
        yield server


@pytest.mark.parametrize(
    ("fault", "listed", "cause"),
    [
        ("not_found_html", PREFIX, "listing failed (HTTP 404, not S3: text/html)"),
        ("no_such_key", PREFIX, "listing failed (HTTP 404 NoSuchKey)"),
        ("bad_retry_after", PREFIX, "listing failed after 1 retry (HTTP 503 SlowDown)"),
        ("looping_token", ROOT, f"continuation token {LOOP_TOKEN!r} repeats the previous one"),
        ("empty_token", PREFIX, "truncated without a continuation token"),
        ("no_encoding_echo", PREFIX, "encoding-type=url asked for but not echoed"),
        ("prefix_empty", ROOT, "common prefix '' is not one folder under"),
        ("prefix_nested", ROOT, f"common prefix {ROOT + 'A/B/'!r} is not one folder under"),
        ("prefix_other_market", ROOT, f"common prefix {OTHER_MARKET_FOLDER!r} is not one folder"),
        ("key_outside_prefix", PREFIX, f"key '{OTHER_MARKET_FOLDER}1m/BTCUSD_PERP-1m-"),
    ],
)
def test_each_emulator_fault_is_refused_in_one_line(faulty, fault, listed, cause):
    faulty.set_knobs(Knobs(prefix_faults={listed: fault}))
    url = faulty.listing_url
    with (
        VisionClient(url, timeout_s=5, retries=1, backoff_s=0, pool_size=1) as vision,
        pytest.raises(VisionError) as failure,
    ):
        if listed == ROOT:
            vision.list_common_prefixes(ROOT, subject="symbols")
        else:
            list(vision.iter_pages(PREFIX, subject=SYMBOL))
    message = str(failure.value)
    assert cause in message and url in message and "\n" not in message
    assert vision.requests <= 2


# --- time: a probe is never stamped later than the server's clock ------------------------------

LOCAL = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)
assert SERVER_CLOCK_MAX_LAG == DAY


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (None, LOCAL),
        (LOCAL + dt.timedelta(hours=1), LOCAL),  # the server runs ahead: the local clock
        (LOCAL - dt.timedelta(seconds=1), LOCAL),  # within the tolerance
        (LOCAL - dt.timedelta(hours=3), LOCAL - dt.timedelta(hours=3) + SERVER_CLOCK_TOLERANCE),
        (LOCAL - DAY, LOCAL - DAY + SERVER_CLOCK_TOLERANCE),
        (LOCAL - DAY - dt.timedelta(seconds=1), LOCAL),  # a cached Date, no clock
        (dt.datetime(1970, 1, 1, tzinfo=UTC), LOCAL),  # a broken proxy's Date
    ],
    ids=[
        "no-date",
        "server-ahead",
        "within-tolerance",
        "local-clock-fast",
        "a-day-behind",
        "more-than-a-day-behind",
        "epoch",
    ],
)
def test_probe_time_is_the_local_clock_but_never_past_the_servers(server, expected):
    assert probe_time(LOCAL, server) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Tue, 01 Dec 2026 12:00:00 GMT", LOCAL),
        ("Tue, 01 Dec 2026 13:00:00 +0100", LOCAL),
        ("Tue, 01 Dec 2026 12:00:00 -0000", LOCAL),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_http_date_reads_rfc_dates_and_nothing_else(header, expected):
    assert http_date(header) == expected


@responses.activate
def test_rows_are_stamped_no_later_than_the_servers_date():
    # The local clock runs an hour ahead of the server's, as the fast machine did.
    server_date = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    date_header = server_date.strftime("%a, %d %b %Y %H:%M:%S GMT")
    responses.get(LIST_URL, body=page([key(1)]), headers={"Date": date_header}, **XML)
    with client() as vision:
        rows, stats = probe(
            vision,
            LAYOUT,
            [ProbeRange(SYMBOL, dt.date(2024, 1, 1), dt.date(2024, 1, 2))],
            workers=1,
        )
    assert server_date <= stats.probed_at <= server_date + dt.timedelta(seconds=5)
    assert rows["probe_timestamp"].unique().to_list() == [stats.probed_at]


@responses.activate
def test_without_a_date_header_rows_are_stamped_with_the_local_clock():
    responses.get(LIST_URL, body=page([key(1)]), **XML)
    before = dt.datetime.now(UTC)
    with client() as vision:
        vision.list_page(PREFIX, subject=SYMBOL)
        stamped = vision.now()
    assert before <= stamped <= dt.datetime.now(UTC)


def http_date_of(moment: dt.datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


def stamped_after(*dates: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The clock `VisionClient.now()` gives after answers with these Dates, in this order, and
    the local clock just before."""
    for date in dates:
        responses.get(LIST_URL, body=page([key(1)]), headers={"Date": http_date_of(date)}, **XML)
    before = dt.datetime.now(UTC)
    with client() as vision:
        for _ in dates:
            vision.list_page(PREFIX, subject=SYMBOL)
        return vision.now(), before


@responses.activate
def test_the_latest_server_date_seen_wins_not_the_last_to_arrive():
    now = dt.datetime.now(UTC).replace(microsecond=0)
    # A worker's answer with an older Date (a cached one) arrives after a fresh one.
    stamped, _ = stamped_after(now - dt.timedelta(hours=1), now - dt.timedelta(hours=3))
    assert now - dt.timedelta(hours=1) <= stamped <= now - dt.timedelta(hours=1) + 5 * SECOND


@pytest.mark.parametrize(
    "stale",
    [dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime.now(UTC) - 2 * DAY],
    ids=["epoch", "two-days-old"],
)
@responses.activate
def test_a_server_date_more_than_a_day_behind_is_ignored(stale):
    stamped, before = stamped_after(stale)
    assert before <= stamped <= dt.datetime.now(UTC)
