"""`make bench`: the pipeline at real scale against the emulator, 50 ms from every request.

Rows: the first `dvc repro` on an empty dataset (full backfill), run in three measured steps:
the availability stages (`dvc repro update`), the volume stage alone (`dvc repro -s volume`:
the volume backfill row) and the checks (validate and report, counted in the full backfill
row); the full-history audit
(`python -m pipeline.ops audit`: a whole `dvc repro` with run.repair set) with nothing changed
and with injected re-uploads and removals; the next day with no new symbol;
the next day with three new symbols; `dvc repro` again with nothing new; and the
predecessor's way of probing the daily window (one HEAD per symbol and day, 150 threads);
a day's volume update (the next day's `dvc repro update`, then the volume stage alone,
measured); and, in the first run only, the volume stage on the days of a month's turn (that
project carried forward a day at a time, no new symbol: the requests are the same every run).
The availability rows count the requests outside the 1d folders, the volume rows
those inside (bench/volume_bench.py defines the volume minimum). Each row runs three times and
the table shows medians. The emulator runs in a process of its own, so its CPU is not the
pipeline's. Figures are whole-process figures on this machine.

    python bench/pipeline_bench.py [--runs 3] [--latency-ms 50] [--symbols N] [--out FILE]
                                   [--only availability|volume]

`--only volume` measures the volume rows alone (the availability stages still run, unmeasured
where they can be skipped), for a quick look; a partial run writes a file only given --out.
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

from volume_bench import (  # noqa: E402
    Minimum,
    PolicyCost,
    VolumeFigures,
    backfill_minimum,
    checksum_policy_costs,
    daily_minimum,
    is_volume_prefix,
    process_cpu_s,
)

from devtools.emulator import Knobs, Universe, generate_universe, load_reference  # noqa: E402
from devtools.emulator.process import EmulatorProcess  # noqa: E402
from devtools.scratch import ScratchProject  # noqa: E402
from pipeline import query  # noqa: E402
from pipeline.dataset.changes import read_changes  # noqa: E402
from pipeline.symbols import is_delivery  # noqa: E402
from pipeline.vision.layout import Layout  # noqa: E402
from pipeline.vision.listing import PAGE_SIZE  # noqa: E402

# The day before a month's last: the daily rows run on the month's last day, then the month's
# turn follows (MONTH_TURN_DAYS), all in the past, as the pipeline refuses a future as_of.
TODAY = dt.date(2026, 10, 30)
START = dt.date(2019, 9, 25)
LOOKBACK_DAYS = 20
BASELINE_THREADS = 150
NEW_SYMBOLS = {"BENCHNEWAUSDT": 900, "BENCHNEWBUSDT": 400, "BENCHNEWCUSDT": 30}  # days listed
INJECTED_CHANGES = 20  # half re-uploads, half removals, spread over history
LAYOUT = Layout(market="um", data_type="klines", interval="1m")
ONE_DAY = dt.timedelta(days=1)
# The audit as an operator runs it: the whole pipeline (dvc repro) with run.repair for one run.
AUDIT = (sys.executable, "-m", "pipeline.ops", "audit")
# The first `dvc repro`, in three steps measured apart: the availability stages, the volume
# stage, the checks. --single-item: only the stage named, whatever runs before it.
REPRO_AVAILABILITY = ("dvc", "repro", "update")
REPRO_VOLUME = ("dvc", "repro", "--single-item", "volume")
REPRO_CHECKS = ("dvc", "repro", "--single-item", "validate", "report")
VOLUME_BACKFILL = "Volume backfill"
VOLUME_DAILY = "Volume, daily update"
VOLUME_WORKERS = 64  # params.yaml's volume.workers, for the .CHECKSUM policy sample
CHECKSUM_SAMPLE_FILES = 2000
DEFAULT_OUT = REPO / "bench" / "results.json"
MONTH_TURN_DAYS = 5  # as_of 11-01 to 11-05: October's monthly files come out on 11-01 to 11-03
VOLUME_BACKFILL_GOAL_S = 120.0  # issue 14: the full-scale volume backfill in 2 minutes
DAILY_TARGET_PER_SYMBOL = 1.05  # issue 14: a day's volume costs at most symbols x 1.05


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


@dataclass(frozen=True)
class DayCost:
    """The volume stage's requests on one day of a month's turn."""

    as_of: str
    symbols: int
    requests: int
    minimum: int
    monthly_folders_listed: int
    files_fetched: int

    @property
    def per_symbol(self) -> float:
        return self.requests / self.symbols


@dataclass(frozen=True)
class Measured:
    """One measured command: its process tree's figures and what it asked the emulator."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    by_prefix: dict[str, int]
    cache_files_added: int
    emulator_cpu_s: float
    stderr: str

    def requests(self, *, volume: bool) -> int:
        """The requests to the 1d folders (volume), or to every other prefix."""
        return sum(n for prefix, n in self.by_prefix.items() if is_volume_prefix(prefix) == volume)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--symbols", type=int, help="a subset of the real universe (default: all)")
    parser.add_argument("--only", choices=("availability", "volume"), help="only these rows")
    parser.add_argument("--out", type=Path, help=f"default: {DEFAULT_OUT} (all rows only)")
    args = parser.parse_args()
    availability, volume = args.only != "volume", args.only != "availability"

    universe = generate_universe(load_reference(), today=TODAY, n_symbols=args.symbols, seed=1)
    next_day = quiet_day(universe, TODAY + ONE_DAY)
    with_new = next_day
    for name, days in NEW_SYMBOLS.items():
        with_new = with_new.with_symbol(name, [(TODAY - dt.timedelta(days=days), None)])
    volume_backfill = backfill_minimum(universe, START, TODAY - ONE_DAY)
    volume_daily = daily_minimum(universe, next_day, START)

    rows: dict[str, list[Figures]] = {}
    volume_rows: dict[str, list[VolumeFigures]] = {}
    extras: dict[str, list[float]] = {"dvc_overhead_s": [], "snapshot_ms": [], "timeline_ms": []}
    inside: dict[str, list[float]] = {}  # the volume stage's part of the availability rows
    month_turn: list[DayCost] = []
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
            stages = measure(project, emulator, REPRO_AVAILABILITY)
            measured = measure(project, emulator, REPRO_VOLUME)
            volume_rows.setdefault(VOLUME_BACKFILL, []).append(
                volume_figures(project, measured, volume_backfill)
            )
            checks = measure(project, emulator, REPRO_CHECKS)
            full = combine(stages, checks)
            rows.setdefault("Full backfill", []).append(
                figures(project, full, minimal_pages(universe, TODAY, START))
            )
            project.commit("after the full backfill")
            backfilled = backfilled or project
            if availability:
                extras["snapshot_ms"].append(timed_ms(lambda p=project: snapshot(p)))
                extras["timeline_ms"].append(
                    timed_ms(lambda p=project: query.timeline(dataset(p), "BTCUSDT"))
                )
                audit_rows(rows, inside, universe, project, emulator, scratch, run)
                daily_rows(
                    rows, extras, inside, (next_day, with_new), backfilled, emulator, scratch, run
                )
                emulator.set_universe(next_day)
                rows.setdefault("Baseline: HEAD per day", []).append(
                    head_baseline(emulator, next_day, rows["Daily update"][-1])
                )
            if volume:
                emulator.set_universe(next_day)
                daily = backfilled.copy(scratch / f"volume-daily-{run}")
                daily.set_params({"run": {"as_of": (TODAY + ONE_DAY).isoformat()}})
                daily.run(*REPRO_AVAILABILITY)
                measured = measure(daily, emulator, REPRO_VOLUME)
                volume_rows.setdefault(VOLUME_DAILY, []).append(
                    volume_figures(daily, measured, volume_daily)
                )
                if run == 0:
                    month_turn = month_turn_costs(universe, daily, emulator)
        policies = []
        if volume:
            emulator.set_universe(universe)
            policies = checksum_policy_costs(
                universe,
                emulator.listing_url,
                emulator.download_url,
                files=CHECKSUM_SAMPLE_FILES,
                workers=VOLUME_WORKERS,
            )
    if not availability:
        rows = {}
    out = args.out or (DEFAULT_OUT if args.only is None else None)
    report(rows, volume_rows, extras, inside, policies, month_turn, volume_backfill, args, out)
    return 0


def audit_rows(
    rows: dict[str, list[Figures]],
    inside: dict[str, list[float]],
    universe: Universe,
    project: ScratchProject,
    emulator: EmulatorProcess,
    scratch: Path,
    run: int,
) -> None:
    """The audit with nothing changed, then with re-uploads and removals injected."""
    audit_minimal = minimal_pages(universe, TODAY, START)
    quiet = project.copy(scratch / f"audit-quiet-{run}")
    measured = measure(quiet, emulator, AUDIT)
    rows.setdefault("Audit, nothing changed", []).append(figures(quiet, measured, audit_minimal))
    inside.setdefault("audit_requests", []).append(measured.requests(volume=True))
    inside.setdefault("audit_stage_s", []).append(volume_stage_seconds(measured.stderr))
    assert read_changes(quiet.root / "data" / "changes.parquet").is_empty(), "false"
    changed, injected = inject_changes(universe)
    emulator.set_universe(changed)
    audited = project.copy(scratch / f"audit-{run}")
    measured = measure(audited, emulator, AUDIT)
    rows.setdefault(f"Audit, {INJECTED_CHANGES} changes injected", []).append(
        figures(audited, measured, audit_minimal)
    )
    found = read_changes(audited.root / "data" / "changes.parquet")
    assert set(found.select("date", "symbol", "kind").rows()) == injected, "missed"


def daily_rows(
    rows: dict[str, list[Figures]],
    extras: dict[str, list[float]],
    inside: dict[str, list[float]],
    days: tuple[Universe, Universe],
    backfilled: ScratchProject,
    emulator: EmulatorProcess,
    scratch: Path,
    run: int,
) -> None:
    """The next day (whole `dvc repro`), quiet and with three new symbols, and a rerun."""
    for index, (label, day_universe) in enumerate(
        zip(("Daily update", "Daily update, 3 new symbols"), days, strict=True)
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
        measured = measure(daily, emulator)
        rows.setdefault(label, []).append(figures(daily, measured, minimal))
        key = "daily" if index == 0 else "new_symbols"
        inside.setdefault(f"{key}_requests", []).append(measured.requests(volume=True))
        inside.setdefault(f"{key}_stage_s", []).append(volume_stage_seconds(measured.stderr))
        if label == "Daily update":
            measured = measure(daily, emulator)
            rows.setdefault("Nothing-new rerun", []).append(figures(daily, measured, minimal))
            extras["dvc_overhead_s"].append(measured.wall_s - sum(stage_seconds(measured.stderr)))
            inside.setdefault("rerun_requests", []).append(measured.requests(volume=True))


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


def quiet_day(universe: Universe, today: dt.date) -> Universe:
    """The universe on a later day without the symbols listed since (about one a day): the
    daily rows are days with no new symbol."""
    later = universe.with_today(today)
    listed_since = set(later.symbols) - set(universe.symbols)
    specs = {name: spec for name, spec in later.specs.items() if name not in listed_since}
    return replace(later, specs=specs)


def month_turn_costs(
    universe: Universe, project: ScratchProject, emulator: EmulatorProcess
) -> list[DayCost]:
    """The volume stage's requests on each of MONTH_TURN_DAYS days from the first of the next
    month on, `project` (run on TODAY + 1) carried forward a day at a time."""
    costs = []
    before = quiet_day(universe, TODAY + ONE_DAY)
    for offset in range(2, 2 + MONTH_TURN_DAYS):
        day = quiet_day(universe, TODAY + offset * ONE_DAY)
        emulator.set_universe(day)
        project.set_params({"run": {"as_of": day.today.isoformat()}})
        project.run(*REPRO_AVAILABILITY)
        measured = measure(project, emulator, REPRO_VOLUME)
        metrics = json.loads(project.read("metrics/volume.json"))
        costs.append(
            DayCost(
                as_of=day.today.isoformat(),
                symbols=symbol_count(project),
                requests=measured.requests(volume=True),
                minimum=daily_minimum(before, day, START).total,
                monthly_folders_listed=metrics["monthly_folders_listed"],
                files_fetched=metrics["files_fetched"],
            )
        )
        before = day
    return costs


def measure(
    project: ScratchProject,
    emulator: EmulatorProcess,
    command: tuple[str, ...] = ("dvc", "repro"),
) -> Measured:
    """Run `command` in `project` under bench/measure.py, and what it cost."""
    cache = project.root / ".dvc" / "cache" / "files"  # objects only, not the run-cache
    cached_before = count_files(cache)
    emulator.reset_counters()
    emulator_cpu = process_cpu_s(emulator.process.pid)
    out = project.root / ".measure.json"
    result = project.run(
        sys.executable, str(REPO / "bench" / "measure.py"), str(out), "--", *command
    )
    usage = json.loads(out.read_text())
    out.unlink()
    return Measured(
        wall_s=usage["wall_s"],
        cpu_s=usage["cpu_s"],
        peak_rss_mb=usage["peak_rss_mb"],
        by_prefix=emulator.counters()["by_prefix"],
        cache_files_added=count_files(cache) - cached_before,
        emulator_cpu_s=process_cpu_s(emulator.process.pid) - emulator_cpu,
        stderr=result.stderr,
    )


def combine(first: Measured, then: Measured) -> Measured:
    """Two commands run one after the other, as one row."""
    by_prefix = dict(first.by_prefix)
    for prefix, n in then.by_prefix.items():
        by_prefix[prefix] = by_prefix.get(prefix, 0) + n
    return Measured(
        wall_s=first.wall_s + then.wall_s,
        cpu_s=first.cpu_s + then.cpu_s,
        peak_rss_mb=max(first.peak_rss_mb, then.peak_rss_mb),
        by_prefix=by_prefix,
        cache_files_added=first.cache_files_added + then.cache_files_added,
        emulator_cpu_s=first.emulator_cpu_s + then.emulator_cpu_s,
        stderr=first.stderr + then.stderr,
    )


def figures(project: ScratchProject, measured: Measured, minimal: int) -> Figures:
    """An availability row: the requests outside the 1d folders."""
    return Figures(
        symbols=symbol_count(project),
        requests=measured.requests(volume=False),
        minimal=minimal,
        wall_s=measured.wall_s,
        cpu_s=measured.cpu_s,
        peak_rss_mb=measured.peak_rss_mb,
        dataset_mb=folder_mb(dataset(project)),
        cache_files_added=measured.cache_files_added,
    )


def volume_figures(project: ScratchProject, measured: Measured, minimum: Minimum) -> VolumeFigures:
    """A volume row: the requests to the 1d folders, and what the stage says it fetched."""
    metrics = json.loads(project.read("metrics/volume.json"))
    # The stage counts its own requests; the emulator counts what it served: they must agree.
    assert metrics["requests"] == measured.requests(volume=True), "the stage miscounts"
    return VolumeFigures(
        symbols=symbol_count(project),
        requests=measured.requests(volume=True),
        minimum=minimum.total,
        stage_requests=metrics["requests"],
        files=metrics["files_fetched"],
        mb_fetched=metrics["bytes"] / 1e6,
        wall_s=measured.wall_s,
        cpu_s=measured.cpu_s,
        peak_rss_mb=measured.peak_rss_mb,
        stage_s=volume_stage_seconds(measured.stderr),
        emulator_cpu_s=measured.emulator_cpu_s,
        dataset_mb=folder_mb(project.root / "data" / "volume"),
        cache_files_added=measured.cache_files_added,
    )


def symbol_count(project: ScratchProject) -> int:
    return len(json.loads(project.read("symbols.json"))["symbols"])


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.parquet")) / 1e6


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


def volume_stage_seconds(stderr: str) -> float:
    """The volume stage's own time in a run's log (nan if it did not run)."""
    found = re.findall(r" volume INFO done in ([0-9.]+)s", stderr)
    return float(found[-1]) if found else float("nan")


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def report(
    rows: dict[str, list[Figures]],
    volume_rows: dict[str, list[VolumeFigures]],
    extras: dict[str, list[float]],
    inside: dict[str, list[float]],
    policies: list[PolicyCost],
    month_turn: list[DayCost],
    volume_backfill: Minimum,
    args: argparse.Namespace,
    out: Path | None,
) -> None:
    medians = {label: median_figures(runs) for label, runs in rows.items()}
    volume_medians = {label: median_volume(runs) for label, runs in volume_rows.items()}
    summary: dict[str, float] = {}
    lines: list[str] = []
    if medians:
        lines += availability_table(medians)
    if volume_medians:
        lines += ["", *volume_table(volume_medians)] if lines else volume_table(volume_medians)
    lines.append("")
    if medians:
        summary.update(availability_summary(medians, extras))
        lines += availability_notes(summary)
    if volume_medians:
        notes, figures = volume_notes(volume_medians, inside, policies, month_turn, volume_backfill)
        summary.update(figures)
        lines += notes
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines.append(
        f"- medians of {args.runs} runs, {args.latency_ms:.0f} ms latency per request; "
        f"whole-process figures on this machine ({machine})"
    )
    table = "\n".join(lines)
    print(table)
    if out is None:
        return
    out.write_text(
        json.dumps(
            {
                "rows": {label: {**asdict(f), "ratio": f.ratio} for label, f in medians.items()},
                "volume_rows": {
                    label: {**asdict(f), "ratio": f.ratio} for label, f in volume_medians.items()
                },
                "volume_minimum": {**asdict(volume_backfill), "total": volume_backfill.total},
                "volume_month_turn": [
                    {**asdict(day), "per_symbol": day.per_symbol} for day in month_turn
                ],
                "summary": summary,
                "runs": args.runs,
                "latency_ms": args.latency_ms,
                "table": table,
            },
            indent=2,
        )
        + "\n"
    )


def markdown_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines: the header, its rule, then a line per row of cells."""
    lines = [f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]
    return lines + [f"| {' | '.join(cells)} |" for cells in rows]


def availability_table(medians: dict[str, Figures]) -> list[str]:
    columns = ["row", "symbols", "requests", "minimal", "/ minimal", "wall s", "CPU s"]
    columns += ["peak RSS MB", "dataset MB", "DVC cache files added"]
    rows = [
        [
            *(label, str(f.symbols), f"{f.requests:,}", f"{f.minimal:,}", f"{f.ratio:.2f}"),
            *(f"{f.wall_s:.1f}", f"{f.cpu_s:.1f}", fmt(f.peak_rss_mb), fmt(f.dataset_mb)),
            str(f.cache_files_added),
        ]
        for label, f in medians.items()
    ]
    return markdown_table(columns, rows)


def volume_table(medians: dict[str, VolumeFigures]) -> list[str]:
    columns = ["volume row", "symbols", "requests", "minimum", "/ minimum", "files fetched"]
    columns += ["MB fetched", "wall s", "stage s", "CPU s", "peak RSS MB", "emulator CPU s"]
    columns += ["dataset MB", "DVC cache files added"]
    rows = [
        [
            *(label, str(f.symbols), f"{f.requests:,}", f"{f.minimum:,}", f"{f.ratio:.2f}"),
            *(f"{f.files:,}", f"{f.mb_fetched:.1f}", f"{f.wall_s:.1f}", fmt(f.stage_s)),
            *(f"{f.cpu_s:.1f}", fmt(f.peak_rss_mb), fmt(f.emulator_cpu_s), fmt(f.dataset_mb)),
            str(f.cache_files_added),
        ]
        for label, f in medians.items()
    ]
    return markdown_table(columns, rows)


def availability_summary(
    medians: dict[str, Figures], extras: dict[str, list[float]]
) -> dict[str, float]:
    daily, new, baseline = (
        medians["Daily update"],
        medians["Daily update, 3 new symbols"],
        medians["Baseline: HEAD per day"],
    )
    return {
        "head_baseline_requests_per_daily_request": baseline.requests / daily.requests,
        "new_symbols_extra_wall_s": new.wall_s - daily.wall_s,
        **{key: statistics.median(values) for key, values in extras.items()},
    }


def availability_notes(summary: dict[str, float]) -> list[str]:
    return [
        "- HEAD baseline / daily update requests: "
        f"{summary['head_baseline_requests_per_daily_request']:.0f} times fewer requests",
        f"- 3 new symbols' full histories: {summary['new_symbols_extra_wall_s']:+.1f} s of wall "
        "time on top of the daily update",
        f"- nothing-new rerun: DVC's own overhead {summary['dvc_overhead_s']:.1f} s "
        "(wall minus the stages' own time)",
        f"- queries in process: symbols available on a date {summary['snapshot_ms']:.1f} ms, "
        f"timeline of BTCUSDT {summary['timeline_ms']:.1f} ms",
    ]


def volume_notes(
    medians: dict[str, VolumeFigures],
    inside: dict[str, list[float]],
    policies: list[PolicyCost],
    month_turn: list[DayCost],
    minimum: Minimum,
) -> tuple[list[str], dict[str, float]]:
    """The volume rows' notes, and their figures for results.json."""
    backfill, daily = medians[VOLUME_BACKFILL], medians[VOLUME_DAILY]
    figures = {
        "volume_backfill_wall_s": backfill.wall_s,
        "volume_daily_requests_per_symbol": daily.requests / daily.symbols,
        **{f"volume_in_{key}": statistics.median(values) for key, values in inside.items()},
    }
    verdict = "within" if backfill.wall_s <= VOLUME_BACKFILL_GOAL_S else "over"
    per_symbol = figures["volume_daily_requests_per_symbol"]
    lines = [
        f"- volume backfill: {backfill.wall_s:.1f} s, {verdict} the "
        f"{VOLUME_BACKFILL_GOAL_S:.0f} s goal; minimum = {minimum.listing:,} listing pages "
        f"+ {minimum.gets:,} file GETs + {minimum.checksums:,} .CHECKSUM GETs (multipart ETags)",
        f"- a day's volume update: {daily.requests:,} extra requests for {daily.symbols} "
        f"symbols = {per_symbol:.2f} per symbol (target <= {DAILY_TARGET_PER_SYMBOL:.2f}); "
        f"minimum {daily.minimum:,}",
    ]
    if inside:
        lines.append(
            "- the volume stage inside the rows above (its 1d requests are not in their "
            "requests column): "
            + ", ".join(
                f"{label} {statistics.median(inside[key]):,.0f} requests"
                + (
                    f" / {statistics.median(inside[seconds]):.1f} s"
                    if (seconds := key.replace("_requests", "_stage_s")) in inside
                    else ""
                )
                for label, key in (
                    ("audit", "audit_requests"),
                    ("daily update", "daily_requests"),
                    ("3 new symbols", "new_symbols_requests"),
                    ("nothing-new rerun", "rerun_requests"),
                )
                if key in inside
            )
        )
    if month_turn:
        figures["volume_month_turn_mean_per_symbol"] = statistics.mean(
            day.per_symbol for day in month_turn
        )
        lines.append(
            "- the turn of a month, a day at a time (no new symbol; the month's files come out "
            "over its first three days): "
            + ", ".join(
                f"{day.as_of} {day.requests:,} requests = {day.per_symbol:.2f} per symbol "
                f"({day.monthly_folders_listed} monthly folders listed, minimum {day.minimum:,})"
                for day in month_turn
            )
            + f"; mean {figures['volume_month_turn_mean_per_symbol']:.2f} per symbol"
        )
    if len(policies) == 2:
        multipart, always = policies
        figures["checksum_always_wall_ratio"] = always.wall_s / multipart.wall_s
        lines.append(
            f"- .CHECKSUM policy, {multipart.files:,} monthly files: only for multipart ETags "
            f"{multipart.requests:,} requests in {multipart.wall_s:.1f} s; always "
            f"{always.requests:,} requests in {always.wall_s:.1f} s "
            f"(x{figures['checksum_always_wall_ratio']:.2f} wall; over the backfill "
            f"+{minimum.gets - minimum.checksums:,} requests)"
        )
    return lines, figures


def median_figures(runs: list[Figures]) -> Figures:
    fields = asdict(runs[0]).keys()
    return Figures(**{k: statistics.median(getattr(r, k) for r in runs) for k in fields})


def median_volume(runs: list[VolumeFigures]) -> VolumeFigures:
    fields = asdict(runs[0]).keys()
    return VolumeFigures(**{k: statistics.median(getattr(r, k) for r in runs) for k in fields})


def fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


if __name__ == "__main__":
    raise SystemExit(main())
