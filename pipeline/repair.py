"""Operator repairs: list chosen symbols over chosen dates again and merge what changed.

Targeted backfill (`backfill --symbols`), range re-probes (`backfill --since/--until`) and the
full-history audit (`audit`) are one operation at three scopes. Only rows whose file differs
from the dataset's are merged, so a repair that finds nothing leaves the dataset
byte-identical, and every difference it merges is logged in the change log first.

A repair writes the update stage's outputs outside `dvc repro`, so it holds DVC's repository
lock (a concurrent `dvc repro` fails fast instead of racing it) and ends with `dvc commit
update`, which records the new outputs in dvc.lock: `dvc status` stays honest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from pipeline.changes import FILE_STATE, differs, merge_and_log
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.prober import ProbeRange, ProbeStats, probe
from pipeline.store import (
    DVC_LOCK,
    KEY,
    Summary,
    month_of,
    read_months,
    summarize,
)
from pipeline.symbols import in_scope, preview, read_symbols
from pipeline.vision import Layout, VisionClient

log = logging.getLogger(__name__)

UPDATE_STAGE = "update"


class RepairError(PipelineError):
    """A repair was asked for symbols or dates the dataset cannot have."""


@dataclass(frozen=True)
class Scope:
    """Which symbols to list again, over which dates (inclusive)."""

    symbols: tuple[str, ...]
    first: dt.date
    last: dt.date


@dataclass(frozen=True)
class Outcome:
    stats: ProbeStats
    changes: int
    merged_rows: int
    months: list[str]


def scope_for(
    config: Config,
    summary: Summary,
    *,
    symbols: Sequence[str] | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> Scope:
    """Check an operator's request against params and data before any request is made.

    No symbols means every symbol known (symbols.json and the dataset); no dates mean the
    whole history, from dataset.start_date to run.as_of - 1.
    """
    known = set(read_symbols(config.paths.symbols)) | summary.symbols
    first = since or config.dataset.start_date
    # Growing the dataset is update's work: a repair re-lists the dates the dataset holds.
    last = until or min(config.last_date, summary.last_date or config.last_date)
    if first < config.dataset.start_date:
        raise RepairError(
            f"--since {first} is before dataset.start_date ({config.dataset.start_date})"
        )
    if last > config.last_date:
        raise RepairError(f"--until {last} is after run.as_of - 1 ({config.last_date})")
    if first > last:
        raise RepairError(f"--since {first} is after --until {last}")
    if symbols is None:
        return Scope(tuple(sorted(known)), first, last)
    for symbol in symbols:
        if not in_scope([symbol], config.dataset.contracts):
            raise RepairError(
                f"{symbol} is a delivery contract, outside dataset.contracts "
                f"({config.dataset.contracts})"
            )
        if symbol not in known:
            close = difflib.get_close_matches(symbol, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RepairError(
                f"unknown symbol {symbol}: not in {config.paths.symbols} nor the dataset "
                f"(run `dvc repro` to discover new listings){hint}"
            )
    return Scope(tuple(sorted(set(symbols))), first, last)


def changed_rows(fresh: pl.DataFrame, previous: pl.DataFrame) -> pl.DataFrame:
    """The fresh rows that say something the dataset does not.

    A key the dataset has counts if its file differs. A key it lacks always counts: merge
    drops those before a symbol's first file, and keeps the days after a first file found
    earlier than the dataset's (which the dataset never had rows for).
    """
    compared = fresh.join(
        previous.select(*KEY, *FILE_STATE), on=list(KEY), how="left", suffix="_old"
    )
    seen = pl.col("available_old").is_not_null()
    return compared.filter(~seen | differs(*FILE_STATE, old="_old", new="")).select(fresh.columns)


def probe_ranges(scope: Scope, summary: Summary) -> list[ProbeRange]:
    """`scope` as ranges; a range that starts before a symbol's known first file reaches it.

    A file found earlier than the dataset's first file moves the symbol's history back, and
    every day from there to the old first file must get a row: they were never probed.
    """
    known = dict(summary.first_files.iter_rows())
    one_day = dt.timedelta(days=1)
    return [
        ProbeRange(s, scope.first, max(scope.last, known.get(s, scope.first) - one_day))
        for s in scope.symbols
    ]


def repair(config: Config, scope: Scope, summary: Summary) -> Outcome:
    """List `scope` again and merge what changed; the dataset is written atomically."""
    probed_at = dt.datetime.now(dt.UTC)
    with VisionClient.from_config(config) as client:
        fresh, stats = probe(
            client,
            Layout.from_config(config),
            probe_ranges(scope, summary),
            workers=config.probe.workers,
            probed_at=probed_at,
        )
    months = fresh.select(month_of().unique()).to_series().to_list()
    previous = read_months(config.paths.dataset, months)
    changed = changed_rows(fresh, previous)
    rewritten, logged = merge_and_log(config, summary, previous, changed, detected_at=probed_at)
    return Outcome(stats=stats, changes=logged, merged_rows=changed.height, months=rewritten)


def run_repair(
    config: Config,
    *,
    what: str,
    symbols: Sequence[str] | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> Outcome:
    """A repair as an operator command: under DVC's lock, recorded in dvc.lock afterwards."""
    with dvc_lock() as commit:
        summary = summarize(config.paths.dataset, config.dataset)
        if not summary.symbols:
            raise RepairError(
                f"{config.paths.dataset} has no data yet: run `make update` (or `dvc repro`) first"
            )
        scope = scope_for(config, summary, symbols=symbols, since=since, until=until)
        log.info(
            "%s: listing %d symbols (%s) from %s to %s",
            what,
            len(scope.symbols),
            preview(scope.symbols, limit=5),
            scope.first,
            scope.last,
        )
        outcome = repair(config, scope, summary)
        log.info(
            "%s: %d requests (%d retries) in %.1fs; %d rows differed from the dataset, "
            "%d changes logged to %s; %d months rewritten%s",
            what,
            outcome.stats.requests,
            outcome.stats.retries,
            outcome.stats.seconds,
            outcome.merged_rows,
            outcome.changes,
            config.paths.changes,
            len(outcome.months),
            f" ({', '.join(outcome.months)})" if 0 < len(outcome.months) <= 6 else "",
        )
        if outcome.months or outcome.changes:
            commit()
    return outcome


@contextlib.contextmanager
def dvc_lock() -> Iterator[Callable[[], None]]:
    """Hold DVC's locks; yield a function recording the update stage's outputs in dvc.lock.

    The repository lock keeps other DVC commands out, but `dvc repro` releases it while a
    stage's command runs, so the update stage's outputs are also locked for writing, as DVC
    locks them for a stage: a running update (or validate, which reads them) makes this fail
    at once, and this makes a stage started meanwhile fail.

    Outside a DVC repository (or before the first `dvc repro` recorded the update stage)
    there is nothing to lock against or to record, and the function only says so.
    """
    if not Path(".dvc").is_dir() or not _records_update(DVC_LOCK):
        yield lambda: log.info("%s does not record the %s stage yet", DVC_LOCK, UPDATE_STAGE)
        return
    from dvc.lock import LockError
    from dvc.repo import Repo, lock_repo
    from dvc.rwlock import rwlock

    with Repo() as repo:
        try:
            with lock_repo(repo):
                (stage,) = repo.stage.collect(UPDATE_STAGE)
                # DVC's own locking of a stage names the command the same way.
                command = " ".join(sys.argv)
                outputs = [out.fs_path for out in stage.outs]
                hardlink = repo.config["core"].get("hardlink_lock", False)
                with rwlock(repo.tmp_dir, repo.fs, command, [], outputs, hardlink):
                    yield lambda: _commit(repo)
        except LockError as exc:
            raise PipelineError(
                f"another DVC command is running in this repository ({_first_line(exc)}): "
                "wait for it to finish, then run this again"
            ) from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


def _commit(repo: object) -> None:
    repo.commit(UPDATE_STAGE, force=True)  # type: ignore[attr-defined]
    log.info(
        "recorded the new %s outputs in %s (dvc commit %s): commit %s and `make publish`",
        UPDATE_STAGE,
        DVC_LOCK,
        UPDATE_STAGE,
        DVC_LOCK,
    )


def _records_update(lock: Path) -> bool:
    if not lock.is_file():
        return False
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages") or {}
    return UPDATE_STAGE in stages
