"""`make demo`: the whole pipeline, offline, against the bundled emulator, in a scratch copy.

It never touches this checkout's params.yaml, symbols.json or dataset: everything happens in
a temporary git + DVC repository. With --keep DIR that repository stays, ready for more: its
Makefile is this checkout's, run on this checkout's .venv, and `make emulator` serves the
demo's bucket again on the port its params.yaml points at, so `make update` and `vision-query`
work there after the demo has ended.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from devtools.emulator import Emulator, Universe, generate_universe, load_reference
from devtools.scratch import SOURCE, ScratchProject
from pipeline.vision.layout import Layout

NEW_SYMBOL = "DEMONEWUSDT"
# The symbols the README's examples ask about: the demo's universe always holds them.
EXAMPLE_SYMBOLS = ("BTCUSDT", "ETHUSDT")
# Where a kept project keeps the demo's bucket, for `make emulator`.
KEPT_UNIVERSE = Path("emulator") / "universe.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--symbols", type=int, default=60, help="symbols in the universe")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated universe")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="build the scratch project in DIR (a new directory) and keep it, to run make "
        "update and vision-query on afterwards",
    )
    args = parser.parse_args(argv)
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep}: it exists already; name a new directory")

    today = dt.datetime.now(dt.UTC).date()
    try:
        universe = generate_universe(
            load_reference(),
            today=today,
            n_symbols=args.symbols,
            seed=args.seed,
            include=EXAMPLE_SYMBOLS,
        )
    except ValueError as exc:
        parser.error(f"--symbols {args.symbols}: {exc}")
    try:
        _play(universe, today, args.keep)
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    _next_steps(args.keep)
    return 0


class DemoError(Exception):
    """A run of the demo failed: the message says which, and DVC's errors."""


def _play(universe: Universe, today: dt.date, kept: Path | None) -> None:
    """The two days, in a scratch project (at `kept`, kept, when given)."""
    with (
        tempfile.TemporaryDirectory(prefix="vision-demo-") as scratch,
        Emulator(universe) as emulator,
    ):
        root = kept or Path(scratch) / "project"
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
        next_day = universe.with_today(tomorrow).with_symbol(
            NEW_SYMBOL, [(today - dt.timedelta(days=700), None)]
        )
        emulator.set_universe(next_day)
        project.set_params({"run": {"as_of": tomorrow.isoformat()}})
        second = _run(project, emulator, f"Day 2: {NEW_SYMBOL} was listed overnight")
        _summary(project, second)
        _next_day_proof(project, emulator)
        if kept is not None:
            keep(project, next_day, emulator.port)


def _run(project: ScratchProject, emulator: Emulator, title: str) -> dict[str, object]:
    print(f"== {title}: dvc repro")
    emulator.reset_counters()
    started = time.monotonic()
    result = project.repro(check=False)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
        raise DemoError(
            f"{title}: dvc repro exited {result.returncode}; the project is in {project.root}:\n"
            + "\n".join(errors or result.stderr.splitlines()[-5:])
        )
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


def keep(project: ScratchProject, universe: Universe, port: int) -> None:
    """Leave `project` ready for `make` and `vision-query` once the demo's emulator is gone.

    Its params.yaml (and dvc.lock) name the emulator's port: `make emulator` serves the
    demo's last universe on that same port again, so the next run's params are unchanged.
    """
    (project.root / KEPT_UNIVERSE).parent.mkdir()
    universe.save(project.root / KEPT_UNIVERSE)
    (project.root / "Makefile").write_text(kept_makefile(port), encoding="utf-8")


def kept_makefile(port: int) -> str:
    """This checkout's Makefile, on this interpreter's environment, plus `make emulator`."""
    venv_bin = Path(sys.executable).parent
    header = f"""\
# A demo project kept by `python -m devtools.demo --keep`: the Makefile of {SOURCE},
# run on the environment the demo ran on ({venv_bin}) instead of a .venv of its own.
# Its params.yaml points at the demo's emulator, 127.0.0.1:{port}: `make emulator` serves
# the demo's bucket there again, for `make update` and the other targets that list it.
override BIN := {venv_bin}
override RUNTIME :=
override DEV :=
DEMO_CHECKOUT := {SOURCE}
DEMO_PORT := {port}

"""
    emulator = f"""
# devtools is not installed: it is imported from the checkout the demo ran from.
.PHONY: emulator
emulator: ## Serve the demo's bucket again on 127.0.0.1:{port}, for make update (Ctrl-C stops it)
\tPYTHONPATH="$(DEMO_CHECKOUT)" python -m devtools.emulator serve \\
\t\t--universe {KEPT_UNIVERSE.as_posix()} --port $(DEMO_PORT)
"""
    return header + (SOURCE / "Makefile").read_text(encoding="utf-8") + emulator


def _next_steps(kept: Path | None) -> None:
    """The exact commands to go on with: on the kept project, or to keep one."""
    print("\n== What to try next")
    if kept is None:
        print("   Keep the project to run make update and vision-query on it afterwards:")
        print("     make demo KEEP=/tmp/vision-demo")
        print("     (or: python -m devtools.demo --keep /tmp/vision-demo)")
        return
    kept = kept.resolve()
    activate = Path(sys.executable).parent / "activate"
    print(f"   The project is kept in {kept}; its Makefile runs on this checkout's environment.")
    print("   In a second shell, serve the demo's bucket again (Ctrl-C stops it):")
    print(f"     cd {kept} && make emulator")
    print("   Then, here:")
    print(f"     cd {kept}")
    print("     make update              # the next run: discover, then the lookback window")
    print("     make status              # what dvc repro would rerun, and why")
    print(f"     source {activate}")
    print("     vision-query stats")
    print("     vision-query timeline BTCUSDT")
    print("     vision-query snapshot 2024-03-01")
    print("     vision-query listings --since 2024-01-01")


if __name__ == "__main__":
    raise SystemExit(main())
