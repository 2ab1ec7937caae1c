"""`python -m pipeline.ops`: the pipeline as an operator runs it, through `dvc repro` only.

Each command puts params.yaml back first if an earlier one-off run was killed, restores the
recorded data from the DVC remote when one is configured, sets its one-off params for this run
only, and runs `dvc repro`: DVC stays the only writer of the dataset, its lock keeps two runs
apart, and dvc.lock records what each run did. `pull` takes the same first steps, then only
pulls (a half-written workspace would make a bare `dvc pull` refuse).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline import dvc_lock
from pipeline.arguments import iso_date, positive_int, symbol_list
from pipeline.config import Config, load_config, parse_config, refuse_yaml_dates
from pipeline.dataset.store import summarize
from pipeline.dvc_lock import DVC_LOCK
from pipeline.entry import FALLBACK_LOG, PARAMS, finish_interrupted_commits
from pipeline.errors import PipelineError
from pipeline.logs import setup_logging
from pipeline.ops import remote
from pipeline.ops.lock import operator_lock
from pipeline.ops.one_off import one_off_params, recover, render_overrides
from pipeline.planner import check_repair
from pipeline.report.page import write_page
from pipeline.symbols import read_symbols
from pipeline.vision.client import unreachable

log = logging.getLogger("pipeline.ops")

DVC_YAML = Path("dvc.yaml")
# A listing URL on this machine is an emulator's (the tests', a kept demo project's).
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
LOOPBACK_HINT = (
    "nothing serves vision.listing_url there; in a project kept by `make demo KEEP=DIR`, "
    "`make emulator` serves the demo's bucket again"
)
OFFLINE_HINT = (
    "no network? `make demo` runs the whole pipeline offline, against a local emulator "
    "of the bucket"
)

EXAMPLES = {
    "update": "make update AS_OF=2024-06-01 LOOKBACK_DAYS=40",
    "backfill": "make backfill SYMBOLS=NEWUSDT,OTHERUSDT   |   make backfill SINCE=2024-05-01 "
    "UNTIL=2024-05-03",
    "audit": "make audit",
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m pipeline.ops",
        description="Run the pipeline (dvc repro) with one-off params that never outlive the run.",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in (
        ("update", "the daily run: discover, backfill new symbols, re-list the lookback window"),
        ("backfill", "the daily run, plus chosen symbols and dates listed again and repaired"),
        ("audit", "the daily run, plus every symbol's whole history listed again and repaired"),
    ):
        command = commands.add_parser(
            name, help=summary, description=summary, epilog=f"example: {EXAMPLES[name]}"
        )
        command.add_argument(
            "--as-of", type=iso_date, metavar="DATE", help="run as of DATE (default: today, UTC)"
        )
        command.add_argument(
            "--lookback-days", type=positive_int, metavar="N", help="re-list the last N days"
        )
        # 0 or 1, as ALLOW_REMOVALS reaches it from make: any other value is a usage error
        # naming it, not an ALLOW_REMOVALS=true silently ignored.
        command.add_argument(
            "--allow-removals",
            nargs="?",
            choices=("0", "1"),
            const="1",
            default="0",
            help="1 (alone: 1): accept more files turning unavailable than update.max_removed_* "
            "allow, for this run",
        )
    backfill = commands.choices["backfill"]
    backfill.set_defaults(usage_error=backfill.error)
    backfill.add_argument(
        "--symbols", type=symbol_list, metavar="A,B", help="their whole history (default: all)"
    )
    backfill.add_argument(
        "--since", type=iso_date, metavar="DATE", help="first date to list (default: start_date)"
    )
    backfill.add_argument(
        "--until", type=iso_date, metavar="DATE", help="last date to list (default: as_of - 1)"
    )
    commands.add_parser(
        "pull",
        help="fetch the data dvc.lock records from the DVC remote (dvc pull)",
        description="Finish what a killed run left, then fetch the data dvc.lock records from "
        "the DVC remote (dvc pull --allow-missing --force).",
    )
    remote.add_commands(commands)
    report = commands.add_parser(
        "report",
        help="draw the last run's plot data into a self-contained HTML page",
        description="Draw the last run's plot data (the report stage's metrics/plots and "
        "summary) into DIR/index.html, a page that needs no network.",
    )
    report.add_argument("--out", type=Path, default=Path("reports"), metavar="DIR")
    return root


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """The one-off params a command's arguments ask for, as dotted keys of params.yaml."""
    overrides: dict[str, Any] = {}
    if args.as_of is not None:
        overrides["run.as_of"] = args.as_of.isoformat()
    if args.lookback_days is not None:
        overrides["update.lookback_days"] = args.lookback_days
    if args.allow_removals == "1":
        overrides["run.allow_removals"] = True
    if args.command == "audit":
        overrides["run.repair"] = {"symbols": None, "since": None, "until": None}
    if args.command == "backfill":
        overrides["run.repair"] = {
            "symbols": args.symbols,
            "since": None if args.since is None else args.since.isoformat(),
            "until": None if args.until is None else args.until.isoformat(),
        }
    return overrides


def run_config(params: Path, overrides: dict[str, Any]) -> Config:
    """The params the stages will see this run, validated: bad one-off params name the key."""
    text = render_overrides(params.read_text(encoding="utf-8"), overrides)
    today = dt.datetime.now(dt.UTC).date()
    source = f"{params} for this run" if overrides else str(params)
    return parse_config(yaml.safe_load(text), today=today, source=source)


def check_repair_symbols(config: Config) -> None:
    """Refuse a repair naming a symbol this dataset cannot have, before any listing request."""
    if config.repair is None or config.repair.symbols is None:
        return
    known = (
        set(read_symbols(config.paths.symbols))
        | summarize(config.paths.dataset, config.dataset).symbols
    )
    check_repair(
        config.repair, known, config.dataset.contracts, symbols_file=str(config.paths.symbols)
    )


def dvc(*args: str) -> int:
    """Run a DVC command; a signal to this process reaches it, and its exit code is returned."""
    try:
        child = subprocess.Popen(["dvc", *args])
    except OSError as exc:
        raise PipelineError(f"cannot run dvc ({exc.strerror}): run through make (.venv)") from None

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    def wait(_signum: int, _frame: FrameType | None) -> None:
        """Ctrl-C reaches DVC from the terminal already; this process waits for it to stop."""

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, wait),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
    }
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def pull_if_published() -> None:
    """The data dvc.lock records, from the DVC remote, when one is configured."""
    if published():
        pull_recorded()


def pull() -> int:
    """`make pull`: the data dvc.lock records, from the DVC remote that must be configured."""
    remote.check_pull_source()
    pull_recorded()
    return 0


def published() -> bool:
    """Whether there is a DVC remote to pull from (a default that is not the placeholder)."""
    return remote.pull_source() is not None


def publish() -> int:
    """`make publish`: the data dvc.lock records, to the write remote (else the default)."""
    if dvc("push", "-r", remote.push_target()) != 0:
        raise PipelineError("dvc push failed (see above): fix what it names, then rerun")
    return 0


def pull_recorded() -> None:
    """`dvc pull` of the data dvc.lock records; nothing else is done if it fails."""
    stages = recorded_stages()
    if not stages:
        log.info("dvc.lock records no run yet: nothing to pull")
        return
    # --force: DVC is the only writer of its outputs, so a file dvc.lock does not record was
    # left by a run killed before DVC recorded it; the recorded state is restored, and this
    # run's `dvc repro` does that work again (its changes logged once, with its data).
    if dvc("pull", "--allow-missing", "--force", *stages) != 0:
        raise PipelineError("dvc pull failed (see above): fix what it names, then rerun")


def recorded_stages(lock: Path = DVC_LOCK, stages_file: Path = DVC_YAML) -> list[str]:
    """The stages of dvc.yaml that dvc.lock records, in dvc.yaml's order.

    A bare `dvc pull` warns "No file hash info found" for every output of every other stage:
    in a fresh clone before its first run (no dvc.lock), or after a first run killed midway.
    """
    recorded = dvc_lock.recorded_stages(lock)
    if not recorded:
        return []
    try:
        declared = (yaml.safe_load(stages_file.read_text(encoding="utf-8")) or {})["stages"]
    except (yaml.YAMLError, KeyError, TypeError):
        raise PipelineError(f"{stages_file} is not DVC's YAML: resolve it") from None
    return [name for name in declared if name in recorded]


def report(out: Path) -> int:
    """The report page, from the plot data of the last run; its file URI is printed last."""
    paths = load_config(PARAMS).paths
    if not any(paths.plots.glob("*.csv")):
        raise PipelineError(f"no plot data in {paths.plots}: run the pipeline first (make update)")
    page = write_page(paths.plots, paths.summary, out)
    log.info("report page written: %s", page)
    print(page.resolve().as_uri())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "backfill" and args.symbols is None and args.since is None:
        args.usage_error("give --symbols A,B and/or --since DATE [--until DATE]")
    setup_logging("ops", FALLBACK_LOG)
    try:
        if args.command == "configure-remote":  # no data, no params: no lock, nothing to recover
            remote.configure(args.read_url, args.write_url)
            return 0
        with operator_lock():
            return run_command(args)
    except PipelineError as exc:
        log.error("%s", exc)
        return 1


def run_command(args: argparse.Namespace) -> int:
    """A command's steps, in order; each refusal comes before anything it would change."""
    recover(PARAMS)
    refuse_yaml_dates(PARAMS)  # before any dvc command: DVC's own error gives no fix
    if args.command == "report":
        return report(args.out)
    if args.command == "publish":  # pushes what dvc.lock records: no params for this run
        return publish()
    overrides = {} if args.command == "pull" else overrides_of(args)
    config = run_config(PARAMS, overrides)
    # A commit of a dataset that a killed run had begun is finished before DVC looks.
    finish_interrupted_commits(config)
    if args.command == "pull":
        return pull()
    pull_if_published()
    check_repair_symbols(config)
    if overrides:
        log.info("for this run: %s", ", ".join(f"{k}={v}" for k, v in overrides.items()))
    with one_off_params(PARAMS, overrides):
        code = dvc("repro")
    if code != 0:
        explain_unreachable(config)
    return code


def explain_unreachable(config: Config) -> None:
    """After a failed run: when the bucket's host takes no connection, the cause and what to
    do, last. The stage's own error, above, named the request that failed."""
    url = urlsplit(config.vision.listing_url)
    cause = unreachable(config.vision.listing_url, config.probe.timeout_s)
    if cause is None:
        return
    hint = LOOPBACK_HINT if url.hostname in LOOPBACK else OFFLINE_HINT
    log.error("cannot reach %s (%s): %s", url.netloc, cause, hint)


if __name__ == "__main__":
    sys.exit(main())
