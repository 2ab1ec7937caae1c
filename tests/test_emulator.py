"""The Binance Vision emulator: universe semantics, listing logic, generator and HTTP server."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, unquote_plus

import pytest
import requests

from devtools.emulator import (
    Emulator,
    Knobs,
    Universe,
    generate_universe,
    list_objects,
    load_reference,
    object_body,
    object_meta,
)
from devtools.emulator.process import EmulatorProcess
from devtools.emulator.server import (
    FAULTS,
    LOOP_TOKEN,
    OTHER_MARKET_FOLDER,
    PREFIX_FAULTS,
    TRICKLE_INTERVAL_S,
)

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
ROOT = "data/futures/um/daily/klines/"
MONTHLY_ROOT = "data/futures/um/monthly/klines/"
TODAY = date(2021, 6, 1)
REPO = Path(__file__).resolve().parents[1]


def folder(symbol: str, interval: str = "1m") -> str:
    return f"{ROOT}{symbol}/{interval}/"


def zip_key(symbol: str, day: date | str, interval: str = "1m") -> str:
    return f"{folder(symbol, interval)}{symbol}-{interval}-{day}.zip"


@pytest.fixture
def universe() -> Universe:
    """Small but awkward: >1000 keys in BTCUSDT, a relisting, non-ASCII, delivery, late files."""
    return Universe.from_dict(
        {
            "today": TODAY.isoformat(),
            "market": "um",
            "data_type": "klines",
            "intervals": ["1m"],
            "symbols": {
                "BTCUSDT": {
                    "spans": [["2019-09-25", None]],
                    "missing": ["2020-03-12"],
                    "late": {"2021-05-30": "2021-06-03"},
                },
                "ETHUSDT": {"spans": [["2020-01-01", "2020-01-31"], ["2021-05-01", None]]},
                "BTCUSDT_210326": {"spans": [["2020-12-25", "2021-03-26"]]},
                "币安人生USDT": {"spans": [["2021-05-20", None]]},
                "NEWUSDT": {"spans": [["2021-06-01", None]]},
            },
        }
    )


def kline_months(u: Universe, symbol: str) -> list[str]:
    """The months with a monthly 1d file, for a universe whose today is the first of a month.

    The files of a month are published on day 1 to 3 of the next: on the first of a month,
    the last month's is not out yet, and every earlier month with a day of a span that is
    not missing has one.
    """
    assert u.today.day == 1
    spec = u.specs[symbol]
    months = set()
    for start, end in spec.spans:
        day = start
        while day < u.today and (end is None or day <= end):
            if day not in spec.missing:
                months.add(day.strftime("%Y-%m"))
            day += timedelta(days=1)
    return sorted(months - {(u.today - timedelta(days=1)).strftime("%Y-%m")})


def all_keys(u: Universe) -> list[str]:
    """Every key of the bucket, materialised: the slow, obvious reference."""
    keys = []
    for symbol in u.symbols:
        for interval in (*u.intervals, "1d"):
            for day in u.available_dates(symbol):
                key = zip_key(symbol, day, interval)
                keys += [key, key + ".CHECKSUM"]
    for symbol in u.specs:
        for month in kline_months(u, symbol):
            key = f"{MONTHLY_ROOT}{symbol}/1d/{symbol}-1d-{month}.zip"
            keys += [key, key + ".CHECKSUM"]
    return sorted(keys)


def reference_listing(
    keys: list[str], prefix: str, delimiter: str | None, start_after: str | None, max_keys: int
) -> tuple[list[tuple[bool, str]], bool]:
    """Entries (is_common_prefix, name) of one page, and whether more follow."""
    entries: list[tuple[bool, str]] = []
    seen: set[str] = set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            common = key[: cut + len(delimiter or "")]
            if common not in seen and (not start_after or common > start_after):
                entries.append((True, common))
            seen.add(common)
        elif not start_after or key > start_after:
            entries.append((False, key))
    return entries[:max_keys], len(entries) > max_keys


# --- universe semantics ---------------------------------------------------------------------


def test_available_dates_follow_spans_missing_late_and_today(universe: Universe) -> None:
    btc = universe.available_dates("BTCUSDT")
    assert btc[0] == date(2019, 9, 25)
    assert btc[-1] == TODAY - timedelta(days=1)
    assert date(2020, 3, 12) not in btc  # missing
    assert date(2021, 5, 30) not in btc  # late, not yet published
    assert len(btc) == (TODAY - date(2019, 9, 25)).days - 2

    eth = universe.available_dates("ETHUSDT")
    assert eth[:31] == [date(2020, 1, 1) + timedelta(days=n) for n in range(31)]
    assert eth[31] == date(2021, 5, 1)
    assert universe.available_dates("BTCUSDT_210326")[-1] == date(2021, 3, 26)


def test_late_file_appears_on_its_late_date(universe: Universe) -> None:
    late_day = date(2021, 5, 30)
    assert late_day not in universe.with_today("2021-06-02").available_dates("BTCUSDT")
    assert late_day in universe.with_today("2021-06-03").available_dates("BTCUSDT")
    key = zip_key("BTCUSDT", late_day)
    assert not universe.has_object(key)
    assert universe.with_today("2021-06-03").has_object(key)


def test_symbols_are_those_with_a_visible_file_in_utf8_order(universe: Universe) -> None:
    # NEWUSDT lists today: its first file shows tomorrow.
    assert universe.symbols == ("BTCUSDT", "BTCUSDT_210326", "ETHUSDT", "币安人生USDT")
    assert list(universe.symbols) == sorted(universe.symbols, key=lambda s: s.encode())
    assert universe.available_dates("NEWUSDT") == []
    assert "NEWUSDT" in universe.with_today("2021-06-02").symbols
    with pytest.raises(KeyError):
        universe.available_dates("NOSUCHUSDT")


def test_helpers_return_new_universes(universe: Universe) -> None:
    fewer = universe.without_file("ETHUSDT", "2021-05-02")
    assert date(2021, 5, 2) in universe.available_dates("ETHUSDT")
    assert date(2021, 5, 2) not in fewer.available_dates("ETHUSDT")

    more = universe.with_symbol("XRPUSDT", [(date(2021, 5, 1), date(2021, 5, 3))])
    assert "XRPUSDT" not in universe.symbols
    assert more.available_dates("XRPUSDT") == [date(2021, 5, d) for d in (1, 2, 3)]
    assert more.with_today("2021-05-02").available_dates("XRPUSDT") == [date(2021, 5, 1)]


def test_universe_round_trips_through_json(universe: Universe, tmp_path: Path) -> None:
    path = tmp_path / "universe.json"
    universe.save(path)
    assert Universe.load(path) == universe
    assert json.loads(path.read_text(encoding="utf-8")) == universe.to_dict()
    assert Universe.from_dict(universe.to_dict()).to_dict() == universe.to_dict()
    assert "币安人生USDT" in path.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["universe.json"]  # no temp file left


def test_to_dict_has_the_documented_shape(universe: Universe) -> None:
    d = universe.to_dict()
    assert d["today"] == "2021-06-01"
    assert (d["market"], d["data_type"], d["intervals"]) == ("um", "klines", ["1m"])
    assert d["symbols"]["BTCUSDT"] == {
        "spans": [["2019-09-25", None]],
        "missing": ["2020-03-12"],
        "late": {"2021-05-30": "2021-06-03"},
    }
    assert d["symbols"]["ETHUSDT"] == {
        "spans": [["2020-01-01", "2020-01-31"], ["2021-05-01", None]]
    }


@pytest.mark.parametrize(
    "symbols",
    [
        {"BAD/USDT": {"spans": [["2020-01-01", None]]}},
        {"BTCUSDT": {"spans": [["2020-01-02", "2020-01-01"]]}},
        {"BTCUSDT": {"spans": [["2020-01-01"]]}},
        {"BTCUSDT": {}},
    ],
)
def test_malformed_universe_documents_are_rejected(symbols: dict) -> None:
    with pytest.raises(ValueError):
        Universe.from_dict({"today": "2021-01-01", "symbols": symbols})


# --- object metadata and bodies -------------------------------------------------------------


def test_object_meta_is_deterministic_and_plausible() -> None:
    day = date(2024, 1, 31)
    key = zip_key("BTCUSDT", day)
    meta = object_meta(key)
    assert meta == object_meta(key)
    assert 20_000 <= meta.size <= 2_000_000
    assert len(meta.etag) == 32 and int(meta.etag, 16) >= 0 and '"' not in meta.etag
    assert meta.last_modified.tzinfo is not None and meta.last_modified.microsecond == 0
    day_end = datetime(2024, 2, 1, tzinfo=UTC)
    assert day_end < meta.last_modified < day_end + timedelta(days=2)
    assert object_meta(zip_key("ETHUSDT", day)) != meta


def test_checksum_body_names_the_zip_and_its_sha256() -> None:
    key = zip_key("币安人生USDT", "2025-01-02")
    body = object_body(key)
    checksum = object_body(key + ".CHECKSUM")
    assert len(body) == object_meta(key).size
    assert object_body(key) == body
    expected = f"{hashlib.sha256(body).hexdigest()}  币安人生USDT-1m-2025-01-02.zip\n".encode()
    assert checksum == expected
    assert object_meta(key + ".CHECKSUM").size == len(checksum)


def test_some_early_files_carry_2022_reupload_timestamps() -> None:
    days = [date(2019, 9, 25) + timedelta(days=n) for n in range(450)]
    years = Counter(
        object_meta(zip_key(symbol, day)).last_modified.year
        for symbol in ("BTCUSDT", "ETHUSDT", "BNBUSDT")
        for day in days
    )
    reuploaded = years[2022] / sum(years.values())
    assert 0.01 < reuploaded < 0.06
    assert object_meta(zip_key("BTCUSDT", "2024-05-05")).last_modified.year == 2024


def test_object_meta_rejects_keys_that_are_not_daily_files() -> None:
    with pytest.raises(ValueError):
        object_meta(folder("BTCUSDT") + "README.txt")


# --- listing logic --------------------------------------------------------------------------


def test_listing_matches_a_materialised_reference(universe: Universe) -> None:
    keys = all_keys(universe)
    assert len(keys) == universe.key_count
    rng = random.Random(7)
    prefixes = [
        "",
        "data/",
        "data/futures/",
        ROOT,
        ROOT + "BTC",
        folder("BTCUSDT"),
        folder("BTCUSDT") + "BTCUSDT-1m-2020-0",
        folder("币安人生USDT"),
        "nothing/",
    ]
    for _ in range(400):
        prefix = rng.choice(prefixes)
        delimiter = rng.choice([None, "/", "-", ".zip"])
        start_after = rng.choice([None, rng.choice(keys), rng.choice(keys)[: rng.randint(1, 70)]])
        max_keys = rng.choice([1, 2, 5, 1000])
        page = list_objects(
            universe,
            prefix=prefix,
            delimiter=delimiter,
            start_after=start_after,
            max_keys=max_keys,
        )
        expected, truncated = reference_listing(keys, prefix, delimiter, start_after, max_keys)
        case = (prefix, delimiter, start_after, max_keys)
        assert [k for k, _ in page.keys] == [name for common, name in expected if not common], case
        assert page.common_prefixes == [name for common, name in expected if common], case
        assert page.is_truncated == truncated, case
        assert page.last_returned == (expected[-1][1] if expected else None), case


def test_listed_metadata_equals_object_meta(universe: Universe) -> None:
    page = list_objects(universe, prefix=ROOT + "BTCUSDT/", max_keys=5000)
    assert len(page.keys) == 4 * len(universe.available_dates("BTCUSDT"))
    for key, meta in page.keys:
        assert meta == universe.meta(key)
        if "/1m/" in key:
            assert meta == object_meta(key)


def test_intermediate_folders_list_as_common_prefixes(universe: Universe) -> None:
    def common(prefix: str) -> list[str]:
        return list_objects(universe, prefix=prefix, delimiter="/").common_prefixes

    assert common("") == ["data/"]
    assert common("data/futures/") == ["data/futures/um/"]
    assert common("data/futures/um/") == ["data/futures/um/daily/", "data/futures/um/monthly/"]
    assert common(ROOT) == [ROOT + s + "/" for s in universe.symbols]
    assert common(ROOT + "BTCUSDT/") == [folder("BTCUSDT", "1d"), folder("BTCUSDT")]
    monthly = ("BTCUSDT", "BTCUSDT_210326", "ETHUSDT")  # 币安人生USDT: not a month yet
    assert common(MONTHLY_ROOT) == [MONTHLY_ROOT + s + "/" for s in monthly]
    empty = list_objects(universe, prefix="data/spot/", delimiter="/")
    assert (empty.keys, empty.common_prefixes, empty.is_truncated) == ([], [], False)


def test_common_prefixes_count_toward_max_keys(universe: Universe) -> None:
    page = list_objects(universe, prefix=ROOT, delimiter="/", max_keys=3)
    assert len(page.common_prefixes) == 3 and page.is_truncated
    assert page.last_returned == page.common_prefixes[-1]
    rest = list_objects(universe, prefix=ROOT, delimiter="/", start_after=page.last_returned)
    assert rest.common_prefixes == [ROOT + "币安人生USDT/"] and not rest.is_truncated


def test_full_scale_universe_pages_without_materialising_keys() -> None:
    full = generate_universe(load_reference(), today=date(2026, 11, 29)).prepare()
    assert full.key_count > 2_000_000
    started = time.perf_counter()
    page = list_objects(
        full, prefix=folder("BTCUSDT"), start_after=zip_key("BTCUSDT", "2021-01-01")
    )
    elapsed = time.perf_counter() - started
    assert len(page.keys) == 1000 and page.is_truncated
    assert page.keys[0][0] == zip_key("BTCUSDT", "2021-01-01") + ".CHECKSUM"
    # ~2 ms on a laptop; materialising the 2M keys would take seconds. Room for loaded machines.
    assert elapsed < 2


# --- generator ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> dict:
    return load_reference()


def test_generator_is_deterministic(reference: dict) -> None:
    today = date(2026, 11, 29)
    first = generate_universe(reference, today=today, n_symbols=60, seed=3)
    assert generate_universe(reference, today=today, n_symbols=60, seed=3) == first
    assert generate_universe(reference, today=today, n_symbols=60, seed=4) != first


def test_generated_universe_is_realistic(reference: dict) -> None:
    today = date(2026, 11, 29)
    u = generate_universe(reference, today=today)
    perpetual = [name for name in u.specs if not name.rpartition("_")[2].isdigit()]
    assert set(perpetual) == set(reference["perpetual"])
    assert {"币安人生USDT", "我踏马来了USDT", "龙虾USDT"} <= set(u.symbols)
    assert u.specs["BTCUSDT"].spans == ((date(2019, 9, 25), None),)  # the founding contract
    delivery = [name for name in u.specs if name not in perpetual]
    assert 30 <= len(delivery) <= 50
    assert "BTCUSDT_261225" not in generate_universe(reference, today=date(2026, 6, 1)).specs
    for name in delivery:  # trades for at most ~6 months, up to its expiry
        (start, end), *_ = u.specs[name].spans
        assert (
            end is not None and 85 <= (end - start).days <= 180 and end.strftime("%y%m%d") in name
        )

    settled = [u.specs[name] for name in perpetual if "SETTLED" in name]
    assert settled and all(spec.spans[-1][1] is not None for spec in settled)
    ended = sum(spec.spans[0][1] is not None for spec in u.specs.values())
    assert 0.07 < ended / len(u.specs) < 0.2
    assert any(len(spec.spans) == 2 for spec in u.specs.values())

    first_day = Counter(spec.spans[0][0] for spec in u.specs.values())
    assert 0.1 < first_day[date(2019, 9, 25)] / len(perpetual) < 0.2
    months = Counter(
        spec.spans[0][0].strftime("%Y-%m")
        for name, spec in u.specs.items()
        if name in perpetual and reference["first_seen"][name] > "2025-11-16"
    )
    recent = [months[m] for m in ("2026-04", "2026-05", "2026-06", "2026-07", "2026-08")]
    assert all(8 <= n <= 60 for n in recent), recent  # about one listing a day

    with_late = [spec for spec in u.specs.values() if spec.late]
    assert 0.15 < len(with_late) / len(u.symbols) < 0.4
    assert all(
        today - timedelta(days=5) <= d < today < shown
        for s in with_late
        for d, shown in s.late.items()
    )
    visible_days = replace(u, kline_1d=False).key_count / 2  # a zip and a .CHECKSUM a day
    missing = sum(len(spec.missing) for spec in u.specs.values())
    assert 0.001 < missing / visible_days < 0.006


def test_generated_subset_keeps_the_awkward_names(reference: dict) -> None:
    u = generate_universe(reference, today=date(2026, 11, 29), n_symbols=12, seed=5)
    assert len(u.specs) == 12
    names = set(u.specs)
    assert {"币安人生USDT", "我踏马来了USDT", "龙虾USDT"} <= names
    assert any("SETTLED" in name for name in names)
    assert any(name.rpartition("_")[2].isdigit() for name in names)
    without = generate_universe(
        reference, today=date(2026, 11, 29), n_symbols=12, include_delivery=False
    )
    assert not any(name.rpartition("_")[2].isdigit() for name in without.specs)
    with pytest.raises(ValueError):
        generate_universe(reference, today=date(2026, 11, 29), n_symbols=2)


def test_a_symbol_history_does_not_depend_on_the_subset(reference: dict) -> None:
    today = date(2026, 11, 29)
    whole = generate_universe(reference, today=today, seed=9)
    part = generate_universe(reference, today=today, n_symbols=20, seed=9)
    assert all(part.specs[name] == whole.specs[name] for name in part.specs)


# --- HTTP -----------------------------------------------------------------------------------


@pytest.fixture
def emulator(universe: Universe) -> Iterator[Emulator]:
    with Emulator(universe) as running:
        yield running


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@dataclass
class Page:
    keys: list[str]
    common_prefixes: list[str]
    is_truncated: bool
    next_marker: str | None
    next_token: str | None
    key_count: int | None
    encoding_type: str | None


def parse(body: bytes) -> Page:
    root = ET.fromstring(body)
    assert root.tag == f"{NS}ListBucketResult"
    encoded = root.findtext(f"{NS}EncodingType") == "url"
    decode = unquote_plus if encoded else str
    key_count = root.findtext(f"{NS}KeyCount")
    next_marker = root.findtext(f"{NS}NextMarker")
    return Page(
        keys=[decode(e.text or "") for e in root.iterfind(f"{NS}Contents/{NS}Key")],
        common_prefixes=[
            decode(e.text or "") for e in root.iterfind(f"{NS}CommonPrefixes/{NS}Prefix")
        ],
        is_truncated=root.findtext(f"{NS}IsTruncated") == "true",
        next_marker=None if next_marker is None else decode(next_marker),
        next_token=root.findtext(f"{NS}NextContinuationToken"),
        key_count=None if key_count is None else int(key_count),
        encoding_type=root.findtext(f"{NS}EncodingType"),
    )


def get_page(http: requests.Session, emulator: Emulator, **params: str) -> Page:
    response = http.get(emulator.listing_url, params=params, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/xml"
    return parse(response.content)


def walk_v1(http: requests.Session, emulator: Emulator, **params: str) -> list[Page]:
    pages, marker = [], ""
    while True:
        page = get_page(http, emulator, marker=marker, **params)
        pages.append(page)
        if not page.is_truncated:
            return pages
        marker = page.next_marker or max(page.keys[-1:] + page.common_prefixes[-1:])


def walk_v2(http: requests.Session, emulator: Emulator, **params: str) -> list[Page]:
    pages: list[Page] = []
    token: dict[str, str] = {}
    while True:
        page = get_page(http, emulator, **{"list-type": "2"}, **params, **token)
        pages.append(page)
        if not page.is_truncated:
            return pages
        assert page.next_token
        token = {"continuation-token": page.next_token}


def test_v1_pages_cross_the_1000_key_boundary_without_next_marker(
    emulator: Emulator, http: requests.Session, universe: Universe
) -> None:
    pages = walk_v1(http, emulator, prefix=folder("BTCUSDT"))
    assert [len(p.keys) for p in pages] == [
        1000,
        len(universe.available_dates("BTCUSDT")) * 2 - 1000,
    ]
    assert all(p.next_marker is None for p in pages)  # S3 sends NextMarker only with a delimiter
    collected = [key for p in pages for key in p.keys]
    assert collected == [k for k in all_keys(universe) if k.startswith(folder("BTCUSDT"))]


def test_v2_pages_follow_continuation_tokens(
    emulator: Emulator, http: requests.Session, universe: Universe
) -> None:
    pages = walk_v2(http, emulator, prefix="")
    collected = [key for p in pages for key in p.keys]
    assert collected == all_keys(universe)
    assert len(collected) == len(set(collected))
    assert all(p.key_count == len(p.keys) for p in pages)
    assert [len(p.keys) for p in pages[:-1]] == [1000] * (len(pages) - 1)


def test_v2_start_after_in_the_middle_of_a_symbol(
    emulator: Emulator, http: requests.Session
) -> None:
    start = zip_key("BTCUSDT", "2021-05-01")
    page = get_page(
        http, emulator, **{"list-type": "2", "prefix": folder("BTCUSDT"), "start-after": start}
    )
    assert page.keys[0] == start + ".CHECKSUM"
    assert page.keys[1] == zip_key("BTCUSDT", "2021-05-02")
    assert page.keys[-1] == zip_key("BTCUSDT", "2021-05-31") + ".CHECKSUM"
    assert zip_key("BTCUSDT", "2021-05-30") not in page.keys  # late
    assert not page.is_truncated


@pytest.mark.parametrize("list_type", ["1", "2"])
def test_delimiter_rolls_up_symbols_and_prefixes_count_toward_max_keys(
    emulator: Emulator, http: requests.Session, universe: Universe, list_type: str
) -> None:
    params = {"prefix": ROOT, "delimiter": "/", "max-keys": "2"}
    walk = walk_v2 if list_type == "2" else walk_v1
    pages = walk(http, emulator, **params)
    assert [len(p.common_prefixes) for p in pages] == [2, 2]
    assert [p.is_truncated for p in pages] == [True, False]
    assert [c for p in pages for c in p.common_prefixes] == [
        ROOT + s + "/" for s in universe.symbols
    ]
    assert all(p.keys == [] for p in pages)
    if list_type == "1":
        assert pages[0].next_marker == pages[0].common_prefixes[-1]
    else:
        assert pages[0].key_count == 2


def test_listing_echoes_request_parameters(emulator: Emulator, http: requests.Session) -> None:
    response = http.get(
        emulator.listing_url,
        params={"prefix": ROOT, "delimiter": "/", "max-keys": "5000", "marker": ROOT + "A"},
    )
    root = ET.fromstring(response.content)
    assert [child.tag.removeprefix(NS) for child in root][:7] == [
        "Name",
        "Prefix",
        "Marker",
        "MaxKeys",
        "Delimiter",
        "IsTruncated",
        "CommonPrefixes",
    ]
    assert root.findtext(f"{NS}Name") == "data.binance.vision"
    assert root.findtext(f"{NS}Marker") == ROOT + "A"
    assert root.findtext(f"{NS}MaxKeys") == "1000"  # capped


def test_listing_contents_carry_s3_fields(emulator: Emulator, http: requests.Session) -> None:
    response = http.get(emulator.listing_url, params={"prefix": folder("ETHUSDT"), "max-keys": "1"})
    assert "<ETag>&quot;" in response.text
    contents = ET.fromstring(response.content).find(f"{NS}Contents")
    assert contents is not None
    key = contents.findtext(f"{NS}Key") or ""
    meta = object_meta(key)
    assert [child.tag.removeprefix(NS) for child in contents] == [
        "Key",
        "LastModified",
        "ETag",
        "Size",
        "StorageClass",
    ]
    assert contents.findtext(f"{NS}ETag") == f'"{meta.etag}"'
    assert contents.findtext(f"{NS}Size") == str(meta.size)
    assert contents.findtext(f"{NS}LastModified") == meta.last_modified.strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
    assert contents.findtext(f"{NS}StorageClass") == "STANDARD"


def test_empty_and_unknown_prefixes(emulator: Emulator, http: requests.Session) -> None:
    whole = get_page(http, emulator)
    assert len(whole.keys) == 1000 and whole.is_truncated
    assert whole.keys[0] == zip_key("BTCUSDT", "2019-09-25", "1d")
    nothing = get_page(http, emulator, prefix="data/futures/cm/")
    assert (nothing.keys, nothing.common_prefixes, nothing.is_truncated) == ([], [], False)


@pytest.mark.parametrize("encoding", [None, "url"])
def test_non_ascii_keys_list_with_and_without_url_encoding(
    emulator: Emulator, http: requests.Session, universe: Universe, encoding: str | None
) -> None:
    params = {"list-type": "2", "prefix": ROOT + "币安"}
    if encoding:
        params["encoding-type"] = encoding
    response = http.get(emulator.listing_url, params=params)
    expected = [
        zip_key("币安人生USDT", d, interval)
        for interval in ("1d", "1m")
        for d in universe.available_dates("币安人生USDT")
    ]
    raw = quote(expected[0], safe="/")
    assert (raw in response.text) == (encoding == "url")
    assert (expected[0] in response.text) == (encoding is None)
    page = parse(response.content)
    assert page.keys[::2] == expected
    assert page.encoding_type == encoding


@pytest.mark.parametrize(
    "params",
    [
        {"list-type": "2", "continuation-token": "not a token"},
        {"list-type": "2", "continuation-token": base64.urlsafe_b64encode(b"x").decode()},
        {"max-keys": "many"},
        {"encoding-type": "base64"},
    ],
)
def test_bad_listing_parameters_answer_400(
    emulator: Emulator, http: requests.Session, params: dict[str, str]
) -> None:
    response = http.get(emulator.listing_url, params=params)
    assert response.status_code == 400
    assert ET.fromstring(response.content).findtext("Code") == "InvalidArgument"


@pytest.mark.parametrize("base", ["listing_url", "download_url"])
def test_head_and_get_of_an_object(emulator: Emulator, http: requests.Session, base: str) -> None:
    key = zip_key("币安人生USDT", "2021-05-25")
    url = f"{getattr(emulator, base)}/{quote(key)}"
    meta = object_meta(key)
    head = http.head(url)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(meta.size)
    assert head.headers["ETag"] == f'"{meta.etag}"'
    assert head.headers["Content-Type"] == "application/zip"
    assert parsedate_to_datetime(head.headers["Last-Modified"]) == meta.last_modified
    assert head.content == b""
    got = http.get(url)
    assert got.content == object_body(key)
    checksum = http.get(url + ".CHECKSUM")
    assert checksum.headers["Content-Type"] == "text/plain"
    assert checksum.content == object_body(key + ".CHECKSUM")


def test_missing_objects_answer_404_no_such_key(emulator: Emulator, http: requests.Session) -> None:
    missing = zip_key("BTCUSDT", "2020-03-12")
    got = http.get(f"{emulator.download_url}/{missing}")
    assert got.status_code == 404
    error = ET.fromstring(got.content)
    assert error.tag == "Error"
    assert error.findtext("Code") == "NoSuchKey"
    assert error.findtext("Key") == missing
    assert error.findtext("RequestId")
    assert error.findtext("Message")
    head = http.head(f"{emulator.listing_url}/{zip_key('BTCUSDT', '2021-05-30')}")  # late
    assert head.status_code == 404 and head.content == b""
    assert http.get(f"{emulator.url}/{folder('BTCUSDT')}").status_code == 404


def test_counters_count_s3_requests_only(emulator: Emulator, http: requests.Session) -> None:
    get_page(http, emulator, prefix=folder("BTCUSDT"))
    get_page(http, emulator, prefix=folder("BTCUSDT"), marker=zip_key("BTCUSDT", "2021-01-01"))
    http.head(f"{emulator.download_url}/{zip_key('ETHUSDT', '2021-05-05')}")
    http.get(f"{emulator.download_url}/{zip_key('ETHUSDT', '2019-05-05')}")
    over_http = http.get(f"{emulator.url}/_emulator/counters").json()
    assert over_http == emulator.counters()
    assert over_http == {
        "requests": 4,
        "by_kind": {"list": 2, "head": 1, "get": 1},
        "by_prefix": {folder("BTCUSDT"): 2, folder("ETHUSDT"): 2},
        "faults": dict.fromkeys(FAULTS, 0),
    }
    assert http.head(f"{emulator.url}/_emulator/counters").status_code == 404  # no body sent
    assert http.get(f"{emulator.url}/_emulator/knobs").json() == Knobs().to_dict()
    assert http.post(f"{emulator.url}/_emulator/counters/reset").status_code == 200
    assert emulator.counters()["requests"] == 0
    get_page(http, emulator, prefix=ROOT, delimiter="/")
    emulator.reset_counters()
    assert emulator.counters()["by_prefix"] == {}


def test_waiting_until_idle_counts_what_a_vanished_client_left_in_flight(
    emulator: Emulator,
) -> None:
    # Three listings sent on three connections, whose client then vanishes while the
    # emulator still sleeps its latency: they are counted by then, or only later.
    emulator.set_knobs(Knobs(latency_ms=300))
    request = f"GET /?prefix={ROOT} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", emulator.port)) as vanishing:
            vanishing.sendall(request)
    emulator.wait_until_idle()
    assert emulator.counters()["requests"] == 3
    emulator.reset_counters()
    time.sleep(0.4)  # longer than the latency: nothing of the vanished client is left
    assert emulator.counters()["requests"] == 0


def test_slowdown_knob_answers_503_slowdown(emulator: Emulator, http: requests.Session) -> None:
    emulator.set_knobs(Knobs(slowdown_rate=1.0))
    response = http.get(emulator.listing_url, params={"prefix": ROOT})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "0"
    assert ET.fromstring(response.content).findtext("Code") == "SlowDown"
    assert http.get(f"{emulator.url}/_emulator/counters").status_code == 200  # never faulted
    assert emulator.counters()["faults"]["slowdown"] == 1


def test_reset_knob_resets_the_connection(emulator: Emulator, http: requests.Session) -> None:
    emulator.set_knobs(Knobs(reset_rate=1.0))
    with pytest.raises(requests.ConnectionError):
        http.get(emulator.listing_url, params={"prefix": ROOT})
    assert emulator.counters()["faults"]["reset"] == 1
    emulator.set_knobs(Knobs())
    assert get_page(http, emulator, prefix=ROOT, delimiter="/").common_prefixes


def test_fault_rates_are_seeded(emulator: Emulator, http: requests.Session) -> None:
    def statuses() -> list[int]:
        emulator.set_knobs(Knobs(slowdown_rate=0.5, seed=11))
        return [
            http.head(f"{emulator.url}/{zip_key('BTCUSDT', '2020-01-01')}").status_code
            for _ in range(30)
        ]

    first = statuses()
    assert set(first) == {200, 503}
    assert statuses() == first


def test_malformed_knob_cuts_the_xml(emulator: Emulator, http: requests.Session) -> None:
    knobs = {"prefix_faults": {folder("ETHUSDT"): "malformed"}}
    assert http.put(f"{emulator.url}/_emulator/knobs", json=knobs).status_code == 200
    assert emulator.knobs == Knobs(prefix_faults={folder("ETHUSDT"): "malformed"})
    broken = http.get(emulator.listing_url, params={"prefix": folder("ETHUSDT")})
    assert broken.status_code == 200
    assert broken.headers["Content-Type"] == "application/xml"
    with pytest.raises(ET.ParseError):
        ET.fromstring(broken.content)
    assert get_page(http, emulator, prefix=folder("BTCUSDT")).keys  # other prefixes are fine
    assert emulator.counters()["faults"]["malformed"] == 1
    assert http.put(f"{emulator.url}/_emulator/knobs", json={"bogus": 1}).status_code == 400


def test_error_document_knob_answers_200_with_an_s3_error(
    emulator: Emulator, http: requests.Session
) -> None:
    emulator.set_knobs(Knobs(prefix_faults={folder("ETHUSDT"): "error_document"}))
    response = http.get(emulator.listing_url, params={"prefix": folder("ETHUSDT")})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/xml"
    error = ET.fromstring(response.content)
    assert (error.tag, error.findtext("Code")) == ("Error", "InternalError")
    assert error.findtext("RequestId") == response.headers["x-amz-request-id"]
    assert emulator.counters()["faults"]["error_document"] == 1


def test_truncated_knob_promises_the_page_and_closes_halfway(emulator: Emulator) -> None:
    emulator.set_knobs(Knobs(prefix_faults={folder("ETHUSDT"): "truncated"}))
    request = f"GET /data.binance.vision?prefix={quote(folder('ETHUSDT'), safe='')} HTTP/1.1"
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as raw:
        raw.sendall(f"{request}\r\nHost: emulator\r\n\r\n".encode())
        received = b""
        while chunk := raw.recv(65536):  # ends when the server closes the connection
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    promised = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
    assert head.startswith(b"HTTP/1.1 200 ")
    assert 0 < len(body) == promised // 2
    emulator.set_knobs(Knobs())
    whole = requests.get(emulator.listing_url, params={"prefix": folder("ETHUSDT")}, timeout=5)
    assert len(whole.content) == promised and whole.content.startswith(body)


def test_truncated_knob_breaks_a_client_midway(emulator: Emulator, http: requests.Session) -> None:
    emulator.set_knobs(Knobs(prefix_faults={folder("ETHUSDT"): "truncated"}))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        http.get(emulator.listing_url, params={"prefix": folder("ETHUSDT")}, timeout=5)
    assert emulator.counters()["faults"]["truncated"] == 1
    assert get_page(http, emulator, prefix=folder("BTCUSDT")).keys  # a new connection works


def test_html_knob_answers_a_portal_page(emulator: Emulator, http: requests.Session) -> None:
    emulator.set_knobs(Knobs(prefix_faults={ROOT: "html"}))
    response = http.get(emulator.listing_url, params={"prefix": folder("ETHUSDT")})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.text.startswith("<!DOCTYPE html>")
    assert emulator.counters()["faults"]["html"] == 1


def test_an_empty_folder_lists_as_200_with_no_keys(
    emulator: Emulator, http: requests.Session
) -> None:
    # S3 answers a folder that holds nothing as it answers any other: 200, an empty page.
    page = get_page(http, emulator, **{"list-type": "2", "prefix": folder("NOSUCHUSDT")})
    assert (page.keys, page.common_prefixes, page.is_truncated) == ([], [], False)
    assert page.key_count == 0


@pytest.mark.parametrize(
    ("fault", "content_type", "code"),
    [("not_found_html", "text/html", None), ("no_such_key", "application/xml", "NoSuchKey")],
)
def test_404_knobs_answer_a_listing_with_not_found(
    emulator: Emulator, http: requests.Session, fault: str, content_type: str, code: str | None
) -> None:
    emulator.set_knobs(Knobs(prefix_faults={folder("ETHUSDT"): fault}))
    response = http.get(emulator.listing_url, params={"prefix": folder("ETHUSDT")})
    assert (response.status_code, response.headers["Content-Type"]) == (404, content_type)
    if code is None:
        assert b"404 Not Found" in response.content
    else:
        assert ET.fromstring(response.content).findtext("Code") == code
    assert emulator.counters()["faults"][fault] == 1


def test_bad_retry_after_knob_sends_a_503_whose_retry_after_is_no_number(
    emulator: Emulator, http: requests.Session
) -> None:
    emulator.set_knobs(Knobs(prefix_faults={ROOT: "bad_retry_after"}))
    response = http.get(emulator.listing_url, params={"prefix": ROOT})
    assert (response.status_code, response.headers["Retry-After"]) == (503, "soon")
    assert ET.fromstring(response.content).findtext("Code") == "SlowDown"


def test_looping_token_knob_answers_the_first_page_again_with_the_same_token(
    emulator: Emulator, http: requests.Session
) -> None:
    emulator.set_knobs(Knobs(prefix_faults={ROOT: "looping_token"}))
    query = {"list-type": "2", "prefix": ROOT, "delimiter": "/"}
    first = get_page(http, emulator, **query)
    again = get_page(http, emulator, **query, **{"continuation-token": LOOP_TOKEN})
    assert first == again
    assert first.is_truncated and first.next_token == LOOP_TOKEN
    assert first.common_prefixes == [ROOT + s + "/" for s in sorted(emulator.universe.symbols)]


def test_empty_token_knob_truncates_the_page_without_a_token(
    emulator: Emulator, http: requests.Session
) -> None:
    emulator.set_knobs(Knobs(prefix_faults={folder("ETHUSDT"): "empty_token"}))
    page = get_page(http, emulator, **{"list-type": "2", "prefix": folder("ETHUSDT")})
    assert page.is_truncated and page.next_token == ""
    assert page.keys[0] == zip_key("ETHUSDT", "2020-01-01")


def test_no_encoding_echo_knob_drops_the_echo_but_keeps_names_encoded(
    emulator: Emulator, http: requests.Session
) -> None:
    prefix = folder("币安人生USDT")
    emulator.set_knobs(Knobs(prefix_faults={prefix: "no_encoding_echo"}))
    query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
    response = http.get(emulator.listing_url, params=query)
    page = parse(response.content)
    assert page.encoding_type is None
    assert page.keys[0] == quote(zip_key("币安人生USDT", "2021-05-20"), safe="/")


@pytest.mark.parametrize(
    ("fault", "extra"),
    [
        ("prefix_empty", ""),
        ("prefix_nested", ROOT + "A/B/"),
        ("prefix_other_market", OTHER_MARKET_FOLDER),
    ],
)
def test_foreign_prefix_knobs_add_a_common_prefix_no_listing_of_the_root_holds(
    emulator: Emulator, http: requests.Session, fault: str, extra: str
) -> None:
    emulator.set_knobs(Knobs(prefix_faults={ROOT: fault}))
    page = get_page(http, emulator, **{"list-type": "2", "prefix": ROOT, "delimiter": "/"})
    assert page.common_prefixes[-1] == extra
    assert page.common_prefixes[:-1] == [ROOT + s + "/" for s in sorted(emulator.universe.symbols)]


def test_key_outside_prefix_knob_adds_another_markets_key(
    emulator: Emulator, http: requests.Session
) -> None:
    emulator.set_knobs(Knobs(prefix_faults={folder("ETHUSDT"): "key_outside_prefix"}))
    page = get_page(http, emulator, **{"list-type": "2", "prefix": folder("ETHUSDT")})
    assert page.keys[-1].startswith(OTHER_MARKET_FOLDER)
    assert all(key.startswith(folder("ETHUSDT")) for key in page.keys[:-1])


def test_trickle_knob_sends_the_body_a_byte_at_a_time(emulator: Emulator) -> None:
    emulator.set_knobs(Knobs(prefix_faults={ROOT: "trickle"}))
    request = f"GET /data.binance.vision?prefix={quote(ROOT, safe='')} HTTP/1.1"
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as raw:
        # From the request on: the pauses between bytes are then all inside what is timed,
        # however late this thread reads the head.
        started = time.monotonic()
        raw.sendall(f"{request}\r\nHost: emulator\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += raw.recv(65536)
        assert len(received.partition(b"\r\n\r\n")[2]) < 3  # the body comes after the head
        while len(received.partition(b"\r\n\r\n")[2]) < 3:
            received += raw.recv(65536)
        waited = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"<?x"
    assert waited >= 2 * TRICKLE_INTERVAL_S * 0.9
    assert emulator.counters()["faults"]["trickle"] == 1


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("slowdown", 503, "SlowDown"), ("internal_error", 500, "InternalError")],
)
def test_status_knobs_fail_every_request_of_the_prefix(
    emulator: Emulator, http: requests.Session, fault: str, status: int, code: str
) -> None:
    emulator.set_knobs(Knobs(prefix_faults={folder("ETHUSDT"): fault}))
    for _ in range(3):
        response = http.get(emulator.listing_url, params={"prefix": folder("ETHUSDT")})
        assert response.status_code == status
        assert ET.fromstring(response.content).findtext("Code") == code
    assert get_page(http, emulator, prefix=folder("BTCUSDT")).keys
    faults = emulator.counters()["faults"]
    assert faults == {name: 3 if name == fault else 0 for name in FAULTS}


def test_the_longest_faulted_prefix_wins(emulator: Emulator, http: requests.Session) -> None:
    emulator.set_knobs(Knobs(prefix_faults={ROOT: "internal_error", folder("ETHUSDT"): "html"}))

    def status(prefix: str) -> tuple[int, str]:
        response = http.get(emulator.listing_url, params={"prefix": prefix})
        return response.status_code, response.headers["Content-Type"]

    assert status(folder("ETHUSDT")) == (200, "text/html; charset=utf-8")
    assert status(folder("BTCUSDT")) == (500, "application/xml")
    assert status(ROOT) == (500, "application/xml")
    assert status("data/futures/") == (200, "application/xml")
    # Objects under a faulted prefix get its fault too, the longest prefix's.
    eth = http.get(f"{emulator.url}/{zip_key('ETHUSDT', '2021-05-05')}")
    btc = http.get(f"{emulator.url}/{zip_key('BTCUSDT', '2021-05-05')}")
    assert (eth.status_code, eth.headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    assert btc.status_code == 500
    assert http.get(f"{emulator.url}/{MONTHLY_ROOT}BTCUSDT/1d/BTCUSDT-1d-2021-01.zip").ok


@pytest.mark.parametrize(("retry_after", "header"), [(0, "0"), (7, "7"), (None, None)])
def test_retry_after_knob_sets_the_slowdown_header(
    emulator: Emulator,
    http: requests.Session,
    retry_after: int | None,
    header: str | None,
) -> None:
    emulator.set_knobs(Knobs(slowdown_rate=1.0, retry_after_s=retry_after))
    random_fault = http.get(emulator.listing_url, params={"prefix": ROOT})
    emulator.set_knobs(Knobs(retry_after_s=retry_after, prefix_faults={ROOT: "slowdown"}))
    prefix_fault = http.get(emulator.listing_url, params={"prefix": ROOT})
    for response in (random_fault, prefix_fault):
        assert response.status_code == 503
        assert response.headers.get("Retry-After") == header


def test_knobs_round_trip_through_the_control_endpoint(
    emulator: Emulator, http: requests.Session
) -> None:
    knobs = Knobs(
        latency_ms=1.5,
        slowdown_rate=0.1,
        reset_rate=0.02,
        retry_after_s=None,
        prefix_faults={ROOT: "truncated", folder("币安人生USDT"): "error_document"},
        seed=3,
    )
    assert http.put(f"{emulator.url}/_emulator/knobs", json=knobs.to_dict()).status_code == 200
    served = http.get(f"{emulator.url}/_emulator/knobs").json()
    assert served == knobs.to_dict() == json.loads(json.dumps(knobs.to_dict()))
    assert Knobs.from_dict(served) == knobs == emulator.knobs


@pytest.mark.parametrize(
    "knobs",
    [
        {"prefix_faults": {ROOT: "meltdown"}},
        {"retry_after_s": 1.5},
        {"retry_after_s": -1},
        {"retry_after_s": True},
        {"slowdown_rate": 0.6, "reset_rate": 0.6},
    ],
)
def test_bad_knobs_answer_400_and_leave_the_knobs_alone(
    emulator: Emulator, http: requests.Session, knobs: dict
) -> None:
    response = http.put(f"{emulator.url}/_emulator/knobs", json=knobs)
    assert response.status_code == 400 and response.json()["error"]
    assert emulator.knobs == Knobs()


def test_knobs_cannot_be_changed_in_place() -> None:
    knobs = Knobs(prefix_faults={ROOT: "html"})
    with pytest.raises(TypeError):
        knobs.prefix_faults[ROOT] = "slowdown"  # type: ignore[index]
    assert set(PREFIX_FAULTS) <= set(FAULTS)


def test_latency_knob_delays_s3_requests(emulator: Emulator, http: requests.Session) -> None:
    emulator.set_knobs(Knobs(latency_ms=150))
    started = time.perf_counter()
    http.head(f"{emulator.url}/{zip_key('BTCUSDT', '2020-01-01')}")
    assert time.perf_counter() - started >= 0.15


def test_universe_swaps_atomically(
    emulator: Emulator, http: requests.Session, universe: Universe
) -> None:
    key = zip_key("BTCUSDT", "2021-05-30")
    assert http.head(f"{emulator.url}/{key}").status_code == 404
    emulator.set_universe(universe.with_today("2021-06-03"))
    assert http.head(f"{emulator.url}/{key}").status_code == 200

    smaller = universe.with_today("2021-06-03").without_file("BTCUSDT", "2021-05-30")
    put = http.put(f"{emulator.url}/_emulator/universe", data=smaller.to_json().encode())
    assert put.status_code == 200
    assert http.head(f"{emulator.url}/{key}").status_code == 404
    served = http.get(f"{emulator.url}/_emulator/universe").json()
    assert Universe.from_dict(served) == smaller
    bad = http.put(f"{emulator.url}/_emulator/universe", data=b'{"today": 1}')
    assert bad.status_code == 400
    assert emulator.universe == smaller


def test_stop_ends_keep_alive_connections(universe: Universe, http: requests.Session) -> None:
    with Emulator(universe) as running:
        url = f"{running.url}/{zip_key('BTCUSDT', '2020-01-01')}"
        assert http.head(url).status_code == 200
    with pytest.raises(requests.ConnectionError):
        http.head(url)


# --- command line ---------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtools.emulator", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_generate_writes_a_universe(tmp_path: Path) -> None:
    out = tmp_path / "u.json"
    done = run_cli("generate", "--out", str(out), "--today", "2026-11-29", "--symbols", "25")
    assert done.returncode == 0, done.stderr
    u = Universe.load(out)
    assert len(u.specs) == 25 and u.today == date(2026, 11, 29)
    assert u == generate_universe(load_reference(), today=date(2026, 11, 29), n_symbols=25)


def test_cli_serve_writes_its_port_and_stops_on_sigterm(
    universe: Universe, tmp_path: Path, http: requests.Session
) -> None:
    universe_file = tmp_path / "u.json"
    universe.save(universe_file)
    port_file = tmp_path / "port"
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "devtools.emulator", "serve"),
            *("--universe", str(universe_file), "--port-file", str(port_file)),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        assert http.head(f"{url}/{zip_key('BTCUSDT', '2020-01-01')}").status_code == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
        assert not port_file.exists()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_emulator_process_serves_its_knobs_from_the_command_line(universe: Universe) -> None:
    knobs = Knobs(
        latency_ms=1,
        retry_after_s=None,
        prefix_faults={folder("ETHUSDT"): "html", folder("币安人生USDT"): "slowdown"},
        seed=5,
    )
    with EmulatorProcess(universe, knobs) as process, requests.Session() as http:
        served = Knobs.from_dict(http.get(f"{process.url}/_emulator/knobs", timeout=10).json())
        throttled = http.get(process.listing_url, params={"prefix": folder("币安人生USDT")})
    assert served == knobs
    assert throttled.status_code == 503 and "Retry-After" not in throttled.headers


@pytest.mark.parametrize(
    "flag", [("--fault", "data/=meltdown"), ("--fault", "data/"), ("--retry-after", "1.5")]
)
def test_cli_serve_rejects_bad_fault_flags(tmp_path: Path, flag: tuple[str, str]) -> None:
    done = run_cli("serve", "--universe", str(tmp_path / "u.json"), *flag)
    assert done.returncode == 2
    assert flag[0] in done.stderr


def test_a_reuploaded_file_is_listed_headed_and_got_with_its_new_metadata(
    universe: Universe,
) -> None:
    key = zip_key("BTCUSDT", "2020-05-05")
    changed = universe.with_reupload("BTCUSDT", "2020-05-05", on=TODAY)
    meta = changed.meta(key)
    assert meta != object_meta(key) and meta.last_modified.date() == TODAY
    listed = dict(list_objects(changed, prefix=key).keys)
    assert listed[key] == meta
    with Emulator(changed) as server:
        head = requests.head(f"{server.download_url}/{key}", timeout=5)
        got = requests.get(f"{server.download_url}/{key}", timeout=5)
    assert head.headers["ETag"] == f'"{meta.etag}"'
    assert int(head.headers["Content-Length"]) == meta.size == len(got.content)
    assert got.content == object_body(key, meta) != object_body(key)
