"""The prober: which daily files exist for (symbol, date range) pairs, listed on a thread pool.

Every listing page holds ~500 days of one symbol. A long history is not listed as one serial
chain of pages: after its first page, a symbol's remaining days are split into page-sized
chunks listed in parallel, so wall time approaches pages * latency / workers. To avoid paying
for empty chunks after a delisting, the last chunk is listed first: if the symbol has no file
there, the rest is followed page by page instead (it ends somewhere before).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal

import polars as pl
from tqdm import tqdm

from pipeline.dataset.schema import SCHEMA
from pipeline.planner import ProbeRange
from pipeline.vision.client import VisionClient, VisionError
from pipeline.vision.layout import DAILY_SUFFIX, DATE_TEXT_LENGTH, Layout
from pipeline.vision.listing import PAGE_SIZE, ListingPage

# Each day has two keys (the zip and its .CHECKSUM), so a full page spans this many days.
KEYS_PER_DAY = 2
PAGE_DAYS = PAGE_SIZE // KEYS_PER_DAY
ONE_DAY = dt.timedelta(days=1)
S3_TIMESTAMP = "%Y-%m-%dT%H:%M:%S%.fZ"
LISTED_FILES = {
    "symbol": pl.String(),
    "size": pl.String(),
    "etag": pl.String(),
    "last_modified": pl.String(),
    "date": pl.Date(),
}
"""A symbol's daily files as listed: dated, the file columns still text.

Typing (`typed_file_columns`) runs once over a whole probe instead of once per page: per-page
work is what bounds a backfill's CPU time.
"""


@dataclass(frozen=True)
class ProbeStats:
    symbols: int
    requests: int
    retries: int
    seconds: float
    probed_at: dt.datetime
    """The rows' probe_timestamp: when the listing ended, by the server's clock at most."""


@dataclass(frozen=True)
class _Task:
    """One unit of listing work for a symbol.

    head: the first page only, then plan the rest; tail: the last chunk, then the middle;
    segment: pages until past `last`. `gap` is the span the head left for the tail to plan.
    """

    kind: Literal["head", "tail", "segment"]
    symbol: str
    first: dt.date
    last: dt.date
    gap: tuple[dt.date, dt.date] | None = None


@dataclass(frozen=True)
class _Outcome:
    files: pl.DataFrame
    """The daily zips listed, dated, with their columns as listed (typed once, at the end)."""
    followups: list[_Task]

    @classmethod
    def of(
        cls, layout: Layout, task: _Task, pages: list[ListingPage], followups: list[_Task]
    ) -> _Outcome:
        # Keys and checksums are dropped here, not at the end: they are most of the memory.
        return cls(daily_files(layout, task.symbol, pages), followups)


OnListed = Callable[[str, pl.DataFrame], None]
"""Called with a symbol and its listed daily files (LISTED_FILES) once its listing is complete."""


def probe(
    client: VisionClient,
    layout: Layout,
    ranges: Sequence[ProbeRange],
    *,
    workers: int,
    on_listed: OnListed | None = None,
) -> tuple[pl.DataFrame, ProbeStats]:
    """Rows in the dataset schema for the (symbol, date) pairs of `ranges`, and what it cost.

    The rows are stamped once the listing is done, with `client.now()`: never later than
    the server's clock. Raises VisionError (naming the symbol, URL and status) if any listing
    fails for good; then no rows are returned at all, but `on_listed` has seen every symbol
    finished before.
    """
    started = time.monotonic()
    requests_before, retries_before = client.requests, client.retries
    found = _list_all(client, layout, ranges, workers=workers, on_listed=on_listed)
    probed_at = client.now()
    rows = to_rows(ranges, found, probed_at)
    stats = ProbeStats(
        symbols=len({r.symbol for r in ranges}),
        requests=client.requests - requests_before,
        retries=client.retries - retries_before,
        seconds=time.monotonic() - started,
        probed_at=probed_at,
    )
    return rows, stats


def _list_all(
    client: VisionClient,
    layout: Layout,
    ranges: Sequence[ProbeRange],
    *,
    workers: int,
    on_listed: OnListed | None,
) -> list[pl.DataFrame]:
    found: list[pl.DataFrame] = []
    symbols = {r.symbol for r in ranges}
    outstanding: Counter[str] = Counter()
    # Kept only for `on_listed`: a symbol's files, until its last task is done.
    listed: defaultdict[str, list[pl.DataFrame]] = defaultdict(list)
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool,
        tqdm(total=len(symbols), unit="symbol", desc="probing", disable=None) as progress,
    ):
        pending: dict[Future[_Outcome], _Task] = {}

        def submit(tasks: Iterable[_Task]) -> None:
            for task in tasks:
                outstanding[task.symbol] += 1
                pending[pool.submit(_run, client, layout, task)] = task

        submit(_Task("head", r.symbol, r.first, r.last) for r in ranges if r.first <= r.last)
        progress.update(len(symbols - {r.symbol for r in ranges if r.first <= r.last}))
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                # Tasks that succeeded beside a failed one still count: `on_listed` (the
                # checkpoint) must see every symbol that finished before the run stops.
                failures = [f.exception() for f in done if f.exception() is not None]
                for future in done:
                    task = pending.pop(future)
                    if future.exception() is not None:
                        continue
                    outcome = future.result()
                    found.append(outcome.files)
                    submit(outcome.followups)
                    outstanding[task.symbol] -= 1
                    if on_listed is not None:
                        listed[task.symbol].append(outcome.files)
                        if outstanding[task.symbol] == 0:
                            on_listed(task.symbol, pl.concat(listed.pop(task.symbol)))
                    if outstanding[task.symbol] == 0:
                        progress.update(1)
                if failures:
                    raise failures[0]
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return found


def _run(client: VisionClient, layout: Layout, task: _Task) -> _Outcome:
    if task.kind == "head":
        return _run_head(client, layout, task)
    pages = _list_segment(client, layout, task)
    if task.kind == "segment":
        return _Outcome.of(layout, task, pages, [])
    first_day = _first_day(layout, task.symbol, pages[0])
    alive = first_day is not None and first_day <= task.last
    return _Outcome.of(layout, task, pages, _plan_middle(task, tail_has_files=alive))


def _run_head(client: VisionClient, layout: Layout, task: _Task) -> _Outcome:
    page = client.list_page(
        layout.symbol_prefix(task.symbol),
        start_after=layout.start_after(task.symbol, task.first),
        subject=task.symbol,
    )
    reached = _last_day(layout, task.symbol, page)
    if not page.is_truncated or reached is None or reached >= task.last:
        if page.is_truncated and reached is None:
            # A full page with no daily zip on it: nothing to plan with, so follow it serially.
            return _Outcome.of(
                layout, task, [page], [_Task("segment", task.symbol, task.first, task.last)]
            )
        return _Outcome.of(layout, task, [page], [])
    rest_first = reached + ONE_DAY
    tail_first = max(rest_first, task.last - dt.timedelta(days=PAGE_DAYS - 1))
    if tail_first == rest_first:
        return _Outcome.of(
            layout, task, [page], [_Task("segment", task.symbol, rest_first, task.last)]
        )
    gap = (rest_first, tail_first - ONE_DAY)
    return _Outcome.of(
        layout, task, [page], [_Task("tail", task.symbol, tail_first, task.last, gap=gap)]
    )


def _plan_middle(tail: _Task, *, tail_has_files: bool) -> list[_Task]:
    """Chunks between the head and the tail: parallel if the symbol is alive at the end."""
    assert tail.gap is not None
    first, last = tail.gap
    if not tail_has_files:
        return [_Task("segment", tail.symbol, first, last)]
    chunks = []
    while first <= last:
        chunk_last = min(first + dt.timedelta(days=PAGE_DAYS - 1), last)
        chunks.append(_Task("segment", tail.symbol, first, chunk_last))
        first = chunk_last + ONE_DAY
    return chunks


def _list_segment(client: VisionClient, layout: Layout, task: _Task) -> list[ListingPage]:
    pages = []
    prefix = layout.symbol_prefix(task.symbol)
    listing = client.iter_pages(
        prefix, start_after=layout.start_after(task.symbol, task.first), subject=task.symbol
    )
    limit = page_limit(task.first, task.last)
    for page in listing:
        if len(pages) == limit:
            # Every page moved forward, but through keys no daily file has: invented ones.
            raise VisionError(
                f"{task.symbol}: more than {limit} listing pages for {task.first} to "
                f"{task.last}, more than its daily files can fill, from {client.listing_url}/ "
                f"(prefix {prefix}); check vision.listing_url and any proxy in front of it"
            )
        pages.append(page)
        reached = _last_day(layout, task.symbol, page)
        if reached is not None and reached >= task.last:
            break
    return pages


def page_limit(first: dt.date, last: dt.date) -> int:
    """The most pages a listing from `first` past `last` can take: a folder holds two keys a
    day (the zip and its .CHECKSUM), and one more page may be needed to see past `last`."""
    days = (last - first).days + 1
    return -(-KEYS_PER_DAY * days // PAGE_SIZE) + 1


def _first_day(layout: Layout, symbol: str, page: ListingPage) -> dt.date | None:
    return next(filter(None, (layout.day_of(symbol, key) for key in page.keys)), None)


def _last_day(layout: Layout, symbol: str, page: ListingPage) -> dt.date | None:
    return next(filter(None, (layout.day_of(symbol, key) for key in reversed(page.keys))), None)


def to_rows(
    ranges: Sequence[ProbeRange],
    found: Iterable[pl.DataFrame],
    probed_at: dt.datetime,
) -> pl.DataFrame:
    """Rows in the dataset schema for `ranges`, from their listed daily files (LISTED_FILES)."""
    files = (
        pl.concat([pl.DataFrame(schema=LISTED_FILES), *found], how="vertical_relaxed")
        .unique(["symbol", "date"], keep="first")
        .select("symbol", "date", "etag", *typed_file_columns())
    )
    bounds = pl.DataFrame(
        {
            "symbol": [r.symbol for r in ranges],
            "first": [r.first for r in ranges],
            "last": [r.last for r in ranges],
            "from_first_file": [r.from_first_file for r in ranges],
        },
        schema={
            "symbol": pl.String,
            "first": pl.Date,
            "last": pl.Date,
            "from_first_file": pl.Boolean,
        },
    )
    earliest = files.group_by("symbol").agg(earliest=pl.col("date").min())
    grid = (
        bounds.join(earliest, on="symbol", how="left")
        .filter(~pl.col("from_first_file") | pl.col("earliest").is_not_null())
        .with_columns(
            first=pl.when("from_first_file")
            .then(pl.max_horizontal("first", "earliest"))
            .otherwise("first")
        )
        .filter(pl.col("first") <= pl.col("last"))
        .select("symbol", pl.date_ranges("first", "last").alias("date"))
        .explode("date")
    )
    return (
        grid.join(files, on=["symbol", "date"], how="left")
        .with_columns(
            available=pl.col("file_size_bytes").is_not_null(),
            probe_timestamp=pl.lit(probed_at, dtype=SCHEMA["probe_timestamp"]),
        )
        .select(list(SCHEMA))
        .sort("date", "symbol")
    )


def daily_files(layout: Layout, symbol: str, pages: Sequence[ListingPage]) -> pl.DataFrame:
    """`symbol`'s daily zips on `pages`, dated (LISTED_FILES); checksums and strays dropped."""
    objects = pl.DataFrame(
        {
            "key": [key for page in pages for key in page.keys],
            "size": [size for page in pages for size in page.sizes],
            "etag": [etag for page in pages for etag in page.etags],
            "last_modified": [stamp for page in pages for stamp in page.last_modified],
        },
        schema=dict.fromkeys(("key", "size", "etag", "last_modified"), pl.String),
    )
    day_text = pl.col("key").str.slice(-DATE_TEXT_LENGTH - len(DAILY_SUFFIX), DATE_TEXT_LENGTH)
    zip_key = pl.concat_str(pl.lit(layout.stem(symbol)), day_text, pl.lit(DAILY_SUFFIX))
    return (
        objects.filter(pl.col("key") == zip_key)
        .select(
            pl.lit(symbol, dtype=pl.String).alias("symbol"),
            "size",
            "etag",
            "last_modified",
            date=day_text.str.to_date("%Y-%m-%d", strict=False),
        )
        .drop_nulls("date")
    )


def typed_file_columns() -> list[pl.Expr]:
    """`size` and `last_modified` as the dataset stores them."""
    return [
        pl.col("size").cast(pl.Int64).alias("file_size_bytes"),
        pl.col("last_modified").str.to_datetime(S3_TIMESTAMP, time_zone="UTC", time_unit="us"),
    ]
