"""Properties of the merge over any sequence of probe batches (hypothesis).

A batch is one probe run: every row carries the run's probe_timestamp and, for each symbol it
probed, one row per day of a contiguous range ending at the run's last date (as_of - 1), which
never moves back from one run to the next. That is what update and backfill probe; a range
re-probe that stops earlier is not a batch of this kind. The reference model is plain Python
over dicts.
"""

from __future__ import annotations

import datetime as dt
import itertools
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import polars as pl
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.config import DatasetConfig
from pipeline.dataset.merge import merge
from pipeline.dataset.schema import KEY, SCHEMA, empty, month_of
from pipeline.dataset.store import partition_files, read_months, summarize
from tests.support import T0, commit_dataset

ID = DatasetConfig("um", "klines", "1m", dt.date(2019, 9, 25), "perpetual")
SYMBOLS = ("BTCUSDT", "币安人生USDT", "ETHUSDT")
# Days 0..LAST_DAY span four months, so runs touch different partitions.
FIRST_DATE = dt.date(2024, 1, 20)
LAST_DAY = 75
HOUR = dt.timedelta(hours=1)
# Deterministic examples, and no .hypothesis directory in the working tree.
PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, database=None)


class Row(NamedTuple):
    """A dataset row, its fields in SCHEMA's order (what DataFrame.rows() gives)."""

    date: dt.date
    symbol: str
    available: bool
    file_size_bytes: int | None
    last_modified: dt.datetime | None
    etag: str | None
    probe_timestamp: dt.datetime


@dataclass(frozen=True)
class Batch:
    """The rows of one probe: all share its probe_timestamp."""

    rows: tuple[Row, ...]

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(list(self.rows), schema=SCHEMA, orient="row")


def probe_row(
    date: dt.date, symbol: str, available: bool, variant: int, probed: dt.datetime
) -> Row:
    """A row whose size, etag and last_modified differ by `variant` when a file is found."""
    if not available:
        return Row(date, symbol, False, None, None, None, probed)
    modified = dt.datetime.combine(date, dt.time(6 + variant), tzinfo=dt.UTC)
    return Row(date, symbol, True, 1000 * variant + date.day, modified, f"{variant}-{date}", probed)


def probed_batch(
    probed: dt.datetime, ranges: dict[str, tuple[str, str]], variant: int = 0
) -> Batch:
    """A batch from {symbol: (first date, flags)}, a flag per day: '#' a file, '.' none."""
    return Batch(
        tuple(
            probe_row(
                dt.date.fromisoformat(start) + dt.timedelta(days),
                symbol,
                flag == "#",
                variant,
                probed,
            )
            for symbol, (start, flags) in ranges.items()
            for days, flag in enumerate(flags)
        )
    )


@st.composite
def symbol_range(draw: st.DrawFn, symbol: str, end: int, probed: dt.datetime) -> list[Row]:
    """One symbol's rows from a drawn first day to `end`, availability in drawn stretches."""
    start = draw(st.integers(0, end))
    stretches = draw(st.lists(st.tuples(st.integers(1, 15), st.booleans()), min_size=1, max_size=4))
    flags = itertools.cycle([available for length, available in stretches for _ in range(length)])
    variant = draw(st.integers(0, 2))
    return [
        probe_row(FIRST_DATE + dt.timedelta(days=day), symbol, next(flags), variant, probed)
        for day in range(start, end + 1)
    ]


@st.composite
def probe_batches(draw: st.DrawFn, least: int = 1, most: int = 5) -> list[Batch]:
    """Batches in probe order: timestamps never decrease (equal ones too), nor last dates."""
    probed, end, batches = T0, draw(st.integers(0, LAST_DAY)), []
    for _ in range(draw(st.integers(least, most))):
        probed += draw(st.sampled_from((dt.timedelta(0), HOUR)))
        end = draw(st.integers(end, LAST_DAY))
        symbols = draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, unique=True))
        rows = [row for symbol in symbols for row in draw(symbol_range(symbol, end, probed))]
        batches.append(Batch(tuple(rows)))
    return batches


@st.composite
def batch_parts(draw: st.DrawFn, batch: Batch) -> list[Batch]:
    """`batch` cut at a date and between two groups of symbols; every part keeps its timestamp.

    The parts of earlier dates come first, as when a backfill reaches up to the day an update
    run continues from.
    """
    cut = FIRST_DATE + dt.timedelta(days=draw(st.integers(0, LAST_DAY)))
    group = {symbol: draw(st.booleans()) for symbol in SYMBOLS}
    parts = []
    for later in (False, True):
        for side in draw(st.permutations([False, True])):
            rows = tuple(
                row for row in batch.rows if (row.date > cut) == later and group[row.symbol] == side
            )
            if rows:
                parts.append(Batch(rows))
    return parts


@st.composite
def probe_runs(draw: st.DrawFn) -> list[list[Batch]]:
    """Batches, some cut into parts, in consecutive runs (a run merges e.g. backfill and probes)."""
    pieces = [
        piece
        for batch in draw(probe_batches(least=2, most=4))
        for piece in (draw(batch_parts(batch)) if draw(st.booleans()) else [batch])
    ]
    starts_a_run = [
        True,
        *draw(st.lists(st.booleans(), min_size=len(pieces) - 1, max_size=len(pieces) - 1)),
    ]
    bounds = [index for index, start in enumerate(starts_a_run) if start] + [len(pieces)]
    return [pieces[start:stop] for start, stop in itertools.pairwise(bounds)]


def newest_from_first_file(batches: Sequence[Batch]) -> list[Row]:
    """The model: per key the newest probe (ties: the later batch), from each first file."""
    newest: dict[tuple[dt.date, str], Row] = {}
    probed = [batch.rows[0].probe_timestamp for batch in batches]
    for index in sorted(range(len(batches)), key=lambda index: probed[index]):  # ties: in order
        newest.update({(row.date, row.symbol): row for row in batches[index].rows})
    first_file: dict[str, dt.date] = {}
    for (date, symbol), row in sorted(newest.items()):
        if row.available:
            first_file.setdefault(symbol, date)
    return sorted(
        row
        for (date, symbol), row in newest.items()
        if symbol in first_file and date >= first_file[symbol]
    )


def frames(batches: Iterable[Batch]) -> list[pl.DataFrame]:
    return [batch.frame() for batch in batches]


def months(dataset: Path) -> list[str]:
    return [path.stem for path in partition_files(dataset)]


def read_all(dataset: Path) -> pl.DataFrame:
    return read_months(dataset, months(dataset)).sort(*KEY)


def files(dataset: Path) -> dict[str, tuple[int, bytes]]:
    """Each file's inode (a rewrite renames a new file into place) and bytes."""
    return {path.name: (path.stat().st_ino, path.read_bytes()) for path in dataset.iterdir()}


def contents(dataset: Path) -> dict[str, bytes]:
    return {name: data for name, (_, data) in files(dataset).items()}


def run_update(run: Sequence[Batch], dataset: Path) -> None:
    """What pipeline.stages.update does with a run's probes: merge and rewrite only their months."""
    probes = frames(run)
    touched = pl.concat(probes).select(month_of().unique()).to_series().to_list()
    summary = summarize(dataset, ID, lock=dataset.parent / "no-dvc.lock")
    previous = read_months(dataset, touched)
    merged = merge(previous, *probes, first_files=summary.first_files)
    assert set(commit_dataset(merged, dataset, ID, previous=previous)) <= set(touched)


def assert_runs_build_one_merge(runs: Sequence[Sequence[Batch]]) -> None:
    """Run by run through the touched months ends with the files one merge writes at once."""
    everything = merge(*frames(itertools.chain.from_iterable(runs)))
    with tempfile.TemporaryDirectory() as tmp:
        by_runs, at_once = Path(tmp) / "by-runs", Path(tmp) / "at-once"
        for run in runs:
            run_update(run, by_runs)
        commit_dataset(everything, at_once, ID, previous=empty())
        assert read_all(by_runs).rows() == everything.rows()
        assert contents(by_runs) == contents(at_once)


@PROPERTY
@given(batches=probe_batches(), data=st.data())
def test_each_key_holds_its_newest_probe_from_the_symbols_first_file(batches, data):
    order = data.draw(st.permutations(batches), label="merge order")
    merged = merge(*frames(order))
    assert dict(merged.schema) == SCHEMA
    assert merged.rows() == newest_from_first_file(order)


@PROPERTY
@given(batches=probe_batches(), data=st.data())
def test_merging_the_result_again_or_replaying_the_newest_batches_changes_nothing(batches, data):
    """Replaying batches from any point on changes nothing.

    Not so an older batch alone: it can bring back a first file that a newer batch, not
    replayed with it, found removed (the newer row at that date was dropped with the rows
    before the new first file). update.py never merges a tracked symbol's backfill again.
    """
    merged = merge(*frames(batches))
    assert merge(merged).equals(merged)
    assert merge(merged, merged).equals(merged)
    since = data.draw(st.integers(0, len(batches) - 1), label="replayed from batch")
    assert merge(merged, *frames(batches[since:])).equals(merged)


@PROPERTY
@given(batches=probe_batches())
def test_writing_the_merged_rows_again_rewrites_no_month(batches):
    merged = merge(*frames(batches))
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "ds"
        written = commit_dataset(merged, dataset, ID, previous=empty())
        assert written == sorted(merged.select(month_of().unique()).to_series().to_list())
        assert read_all(dataset).rows() == merged.rows()
        before = files(dataset)
        assert commit_dataset(merged, dataset, ID, previous=read_months(dataset, written)) == []
        assert files(dataset) == before


KNOWN_CASES = (
    # A symbol's first file removed: the newer probe finds none on its former first date,
    # and the dataset's first file (from summarize) still names that date.
    [
        [probed_batch(T0, {"BTCUSDT": ("2024-01-28", "..########")})],
        [probed_batch(T0 + HOUR, {"BTCUSDT": ("2024-01-28", "....#######")}, variant=1)],
    ],
    # A first file in a month the run does not touch still keeps the touched months' rows.
    [
        [probed_batch(T0, {"币安人生USDT": ("2024-01-30", "#.............")})],
        [probed_batch(T0 + HOUR, {"币安人生USDT": ("2024-02-05", ".......#")})],
    ],
)


@PROPERTY
@given(runs=probe_runs())
@example(runs=KNOWN_CASES[0])
@example(runs=KNOWN_CASES[1])
def test_runs_merging_only_their_months_build_what_one_merge_builds(runs):
    assert_runs_build_one_merge(runs)


@PROPERTY
@given(batches=probe_batches(), data=st.data())
def test_a_batch_cut_into_parts_with_its_timestamp_merges_as_the_whole_batch(batches, data):
    parts = [
        part
        for batch in batches
        for part in data.draw(batch_parts(batch).flatmap(st.permutations), label="parts")
    ]
    assert merge(*frames(parts)).equals(merge(*frames(batches)))


def fast_clock(batch: Batch, ahead: dt.timedelta) -> Batch:
    """`batch` as a machine whose clock ran `ahead` would have stamped it."""
    return Batch(
        tuple(row._replace(probe_timestamp=row.probe_timestamp + ahead) for row in batch.rows)
    )


def clamped(rows: Iterable[tuple], probed_at: dt.datetime) -> list[Row]:
    """`rows` with every probe_timestamp later than `probed_at` set to it."""
    return [Row(*row)._replace(probe_timestamp=min(row[-1], probed_at)) for row in rows]


@PROPERTY
@given(batches=probe_batches(least=2), data=st.data())
def test_a_stored_future_timestamp_counts_as_the_runs_probe_time_and_loses_to_its_probes(
    batches, data
):
    *stored, fresh = batches
    probed_at = fresh.rows[0].probe_timestamp
    ahead = st.sampled_from((dt.timedelta(0), HOUR, dt.timedelta(days=3650)))
    skewed = [fast_clock(batch, data.draw(ahead, label="clock ahead by")) for batch in stored]
    merged = merge(*frames(skewed), fresh.frame(), probed_at=probed_at)
    # The model sees every stamp later than the run's probe time as that time.
    model = newest_from_first_file(
        [Batch(tuple(clamped(b.rows, probed_at))) for b in skewed] + [fresh]
    )
    assert clamped(merged.rows(), probed_at) == model
    # Every row the run probed that the dataset keeps is the run's own.
    probed = {(row.date, row.symbol): row for row in fresh.rows}
    kept = [Row(*row) for row in merged.rows() if row[:2] in probed]
    assert kept == [probed[(row.date, row.symbol)] for row in kept]


def test_a_late_file_found_by_the_run_replaces_a_stored_no_file_from_a_fast_clock():
    fast = T0 + dt.timedelta(days=400)
    stored = probed_batch(fast, {"BTCUSDT": ("2024-01-28", "##.")})
    fresh = probed_batch(T0, {"BTCUSDT": ("2024-01-28", "###")})
    without_cap = merge(stored.frame(), fresh.frame())
    assert without_cap["available"].to_list() == [True, True, False]  # the bug: the clock won
    merged = merge(stored.frame(), fresh.frame(), probed_at=T0)
    assert merged.rows() == list(fresh.rows)


@PROPERTY
@given(batches=probe_batches())
def test_with_no_stamp_in_the_future_the_runs_probe_time_changes_nothing(batches):
    probed_at = max(batch.rows[0].probe_timestamp for batch in batches)
    assert merge(*frames(batches), probed_at=probed_at).equals(merge(*frames(batches)))
