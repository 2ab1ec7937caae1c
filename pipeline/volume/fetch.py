"""The volume fetcher: lists 1d folders and downloads the planned files on a thread pool.

Two passes, each over one pool. Listing: one task per symbol lists its monthly folder when the
planner says so, then the daily day ranges the planner derives from what that listing found.
Downloading: one task per file, which GETs it, verified against its listed size and ETag, or
for a file planned without a listing (a direct GET) against its answer's headers, a 404 being
a pending day, not an error; the main thread parses the downloaded zips a batch at a time (one
polars read per batch: its cost per call is far above what a file of 1-31 rows costs) while
the workers go on, and each batch is checkpointed as soon as it is parsed.
"""

from __future__ import annotations

import datetime as dt
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import polars as pl
from tqdm import tqdm

from pipeline.vision.client import VisionClient, VisionError
from pipeline.vision.download import Downloader, ListedFile
from pipeline.vision.layout import KlineLayout
from pipeline.vision.listing import PAGE_SIZE, ListingPage
from pipeline.volume.klines import parse_kline_zips
from pipeline.volume.planner import (
    DIRECT_SCHEMA,
    LISTED_SCHEMA,
    SymbolState,
    VolumeInputs,
    daily_windows,
    month_start,
    months_between,
    needs_monthly_listing,
)
from pipeline.volume.schema import SCHEMA, SOURCE_COLUMNS

ONE_DAY = dt.timedelta(days=1)
# Each file has two keys (the zip and its .CHECKSUM).
KEYS_PER_FILE = 2
# A batch is checkpointed once it holds this many files, or is this old: a kill loses at most
# one batch of downloads.
BATCH_FILES = 2000
BATCH_SECONDS = 2.0

ListedRow = tuple[str, dt.date, str, str, int]


@dataclass(frozen=True)
class Listed:
    """What the listing pass found (LISTED_SCHEMA frames), and what it cost."""

    monthly: pl.DataFrame
    daily: pl.DataFrame
    symbols: int
    """Symbols whose folders were listed."""
    monthly_symbols: list[str]
    """Symbols whose monthly folder was listed."""
    daily_symbols: list[str]
    """Symbols whose daily folder was listed (one or more day ranges)."""
    monthly_pages: int = 0
    """Listing pages read of monthly folders (each one request, retries apart)."""
    daily_pages: int = 0
    """Listing pages read of daily folders."""


def wants_listing(state: SymbolState, inputs: VolumeInputs) -> bool:
    """Whether the symbol has any folder to list (the daily ranges can only shrink once its
    monthly folder is listed, so this is decided before listing)."""
    return needs_monthly_listing(state, inputs) or bool(
        daily_windows(state, state.monthly_months, inputs)
    )


def list_folders(
    client: VisionClient,
    layout: KlineLayout,
    states: Sequence[SymbolState],
    inputs: VolumeInputs,
    *,
    workers: int,
) -> Listed:
    """The monthly and daily 1d zips the planner wants listed for `states`' symbols.

    Raises VisionError naming the symbol if a listing fails for good.
    """
    todo = [state for state in states if wants_listing(state, inputs)]
    monthly: list[ListedRow] = []
    daily: list[ListedRow] = []
    monthly_symbols: list[str] = []
    daily_symbols: list[str] = []
    pages = [0, 0]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="volume-list") as pool:
        futures = [pool.submit(_list_symbol, client, layout, state, inputs) for state in todo]
        try:
            for future in tqdm(futures, unit="symbol", desc="listing 1d", disable=None):
                symbol, months, days, windows, read = future.result()
                monthly += months or []
                daily += days
                monthly_symbols += [symbol] if months is not None else []
                daily_symbols += [symbol] if windows else []
                pages = [total + count for total, count in zip(pages, read, strict=True)]
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return Listed(
        monthly=pl.DataFrame(monthly, schema=LISTED_SCHEMA, orient="row"),
        daily=pl.DataFrame(daily, schema=LISTED_SCHEMA, orient="row"),
        symbols=len(todo),
        monthly_symbols=monthly_symbols,
        daily_symbols=daily_symbols,
        monthly_pages=pages[0],
        daily_pages=pages[1],
    )


def _list_symbol(
    client: VisionClient, layout: KlineLayout, state: SymbolState, inputs: VolumeInputs
) -> tuple[str, list[ListedRow] | None, list[ListedRow], int, tuple[int, int]]:
    """The symbol, its monthly zips (None when its monthly folder was not listed), its daily
    zips, the number of day ranges listed, and the pages read (monthly, daily)."""
    symbol = state.symbol
    monthly, monthly_pages = None, 0
    if needs_monthly_listing(state, inputs):
        monthly, monthly_pages = _list_monthly(client, layout, symbol, inputs)
    months = set(state.monthly_months) | {row[1] for row in monthly or []}
    windows = daily_windows(state, months, inputs)
    daily: list[ListedRow] = []
    daily_pages = 0
    for first, last in windows:
        rows, pages = _list_daily(client, layout, symbol, first, last)
        daily += rows
        daily_pages += pages
    return symbol, monthly, daily, len(windows), (monthly_pages, daily_pages)


def _list_monthly(
    client: VisionClient, layout: KlineLayout, symbol: str, inputs: VolumeInputs
) -> tuple[list[ListedRow], int]:
    """Every monthly zip of the symbol from the dataset's first month on, and the pages read."""
    first = month_start(inputs.start_date)
    prefix = layout.monthly_prefix(symbol)
    pages = client.iter_pages(
        prefix, start_after=layout.after_month(symbol, first - ONE_DAY), subject=symbol
    )
    limit = _page_limit(len(months_between(first, inputs.last_date)))
    rows: list[ListedRow] = []
    number = 0
    for number, page in enumerate(pages, start=1):
        _check_page_count(client, symbol, prefix, number, limit, page)
        rows += _zips(page, lambda key: layout.month_of(symbol, key), symbol)
    return rows, number


def _list_daily(
    client: VisionClient, layout: KlineLayout, symbol: str, first: dt.date, last: dt.date
) -> tuple[list[ListedRow], int]:
    """The daily zips of the symbol from `first` through `last`, and the pages read; stops at
    the first page past `last`."""
    prefix = layout.daily_prefix(symbol)
    pages = client.iter_pages(
        prefix, start_after=layout.after_day(symbol, first - ONE_DAY), subject=symbol
    )
    limit = _page_limit((last - first).days + 1)
    rows: list[ListedRow] = []
    number = 0
    for number, page in enumerate(pages, start=1):
        _check_page_count(client, symbol, prefix, number, limit, page)
        found = _zips(page, lambda key: layout.day_of(symbol, key), symbol)
        rows += [row for row in found if row[1] <= last]
        if found and found[-1][1] >= last:
            break
    return rows, number


def _page_limit(files: int) -> int:
    """The most pages `files` files' keys can fill, and one more to see past them."""
    return -(-KEYS_PER_FILE * files // PAGE_SIZE) + 1


def _check_page_count(
    client: VisionClient, symbol: str, prefix: str, number: int, limit: int, page: ListingPage
) -> None:
    if number > limit or (number == limit and page.is_truncated):
        # Every page moved forward, but through keys no 1d file has: invented ones.
        raise VisionError(
            f"{symbol}: more than {limit} listing pages of 1d files, more than its files can "
            f"fill, from {client.listing_url}/ (prefix {prefix}); check vision.listing_url and "
            "any proxy in front of it"
        )


def _zips(
    page: ListingPage, period_of: Callable[[str], dt.date | None], symbol: str
) -> list[ListedRow]:
    """The page's zips of the symbol with their period; checksums and strays dropped."""
    return [
        (symbol, period, key, etag, int(size))
        for key, etag, size in zip(page.keys, page.etags, page.sizes, strict=True)
        if (period := period_of(key)) is not None
    ]


# --- downloads ------------------------------------------------------------------------------


def direct_files(days: pl.DataFrame, layout: KlineLayout) -> pl.DataFrame:
    """The daily files of `days` (planner.DAYS_SCHEMA) to GET without a listing, with their
    keys (planner.DIRECT_SCHEMA)."""
    keys = [layout.daily_key(symbol, day) for symbol, day in days.iter_rows()]
    files = days.select("symbol", period="date").with_columns(key=pl.Series(keys))
    return files.cast(DIRECT_SCHEMA)


@dataclass
class Fetched:
    """The rows of the downloaded files (the volume schema), and what the downloads did."""

    rows: pl.DataFrame
    files: int = 0
    """Files downloaded and parsed by this run."""
    resumed: int = 0
    """Planned files whose rows an interrupted run had saved: not downloaded again."""
    bytes: int = 0
    multipart: int = 0
    """Files downloaded whose ETag is multipart: each needs its .CHECKSUM too."""
    listed_gets: int = 0
    """Answered GETs of listed files (a refetch counts again)."""
    direct_gets: int = 0
    """Answered GETs of files planned without a listing (a 404 counts)."""
    pending: int = 0
    """Files planned without a listing that S3 did not have yet (404): asked again next run."""
    batches: list[pl.DataFrame] = field(default_factory=list)


OnBatch = Callable[[pl.DataFrame], None]
"""Called with each complete batch of fetched rows (the volume schema): the checkpoint."""


def download(
    downloader: Downloader,
    files: pl.DataFrame,
    *,
    workers: int,
    resumed: pl.DataFrame,
    on_batch: OnBatch,
) -> Fetched:
    """The rows of `files` (planner.FILES_SCHEMA): each GET verified in a worker, parsed in
    batches.

    Files whose rows are in `resumed` (same key, ETag and size; a direct file, whose ETag is
    not known before its GET: same key) are not downloaded. A direct file S3 does not have yet
    is counted as pending. Raises the first DownloadError or KlineFileError (each names the
    file); the batches complete before it have been given to `on_batch`.
    """
    direct = pl.col("etag").is_null()
    done = resumed.select(key="source", etag="source_etag", size="source_size").unique()
    todo = pl.concat(
        [
            files.filter(~direct).join(done, on=["key", "etag", "size"], how="anti"),
            files.filter(direct).join(done.select("key"), on="key", how="anti"),
        ]
    )
    reused = pl.concat(
        [
            resumed.join(
                files.filter(~direct).select(source="key", source_etag="etag", source_size="size"),
                on=["source", "source_etag", "source_size"],
                how="semi",
            ),
            resumed.join(files.filter(direct).select(source="key"), on="source", how="semi"),
        ]
    )
    result = Fetched(rows=pl.DataFrame(schema=SCHEMA), resumed=files.height - todo.height)
    counts = downloader.counts
    before = (counts.bytes, counts.multipart, counts.file_gets, counts.unlisted_gets)
    before_pending = counts.not_found
    batch = _Batch()
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="volume-get") as pool,
        tqdm(total=todo.height, unit="file", desc="downloading 1d", disable=None) as progress,
    ):
        # Workers hand their finished futures to a queue: waiting on the set of pending ones
        # (concurrent.futures.wait) costs a pass over all of them per wake-up, ~45,000 on a
        # backfill, which made the main thread the bottleneck.
        finished: queue.SimpleQueue[Future[_Got]] = queue.SimpleQueue()
        futures = [pool.submit(_fetch_one, downloader, file) for file in todo.iter_rows(named=True)]
        for future in futures:
            future.add_done_callback(finished.put)
        remaining = len(futures)
        try:
            while remaining:
                done = _take_finished(finished, timeout=BATCH_SECONDS)
                remaining -= len(done)
                failures = [f.exception() for f in done if f.exception() is not None]
                for future in done:
                    if future.exception() is None and (got := future.result()) is not None:
                        batch.add(*got)
                progress.update(len(done))
                if failures or not remaining or batch.due():
                    # Saved before a failure stops the run: the rerun skips these files.
                    rows, count = batch.take()
                    if not rows.is_empty():
                        on_batch(rows)
                        result.batches.append(rows)
                    result.files += count
                if failures:
                    raise failures[0]  # type: ignore[misc]
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    result.rows = pl.concat([reused, *result.batches])
    after = (counts.bytes, counts.multipart, counts.file_gets, counts.unlisted_gets)
    result.bytes, result.multipart, file_gets, result.direct_gets = (
        now - then for now, then in zip(after, before, strict=True)
    )
    result.listed_gets = file_gets - result.direct_gets
    result.pending = counts.not_found - before_pending
    return result


def _take_finished(
    finished: queue.SimpleQueue[Future[_Got]], *, timeout: float
) -> list[Future[_Got]]:
    """The futures finished so far: waits up to `timeout` for the first one (none: [])."""
    try:
        taken = [finished.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            taken.append(finished.get_nowait())
        except queue.Empty:
            return taken


_Got = tuple[dict, bytes] | None
"""A file's row of the plan (its ETag and size as verified) and its bytes; None: pending."""


def _fetch_one(downloader: Downloader, file: dict) -> _Got:
    """One file's bytes, verified against its listing, or (a direct file) its answer."""
    if file["etag"] is None:
        found = downloader.fetch_unlisted(file["key"])
        if found is None:
            return None
        return {**file, "etag": found.etag, "size": found.size}, found.body
    listed = ListedFile(key=file["key"], size=file["size"], etag=file["etag"])
    return file, downloader.fetch(listed)


class _Batch:
    """Fetched files' bytes, gathered until they are parsed and saved together."""

    def __init__(self) -> None:
        self.files: list[dict] = []
        self.bodies: list[bytes] = []
        self.started = time.monotonic()

    def add(self, file: dict, body: bytes) -> None:
        self.files.append(file)
        self.bodies.append(body)

    def due(self) -> bool:
        return len(self.files) >= BATCH_FILES or (
            bool(self.files) and time.monotonic() - self.started >= BATCH_SECONDS
        )

    def take(self) -> tuple[pl.DataFrame, int]:
        """The batch's rows in the volume schema, each with its file's symbol and source, and
        its number of files; the batch is empty again. Raises KlineFileError naming the first
        file that is no kline file."""
        files, bodies = self.files, self.bodies
        self.files, self.bodies, self.started = [], [], time.monotonic()
        if not files:
            return pl.DataFrame(schema=SCHEMA), 0
        rows = parse_kline_zips([(f["key"], body) for f, body in zip(files, bodies, strict=True)])
        sources = pl.DataFrame(
            {
                "symbol": [f["symbol"] for f in files],
                "source": [f["key"] for f in files],
                "source_etag": [f["etag"] for f in files],
                "source_size": [f["size"] for f in files],
            },
            schema={name: SCHEMA[name] for name in ("symbol", *SOURCE_COLUMNS)},
        )
        return rows.join(sources, on="source", how="left").select(list(SCHEMA)), len(files)
