"""The volume stage end to end: the real `dvc repro` on the emulator's 1d kline files.

The dataset must equal the emulator's ground truth (`Universe.kline_rows`) row for row after
each run; a next day fetches only the files that are new since (new days, a new symbol's whole
history, a month's file superseding its days), each 1d folder listed at most once; a quiet day
costs one direct GET per active symbol and the listings of the symbols whose listing day it
is; a 1d file not out yet is pending and fetched the next day; a re-upload is fetched on its
symbol's listing day, a monthly one when its folder is next listed; a corrupted body fails the
run naming the file with the dataset untouched; a killed run resumes without downloading its
checkpointed files again.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from devtools.emulator import Emulator, Knobs, Universe
from devtools.scratch import ScratchProject
from pipeline.volume.planner import is_listing_day
from pipeline.volume.schema import KLINE_FIGURES, SCHEMA
from tests import e2e_support as e2e
from tests.e2e_support import AS_OF, NEXT_DAY, ONE_DAY, START

pytestmark = pytest.mark.e2e

SYMBOLS: dict[str, Any] = {
    "BTCUSDT": {"spans": [["2022-01-01", None]], "missing": ["2024-05-20"]},
    "OLDUSDT": {"spans": [["2022-03-01", "2023-02-28"]]},
    **{f"V{n}USDT": {"spans": [["2023-09-01", None]]} for n in range(4)},
}
DOCUMENT: dict[str, Any] = {
    "today": AS_OF.isoformat(),
    "market": "um",
    "data_type": "klines",
    "intervals": ["1m"],
    "symbols": SYMBOLS,
}
VOLUME = "data/volume"
CHECKPOINT = Path("data/.volume.checkpoint")
DAILY_1D = "data/futures/um/daily/klines/{0}/1d/{0}-1d-{1}.zip"
# The days the caught-up project runs on: May's monthly files are all out by then.
CAUGHT_UP = dt.date(2024, 6, 9)
LOOKBACK_DAYS = 5  # e2e.emulated_params'


def bucket(today: dt.date = AS_OF, **extra: Any) -> Universe:
    document = {**DOCUMENT, "today": today.isoformat(), "symbols": {**SYMBOLS, **extra}}
    return Universe.from_dict(document)


def truth(universe: Universe, as_of: dt.date) -> pl.DataFrame:
    """The volume dataset the contract promises for `universe` on `as_of`."""
    rows = [
        row
        for symbol in e2e.perpetual(universe)
        for row in universe.kline_rows(symbol, START, as_of - ONE_DAY)
    ]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row").sort("date", "symbol")


def volume(project: ScratchProject) -> pl.DataFrame:
    return pl.read_parquet(project.root / VOLUME / "*.parquet").sort("date", "symbol")


def metrics(project: ScratchProject) -> dict[str, Any]:
    return json.loads(project.read("metrics/volume.json"))


def volume_listings(counters: dict[str, Any]) -> int:
    """Listing requests of 1d folders: every listing but the availability stages' (whose
    prefixes see nothing else; a 1d folder's count holds its GETs too)."""
    others = sum(n for prefix, n in counters["by_prefix"].items() if "/1d/" not in prefix)
    return counters["by_kind"]["list"] - others


def volume_requests(counters: dict[str, Any]) -> int:
    """Every request of the volume stage: those of 1d folders and keys (listings and GETs)."""
    return sum(n for prefix, n in counters["by_prefix"].items() if "/1d/" in prefix)


def active(universe: Universe, day: dt.date) -> list[str]:
    """The symbols with a daily file on `day`."""
    return [s for s in e2e.perpetual(universe) if day in universe.available_dates(s)]


def run_on(project: ScratchProject, emulator: Emulator, universe: Universe, as_of: dt.date):
    """`dvc repro` on `as_of`, the emulator serving `universe` (counters reset)."""
    e2e.reset(emulator, universe)
    project.set_params({"run": {"as_of": as_of.isoformat()}})
    project.repro()


def once_per_folder(found: dict[str, Any]) -> bool:
    """Each 1d folder listed was listed with one request (they all fit on one page)."""
    folders = found["monthly_folders_listed"] + found["daily_folders_listed"]
    return found["listing_requests"] == folders


def sources(rows: pl.DataFrame) -> set[tuple[str, str]]:
    return set(rows.select("source", "source_etag").unique().iter_rows())


@pytest.fixture(scope="module")
def first(tmp_path_factory, e2e_emulator: Emulator) -> tuple[ScratchProject, dict[str, Any]]:
    """A project after its first run on the module's universe (committed), and its counters."""
    e2e.reset(e2e_emulator, bucket())
    project = ScratchProject.create(
        tmp_path_factory.mktemp("volume") / "repo", e2e.emulated_params(e2e_emulator)
    )
    project.repro()
    project.commit("first run")
    return project, e2e_emulator.counters()


@pytest.fixture
def project(first, tmp_path, emulator) -> ScratchProject:
    e2e.reset(emulator, bucket())
    return first[0].copy(tmp_path / "repo")


@pytest.fixture(scope="module")
def caught_up(first, tmp_path_factory, e2e_emulator: Emulator) -> ScratchProject:
    """The first project after a run on CAUGHT_UP (committed): May from its monthly files."""
    project = first[0].copy(tmp_path_factory.mktemp("volume-caught-up") / "repo")
    run_on(project, e2e_emulator, bucket(CAUGHT_UP), CAUGHT_UP)
    assert volume(project).equals(truth(bucket(CAUGHT_UP), CAUGHT_UP))
    project.commit("caught up")
    return project


@pytest.fixture
def later(caught_up, tmp_path, emulator) -> ScratchProject:
    return caught_up.copy(tmp_path / "repo")


def test_a_first_run_holds_the_ground_truth_at_the_minimum_of_requests(first):
    project, counters = first
    assert volume(project).equals(truth(bucket(), AS_OF))
    found = metrics(project)
    assert found["requests"] == found["listing_requests"] + found["download_requests"]
    assert once_per_folder(found)
    assert found["listing_requests"] == volume_listings(counters)
    assert found["download_requests"] == counters["by_kind"]["get"]
    assert found["requests"] == found["request_minimum"]
    assert found["files_fetched"] == len(sources(volume(project)))
    assert found["rows"] == volume(project).height
    validation = json.loads(project.read("metrics/validation.json"))
    assert validation["ok"] and validation["volume_rows"] == found["rows"]
    plot = pl.read_csv(project.root / "metrics/plots/volume_per_day.csv", try_parse_dates=True)
    expected = volume(project).group_by("date").agg(pl.col("quote_volume").sum()).sort("date")
    assert plot["date"].to_list() == expected["date"].to_list()
    assert plot["quote_volume"].to_list() == pytest.approx(expected["quote_volume"].to_list())


def test_next_days_fetch_only_new_files_a_new_symbols_history_and_superseding_months(
    project, emulator
):
    before = volume(project)
    # The next day: a new symbol (its whole history), a new day each.
    new = {"NEWUSDT": {"spans": [["2023-01-01", None]]}}
    next_bucket = bucket(NEXT_DAY, **new)
    run_on(project, emulator, next_bucket, NEXT_DAY)
    expected = truth(next_bucket, NEXT_DAY)
    after = volume(project)
    assert after.equals(expected)
    fetched = sources(after) - sources(before)
    found = metrics(project)
    assert found["files_fetched"] == len(fetched)
    assert once_per_folder(found)
    assert found["listing_requests"] == volume_listings(emulator.counters())
    assert found["requests"] == volume_requests(emulator.counters())
    assert found["requests"] == found["request_minimum"] and found["pending"] == 0
    assert before.join(after, on=list(SCHEMA), how="anti").is_empty()  # stored rows kept

    # Two days later some May monthly files are out: they replace their days' daily rows.
    third = next_bucket.with_today(NEXT_DAY + ONE_DAY)
    e2e.reset(emulator, third)
    project.set_params({"run": {"as_of": (NEXT_DAY + ONE_DAY).isoformat()}})
    project.repro()
    assert volume(project).equals(truth(third, NEXT_DAY + ONE_DAY))
    assert volume(project)["source"].str.ends_with("-1d-2024-05.zip").any()


def test_a_corrupted_body_fails_naming_the_file_and_leaves_the_dataset_untouched(project, emulator):
    e2e.reset(emulator, bucket(NEXT_DAY))
    faulted = "data/futures/um/daily/klines/V0USDT/1d/"
    emulator.set_knobs(Knobs(prefix_faults={faulted: "corrupt_body"}))
    project.set_params({"run": {"as_of": NEXT_DAY.isoformat()}})
    before = e2e.snapshot(project)
    result = project.repro(check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if " volume ERROR " in line]
    assert len(errors) == 1 and f"{faulted}V0USDT-1d-2024-06-01.zip" in errors[0]
    after = e2e.snapshot(project)
    assert e2e.changed_files(before, after, VOLUME) == []
    assert e2e.changed_files(before, after, "metrics/volume.json") == []


def test_a_killed_volume_run_resumes_without_downloading_checkpointed_files(project, emulator):
    # A new history of many files, fetched slowly by two workers: killed midway.
    many = {f"K{n:02d}USDT": {"spans": [["2024-04-20", None]]} for n in range(12)}
    bucket_k = bucket(NEXT_DAY, **many)
    before = volume(project)
    e2e.reset(emulator, bucket_k)
    project.set_params({"run": {"as_of": NEXT_DAY.isoformat()}, "volume": {"workers": 2}})
    project.run("dvc", "repro", "update")  # everything before the volume stage, quickly
    emulator.set_knobs(Knobs(latency_ms=100))
    folder = project.root / CHECKPOINT
    e2e.kill_repro_once(project, emulator, folder, "batch-*.parquet")
    saved = sources(pl.read_parquet(folder / "batch-*.parquet"))
    assert saved

    emulator.set_knobs(Knobs())
    emulator.reset_counters()
    project.repro()
    found = metrics(project)
    assert found["files_resumed"] == len(saved)
    assert volume(project).equals(truth(bucket_k, NEXT_DAY))
    new = sources(volume(project)) - sources(before)
    assert found["files_fetched"] + found["files_resumed"] == len(new)
    assert not folder.exists()


def test_a_quiet_day_costs_a_get_per_active_symbol_and_the_listings_of_its_listing_day(
    later, emulator
):
    # update.lookback_days as in production: each daily folder is listed one day in 20.
    day = CAUGHT_UP + ONE_DAY
    quiet = bucket(day)
    later.set_params({"update": {"lookback_days": 20}})
    run_on(later, emulator, quiet, day)
    assert volume(later).equals(truth(quiet, day))
    last = day - ONE_DAY
    trading = active(quiet, last)
    listing = {s for s in trading if is_listing_day(s, last, 20)}
    assert (len(trading), listing) == (5, {"V0USDT"})
    found = metrics(later)
    assert (found["listing_requests"], found["monthly_folders_listed"]) == (len(listing), 0)
    assert (found["listed_gets"], found["direct_gets"], found["pending"]) == (1, 4, 0)
    assert found["files_fetched"] == len(trading)
    requests = volume_requests(emulator.counters())
    assert requests == found["requests"] == found["request_minimum"] == len(trading) + 1
    assert requests <= len(e2e.perpetual(quiet)) * 1.05


def test_a_1d_file_not_out_yet_is_pending_and_fetched_the_next_day(later, emulator):
    day = CAUGHT_UP + ONE_DAY
    last = day - ONE_DAY
    assert not is_listing_day("BTCUSDT", last, LOOKBACK_DAYS)  # its day is fetched directly
    late_key = DAILY_1D.format("BTCUSDT", last.isoformat())
    e2e.reset(emulator, bucket(day))
    # Its 1m file is out (the day is available), its 1d file not yet: S3 answers 404.
    emulator.set_knobs(Knobs(prefix_faults={late_key: "no_such_key"}))
    later.set_params({"run": {"as_of": day.isoformat()}})
    later.repro()
    found = metrics(later)
    assert (found["pending"], found["requests"]) == (1, found["request_minimum"] + 1)
    missing = truth(bucket(day), day).filter(pl.col("source") == late_key)
    assert missing.height == 1
    assert volume(later).equals(truth(bucket(day), day).join(missing, on=list(SCHEMA), how="anti"))
    assert json.loads(later.read("metrics/validation.json"))["ok"]  # inside the window

    run_on(later, emulator, bucket(day + ONE_DAY), day + ONE_DAY)
    assert volume(later).equals(truth(bucket(day + ONE_DAY), day + ONE_DAY))
    assert metrics(later)["pending"] == 0
    # Its folder saw two GETs (the late day and the new one), no listing.
    assert emulator.counters()["by_prefix"]["data/futures/um/daily/klines/BTCUSDT/1d/"] == 2


def test_a_reupload_inside_the_window_is_fetched_on_its_symbols_listing_day(later, emulator):
    corrected, on = dt.date(2024, 6, 6), CAUGHT_UP + ONE_DAY
    reuploaded = bucket(on).with_reupload("BTCUSDT", corrected, on, interval="1d")
    key = DAILY_1D.format("BTCUSDT", corrected.isoformat())

    def stored_etag() -> str:
        return volume(later).filter(pl.col("source") == key)["source_etag"].item()

    old = stored_etag()
    day = on
    while not is_listing_day("BTCUSDT", day - ONE_DAY, LOOKBACK_DAYS):
        run_on(later, emulator, reuploaded.with_today(day), day)
        assert stored_etag() == old, day  # not listed: the stored row stays
        day += ONE_DAY
    assert day - on >= dt.timedelta(days=2)  # runs without the listing were made
    assert corrected < day - dt.timedelta(days=LOOKBACK_DAYS)  # out of the lookback window
    run_on(later, emulator, reuploaded.with_today(day), day)
    assert stored_etag() != old
    assert volume(later).equals(truth(reuploaded.with_today(day), day))
    assert key in {s for s, _ in sources(volume(later))}


def test_a_reuploaded_monthly_file_is_fetched_when_its_folder_is_next_listed(later, emulator):
    # March's file is out and stored; a day of March is corrected. The monthly folder is not
    # listed again until a month's file is due: at July's turn, which lists the whole folder.
    corrected, on = dt.date(2024, 3, 10), CAUGHT_UP + ONE_DAY
    turn = dt.date(2024, 7, 2)
    reuploaded = bucket(on).with_reupload("BTCUSDT", corrected, on, interval="1d")
    key = "data/futures/um/monthly/klines/BTCUSDT/1d/BTCUSDT-1d-2024-03.zip"

    def stored_etags() -> set[str]:
        return set(volume(later).filter(pl.col("source") == key)["source_etag"].to_list())

    old = stored_etags()
    run_on(later, emulator, reuploaded.with_today(on), on)
    assert stored_etags() == old
    run_on(later, emulator, reuploaded.with_today(turn), turn)
    assert stored_etags() == {reuploaded.with_today(turn).meta(key).etag.strip('"')} != old
    assert volume(later).equals(truth(reuploaded.with_today(turn), turn))
    # The folder's one listing, June's new file, and March's re-upload: fetched once.
    assert emulator.counters()["by_prefix"][key.rpartition("/")[0] + "/"] == 3


def vision_query(project: ScratchProject, *args: str) -> list[dict[str, Any]]:
    """The installed console script's JSON answer in `project`."""
    return json.loads(e2e.answer(project.run(*e2e.vision_query_json(*args), check=False)))


def ranked_by_truth(
    universe: Universe, day: dt.date, *, top: int, window: int, by: str, min_listed_days: int
) -> list[dict[str, Any]]:
    """The universe on `day` computed from the emulator's ground truth alone: the symbols with
    a file on `day`, listed at least `min_listed_days` days before it, by their mean daily `by`
    over the `window` days before `day` (a day without a kline counts 0; none at all: left
    out), ties by name."""
    candidates = []
    for symbol in e2e.perpetual(universe):
        dates = universe.available_dates(symbol)
        listed = sum(START <= d < day for d in dates)
        rows = universe.kline_rows(symbol, day - dt.timedelta(days=window), day - ONE_DAY)
        if day in dates and listed >= min_listed_days and rows:
            figure = sum(getattr(row, by) for row in rows) / window
            candidates.append((-figure, symbol, listed))
    return [
        {"rank": rank, "symbol": symbol, "volume": -negative, "days_listed": listed}
        for rank, (negative, symbol, listed) in enumerate(sorted(candidates)[:top], start=1)
    ]


@pytest.mark.parametrize(
    ("day", "options"),
    [
        # BTCUSDT has no file (nor kline) on 05-20: a day of 0 in its window.
        ("2024-05-21", {"top": 4, "window": 7, "by": "quote_volume", "min_listed_days": 0}),
        ("2024-06-08", {"top": 10, "window": 1, "by": "trades", "min_listed_days": 0}),
        # OLDUSDT (listed 2022-03-01) is short of 400 days listed; its monthly files' rows.
        ("2023-02-15", {"top": 10, "window": 30, "by": "quote_volume", "min_listed_days": 400}),
        ("2023-02-15", {"top": 1, "window": 30, "by": "quote_volume", "min_listed_days": 0}),
    ],
)
def test_vision_query_universe_and_volume_answer_the_ground_truth_after_dvc_repro(
    caught_up, day, options
):
    universe, on = bucket(CAUGHT_UP), dt.date.fromisoformat(day)
    expected = ranked_by_truth(universe, on, **options)
    assert expected  # the case ranks something
    arguments = [
        text
        for name, value in options.items()
        for text in (f"--{name.replace('_', '-')}", str(value))
    ]
    found = vision_query(caught_up, "universe", day, *arguments)
    assert [{**row, "volume": pytest.approx(row["volume"])} for row in expected] == found

    for symbol in ("BTCUSDT", "OLDUSDT"):
        rows = universe.kline_rows(symbol, START, CAUGHT_UP - ONE_DAY)
        columns = ("date", "symbol", *KLINE_FIGURES, "source")
        truth_rows = [
            {name: getattr(row, name) for name in columns} | {"date": row.date.isoformat()}
            for row in rows
        ]
        assert vision_query(caught_up, "volume", symbol) == truth_rows
    since = vision_query(caught_up, "volume", "BTCUSDT", "--since", day)
    assert [row["date"] for row in since] == [
        row.date.isoformat() for row in universe.kline_rows("BTCUSDT", on, CAUGHT_UP - ONE_DAY)
    ]
