"""`make bench`: the pipeline at real scale against the emulator, 50 ms from every request.

Rows: the first `dvc repro` on an empty dataset (full backfill); the full-history audit
(`python -m pipeline.ops audit`: a whole `dvc repro` with run.repair set) with nothing changed
and with injected re-uploads and removals; the next day with no new symbol;
the next day with three new symbols; `dvc repro` again with nothing new; and the
predecessor's way of probing the daily window (one HEAD per symbol and day, 150 threads).
Each row runs three times and the table shows medians. The emulator runs in a process of its
own, so its CPU is not the pipeline's. Figures are whole-process figures on this machine.

    python bench/pipeline_bench.py [--runs 3] [--latency-ms 50] [--symbols N] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.emulator import Knobs, Universe, generate_universe, load_reference  # noqa: E402
from devtools.emulator.process import EmulatorProcess  # noqa: E402
from devtools.scratch import ScratchProject  # noqa: E402
from pipeline import query  # noqa: E402
from pipeline.dataset.changes import read_changes  # noqa: E402
from pipeline.symbols import is_delivery  # noqa: E402
from pipeline.vision.layout import Layout  # noqa: E402
from pipeline.vision.listing import PAGE_SIZE  # noqa: E402

TODAY = dt.date(2026, 11, 29)
START = dt.date(2019, 9, 25)
LOOKBACK_DAYS = 20
BASELINE_THREADS = 150
NEW_SYMBOLS = {"BENCHNEWAUSDT": 900, "BENCHNEWBUSDT": 400, "BENCHNEWCUSDT": 30}  # days listed
INJECTED_CHANGES = 20  # half re-uploads, half removals, spread over history
LAYOUT = Layout(market="um", data_type="klines", interval="1m")
ONE_DAY = dt.timedelta(days=1)
# The audit as an operator runs it: the whole pipeline (dvc repro) with run.repair for one run.
AUDIT = (sys.executable, "-m", "pipeline.ops", "audit")


@dataclass(frozen=True)
class Figures:
    symbols: int
    requests: int
    minimal: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    dataset_mb: float
    cache_files_added: int

    @property
    def ratio(self) -> float:
        return self.requests / self.minimal if self.minimal else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--symbols", type=int, help="a subset of the real universe (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    args = parser.parse_args()

    universe = generate_universe(load_reference(), today=TODAY, n_symbols=args.symbols, seed=1)
    next_day = quiet_next_day(universe)
    with_new = next_day
    for name, days in NEW_SYMBOLS.items():
        with_new = with_new.with_symbol(name, [(TODAY - dt.timedelta(days=days), None)])

    rows: dict[str, list[Figures]] = {}
    extras: dict[str, list[float]] = {"dvc_overhead_s": [], "snapshot_ms": [], "timeline_ms": []}
    with (
        tempfile.TemporaryDirectory(prefix="vision-bench-") as tmp,
        EmulatorProcess(universe, Knobs(latency_ms=args.latency_ms)) as emulator,
    ):
        scratch = Path(tmp)
        params = {
            "vision": {"listing_url": emulator.listing_url, "download_url": emulator.download_url},
            "run": {"as_of": TODAY.isoformat()},
            "update": {"lookback_days": LOOKBACK_DAYS},
        }
        template = ScratchProject.create(scratch / "template", params)
        backfilled: ScratchProject | None = None
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs}", file=sys.stderr, flush=True)
            emulator.set_universe(universe)
            project = template.copy(scratch / f"full-{run}")
            figures, _ = measure(project, emulator, minimal_pages(universe, TODAY, START))
            rows.setdefault("Full backfill", []).append(figures)
            extras["snapshot_ms"].append(timed_ms(lambda p=project: snapshot(p)))
            extras["timeline_ms"].append(
                timed_ms(lambda p=project: query.timeline(dataset(p), "BTCUSDT"))
            )
            project.commit("after the full backfill")
            backfilled = backfilled or project

            audit_minimal = minimal_pages(universe, TODAY, START)
            quiet = project.copy(scratch / f"audit-quiet-{run}")
            figures, _ = measure(quiet, emulator, audit_minimal, AUDIT)
            rows.setdefault("Audit, nothing changed", []).append(figures)
            assert read_changes(quiet.root / "data" / "changes.parquet").is_empty(), "false"
            changed, injected = inject_changes(universe)
            emulator.set_universe(changed)
            audited = project.copy(scratch / f"audit-{run}")
            figures, _ = measure(audited, emulator, audit_minimal, AUDIT)
            rows.setdefault(f"Audit, {INJECTED_CHANGES} changes injected", []).append(figures)
            found = read_changes(audited.root / "data" / "changes.parquet")
            assert set(found.select("date", "symbol", "kind").rows()) == injected, "missed"

            assert backfilled is not None
            for index, (label, day_universe) in enumerate(
                (("Daily update", next_day), ("Daily update, 3 new symbols", with_new))
            ):
                emulator.set_universe(day_universe)
                daily = backfilled.copy(scratch / f"daily-{index}-{run}")
                daily.set_params({"run": {"as_of": (TODAY + ONE_DAY).isoformat()}})
                minimal = minimal_pages(
                    day_universe,
                    TODAY + ONE_DAY,
                    TODAY + ONE_DAY - dt.timedelta(days=LOOKBACK_DAYS),
                    new=set(NEW_SYMBOLS),
                )
                figures, _ = measure(daily, emulator, minimal)
                rows.setdefault(label, []).append(figures)
                if label == "Daily update":
                    figures, stderr = measure(daily, emulator, minimal)
                    rows.setdefault("Nothing-new rerun", []).append(figures)
                    extras["dvc_overhead_s"].append(figures.wall_s - sum(stage_seconds(stderr)))

            emulator.set_universe(next_day)
            rows.setdefault("Baseline: HEAD per day", []).append(
                head_baseline(emulator, next_day, rows["Daily update"][-1])
            )
    report(rows, extras, args)
    return 0


def inject_changes(universe: Universe) -> tuple[Universe, set[tuple[dt.date, str, str]]]:
    """The universe with files re-uploaded and removed (seeded), and the changes it holds."""
    chooser = random.Random(7)
    symbols = [s for s in universe.symbols if not is_delivery(s)]
    injected = set()
    for n in range(INJECTED_CHANGES):
        symbol = chooser.choice(symbols)
        dates = universe.available_dates(symbol)
        day = chooser.choice(dates[1:-LOOKBACK_DAYS] or dates)  # not a first file
        if n % 2:
            universe = universe.with_reupload(symbol, day, on=TODAY)
            injected.add((day, symbol, "replaced"))
        else:
            universe = universe.without_file(symbol, day)
            injected.add((day, symbol, "removed"))
    return universe, injected


def quiet_next_day(universe: Universe) -> Universe:
    """The next day without the listings the generated universe has on it (about one a day):
    the daily-update row is the day with no new symbol."""
    tomorrow = universe.with_today(universe.today + ONE_DAY)
    listed_overnight = set(tomorrow.symbols) - set(universe.symbols)
    specs = {name: spec for name, spec in tomorrow.specs.items() if name not in listed_overnight}
    return replace(tomorrow, specs=specs)


def measure(
    project: ScratchProject,
    emulator: EmulatorProcess,
    minimal: int,
    command: tuple[str, ...] = ("dvc", "repro"),
) -> tuple[Figures, str]:
    cache = project.root / ".dvc" / "cache" / "files"  # objects only, not the run-cache
    cached_before = count_files(cache)
    emulator.reset_counters()
    out = project.root / ".measure.json"
    result = project.run(
        sys.executable, str(REPO / "bench" / "measure.py"), str(out), "--", *command
    )
    usage = json.loads(out.read_text())
    out.unlink()
    symbols = json.loads(project.read("symbols.json"))["symbols"]
    figures = Figures(
        symbols=len(symbols),
        requests=emulator.counters()["requests"],
        minimal=minimal,
        wall_s=usage["wall_s"],
        cpu_s=usage["cpu_s"],
        peak_rss_mb=usage["peak_rss_mb"],
        dataset_mb=sum(p.stat().st_size for p in dataset(project).glob("*.parquet")) / 1e6,
        cache_files_added=count_files(cache) - cached_before,
    )
    return figures, result.stderr


def minimal_pages(
    universe: Universe,
    as_of: dt.date,
    first: dt.date,
    *,
    new: set[str] = frozenset(),
) -> int:
    """Discovery pages plus, per listed prefix, ⌈keys / 1000⌉ (at least one request).

    New symbols are listed for their whole history, every other symbol for [first, as_of).
    """
    last = as_of - ONE_DAY
    folders = len(universe.symbols)
    pages = math.ceil(folders / PAGE_SIZE)
    for symbol in universe.symbols:
        if is_delivery(symbol):
            continue
        since = START if symbol in new else first
        days = sum(since <= d <= last for d in universe.available_dates(symbol))
        pages += max(1, math.ceil(2 * days / PAGE_SIZE))
    return pages


def head_baseline(emulator: EmulatorProcess, universe: Universe, daily: Figures) -> Figures:
    """The predecessor's daily probe: one HEAD per (symbol, date) of the window."""
    last = universe.today - ONE_DAY
    days = [last - dt.timedelta(days=i) for i in range(LOOKBACK_DAYS)]
    symbols = [s for s in universe.symbols if not is_delivery(s)]
    keys = [f"{LAYOUT.symbol_prefix(s)}{s}-1m-{d}.zip" for s in symbols for d in days]
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=BASELINE_THREADS, pool_block=True))
    emulator.reset_counters()
    started, cpu_started = time.monotonic(), time.process_time()
    with ThreadPoolExecutor(BASELINE_THREADS) as pool:
        found = sum(pool.map(lambda key: session.head(f"{emulator.download_url}/{key}").ok, keys))
    wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
    session.close()
    assert found > 0
    return Figures(
        symbols=len(symbols),
        requests=emulator.counters()["requests"],
        minimal=daily.minimal,
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=float("nan"),
        dataset_mb=float("nan"),
        cache_files_added=0,
    )


def dataset(project: ScratchProject) -> Path:
    return project.root / "data" / "availability"


def snapshot(project: ScratchProject) -> list[str]:
    return query.available_on(dataset(project), TODAY - dt.timedelta(days=100))


def timed_ms(call: Callable[[], object], repeat: int = 5) -> float:
    """The best of a few in-process calls, after one warm-up."""
    call()
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def stage_seconds(stderr: str) -> list[float]:
    return [float(s) for s in re.findall(r" INFO done in ([0-9.]+)s", stderr)]


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def report(
    rows: dict[str, list[Figures]], extras: dict[str, list[float]], args: argparse.Namespace
) -> None:
    medians = {label: median_figures(runs) for label, runs in rows.items()}
    header = (
        "| row | symbols | requests | minimal | / minimal | wall s | CPU s | peak RSS MB "
        "| dataset MB | DVC cache files added |"
    )
    lines = [header, "|" + "---|" * 10]
    for label, f in medians.items():
        lines.append(
            f"| {label} | {f.symbols} | {f.requests:,} | {f.minimal:,} | {f.ratio:.2f} "
            f"| {f.wall_s:.1f} | {f.cpu_s:.1f} | {fmt(f.peak_rss_mb)} | {fmt(f.dataset_mb)} "
            f"| {f.cache_files_added} |"
        )
    daily, new, baseline = (
        medians["Daily update"],
        medians["Daily update, 3 new symbols"],
        medians["Baseline: HEAD per day"],
    )
    summary = {
        "head_baseline_requests_per_daily_request": baseline.requests / daily.requests,
        "new_symbols_extra_wall_s": new.wall_s - daily.wall_s,
        **{key: statistics.median(values) for key, values in extras.items()},
    }
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines += [
        "",
        "- HEAD baseline / daily update requests: "
        f"{summary['head_baseline_requests_per_daily_request']:.0f} times fewer requests",
        f"- 3 new symbols' full histories: {summary['new_symbols_extra_wall_s']:+.1f} s of wall "
        "time on top of the daily update",
        f"- nothing-new rerun: DVC's own overhead {summary['dvc_overhead_s']:.1f} s "
        "(wall minus the stages' own time)",
        f"- queries in process: symbols available on a date {summary['snapshot_ms']:.1f} ms, "
        f"timeline of BTCUSDT {summary['timeline_ms']:.1f} ms",
        f"- medians of {args.runs} runs, {args.latency_ms:.0f} ms latency per request; "
        f"whole-process figures on this machine ({machine})",
    ]
    table = "\n".join(lines)
    print(table)
    args.out.write_text(
        json.dumps(
            {
                "rows": {label: {**asdict(f), "ratio": f.ratio} for label, f in medians.items()},
                "summary": summary,
                "runs": args.runs,
                "latency_ms": args.latency_ms,
                "table": table,
            },
            indent=2,
        )
        + "\n"
    )


def median_figures(runs: list[Figures]) -> Figures:
    fields = asdict(runs[0]).keys()
    return Figures(**{k: statistics.median(getattr(r, k) for r in runs) for k in fields})


def fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


if __name__ == "__main__":
    raise SystemExit(main())
