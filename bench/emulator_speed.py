"""How fast the emulator lists the full-scale universe, and how much memory its server holds.

Builds the realistic full universe (every real symbol since 2019-09-25), then measures
1000-key listing pages in process (`list_objects`) and over HTTP against a separate
`python -m devtools.emulator serve` process, whose resident memory is read from /proc.

    .venv/bin/python bench/emulator_speed.py [--pages 400] [--http-pages 800] [--workers 8]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.emulator import Universe, generate_universe, list_objects, load_reference  # noqa: E402
from devtools.emulator.process import EmulatorProcess  # noqa: E402

TODAY = date(2026, 11, 29)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=400, help="in-process pages to list")
    parser.add_argument("--http-pages", type=int, default=800, help="pages to fetch over HTTP")
    parser.add_argument("--workers", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    universe = generate_universe(load_reference(), today=TODAY)
    generated = time.perf_counter()
    universe.prepare()
    indexed = time.perf_counter()
    print(f"universe: {len(universe.symbols)} symbols, {universe.key_count:,} keys on {TODAY}")
    print(
        f"  generate {generated - started:.2f} s, index {indexed - generated:.2f} s, "
        f"this process's peak RSS {_own_peak_rss_mb():.0f} MB"
    )

    queries = _page_queries(universe, max(args.pages, args.http_pages), random.Random(args.seed))
    _bench_in_process(universe, queries[: args.pages])
    _bench_http(universe, queries[: args.http_pages], args.workers)


def _page_queries(universe: Universe, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """(prefix, start-after) of full pages: a symbol folder, from a day at least 500 back."""
    long_lived = [s for s in universe.symbols if len(universe.available_dates(s)) > 600]
    queries = []
    for _ in range(n):
        symbol = rng.choice(long_lived)
        days = universe.available_dates(symbol)
        day = days[rng.randrange(len(days) - 500)]
        folder = f"{universe.root}{symbol}/1m/"
        queries.append((folder, f"{folder}{symbol}-1m-{day}.zip"))
    return queries


def _bench_in_process(universe: Universe, queries: list[tuple[str, str]]) -> None:
    keys = 0
    started = time.perf_counter()
    for prefix, start_after in queries:
        keys += len(list_objects(universe, prefix=prefix, start_after=start_after).keys)
    elapsed = time.perf_counter() - started
    print(f"in process: {len(queries)} pages, {keys / len(queries):.0f} keys/page")
    _print_rates(len(queries), keys, elapsed)


def _bench_http(universe: Universe, queries: list[tuple[str, str]], workers: int) -> None:
    with EmulatorProcess(universe) as server:
        url = server.listing_url
        with requests.Session() as first:  # so the figure includes serving a page
            first.get(url, params={"prefix": queries[0][0]}, timeout=60).raise_for_status()
        pid = server.process.pid
        print(f"server process: RSS {_rss_mb(pid):.0f} MB with the universe loaded")

        single = queries[: max(1, len(queries) // 8)]
        for label, clients in (("1 connection", 1), (f"{workers} connections", workers)):
            batch = single if clients == 1 else queries
            keys, elapsed = _fetch_all(url, batch, clients)
            print(f"over HTTP, {label}: {len(batch)} pages (V2, 1000 keys, url-encoded)")
            _print_rates(len(batch), keys, elapsed)
        print(f"server process: RSS {_rss_mb(pid):.0f} MB now, peak {_rss_mb(pid, 'VmHWM'):.0f} MB")


def _fetch_all(url: str, queries: list[tuple[str, str]], clients: int) -> tuple[int, float]:
    """Fetch every page over `clients` keep-alive connections; (keys seen, seconds)."""
    keys = [0] * clients
    chunks = [queries[i::clients] for i in range(clients)]

    def client(i: int) -> None:
        with requests.Session() as http:
            for prefix, start_after in chunks[i]:
                params = {
                    "list-type": "2",
                    "prefix": prefix,
                    "start-after": start_after,
                    "encoding-type": "url",
                }
                response = http.get(url, params=params, timeout=60)
                response.raise_for_status()
                keys[i] += response.content.count(b"<Key>")

    elapsed = _timed_threads(client, clients)
    return sum(keys), elapsed


def _timed_threads(target: Callable[[int], None], n: int) -> float:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def _print_rates(pages: int, keys: int, elapsed: float) -> None:
    print(
        f"  {pages / elapsed:,.0f} pages/s, {keys / elapsed:,.0f} keys/s, "
        f"{1000 * elapsed / pages:.2f} ms/page"
    )


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def _own_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
