"""The volume rows of `make bench`: what the fewest requests are, and what a run costs.

The minimum is computed from the emulated bucket's own ground truth (which 1d files it holds),
not from what the stage chose to list, so a stage that lists or fetches more than it must
shows a ratio above 1:

- listing: per symbol, its monthly 1d folder when it has an available day in a complete month
  (⌈keys / 1000⌉ pages, at least one: the listing is what says which monthly files exist),
  and its daily 1d folder over each stretch of consecutive months that no monthly file covers
  (⌈keys / 1000⌉ pages per stretch, at least one); two keys per file (the zip, its .CHECKSUM);
- downloads: one GET per file the dataset takes rows from (a month's file, else the day's),
  plus one GET of the .CHECKSUM of each file whose ETag is multipart (no MD5 to check).

The daily minimum (the day after a backfill): the GETs of the files new since the day before
(and their .CHECKSUMs where multipart), and no listing: the availability stage has just listed
every symbol's 1m folder over the lookback window, and a day with a 1m file has a 1d file, so
the new days' keys are known. Listings to catch 1d re-uploads are overhead above it.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devtools.emulator import Universe
from devtools.emulator.klines import is_multipart
from pipeline.config import ChecksumPolicy
from pipeline.symbols import is_delivery
from pipeline.vision.client import VisionClient
from pipeline.vision.download import Downloader, ListedFile
from pipeline.vision.layout import KlineLayout
from pipeline.vision.listing import PAGE_SIZE
from pipeline.volume.planner import last_complete_month

ONE_DAY = dt.timedelta(days=1)
KEYS_PER_FILE = 2  # a zip and its .CHECKSUM
VOLUME_FOLDER = "/1d/"
"""The 1d kline folders (monthly and daily) hold the volume stage's requests, and only its."""
LAYOUT = KlineLayout(market="um", interval="1d")


def is_volume_prefix(prefix: str) -> bool:
    """Whether a request the emulator counted under `prefix` is the volume stage's."""
    return VOLUME_FOLDER in prefix


@dataclass(frozen=True)
class VolumeFigures:
    symbols: int
    requests: int
    """Requests to the 1d folders, counted by the emulator."""
    minimum: int
    stage_requests: int
    """Requests the stage reports (metrics/volume.json): they must equal `requests`."""
    files: int
    mb_fetched: float
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stage_s: float
    """The volume stage's own time (its log's "done in"), without DVC around it."""
    emulator_cpu_s: float
    """The emulator's CPU over the run: it shares this machine's cores with the pipeline."""
    dataset_mb: float
    cache_files_added: int

    @property
    def ratio(self) -> float:
        return self.requests / self.minimum if self.minimum else float("nan")


@dataclass(frozen=True)
class Minimum:
    listing: int
    gets: int
    checksums: int

    @property
    def total(self) -> int:
        return self.listing + self.gets + self.checksums


def backfill_minimum(universe: Universe, start: dt.date, last: dt.date) -> Minimum:
    """The fewest requests that find and fetch every 1d file a dataset from `start` through
    `last` takes rows from (module docstring)."""
    listing = gets = checksums = 0
    for symbol, monthly, daily, has_complete in _files(universe, start, last):
        if has_complete:
            listing += _pages(len(monthly))
        listing += sum(_pages(len(stretch)) for stretch in _stretches(daily))
        gets += len(monthly) + len(daily)
        checksums += sum(is_multipart(symbol, f"{month:%Y-%m}") for month in monthly)
    return Minimum(listing, gets, checksums)


def daily_minimum(before: Universe, after: Universe, start: dt.date) -> Minimum:
    """The fewest requests of the volume stage on `after.today`, the day after a run on
    `before.today`: the GETs of the files new since (module docstring)."""
    seen = {
        (symbol, kind, period)
        for symbol, monthly, daily, _ in _files(before, start, before.today - ONE_DAY)
        for kind, periods in (("monthly", monthly), ("daily", daily))
        for period in periods
    }
    gets = checksums = 0
    for symbol, monthly, daily, _ in _files(after, start, after.today - ONE_DAY):
        new_months = [m for m in monthly if (symbol, "monthly", m) not in seen]
        gets += len(new_months) + sum((symbol, "daily", d) not in seen for d in daily)
        checksums += sum(is_multipart(symbol, f"{month:%Y-%m}") for month in new_months)
    return Minimum(0, gets, checksums)


def _files(
    universe: Universe, start: dt.date, last: dt.date
) -> Iterator[tuple[str, list[dt.date], list[dt.date], bool]]:
    """Per perpetual symbol: the months of its monthly files and the days of its daily files
    that the dataset takes rows from, and whether it has an available day in a complete month.

    A daily 1d file is on every day with a 1m file; a month's file holds its month's days.
    """
    first_month, complete = start.replace(day=1), last_complete_month(last)
    for symbol in universe.symbols:
        if is_delivery(symbol):
            continue
        months = [dt.date.fromisoformat(f"{m}-01") for m in universe.kline_months(symbol)]
        monthly = [m for m in months if first_month <= m <= complete]
        covered = set(monthly)
        days = [d for d in universe.available_dates(symbol) if start <= d <= last]
        daily = [d for d in days if d.replace(day=1) not in covered]
        has_complete = bool(days) and days[0].replace(day=1) <= complete
        yield symbol, monthly, daily, has_complete


def _stretches(days: list[dt.date]) -> list[list[dt.date]]:
    """`days` (sorted) cut where a month without a day of them comes between two."""
    stretches: list[list[dt.date]] = []
    for day in days:
        month = day.replace(day=1)
        if stretches and _month_index(month) - _month_index(stretches[-1][-1]) <= 1:
            stretches[-1].append(day)
        else:
            stretches.append([day])
    return stretches


def _month_index(day: dt.date) -> int:
    return day.year * 12 + day.month


def _pages(files: int) -> int:
    return max(1, math.ceil(KEYS_PER_FILE * files / PAGE_SIZE))


def process_cpu_s(pid: int) -> float:
    """User + system CPU of a live process (Linux /proc), nan where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class PolicyCost:
    policy: str
    files: int
    requests: int
    wall_s: float


def checksum_policy_costs(
    universe: Universe, listing_url: str, download_url: str, *, files: int, workers: int
) -> list[PolicyCost]:
    """Download the same sample of monthly 1d files under each .CHECKSUM policy: the
    requests and wall time each costs, in this process, over `workers` threads.

    An unmeasured pass under "always" comes first: the emulator builds each zip and .CHECKSUM
    on its first GET and caches it, so whichever policy ran first would pay for that alone."""
    sample = list(_sample(universe, files))

    def cost(policy: ChecksumPolicy) -> PolicyCost:
        with VisionClient(
            listing_url, timeout_s=20, retries=5, backoff_s=0.5, pool_size=workers
        ) as client:
            downloader = Downloader(client, download_url, checksums=policy)
            started = time.monotonic()
            with ThreadPoolExecutor(workers) as pool:
                fetched = sum(len(body) > 0 for body in pool.map(downloader.fetch, sample))
            wall = time.monotonic() - started
            assert fetched == len(sample)
            return PolicyCost(policy, len(sample), client.requests, wall)

    cost("always")
    return [cost("multipart"), cost("always")]


def _sample(universe: Universe, files: int) -> Iterator[ListedFile]:
    """Up to `files` monthly 1d files, a few of every symbol in turn."""
    count = 0
    for symbol in universe.symbols:
        for month in universe.kline_months(symbol)[:3]:
            if count == files:
                return
            key = LAYOUT.monthly_key(symbol, dt.date.fromisoformat(f"{month}-01"))
            meta = universe.meta(key)
            yield ListedFile(key=key, size=meta.size, etag=meta.etag)
            count += 1
