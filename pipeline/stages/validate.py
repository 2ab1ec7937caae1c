"""Stage validate: check the dataset against its contract and report what deserves a look.

Contract violations fail the stage: a dataset that breaks them would mislead every query.
The volume dataset is checked too, once the volume stage has built it (pipeline.volume.contract):
its own contract, and every available day older than the lookback window has its volume row.
Figures (missing days, delisting candidates, late publishing, symbols with no file yet) are
what the bucket itself looks like; they are logged as warnings. Both, with a few samples of
each, go to metrics/validation.json, written even when the stage fails.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.atomic import write_json
from pipeline.config import Config
from pipeline.dataset.contract import (
    available_rows_incomplete,
    dates_out_of_range,
    duplicate_keys,
    null_fields,
    symbol_profiles,
    unavailable_rows_with_file,
)
from pipeline.dataset.schema import KEY, SCHEMA, empty
from pipeline.dataset.spans import missing_days_in_spans
from pipeline.dataset.store import checked_files
from pipeline.dvc_lock import recorded_output
from pipeline.entry import stage_main
from pipeline.errors import PipelineError
from pipeline.symbols import read_symbols
from pipeline.vision.layout import KlineLayout
from pipeline.volume.contract import volume_figures, volume_violations
from pipeline.volume.schema import INTERVAL
from pipeline.volume.schema import SCHEMA as SCHEMA_V
from pipeline.volume.store import VolumeIdentity, volume_files

log = logging.getLogger(__name__)

SAMPLE_SIZE = 5
ONE_DAY = dt.timedelta(days=1)


class ValidationError(PipelineError):
    """The dataset breaks its contract."""


class RunMetricsError(PipelineError):
    """update's run metrics are missing, malformed or from another run."""


@dataclass(frozen=True)
class Finding:
    """How many items a check found, and the first few of them."""

    count: int
    samples: list[dict[str, object]]

    @classmethod
    def of(cls, items: pl.DataFrame) -> Finding:
        head = items.head(SAMPLE_SIZE).with_columns(pl.col(pl.Date).dt.to_string())
        return cls(count=items.height, samples=head.to_dicts())

    def describe_samples(self) -> str:
        """`2024-01-02 BTCUSDT, OLDUSDT last_file=2023-02-28`: dates and symbols bare."""
        return ", ".join(
            " ".join(
                str(value) if name in KEY else f"{name}={value}" for name, value in sample.items()
            )
            for sample in self.samples
        )


@dataclass(frozen=True)
class Report:
    rows: int
    symbols: int
    violations: dict[str, Finding]
    figures: dict[str, Finding]
    volume_rows: int | None = None
    """The volume dataset's rows; None when it is not built yet (and was not checked)."""

    @property
    def ok(self) -> bool:
        return not any(finding.count for finding in self.violations.values())

    def metrics(self, config: Config) -> dict[str, object]:
        """metrics/validation.json: counts as numbers (for `dvc metrics show`), then samples."""
        findings = {**self.violations, **self.figures}
        volume = {} if self.volume_rows is None else {"volume_rows": self.volume_rows}
        return {
            "ok": self.ok,
            "as_of": config.as_of.isoformat(),
            "rows": self.rows,
            "symbols": self.symbols,
            **volume,
            "violations": {name: finding.count for name, finding in self.violations.items()},
            "figures": {name: finding.count for name, finding in self.figures.items()},
            "samples": {name: finding.samples for name, finding in findings.items()},
        }


def figure_descriptions(config: Config) -> dict[str, str]:
    """What each figure counts, with the params that shape it, for its warning line."""
    return {
        "missing_days_in_spans": "days without a file inside listing spans "
        f"(gaps of at most {config.spans.max_gap_days} days)",
        "delisting_candidates": "symbols with no file for more than "
        f"{config.validate.stale_after_days} days (delisting candidates)",
        "late_dates": f"dates since {config.lookback_start} still missing for at least "
        f"{config.validate.late_share:.0%} of the active symbols (late publishing)",
        "symbols_without_files": f"symbols of symbols.json with no file up to {config.last_date}",
        "future_probe_timestamps": "rows probed later than this machine's clock says it is now "
        "(a clock ran fast); fresh probes still win over them",
        "volume_pending": f"available days since {config.lookback_start} without volume yet "
        "(1d files not out yet)",
        "volume_without_availability": "volume rows of days the availability dataset has no "
        "file for",
    }


def validate(
    rows: pl.LazyFrame,
    config: Config,
    symbols: Sequence[str],
    without_files: Sequence[str],
    *,
    now: dt.datetime | None = None,
    volume: pl.LazyFrame | None = None,
) -> Report:
    """Every check and figure over `rows` (and `volume`, the volume dataset's rows, when it is
    built), as lazy queries collected together."""
    last = config.last_date
    profiles = symbol_profiles(rows, last)
    absent = absent_symbols(profiles, symbols)
    excused = pl.col("symbol").is_in(list(without_files))
    violations = {
        "duplicate_keys": duplicate_keys(rows, profiles),
        "null_fields": null_fields(rows),
        "dates_out_of_range": dates_out_of_range(rows, config.dataset.start_date, last),
        "rows_before_first_file": rows_before_first_file(rows, profiles),
        "rows_missing": rows_missing(rows, profiles, last),
        "available_rows_incomplete": available_rows_incomplete(rows),
        "unavailable_rows_with_file": unavailable_rows_with_file(rows),
        "symbols_missing": absent.filter(~excused),
    }
    figures = {
        "missing_days_in_spans": missing_days_in_spans(rows, last, config.spans.max_gap_days),
        "delisting_candidates": delisting_candidates(
            profiles, last, config.validate.stale_after_days
        ),
        "late_dates": late_dates(rows, config.lookback_start, last, config.validate.late_share),
        "symbols_without_files": absent.filter(excused),
        "future_probe_timestamps": future_probe_timestamps(rows, now or dt.datetime.now(dt.UTC)),
    }
    totals = profiles.select(rows=pl.col("rows").sum(), symbols=pl.len())
    volume_totals = pl.LazyFrame({"rows": [0]})
    if volume is not None:
        layout = KlineLayout(market=config.dataset.market, interval=INTERVAL)
        violations |= volume_violations(
            volume,
            rows,
            layout,
            start=config.dataset.start_date,
            last=last,
            lookback_start=config.lookback_start,
        )
        figures |= volume_figures(volume, rows, lookback_start=config.lookback_start, last=last)
        volume_totals = volume.select(rows=pl.len())
    found = pl.collect_all([totals, volume_totals, *violations.values(), *figures.values()])
    counts, findings = found[0], [Finding.of(items) for items in found[2:]]
    return Report(
        rows=counts["rows"].item(),
        symbols=counts["symbols"].item(),
        violations=dict(zip(violations, findings[: len(violations)], strict=True)),
        figures=dict(zip(figures, findings[len(violations) :], strict=True)),
        volume_rows=None if volume is None else int(found[1]["rows"].item()),
    )


# Contract checks: each gives the offending items, sorted, so that samples are the first ones.


def rows_before_first_file(rows: pl.LazyFrame, profiles: pl.LazyFrame) -> pl.LazyFrame:
    """Rows of a symbol before its first available date (all rows of a symbol with none)."""
    at_fault = profiles.filter(
        pl.col("first_file").is_null() | (pl.col("first_row") < pl.col("first_file"))
    ).select("symbol", "first_file")
    return (
        rows.join(at_fault, on="symbol")
        .filter(pl.col("first_file").is_null() | (pl.col("date") < pl.col("first_file")))
        .select(*KEY)
        .sort(*KEY)
    )


def rows_missing(rows: pl.LazyFrame, profiles: pl.LazyFrame, last: dt.date) -> pl.LazyFrame:
    """(date, symbol) with no row, from the symbol's first available date through `last`."""
    days_expected = (pl.lit(last) - pl.col("first_file")).dt.total_days() + 1
    expected = (
        profiles.filter(pl.col("first_file") <= last, pl.col("covered") < days_expected)
        .select("symbol", date=pl.date_ranges("first_file", pl.lit(last)))
        .explode("date")
    )
    return expected.join(rows.select(*KEY), on=list(KEY), how="anti").select(*KEY).sort(*KEY)


def absent_symbols(profiles: pl.LazyFrame, symbols: Sequence[str]) -> pl.LazyFrame:
    """Symbols of symbols.json with no row in the dataset."""
    listed = pl.LazyFrame({"symbol": list(symbols)}, schema={"symbol": pl.String})
    return listed.join(profiles.select("symbol"), on="symbol", how="anti").sort("symbol")


# Figures: what the bucket looks like; each gives its items, sorted, like the checks.


def delisting_candidates(
    profiles: pl.LazyFrame, last: dt.date, stale_after_days: int
) -> pl.LazyFrame:
    """Symbols whose last file is more than `stale_after_days` before `last`, newest first."""
    return (
        profiles.filter(pl.col("last_file") < last - dt.timedelta(days=stale_after_days))
        .select("symbol", "last_file")
        .sort(pl.col("last_file"), pl.col("symbol"), descending=[True, False])
    )


def late_dates(rows: pl.LazyFrame, first: dt.date, last: dt.date, share: float) -> pl.LazyFrame:
    """Dates of the window [first, last] missing for at least `share` of the active symbols.

    A symbol is active on a date once it had a file on an earlier date of the window, so a
    symbol delisted before the window, or listed later in it, does not count before then.
    """
    with_file = (
        rows.filter(pl.col("available"), pl.col("date").is_between(first, last))
        .select(*KEY)
        .unique()
    )
    first_seen = with_file.group_by("symbol").agg(first_seen=pl.col("date").min())
    becoming_active = first_seen.group_by(date=pl.col("first_seen") + ONE_DAY).agg(joining=pl.len())
    present = (
        with_file.join(first_seen, on="symbol")
        .filter(pl.col("date") > pl.col("first_seen"))
        .group_by("date")
        .agg(present=pl.len())
    )
    window = pl.LazyFrame({"date": pl.date_range(first, last, eager=True)})
    return (
        window.join(becoming_active, on="date", how="left")
        .join(present, on="date", how="left")
        .fill_null(0)
        .sort("date")
        .select(
            "date",
            active=pl.col("joining").cum_sum().cast(pl.Int64),
            missing=(pl.col("joining").cum_sum() - pl.col("present")).cast(pl.Int64),
        )
        .filter(pl.col("active") > 0, pl.col("missing") / pl.col("active") >= share)
        .select("date", "missing", "active")
    )


def future_probe_timestamps(rows: pl.LazyFrame, now: dt.datetime) -> pl.LazyFrame:
    """Rows whose probe_timestamp is later than `now`, with it, by date and symbol.

    A figure, not a violation: the merge counts such a time as the run's own (so a fresh probe
    still wins), and no run could remove them, since rows outside the lookback window are not
    probed again; failing on them would fail every run until the clock catches up.
    """
    stamp = pl.col("probe_timestamp")
    return (
        rows.filter(stamp > pl.lit(now, dtype=SCHEMA["probe_timestamp"]))
        .sort(*KEY)
        .select(*KEY, stamp.dt.to_string("%Y-%m-%dT%H:%M:%SZ"))
    )


def read_without_files(path: Path, as_of: dt.date) -> list[str]:
    """update's `symbols_without_files`, refused unless it comes from a run for `as_of`."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunMetricsError(
            f"{path} not found: run the update stage first (`dvc repro`)"
        ) from None
    except ValueError:
        raise RunMetricsError(f"{path} is not valid JSON: rerun update (`dvc repro`)") from None
    without = metrics.get("symbols_without_files") if isinstance(metrics, dict) else None
    if not isinstance(without, list) or not all(isinstance(s, str) for s in without):
        raise RunMetricsError(
            f"{path} has no list of symbols_without_files: rerun update (`dvc repro`)"
        )
    if metrics.get("as_of") != as_of.isoformat():
        raise RunMetricsError(
            f"{path} is from an update for as_of {metrics.get('as_of')}, "
            f"not run.as_of {as_of}: rerun update (`dvc repro`)"
        )
    return without


def read_volume(config: Config) -> pl.LazyFrame | None:
    """The volume dataset's rows, checked like the dataset's; None when it is not built yet.

    `dvc repro` runs the volume stage first, so it is always built there (and a dataset that
    dvc.lock records but that is missing here is refused by the store); only a stage run on
    its own before any volume run finds none, and says so.
    """
    path = config.paths.volume
    if not path.exists() and recorded_output(path) is None:
        log.info("%s is not built yet (the volume stage builds it): not checked", path)
        return None
    files = volume_files(path, VolumeIdentity.from_config(config))
    return pl.scan_parquet(files).collect().lazy() if files else pl.LazyFrame(schema=SCHEMA_V)


def run(config: Config) -> None:
    files = checked_files(config.paths.dataset, config.dataset)
    # Read once: polars would scan the files again for each query of the collect_all, while
    # the whole dataset takes ~100 MB of memory.
    rows = pl.scan_parquet(files).collect() if files else empty()
    report = validate(
        rows.lazy(),
        config,
        read_symbols(config.paths.symbols),
        read_without_files(config.paths.run_metrics, config.as_of),
        volume=read_volume(config),
    )
    write_json(config.paths.validation, report.metrics(config))
    descriptions = figure_descriptions(config)
    for name, finding in report.figures.items():
        if finding.count:
            log.warning(
                "%s %d: %s, e.g. %s",
                name,
                finding.count,
                descriptions[name],
                finding.describe_samples(),
            )
    broken = [f"{name} {f.count}" for name, f in report.violations.items() if f.count]
    if broken:
        raise ValidationError(
            f"the dataset breaks its contract: {', '.join(broken)}; "
            f"the first offending rows are in {config.paths.validation}"
        )
    log.info(
        "validated %d rows of %d symbols through %s: no contract violation",
        report.rows,
        report.symbols,
        config.last_date,
    )


if __name__ == "__main__":
    stage_main("validate", run, __doc__)
