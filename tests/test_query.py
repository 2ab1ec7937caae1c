"""The query CLI: every command and format on a small hand-built dataset, exact outputs; then
every command on the dataset a real `dvc repro` built from the emulator, against the universe."""

from __future__ import annotations

import datetime as dt
import errno
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from devtools.emulator import Emulator, Universe, object_meta
from devtools.scratch import ScratchProject
from pipeline import query
from pipeline.config import load_config
from pipeline.dataset.changes import CHANGES_SCHEMA
from pipeline.dataset.commit import journal_path
from pipeline.dataset.schema import empty
from pipeline.query import cli
from pipeline.symbols import is_delivery
from tests import support
from tests.query_support import answer, ask
from tests.support import (
    LAYOUT,
    ONE_DAY,
    ROOT,
    D,
    commit_dataset,
    dates,
    frame,
    set_params,
    write_params,
)


def days(symbol: str, first: str, last: str = "2024-02-10", *, missing: tuple = ()) -> list[dict]:
    """One row per day from `first` through `last` (default: the last day), but the `missing`."""
    return support.days(symbol, first, last, missing=missing)


def stretch(first: str, last: str) -> tuple[str, ...]:
    return tuple(str(day) for day in dates(first, last))


# Three months, max_gap_days 3. AAA: missing days inside its span. BBB: a 9-day gap, so a
# delisting and a relisting. CCC: no file for the last 10 days (delisted). DDD: no file for the
# last 2 days (still listed). 币安人生USDT: new, and two columns wide per character.
ROWS = [
    *days("AAAUSDT", "2023-12-30", missing=("2024-01-05", "2024-01-20", "2024-01-21")),
    *days("BBBUSDT", "2024-01-03", missing=stretch("2024-01-11", "2024-01-19")),
    *days("CCCUSDT", "2023-12-28", missing=stretch("2024-02-01", "2024-02-10")),
    *days("DDDUSDT", "2024-02-01", missing=("2024-02-09", "2024-02-10")),
    *days("币安人生USDT", "2024-02-05"),
]
MAX_GAP_DAYS = 3


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout with params.yaml (max_gap_days 3) and the dataset of ROWS, as the cwd."""
    config = load_config(write_params(tmp_path, {"spans": {"max_gap_days": MAX_GAP_DAYS}}))
    commit_dataset(frame(*ROWS), tmp_path / config.paths.dataset, config.dataset, previous=empty())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_snapshot_lists_the_symbols_with_a_file_that_day(project, capsys):
    assert answer(capsys, "snapshot", "2024-01-05") == (
        "symbol   file_size_bytes  last_modified\n"
        "-------  ---------------  -------------------------\n"
        "BBBUSDT              100  2024-01-05T06:00:00+00:00\n"
        "CCCUSDT              100  2024-01-05T06:00:00+00:00\n"
    )


def test_snapshot_as_json_and_csv(project, capsys):
    assert json.loads(answer(capsys, "snapshot", "2024-02-10", "--format", "json")) == [
        {"symbol": symbol, "file_size_bytes": 100, "last_modified": "2024-02-10T06:00:00+00:00"}
        for symbol in ("AAAUSDT", "BBBUSDT", "币安人生USDT")
    ]
    assert answer(capsys, "snapshot", "2024-02-10", "--format", "csv") == (
        "symbol,file_size_bytes,last_modified\n"
        "AAAUSDT,100,2024-02-10T06:00:00+00:00\n"
        "BBBUSDT,100,2024-02-10T06:00:00+00:00\n"
        "币安人生USDT,100,2024-02-10T06:00:00+00:00\n"
    )


QUESTIONS = (
    ("snapshot", "2023-12-29"),
    ("timeline", "AAAUSDT"),
    ("listings", "--since", "2024-01-01"),
    ("gaps",),
    ("stats",),
)
JANUARY = Path("data/availability/2024-01.parquet")
RESTORE = "restore it with `dvc checkout` or `dvc pull`"


def misplace_february_in_january() -> None:
    pl.read_parquet("data/availability/2024-02.parquet").write_parquet(JANUARY)


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda: JANUARY.unlink(),
            f"{JANUARY} is missing, a month between 2023-12 and 2024-02 (1 missing in all): "
            f"{RESTORE}",
        ),
        (
            lambda: JANUARY.write_bytes(b"not parquet"),
            f"{JANUARY} is not a readable Parquet file (ComputeError): {RESTORE}",
        ),
        (
            misplace_february_in_january,
            f"{JANUARY} holds rows of another month (e.g. 2024-02-01 AAAUSDT, which belongs in "
            f"2024-02.parquet): {RESTORE}",
        ),
    ],
    ids=("missing", "not-parquet", "misplaced"),
)
def test_a_damaged_month_is_named_whatever_the_question_and_no_answer_is_given(
    project, capsys, damage, message, question
):
    # Even a question about another month: the stages would refuse this dataset too.
    damage()
    before = support.snapshot()
    assert ask(capsys, *question) == (1, "", f"vision-query: error: {message}\n")
    assert support.snapshot() == before


def test_a_dataset_built_with_other_params_is_refused(project, capsys):
    set_params({"dataset": {"interval": "1h"}})
    code, out, err = ask(capsys, "stats")
    assert (code, out) == (1, "")
    assert err.startswith("vision-query: error: data/availability holds ")
    assert "interval 1m" in err and "interval 1h" in err and err.count("\n") == 1


def test_a_month_recorded_in_dvc_lock_but_missing_is_named_with_dvc_checkout(project, capsys):
    # The last month gone: no gap between the first and the last, but dvc.lock counts files.
    Path("dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  update:\n    cmd: python -m pipeline.stages.update\n"
        "    outs:\n    - path: data/availability\n      md5: 0123.dir\n      size: 1\n"
        "      nfiles: 4\n"
    )
    Path("data/availability/2024-02.parquet").unlink()
    assert ask(capsys, "snapshot", "2023-12-29") == (
        1,
        "",
        "vision-query: error: data/availability has 3 of the 4 files dvc.lock records: "
        "run `dvc checkout` (or `dvc pull`) first\n",
    )


def test_timeline_shows_each_span_with_its_missing_days(project, capsys):
    assert answer(capsys, "timeline", "AAAUSDT") == (
        "symbol   span  first_date  last_date   days_available  days_missing  status  "
        "missing_dates\n"
        "-------  ----  ----------  ----------  --------------  ------------  ------  "
        "----------------------------------\n"
        "AAAUSDT     1  2023-12-30  2024-02-10              40             3  listed  "
        "2024-01-05, 2024-01-20..2024-01-21\n"
    )
    assert json.loads(answer(capsys, "timeline", "BBBUSDT", "--format", "json")) == [
        {
            "symbol": "BBBUSDT",
            "span": 1,
            "first_date": "2024-01-03",
            "last_date": "2024-01-10",
            "days_available": 8,
            "days_missing": 0,
            "status": "delisted",
            "missing_dates": [],
        },
        {
            "symbol": "BBBUSDT",
            "span": 2,
            "first_date": "2024-01-20",
            "last_date": "2024-02-10",
            "days_available": 22,
            "days_missing": 0,
            "status": "listed",
            "missing_dates": [],
        },
    ]
    aaa = json.loads(answer(capsys, "timeline", "AAAUSDT", "--format", "json"))
    assert [span["missing_dates"] for span in aaa] == [["2024-01-05", "2024-01-20", "2024-01-21"]]
    assert answer(capsys, "timeline", "DDDUSDT", "--format", "csv") == (
        "symbol,span,first_date,last_date,days_available,days_missing,status,missing_dates\n"
        "DDDUSDT,1,2024-02-01,2024-02-08,8,0,listed,\n"
    )


def test_timeline_of_a_delisted_symbol(project, capsys):
    assert answer(capsys, "timeline", "CCCUSDT", "--format", "csv") == (
        "symbol,span,first_date,last_date,days_available,days_missing,status,missing_dates\n"
        "CCCUSDT,1,2023-12-28,2024-01-31,35,0,delisted,\n"
    )


def test_spans_follow_max_gap_days_of_params(project, capsys):
    wide = project / "wide.yaml"
    wide.write_bytes((project / "params.yaml").read_bytes())
    set_params({"spans": {"max_gap_days": 10}}, wide)
    out = answer(capsys, "timeline", "BBBUSDT", "--params", "wide.yaml", "--format", "csv")
    assert out == (
        "symbol,span,first_date,last_date,days_available,days_missing,status,missing_dates\n"
        "BBBUSDT,1,2024-01-03,2024-02-10,30,9,listed,2024-01-11..2024-01-19\n"
    )


def test_an_unknown_symbol_gets_close_names(project, capsys):
    assert ask(capsys, "timeline", "bbbusdt") == (
        2,
        "",
        "vision-query: error: unknown symbol bbbusdt; did you mean BBBUSDT?\n",
    )
    assert ask(capsys, "gaps", "--symbol", "XYZ") == (
        2,
        "",
        "vision-query: error: unknown symbol XYZ; no symbol has a close name "
        "(names are as in the bucket)\n",
    )


def test_a_date_outside_the_dataset_is_refused_in_one_line(project, capsys):
    expected = "the dataset, which runs from 2023-12-28 to 2024-02-10\n"
    code, out, err = ask(capsys, "snapshot", "2024-02-11")
    assert (code, out, err) == (2, "", f"vision-query: error: 2024-02-11 is outside {expected}")
    code, out, err = ask(capsys, "listings", "--since", "2023-12-27")
    assert (code, out, err) == (2, "", f"vision-query: error: 2023-12-27 is outside {expected}")


def test_a_malformed_date_is_a_usage_error(project, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["snapshot", "2024-13-01"])
    assert exit_.value.code == 2
    assert "argument DATE: '2024-13-01' is not a date like 2024-03-01" in capsys.readouterr().err


def test_listings_since_a_date(project, capsys):
    assert answer(capsys, "listings", "--since", "2024-01-15") == (
        "date        symbol        event\n"
        "----------  ------------  --------\n"
        "2024-01-20  BBBUSDT       relisted\n"
        "2024-01-31  CCCUSDT       delisted\n"
        "2024-02-01  DDDUSDT       listed\n"
        "2024-02-05  币安人生USDT  listed\n"
    )
    assert answer(capsys, "listings", "--since", "2023-12-28", "--format", "csv") == (
        "date,symbol,event\n"
        "2023-12-28,CCCUSDT,listed\n"
        "2023-12-30,AAAUSDT,listed\n"
        "2024-01-03,BBBUSDT,listed\n"
        "2024-01-10,BBBUSDT,delisted\n"
        "2024-01-20,BBBUSDT,relisted\n"
        "2024-01-31,CCCUSDT,delisted\n"
        "2024-02-01,DDDUSDT,listed\n"
        "2024-02-05,币安人生USDT,listed\n"
    )


def test_an_empty_answer_exits_0_in_every_format(project, capsys):
    since = ("listings", "--since", "2024-02-06")
    assert answer(capsys, *since) == ("date  symbol  event\n----  ------  -----\n")
    assert answer(capsys, *since, "--format", "json") == "[]\n"
    assert answer(capsys, *since, "--format", "csv") == "date,symbol,event\n"
    assert answer(capsys, "gaps", "--symbol", "DDDUSDT", "--format", "csv") == (
        "symbol,first_date,last_date,days\n"
    )


def test_gaps_are_the_missing_stretches_inside_spans(project, capsys):
    # BBB's 9 days end a span and DDD's last 2 follow its last file: neither is inside a span.
    assert answer(capsys, "gaps") == (
        "symbol   first_date  last_date   days\n"
        "-------  ----------  ----------  ----\n"
        "AAAUSDT  2024-01-05  2024-01-05     1\n"
        "AAAUSDT  2024-01-20  2024-01-21     2\n"
    )
    assert json.loads(answer(capsys, "gaps", "--symbol", "AAAUSDT", "--format", "json")) == [
        {"symbol": "AAAUSDT", "first_date": "2024-01-05", "last_date": "2024-01-05", "days": 1},
        {"symbol": "AAAUSDT", "first_date": "2024-01-20", "last_date": "2024-01-21", "days": 2},
    ]


STATS = {
    "first_date": "2023-12-28",
    "last_date": "2024-02-10",
    "symbols": 5,
    "listed_symbols": 4,
    "delisted_symbols": 1,
    "available_on_last_date": 3,
    "rows": 143,
    "available_share": 0.8322,  # 119 of 143
    "listing_spans": 6,
    "relistings": 1,
    "missing_days_in_spans": 3,
}


def test_stats_in_every_format(project, capsys):
    assert answer(capsys, "stats") == (
        "first_date              2023-12-28\n"
        "last_date               2024-02-10\n"
        "symbols                 5\n"
        "listed_symbols          4\n"
        "delisted_symbols        1\n"
        "available_on_last_date  3\n"
        "rows                    143\n"
        "available_share         0.8322\n"
        "listing_spans           6\n"
        "relistings              1\n"
        "missing_days_in_spans   3\n"
    )
    # A single answer is one JSON object, not a list of one.
    assert json.loads(answer(capsys, "stats", "--format", "json")) == STATS
    assert answer(capsys, "stats", "--format", "csv") == (
        ",".join(STATS) + "\n" + ",".join(map(str, STATS.values())) + "\n"
    )


def test_dataset_option_and_a_missing_dataset(project, capsys):
    (project / "data" / "availability").rename(project / "elsewhere")
    assert ask(capsys, "stats") == (
        1,
        "",
        "vision-query: error: no partitions under data/availability: "
        "run the pipeline (make update) or `dvc pull`\n",
    )
    assert answer(capsys, "stats", "--dataset", "elsewhere").startswith("first_date  ")


def test_no_params_and_no_dataset_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert ask(capsys, "stats") == (
        1,
        "",
        f"vision-query: error: no params.yaml in {tmp_path} or a folder above it: run inside "
        "the repository, or name the dataset's folder with --dataset DIR\n",
    )
    assert ask(capsys, "stats", "--params", "other.yaml") == (
        1,
        "",
        "vision-query: error: other.yaml not found: run from the repository root\n",
    )


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_help_with_examples(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    usage = " ".join(out.partition("\n\n")[0].split())  # argparse wraps it as it fits
    assert usage.startswith(
        f"usage: vision-query {name} [-h] [--format {{table,json,csv,parquet}}] [-o FILE]"
    )
    assert f"examples:\n  vision-query {cli.COMMANDS[name].examples[0]}\n" in out


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    listed = " ".join(out.split())  # argparse wraps and pads as it fits
    for entry in cli.COMMANDS.values():
        assert f" {entry.name} {entry.summary[:30]}" in listed
    assert "exit codes: 0 with an answer" in out


def test_the_query_functions_of_the_readme(project):
    dataset = project / "data" / "availability"
    assert query.available_on(dataset, D("2024-01-05")) == ["BBBUSDT", "CCCUSDT"]
    rows = query.timeline(dataset, "DDDUSDT")
    assert rows["date"].to_list() == dates("2024-02-01", "2024-02-10")


def test_a_closed_pipe_is_not_an_error(project):
    # `vision-query ... | head`: the reader is gone before the answer is written.
    command = [sys.executable, "-m", "pipeline.query", "gaps"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as running:
        running.stdout.close()
        stderr = running.stderr.read()
    assert (running.returncode, stderr) == (0, b"")


def test_the_console_script_is_installed():
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="vision-query")
    assert script.load() is cli.main
    result = subprocess.run(
        [Path(sys.executable).parent / "vision-query", "stats", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: vision-query stats")


# End to end: the dataset of a real `dvc repro` on the emulator, asked through a subprocess.

START = D("2024-01-01")
AS_OF = D("2024-04-01")
LAST = AS_OF - ONE_DAY
E2E_MAX_GAP_DAYS = 10
UNIVERSE = {
    "today": AS_OF.isoformat(),
    "market": "um",
    "data_type": "klines",
    "intervals": ["1m"],
    "symbols": {
        "BTCUSDT": {
            "spans": [["2019-09-25", None]],
            "missing": ["2024-02-10", *stretch("2024-03-01", "2024-03-05")],
        },
        "ETHUSDT": {"spans": [["2024-01-15", None]]},
        "OLDUSDT": {"spans": [["2023-06-01", "2024-02-15"]]},
        # A 19-day gap: delisted, then relisted.
        "AGAINUSDT": {"spans": [["2024-01-01", "2024-01-31"], ["2024-02-20", None]]},
        # An 8-day gap: missing days inside one span.
        "NEARUSDT": {"spans": [["2024-01-01", "2024-02-09"], ["2024-02-18", None]]},
        # No file for the last 6 days: still listed.
        "QUIETUSDT": {"spans": [["2024-02-01", "2024-03-25"]]},
        "LATEUSDT": {"spans": [["2024-01-01", None]], "late": {"2024-03-30": "2024-04-02"}},
        "币安人生USDT": {"spans": [["2024-03-10", None]]},
        "BTCUSDT_240628": {"spans": [["2024-01-01", "2024-06-28"]]},
    },
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Iterator[tuple[ScratchProject, Universe]]:
    """One real pipeline run for every end-to-end question."""
    universe = Universe.from_dict(UNIVERSE)
    with Emulator(universe) as emulator:
        project = ScratchProject.create(
            tmp_path_factory.mktemp("query") / "repo",
            {
                "vision": {
                    "listing_url": emulator.listing_url,
                    "download_url": emulator.download_url,
                },
                "dataset": {"start_date": START.isoformat()},
                "run": {"as_of": AS_OF.isoformat()},
                "update": {"lookback_days": 5},
                "probe": {"workers": 8, "timeout_s": 5, "retries": 4, "backoff_s": 0.01},
                "spans": {"max_gap_days": E2E_MAX_GAP_DAYS},
            },
        )
        # The availability stages only (update and those before it): these questions are
        # about the availability dataset, and the volume stage's downloads are not needed.
        project.repro("update")
    yield project, universe


def run_query(project: ScratchProject, *argv: str) -> subprocess.CompletedProcess[str]:
    return project.run("python", "-m", "pipeline.query", *argv, check=False)


def ask_json(project: ScratchProject, *argv: str) -> list[dict]:
    result = run_query(project, *argv, "--format", "json")
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return json.loads(result.stdout)


def files(universe: Universe, symbol: str) -> list[dt.date]:
    """The days the dataset should say `symbol` had a file: the ground truth."""
    return [d for d in universe.available_dates(symbol) if START <= d <= LAST]


def truth_spans(universe: Universe, symbol: str) -> list[dict]:
    """Listing spans by their definition, day by day, with the days missing inside them."""
    spans: list[dict] = []
    for day in files(universe, symbol):
        if spans and (day - spans[-1]["last_date"]).days - 1 <= E2E_MAX_GAP_DAYS:
            span = spans[-1]
            span["missing_dates"] += [
                span["last_date"] + ONE_DAY * i for i in range(1, (day - span["last_date"]).days)
            ]
            span["last_date"] = day
            span["days_available"] += 1
        else:
            spans.append(
                {"first_date": day, "last_date": day, "days_available": 1, "missing_dates": []}
            )
    for number, span in enumerate(spans, start=1):
        listed = (LAST - span["last_date"]).days <= E2E_MAX_GAP_DAYS
        span.update(span=number, status="listed" if listed else "delisted")
    return spans


def perpetual(universe: Universe) -> list[str]:
    return [s for s in universe.symbols if not is_delivery(s)]


@pytest.mark.e2e
def test_e2e_snapshot_is_the_universe_of_the_day(built):
    project, universe = built
    for day in (START, D("2024-02-10"), D("2024-03-03"), D("2024-03-30"), LAST):
        expected = [
            {
                "symbol": symbol,
                "file_size_bytes": meta.size,
                "last_modified": meta.last_modified.isoformat(),
            }
            for symbol in sorted(perpetual(universe))
            if day in files(universe, symbol)
            for meta in [object_meta(LAYOUT.symbol_prefix(symbol) + f"{symbol}-1m-{day}.zip")]
        ]
        assert ask_json(project, "snapshot", day.isoformat()) == expected, day


@pytest.mark.e2e
def test_e2e_timeline_of_every_symbol(built):
    project, universe = built
    for symbol in perpetual(universe):
        expected = [
            {
                "symbol": symbol,
                "span": span["span"],
                "first_date": span["first_date"].isoformat(),
                "last_date": span["last_date"].isoformat(),
                "days_available": span["days_available"],
                "days_missing": len(span["missing_dates"]),
                "status": span["status"],
            }
            for span in truth_spans(universe, symbol)
        ]
        found = ask_json(project, "timeline", symbol)
        assert [
            {k: v for k, v in span.items() if k != "missing_dates"} for span in found
        ] == expected
    btc = ask_json(project, "timeline", "BTCUSDT")
    assert [span["missing_dates"] for span in btc] == [
        ["2024-02-10", *stretch("2024-03-01", "2024-03-05")]
    ]


@pytest.mark.e2e
def test_e2e_a_delivery_contract_is_unknown_with_a_suggestion(built):
    project, _ = built
    result = run_query(project, "timeline", "BTCUSDT_240628")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "python -m pipeline.query: error: unknown symbol BTCUSDT_240628; did you mean BTCUSDT"
    )


@pytest.mark.e2e
def test_e2e_listings_since(built):
    project, universe = built
    since = D("2024-01-15")
    expected = []
    for symbol in perpetual(universe):
        for span in truth_spans(universe, symbol):
            if span["first_date"] >= since:
                event = "listed" if span["span"] == 1 else "relisted"
                expected.append((span["first_date"].isoformat(), symbol, event))
            if span["status"] == "delisted" and span["last_date"] >= since:
                expected.append((span["last_date"].isoformat(), symbol, "delisted"))
    found = ask_json(project, "listings", "--since", since.isoformat())
    assert [(e["date"], e["symbol"], e["event"]) for e in found] == sorted(expected)
    assert {e[1:] for e in expected} == {
        ("ETHUSDT", "listed"),
        ("OLDUSDT", "delisted"),
        ("AGAINUSDT", "delisted"),
        ("AGAINUSDT", "relisted"),
        ("QUIETUSDT", "listed"),
        ("币安人生USDT", "listed"),
    }


@pytest.mark.e2e
def test_e2e_gaps_are_the_missing_days_inside_spans(built):
    project, universe = built
    missing = {
        (symbol, day)
        for symbol in perpetual(universe)
        for span in truth_spans(universe, symbol)
        for day in span["missing_dates"]
    }
    found = ask_json(project, "gaps")
    days_found = {
        (gap["symbol"], D(gap["first_date"]) + ONE_DAY * i)
        for gap in found
        for i in range(gap["days"])
    }
    assert days_found == missing
    assert sum(gap["days"] for gap in found) == len(missing) == 1 + 5 + 8 + 1
    assert len(found) == 4  # BTC's two stretches, NEAR's 8 days, LATE's late file


@pytest.mark.e2e
def test_e2e_stats(built):
    project, universe = built
    symbols = perpetual(universe)
    spans = {symbol: truth_spans(universe, symbol) for symbol in symbols}
    rows = sum((LAST - files(universe, s)[0]).days + 1 for s in symbols)
    available = sum(len(files(universe, s)) for s in symbols)
    listed = sum(spans[s][-1]["status"] == "listed" for s in symbols)
    assert ask_json(project, "stats") == {
        "first_date": START.isoformat(),
        "last_date": LAST.isoformat(),
        "symbols": len(symbols),
        "listed_symbols": listed,
        "delisted_symbols": len(symbols) - listed,
        "available_on_last_date": sum(LAST in files(universe, s) for s in symbols),
        "rows": rows,
        "available_share": round(available / rows, 4),
        "listing_spans": sum(map(len, spans.values())),
        "relistings": sum(len(s) - 1 for s in spans.values()),
        "missing_days_in_spans": sum(len(x["missing_dates"]) for s in spans.values() for x in s),
    }


@pytest.mark.e2e
def test_e2e_a_date_after_the_data_exits_2_and_each_format_answers(built):
    project, _ = built
    result = run_query(project, "snapshot", AS_OF.isoformat())
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"python -m pipeline.query: error: {AS_OF} is outside the dataset, "
        f"which runs from {START} to {LAST}\n"
    )
    csv = run_query(project, "listings", "--since", "2024-03-01", "--format", "csv")
    assert csv.stdout == "date,symbol,event\n2024-03-10,币安人生USDT,listed\n"
    table = run_query(project, "gaps", "--symbol", "ETHUSDT")
    assert (table.returncode, table.stdout) == (
        0,
        "symbol  first_date  last_date  days\n" + "------  ----------  ---------  ----\n",
    )


PERMISSION_DENIED = "permission denied: check the permissions of the file and its folder, and rerun"


@pytest.mark.parametrize(
    ("reader", "denied", "question"),
    [
        ("read_parquet_schema", JANUARY, ("stats",)),
        ("read_parquet", Path("data/changes.parquet"), ("changes", "--since", "2024-01-01")),
    ],
    ids=("partition", "change-log"),
)
def test_a_file_it_may_not_read_is_named(project, capsys, monkeypatch, reader, denied, question):
    # Root reads any file: the kernel's refusal of `denied` is mocked in polars, its reader.
    pl.DataFrame(schema=CHANGES_SCHEMA).write_parquet(Path("data/changes.parquet"))
    real_read = getattr(pl, reader)

    def read(source, *args, **kwargs):
        if Path(source) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(denied))
        return real_read(source, *args, **kwargs)

    monkeypatch.setattr(pl, reader, read)
    assert ask(capsys, *question) == (
        1,
        "",
        f"vision-query: error: cannot read {denied}: {PERMISSION_DENIED}\n",
    )


def test_a_half_finished_commit_gives_no_answer(project, capsys):
    # A run killed between the renames of its commit: old and new months may be mixed.
    journal = journal_path(Path("data/availability"))
    journal.write_text("{}", encoding="utf-8")
    before = support.snapshot()
    assert ask(capsys, "snapshot", "2024-01-05") == (
        1,
        "",
        "vision-query: error: a run was interrupted while writing data/availability: "
        "run `make update` to finish it\n",
    )
    assert support.snapshot() == before


@pytest.mark.e2e
def test_e2e_a_dataset_fetched_with_dvc_get_answers_outside_the_repository(built, tmp_path):
    """Done when: data fetched by `dvc get`, asked from a folder with no params.yaml or
    dvc.lock, gives the repository's answers. The fetched folder alone uses the committed
    spans.max_gap_days (30), so the repository is asked with a params file saying 30 too."""
    project, _ = built
    project.commit("the built dataset")  # dvc get reads dvc.lock from git, data from the cache
    outside = tmp_path / "outside"
    outside.mkdir()
    fetched = project.run(
        "dvc", "get", str(project.root), "data/availability", "-o", str(outside / "avail")
    )
    assert fetched.returncode == 0, fetched.stderr
    assert not any(
        (folder / name).exists()
        for folder in (outside, *outside.parents)
        for name in ("params.yaml", "dvc.lock")
    )
    committed = tmp_path / "committed.yaml"
    committed.write_text(project.read("params.yaml"), encoding="utf-8")
    support.set_params({"spans": {"max_gap_days": 30}}, committed)
    questions = [
        ("snapshot", "2024-03-03"),
        ("timeline", "NEARUSDT"),
        ("listings", "--since", START.isoformat()),
        ("gaps",),
        ("stats",),
        ("panel", "--since", "2024-01-25", "--until", "2024-03-06", "--no-volume"),
    ]
    script = str(Path(sys.executable).parent / "vision-query")
    for question in questions:
        in_repo = ask_json(project, *question, "--params", str(committed))
        asked = subprocess.run(
            [script, *question, "--dataset", "avail", "--format", "json"],
            cwd=outside,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (asked.returncode, asked.stderr) == (0, ""), question
        assert json.loads(asked.stdout) == in_repo, question
    # At 30 days, NEAR's 8-day gap and AGAIN's 19-day gap are inside one span each.
    assert len(ask_json(project, "timeline", "AGAINUSDT", "--params", str(committed))) == 1
    assert len(ask_json(project, "timeline", "AGAINUSDT")) == 2
