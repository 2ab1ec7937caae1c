"""The volume fetcher: lists 1d folders and downloads the planned files on a thread pool.

Two passes, each over one pool. Listing: one task per symbol lists its monthly folder when the
planner says so, then the daily day ranges the planner derives from what that listing found.
Downloading: one task per file, which GETs it (verified against its listed size and ETag);
the main thread parses the downloaded zips a batch at a time (one polars read per batch: its
cost per call is far above what a file of 1-31 rows costs) while the workers go on, and each
batch is checkpointed as soon as it is parsed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import polars as pl
from tqdm import tqdm

from pipeline.vision.client import VisionClient, VisionError
from pipeline.vision.download import Downloader, ListedFile
from pipeline.vision.layout import KlineLayout
from pipeline.vision.listing import PAGE_SIZE, ListingPage
from pipeline.volume.klines import parse_kline_zips
from pipeline.volume.planner import (
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
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="volume-list") as pool:
        futures = [pool.submit(_list_symbol, client, layout, state, inputs) for state in todo]
        try:
            for future in tqdm(futures, unit="symbol", desc="listing 1d", disable=None):
                symbol, months, days, windows = future.result()
                monthly += months or []
                daily += days
                monthly_symbols += [symbol] if months is not None else []
                daily_symbols += [symbol] if windows else []
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
    )


def _list_symbol(
    client: VisionClient, layout: KlineLayout, state: SymbolState, inputs: VolumeInputs
) -> tuple[str, list[ListedRow] | None, list[ListedRow], int]:
    """The symbol, its monthly zips (None when its monthly folder was not listed), its daily
    zips, and the number of day ranges listed."""
    symbol = state.symbol
    monthly = None
    if needs_monthly_listing(state, inputs):
        monthly = _list_monthly(client, layout, symbol, inputs)
    months = set(state.monthly_months) | {row[1] for row in monthly or []}
    windows = daily_windows(state, months, inputs)
    daily = [
        row for first, last in windows for row in _list_daily(client, layout, symbol, first, last)
    ]
    return symbol, monthly, daily, len(windows)


def _list_monthly(
    client: VisionClient, layout: KlineLayout, symbol: str, inputs: VolumeInputs
) -> list[ListedRow]:
    """Every monthly zip of the symbol from the dataset's first month on."""
    first = month_start(inputs.start_date)
    prefix = layout.monthly_prefix(symbol)
    pages = client.iter_pages(
        prefix, start_after=layout.after_month(symbol, first - ONE_DAY), subject=symbol
    )
    limit = _page_limit(len(months_between(first, inputs.last_date)))
    rows: list[ListedRow] = []
    for number, page in enumerate(pages, start=1):
        _check_page_count(client, symbol, prefix, number, limit, page)
        rows += _zips(page, lambda key: layout.month_of(symbol, key), symbol)
    return rows


def _list_daily(
    client: VisionClient, layout: KlineLayout, symbol: str, first: dt.date, last: dt.date
) -> list[ListedRow]:
    """The daily zips of the symbol from `first` through `last`; stops at the first page past."""
    prefix = layout.daily_prefix(symbol)
    pages = client.iter_pages(
        prefix, start_after=layout.after_day(symbol, first - ONE_DAY), subject=symbol
    )
    limit = _page_limit((last - first).days + 1)
    rows: list[ListedRow] = []
    for number, page in enumerate(pages, start=1):
        _check_page_count(client, symbol, prefix, number, limit, page)
        found = _zips(page, lambda key: layout.day_of(symbol, key), symbol)
        rows += [row for row in found if row[1] <= last]
        if found and found[-1][1] >= last:
            break
    return rows


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
    """The rows of `files` (planner.FILES_SCHEMA): each GET verified and parsed in a worker.

    Files whose rows are in `resumed` (same key, ETag and size) are not downloaded. Raises the
    first DownloadError or KlineFileError (each names the file); the batches complete before
    it have been given to `on_batch`.
    """
    done = resumed.select(key="source", etag="source_etag", size="source_size").unique()
    todo = files.join(done, on=["key", "etag", "size"], how="anti")
    reused = resumed.join(
        files.select(source="key", source_etag="etag", source_size="size"),
        on=["source", "source_etag", "source_size"],
        how="semi",
    )
    result = Fetched(
        rows=pl.DataFrame(schema=SCHEMA),
        resumed=files.height - todo.height,
        multipart=todo.filter(pl.col("etag").str.contains("-")).height,
    )
    bytes_before = downloader.counts.bytes
    batch = _Batch()
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="volume-get") as pool,
        tqdm(total=todo.height, unit="file", desc="downloading 1d", disable=None) as progress,
    ):
        pending: dict[Future[bytes], dict] = {
            pool.submit(_fetch_one, downloader, file): file for file in todo.iter_rows(named=True)
        }
        try:
            while pending:
                finished, _ = wait(pending, timeout=BATCH_SECONDS, return_when=FIRST_COMPLETED)
                failures = [f.exception() for f in finished if f.exception() is not None]
                for future in finished:
                    file = pending.pop(future)
                    if future.exception() is None:
                        batch.add(file, future.result())
                progress.update(len(finished))
                if failures or not pending or batch.due():
                    # Saved before a failure stops the run: the rerun skips these files.
                    rows, count = batch.take()
                    if not rows.is_empty():
                        on_batch(rows)
                        result.batches.append(rows)
                    result.files += count
                if failures:
                    raise failures[0]  # type: ignore[misc]
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    result.rows = pl.concat([reused, *result.batches])
    result.bytes = downloader.counts.bytes - bytes_before
    return result


def _fetch_one(downloader: Downloader, file: dict) -> bytes:
    """One file's bytes, verified against its listing."""
    return downloader.fetch(ListedFile(key=file["key"], size=file["size"], etag=file["etag"]))


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
