"""Where vision-query reads from, and what it writes (issue 13): from a subfolder of the
repository, from outside it with a dataset folder alone (as `dvc get` fetches one), the panel
export, JSON shapes, --version, -o and CJK alignment; exact answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from devtools.emulator import load_reference
from pipeline.config import load_config
from pipeline.dataset.schema import empty
from pipeline.query import cli
from pipeline.query.output import render
from pipeline.query.sources import DEFAULT_MAX_GAP_DAYS
from tests import support
from tests.query_support import answer, ask
from tests.support import ROOT, commit_dataset, dates, frame, write_params
from tests.test_query import MAX_GAP_DAYS, ROWS
from tests.test_query_volume import klines, write_volume

LOCK = (
    "schema: '2.0'\nstages:\n  update:\n    cmd: python -m pipeline.stages.update\n"
    "    outs:\n    - path: data/availability\n      md5: 0123.dir\n      size: 1\n"
    "      nfiles: 4\n"
)
VOLUME = [
    *klines("AAAUSDT", "2023-12-30", "2024-02-10", 10.0),
    *klines("BBBUSDT", "2024-01-03", "2024-01-10", 20.0),
    *klines("BBBUSDT", "2024-01-20", "2024-02-10", 30.0),
    *klines("CCCUSDT", "2023-12-28", "2024-01-31", 40.0),
    *klines("DDDUSDT", "2024-02-01", "2024-02-08", 50.0),
    *klines("币安人生USDT", "2024-02-05", "2024-02-10", 60.0),
]


def build_repo(root: Path, **params: dict) -> Path:
    """A repository at `root`: params.yaml, dvc.lock recording the dataset, both datasets."""
    root.mkdir(parents=True)
    config = load_config(write_params(root, params))
    commit_dataset(frame(*ROWS), root / config.paths.dataset, config.dataset, previous=empty())
    write_volume(VOLUME, root / config.paths.volume, config.dataset)
    (root / "dvc.lock").write_text(LOCK, encoding="utf-8")
    return root


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with spans.max_gap_days 3, as the cwd."""
    root = build_repo(tmp_path / "repo", spans={"max_gap_days": MAX_GAP_DAYS})
    monkeypatch.chdir(root)
    return root


def test_the_default_max_gap_days_is_the_committed_one():
    committed = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert committed["spans"]["max_gap_days"] == DEFAULT_MAX_GAP_DAYS


def test_from_a_subfolder_the_repository_is_found(repo, capsys, monkeypatch):
    questions = [("timeline", "BBBUSDT"), ("stats",), ("universe", "2024-02-06", "--top", "3")]
    at_root = [answer(capsys, *question) for question in questions]
    deep = repo / "notebooks" / "deep"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert [answer(capsys, *question) for question in questions] == at_root
    # Files are named as they are reached from here.
    (repo / "dvc.lock").unlink()  # which would count the files first
    (repo / "data/availability/2024-01.parquet").unlink()
    assert ask(capsys, "stats") == (
        1,
        "",
        "vision-query: error: ../../data/availability/2024-01.parquet is missing, a month "
        "between 2023-12 and 2024-02 (1 missing in all): restore it with `dvc checkout` or "
        "`dvc pull`\n",
    )


def test_from_a_subfolder_dvc_lock_still_counts_the_files(repo, capsys, monkeypatch):
    (repo / "data/availability/2024-02.parquet").unlink()  # the last month: no gap left
    (repo / "notebooks").mkdir()
    monkeypatch.chdir(repo / "notebooks")
    assert ask(capsys, "stats") == (
        1,
        "",
        "vision-query: error: ../data/availability has 3 of the 4 files ../dvc.lock records: "
        "run `dvc checkout` (or `dvc pull`) first\n",
    )
    # Named with --dataset from here, it is still the dataset dvc.lock records.
    assert ask(capsys, "stats", "--dataset", "../data/availability")[0] == 1


VOLUME_COMMANDS = ("panel", "universe", "volume")
QUESTIONS = [
    ("snapshot", "2024-01-05"),
    ("timeline", "BBBUSDT"),
    ("timeline", "AAAUSDT"),
    ("listings", "--since", "2023-12-28"),
    ("gaps",),
    ("stats",),
    ("panel", "--since", "2024-01-08", "--until", "2024-01-22"),
    ("panel", "--since", "2024-02-01", "--wide", "--value", "listed"),
    ("universe", "2024-02-06", "--top", "4", "--window", "7"),
    ("volume", "BBBUSDT", "--since", "2024-01-09"),
]


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_a_fetched_dataset_outside_the_repository_gives_the_same_answers(
    tmp_path, capsys, monkeypatch, fmt
):
    """Done when: `--dataset DIR` beside data fetched by `dvc get`, no params.yaml or dvc.lock
    anywhere up, answers as the repository does (committed params: max_gap_days 30)."""
    repo = build_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    in_repo = [answer(capsys, *question, "--format", fmt) for question in QUESTIONS]
    outside = tmp_path / "outside"
    shutil.copytree(repo / "data" / "availability", outside / "fetched" / "availability")
    shutil.copytree(repo / "data" / "volume", outside / "fetched" / "volume")
    monkeypatch.chdir(outside)
    options = ("--dataset", "fetched/availability", "--format", fmt)
    volume = ("--volume", "fetched/volume")
    found = [
        answer(capsys, *question, *options, *(volume if question[0] in VOLUME_COMMANDS else ()))
        for question in QUESTIONS
    ]
    assert found == in_repo
    # Spans follow the committed 30 days: BBB's 9-day gap is inside its one span.
    assert answer(capsys, "timeline", "BBBUSDT", *options, "--format", "csv").count("\n") == 2


def test_the_console_script_outside_the_repository(tmp_path, monkeypatch, capsys):
    repo = build_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    expected = answer(capsys, "timeline", "AAAUSDT", "--format", "json")
    outside = tmp_path / "outside"
    shutil.copytree(repo / "data" / "availability", outside / "availability")
    command = [str(Path(sys.executable).parent / "vision-query"), "--dataset", "availability"]
    result = subprocess.run(
        [*command, "--format", "json", "timeline", "AAAUSDT"],
        cwd=outside,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr, result.stdout) == (0, "", expected)
    # Without the volume dataset, the change log or a dataset, each is named in one line.
    no_volume = subprocess.run(
        [*command, "universe", "2024-02-06", "--top", "3"],
        cwd=outside,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (no_volume.returncode, no_volume.stdout) == (1, "")
    assert no_volume.stderr == (
        "vision-query: error: the volume dataset is found through params.yaml (paths.volume), "
        "and there is none here or above: name its folder with --volume DIR\n"
    )


def test_a_fetched_dataset_without_its_identity_is_refused(tmp_path, capsys, monkeypatch):
    repo = build_repo(tmp_path / "repo")
    copy = tmp_path / "fetched"
    shutil.copytree(repo / "data" / "availability", copy)
    monkeypatch.chdir(tmp_path)
    (copy / "_dataset.json").write_text('{"market": "um"}', encoding="utf-8")
    assert ask(capsys, "stats", "--dataset", "fetched") == (
        1,
        "",
        "vision-query: error: fetched/_dataset.json is not a dataset identity (expected an "
        "object of market, data_type, interval, start_date, contracts): restore it\n",
    )
    (copy / "_dataset.json").unlink()
    assert ask(capsys, "stats", "--dataset", "fetched") == (
        1,
        "",
        "vision-query: error: fetched/_dataset.json is missing or unreadable, so fetched "
        "cannot be told apart from another dataset: fetch the whole folder (`dvc get`, "
        "`dvc pull`)\n",
    )


def test_a_dataset_of_another_market_is_read_by_its_own_identity(repo, capsys):
    # params.yaml says um; a cm dataset named with --dataset is read as what it is.
    config = load_config("params.yaml")
    (repo / "cm").mkdir()
    cm = load_config(write_params(repo / "cm", {"dataset": {"market": "cm"}})).dataset
    commit_dataset(frame(*ROWS), repo / "cm-data", cm, previous=empty())
    assert config.dataset.market == "um"
    assert answer(capsys, "snapshot", "2024-01-05", "--dataset", "cm-data") == answer(
        capsys, "snapshot", "2024-01-05"
    )


def test_options_before_the_command_and_version(repo, capsys):
    assert answer(capsys, "--format", "csv", "stats") == answer(capsys, "stats", "--format", "csv")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"vision-query {cli.package_version()}\n"
    assert cli.package_version() == "0.1.0"  # pyproject.toml's, as installed


def test_json_arrays_are_arrays_and_a_single_answer_an_object(repo, capsys):
    (aaa,) = json.loads(answer(capsys, "timeline", "AAAUSDT", "--format", "json"))
    assert aaa["missing_dates"] == ["2024-01-05", "2024-01-20", "2024-01-21"]
    stats = json.loads(answer(capsys, "stats", "--format", "json"))
    assert isinstance(stats, dict) and stats["symbols"] == 5


def test_the_panel_as_a_long_table(repo, capsys):
    # AAA: no file on 01-20 and 01-21, inside its span. BBB: 9 days without one (more than
    # max_gap_days 3) end a span, relisted on 01-20. DDD: listed from 02-01.
    out = answer(
        capsys,
        "panel",
        "--since",
        "2024-01-19",
        "--until",
        "2024-01-21",
        "--symbols",
        "AAAUSDT,BBBUSDT,DDDUSDT",
        "--no-volume",
    )
    assert out == (
        "date        symbol   available  listed\n"
        "----------  -------  ---------  ------\n"
        "2024-01-19  AAAUSDT  true       true\n"
        "2024-01-19  BBBUSDT  false      false\n"
        "2024-01-20  AAAUSDT  false      true\n"
        "2024-01-20  BBBUSDT  true       true\n"
        "2024-01-21  AAAUSDT  false      true\n"
        "2024-01-21  BBBUSDT  true       true\n"
    )


def test_the_panel_as_a_wide_matrix_of_every_listed_symbol(repo, capsys, tmp_path):
    # From 02-01: CCC (no file since 01-31, delisted) is left out; DDD's last two days have
    # no file but it is still listed; 币安人生 has no row before its first file: false.
    out = tmp_path / "listed.json"
    argv = ("panel", "--since", "2024-02-01", "--wide", "--no-volume", "--format", "json")
    assert answer(capsys, *argv, "-o", str(out)) == ""
    found = json.loads(out.read_text(encoding="utf-8"))
    assert [row["date"] for row in found] == [str(d) for d in dates("2024-02-01", "2024-02-10")]
    assert {tuple(row) for row in found} == {
        ("date", "AAAUSDT", "BBBUSDT", "DDDUSDT", "币安人生USDT")
    }
    assert [row["DDDUSDT"] for row in found] == [True] * 8 + [False] * 2
    listed = answer(capsys, *argv, "--value", "listed")
    assert [row["DDDUSDT"] for row in json.loads(listed)] == [True] * 10
    assert [row["币安人生USDT"] for row in json.loads(listed)] == [False] * 4 + [True] * 6


def test_the_panel_as_parquet_keeps_its_types(repo, capsys):
    argv = ("panel", "--since", "2024-02-09", "--format", "parquet", "-o", "out/panel.parquet")
    assert answer(capsys, *argv) == ""
    found = pl.read_parquet("out/panel.parquet")
    assert found.schema["date"] == pl.Date and found.schema["available"] == pl.Boolean
    assert found.schema["trades"] == pl.Int64
    assert found.filter(pl.col("symbol") == "DDDUSDT")["quote_volume"].to_list() == [None, None]
    assert found.height == 2 * 4  # AAA, BBB, DDD, 币安人生 on two days


def test_panel_arguments_are_checked(repo, capsys):
    assert ask(capsys, "panel", "--since", "2024-02-02", "--until", "2024-02-01") == (
        2,
        "",
        "vision-query: error: --since 2024-02-02 is after --until 2024-02-01\n",
    )
    assert ask(capsys, "panel", "--since", "2024-02-02", "--symbols", "AAAUSDT,XYZ")[0] == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["panel", "--since", "2024-02-02", "--format", "parquet"])
    assert exit_.value.code == 2
    assert "--format parquet writes a file: name it with -o FILE" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_named_and_nothing_is_left(repo, capsys):
    Path("taken").write_text("a file, not a folder", encoding="utf-8")
    before = support.snapshot(".")
    code, out, err = ask(capsys, "stats", "--format", "csv", "-o", "taken/stats.csv")
    assert (code, out) == (1, "")
    assert err.startswith("vision-query: error: cannot write taken/stats.csv: ")
    assert err.count("\n") == 1
    assert support.snapshot(".") == before


def test_a_table_aligns_cjk_names_by_display_width():
    # The bucket's own non-ASCII names: each CJK character takes two columns of a terminal.
    names = sorted(s for s in load_reference()["perpetual"] if not s.isascii())
    assert names == ["币安人生USDT", "我踏马来了USDT", "龙虾USDT"]
    rows = pl.DataFrame({"symbol": ["BTCUSDT", *names], "days": [1, 22, 333, 4444]})
    assert render(rows, "table") == (
        "symbol          days\n"
        "--------------  ----\n"
        "BTCUSDT            1\n"
        "币安人生USDT      22\n"
        "我踏马来了USDT   333\n"
        "龙虾USDT        4444\n"
    )
