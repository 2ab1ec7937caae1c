"""`make demo`: the whole pipeline, offline, against the bundled emulator, in a scratch copy.

It never touches this checkout's params.yaml, symbols.json or dataset: everything happens in
a temporary git + DVC repository (kept with --keep DIR).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from devtools.emulator import Emulator, generate_universe, load_reference
from devtools.scratch import ScratchProject
from pipeline.vision.layout import Layout

NEW_SYMBOL = "DEMONEWUSDT"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--symbols", type=int, default=60, help="symbols in the universe")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated universe")
    parser.add_argument("--keep", type=Path, help="build the scratch project here and keep it")
    args = parser.parse_args(argv)

    today = dt.datetime.now(dt.UTC).date()
    universe = generate_universe(
        load_reference(), today=today, n_symbols=args.symbols, seed=args.seed
    )
    with (
        tempfile.TemporaryDirectory(prefix="vision-demo-") as scratch,
        Emulator(universe) as emulator,
    ):
        root = args.keep or Path(scratch) / "project"
        project = ScratchProject.create(
            root,
            {
                "vision": {
                    "listing_url": emulator.listing_url,
                    "download_url": emulator.download_url,
                },
                "run": {"as_of": today.isoformat()},
                "probe": {"workers": 16},
            },
        )
        print(f"Emulator on {emulator.url}; scratch project in {root}\n")
        first = _run(project, emulator, "Day 1: first run, full backfill")
        _summary(project, first)
        _examples(project)

        tomorrow = today + dt.timedelta(days=1)
        emulator.set_universe(
            universe.with_today(tomorrow).with_symbol(
                NEW_SYMBOL, [(today - dt.timedelta(days=700), None)]
            )
        )
        project.set_params({"run": {"as_of": tomorrow.isoformat()}})
        second = _run(project, emulator, f"Day 2: {NEW_SYMBOL} was listed overnight")
        _summary(project, second)
        _next_day_proof(project, emulator)
    return 0


def _run(project: ScratchProject, emulator: Emulator, title: str) -> dict[str, object]:
    print(f"== {title}: dvc repro")
    emulator.reset_counters()
    started = time.monotonic()
    result = project.repro()
    seconds = time.monotonic() - started
    ran = [
        line.split("'")[1]
        for line in result.stdout.splitlines()
        if line.startswith("Running stage")
    ]
    skipped = [
        line.split("'")[1]
        for line in result.stdout.splitlines()
        if "didn't change, skipping" in line
    ]
    print(f"   stages run: {', '.join(ran) or 'none'}; skipped: {', '.join(skipped) or 'none'}")
    return {"seconds": seconds, "counters": emulator.counters()}


def _summary(project: ScratchProject, run: dict[str, object]) -> None:
    rows = project.dataset()
    counters = run["counters"]
    assert isinstance(counters, dict)
    print(
        f"   symbols: {rows['symbol'].n_unique()}  rows: {rows.height:,}  "
        f"available: {int(rows['available'].sum()):,}  "
        f"requests: {counters['requests']}  seconds: {run['seconds']:.1f}\n"
    )


def _examples(project: ScratchProject) -> None:
    rows = project.dataset().lazy()
    newest = rows.select(pl.col("date").max()).collect().item()
    print("== Example queries (polars)")
    universe_size = rows.filter(pl.col("date") == newest, pl.col("available")).select(pl.len())
    print(f"   symbols with a file on {newest}: {universe_size.collect().item()}")
    listings = (
        rows.filter(pl.col("available"))
        .group_by("symbol")
        .agg(first_file=pl.col("date").min(), last_file=pl.col("date").max())
        .sort("first_file", descending=True)
        .head(5)
        .collect()
    )
    print("   newest listings:")
    for symbol, first, last in listings.iter_rows():
        print(f"     {symbol:<22} first file {first}, last file {last}")
    missing = rows.filter(~pl.col("available")).select(pl.len()).collect().item()
    print(f"   rows with no file (missing days, delisted symbols): {missing:,}\n")


def _next_day_proof(project: ScratchProject, emulator: Emulator) -> None:
    layout = Layout(market="um", data_type="klines", interval="1m")
    by_prefix = emulator.counters()["by_prefix"]
    symbols = json.loads(project.read("symbols.json"))["symbols"]
    others = [by_prefix.get(layout.symbol_prefix(s), 0) for s in symbols if s != NEW_SYMBOL]
    gaps = json.loads(project.read("data/gaps.json"))
    new_rows = project.dataset().filter(pl.col("symbol") == NEW_SYMBOL)
    new_requests = by_prefix.get(layout.symbol_prefix(NEW_SYMBOL), 0)
    print("== What day 2 cost")
    print(f"   detect_gaps found: {', '.join(gaps)}")
    print(f"   {NEW_SYMBOL}: {new_requests} listing requests for its whole history,")
    print(f"     now {new_rows.height} rows ({new_rows['date'].min()} to {new_rows['date'].max()})")
    print(
        f"   the other {len(others)} symbols: {sum(others)} requests "
        f"(at most {max(others, default=0)} each: only the lookback window)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
