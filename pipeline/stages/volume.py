"""Stage volume: fetch the 1d kline files the volume dataset lacks and commit the changed months.

Runs after update, in the same `dvc repro`: every symbol of symbols.json with available days is
planned (pipeline.volume.planner), so a new symbol's volume history arrives with its
availability. Its 1d folders are listed only where news can be: a daily folder on the symbol's
listing day (one day in update.lookback_days, staggered over the symbols), when it is new, has
an old uncovered day or is audited; a monthly folder when a month's file is due. On the other
days the new days' files are fetched by a direct GET, planned from the availability dataset
update has just built (its available days without a volume row). So a quiet day costs one GET
per active symbol and about symbols / lookback_days listings; the first days of a month add a
monthly listing per symbol until its month's file is out. The files new or re-uploaded since
are downloaded, verified and parsed, and the months they change are committed together,
atomically. Downloads are checkpointed batch by
batch: a killed run's rerun does not fetch them again. What it did goes to metrics/volume.json,
and the total quote volume per day (with the top symbols' share) to the plot data.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import polars as pl

from pipeline.atomic import write_json, write_text
from pipeline.config import Config
from pipeline.dataset.commit import journal_path, staged_commit
from pipeline.dataset.store import checked_files
from pipeline.entry import stage_main
from pipeline.errors import PipelineError
from pipeline.symbols import read_symbols
from pipeline.vision.client import VisionClient
from pipeline.vision.download import Downloader
from pipeline.vision.layout import KlineLayout
from pipeline.vision.listing import PAGE_SIZE
from pipeline.volume.checkpoint import VolumeCheckpoint
from pipeline.volume.fetch import (
    KEYS_PER_FILE,
    Fetched,
    Listed,
    direct_files,
    download,
    list_folders,
)
from pipeline.volume.planner import (
    AVAILABLE_SCHEMA,
    FetchPlan,
    VolumeInputs,
    direct_days,
    plan_fetches,
)
from pipeline.volume.planner import symbol_states as plan_states
from pipeline.volume.schema import INTERVAL, KEY, SCHEMA, VOLUME_PER_DAY
from pipeline.volume.store import (
    VolumeIdentity,
    read_sources,
    read_volume_months,
    volume_files,
    write_volume,
)

log = logging.getLogger(__name__)

TOP_SYMBOLS = 10


class VolumeMergeError(PipelineError):
    """The fetched rows would give two rows for one (date, symbol)."""


def available_days(config: Config) -> pl.DataFrame:
    """The available (symbol, date) of the availability dataset (AVAILABLE_SCHEMA)."""
    files = checked_files(config.paths.dataset, config.dataset)
    if not files:
        return pl.DataFrame(schema=AVAILABLE_SCHEMA)
    return (
        pl.scan_parquet(files).filter(pl.col("available")).select(list(AVAILABLE_SCHEMA)).collect()
    )


def merge(previous: pl.DataFrame, plan: FetchPlan, fetched: pl.DataFrame) -> pl.DataFrame:
    """`previous` (the touched months' rows) without the rows the plan drops and those whose
    days `fetched` gives, plus `fetched`.

    Refused if the fetched files give a key twice: a monthly file and a daily file of one
    month are never both fetched, so the bucket is broken.
    """
    twice = fetched.filter(pl.struct(*KEY).is_duplicated()).sort("date", "symbol", "source")
    if not twice.is_empty():
        first = twice.row(0, named=True)
        sources = twice.filter(
            (pl.col("date") == first["date"]) & (pl.col("symbol") == first["symbol"])
        )["source"].to_list()
        raise VolumeMergeError(
            f"{first['symbol']} {first['date']} comes from two files ({', '.join(sources)}): "
            "the bucket has overlapping 1d files; nothing was written"
        )
    kept = previous.join(plan.drops, on=list(KEY), how="anti").join(
        fetched.select(*KEY), on=list(KEY), how="anti"
    )
    return pl.concat([kept, fetched])


def request_minimum(listed: Listed, fetched: Fetched) -> int:
    """The fewest requests this run's listings and downloads could take: the listings due
    (per folder the plan lists, ⌈keys / 1000⌉ pages, at least one), one GET per file that
    exists and is fetched (listed or direct), and one more per file whose ETag is multipart
    (no MD5: its .CHECKSUM verifies it). A direct GET that finds no file yet (404, pending)
    is not in it: it is the price of not listing every folder every day."""
    pages = 0
    for frame, symbols in (
        (listed.monthly, listed.monthly_symbols),
        (listed.daily, listed.daily_symbols),
    ):
        counts = dict(frame.group_by("symbol").len().iter_rows())
        pages += sum(
            max(1, math.ceil(KEYS_PER_FILE * counts.get(s, 0) / PAGE_SIZE)) for s in symbols
        )
    return pages + fetched.files + fetched.multipart


def per_day(rows: pl.LazyFrame) -> pl.DataFrame:
    """Total quote volume per day and the share of the day's top symbols in it.

    Summed in a fixed order and rounded: an unchanged dataset gives unchanged bytes.
    """
    quote = pl.col("quote_volume").sort()
    return (
        rows.group_by("date")
        .agg(
            quote_volume=quote.sum(),
            top=pl.col("quote_volume").top_k(TOP_SYMBOLS).sort().sum(),
            symbols=pl.len(),
        )
        .select(
            "date",
            pl.col("quote_volume").round(2),
            top_share=pl.when(pl.col("quote_volume") > 0)
            .then(pl.col("top") / pl.col("quote_volume"))
            .round(6),
            symbols=pl.col("symbols").cast(pl.Int64),
        )
        .sort("date")
        .collect()
    )


def run_metrics(
    config: Config,
    listed: Listed,
    fetched: Fetched,
    *,
    requests: tuple[int, int],
    retries: int,
    replaced: int,
    months_rewritten: int,
    totals: pl.DataFrame,
) -> dict[str, object]:
    """What this run listed and fetched; no durations: an unchanged rerun changes nothing."""
    listing_requests, download_requests = requests
    minimum = request_minimum(listed, fetched)
    total = listing_requests + download_requests
    return {
        "as_of": config.as_of.isoformat(),
        "last_date": config.last_date.isoformat(),
        "symbols_listed": listed.symbols,
        "monthly_folders_listed": len(listed.monthly_symbols),
        "daily_folders_listed": len(listed.daily_symbols),
        "requests": total,
        "listing_requests": listing_requests,
        "monthly_listing_pages": listed.monthly_pages,
        "daily_listing_pages": listed.daily_pages,
        "download_requests": download_requests,
        "listed_gets": fetched.listed_gets,
        "direct_gets": fetched.direct_gets,
        "pending": fetched.pending,
        "request_minimum": minimum,
        "request_ratio": round(total / minimum, 4) if minimum else None,
        "retries": retries,
        "files_listed": listed.monthly.height + listed.daily.height,
        "files_fetched": fetched.files,
        "files_resumed": fetched.resumed,
        "bytes": fetched.bytes,
        "rows_fetched": fetched.rows.height,
        "rows_replaced": replaced,
        "months_rewritten": months_rewritten,
        "rows": totals["rows"].item(),
        "symbols": totals["symbols"].item(),
    }


def run(config: Config) -> None:
    path = config.paths.volume
    identity = VolumeIdentity.from_config(config)
    inputs = VolumeInputs.for_run(config)
    stored = read_sources(path, identity)
    available = available_days(config)
    states = plan_states(stored, available, read_symbols(config.paths.symbols), inputs)
    workers = config.volume.workers
    checkpoint = VolumeCheckpoint.beside(path, identity.identity())
    probe = config.probe
    with VisionClient(
        config.vision.listing_url,
        timeout_s=probe.timeout_s,
        retries=probe.retries,
        backoff_s=probe.backoff_s,
        pool_size=max(workers, probe.workers),
    ) as client:
        layout = KlineLayout.from_config(config, INTERVAL)
        listed = list_folders(client, layout, list(states.values()), inputs, workers=workers)
        listing_requests = client.requests
        unlisted = sorted(set(states) - set(listed.daily_symbols))
        direct = direct_files(direct_days(stored, available, unlisted, inputs), layout)
        plan = plan_fetches(stored, listed.monthly, listed.daily, inputs, direct)
        fetched = download(
            Downloader(client, config.vision.download_url, checksums=config.volume.checksums),
            plan.files,
            workers=workers,
            resumed=checkpoint.load(),
            on_batch=checkpoint.save,
        )
        requests = (listing_requests, client.requests - listing_requests)
        retries = client.retries
    new_rows = fetched.rows.filter(pl.col("date").is_between(inputs.start_date, inputs.last_date))
    months = set(plan.months()) | set(
        new_rows.get_column("date").dt.truncate("1mo").unique().to_list()
    )
    previous = read_volume_months(path, months)
    merged = merge(previous, plan, new_rows)
    replaced = previous.height + new_rows.height - merged.height
    with staged_commit(journal_path(path)) as commit:
        rewritten = write_volume(merged, path, identity, previous=previous, commit=commit)
    checkpoint.clear()
    files = volume_files(path, identity)
    rows = pl.scan_parquet(files) if files else pl.LazyFrame(schema=SCHEMA)
    totals = rows.select(rows=pl.len(), symbols=pl.col("symbol").n_unique()).collect()
    write_plot(config.paths.plots / VOLUME_PER_DAY, per_day(rows))
    write_json(
        config.paths.volume_metrics,
        run_metrics(
            config,
            listed,
            fetched,
            requests=requests,
            retries=retries,
            replaced=replaced,
            months_rewritten=len(rewritten),
            totals=totals,
        ),
    )
    log.info(
        "listed the 1d folders of %d symbols and fetched %d files (%d direct GETs, %d not out "
        "yet; %d resumed, %d bytes) with %d requests (%d retries); %d rows fetched, "
        "%d replaced; %d months rewritten%s; %d rows of %d symbols",
        listed.symbols,
        fetched.files,
        fetched.direct_gets,
        fetched.pending,
        fetched.resumed,
        fetched.bytes,
        sum(requests),
        retries,
        new_rows.height,
        replaced,
        len(rewritten),
        f" ({', '.join(rewritten)})" if 0 < len(rewritten) <= 6 else "",
        totals["rows"].item(),
        totals["symbols"].item(),
    )


def write_plot(path: Path, frame: pl.DataFrame) -> None:
    write_text(path, frame.with_columns(pl.col("date").dt.to_string()).write_csv())


if __name__ == "__main__":
    stage_main("volume", run, __doc__)
