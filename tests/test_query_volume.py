"""The volume questions of vision-query (issue 14): the point-in-time universe (no look-ahead),
a symbol's daily rows, the panel's volume columns; on hand-built datasets, exact answers.

The volume dataset is written here in the agreed layout (YYYY-MM.parquet of
pipeline.volume.schema, plus _dataset.json), as the volume stage will write it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import DatasetConfig, load_config
from pipeline.dataset.commit import journal_path, staged_commit
from pipeline.dataset.schema import empty
from pipeline.query import cli
from pipeline.query import volume as volumes
from pipeline.volume import store
from pipeline.volume.schema import SCHEMA as VOLUME_SCHEMA
from pipeline.volume.store import VolumeIdentity
from tests import support
from tests.query_support import answer, ask
from tests.support import D, commit_dataset, dates, frame, write_params


def kline(day: str | dt.date, symbol: str, quote_volume: float, trades: int = 10) -> dict:
    """A day's kline row of the volume schema; the other figures follow from quote_volume."""
    date = day if isinstance(day, dt.date) else D(day)
    key = f"data/futures/um/daily/klines/{symbol}/1d/{symbol}-1d-{date}.zip"
    return {
        "date": date,
        "symbol": symbol,
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": 1.5,
        "volume": quote_volume / 1.5,
        "quote_volume": float(quote_volume),
        "trades": trades,
        "taker_buy_volume": quote_volume / 3.0,
        "taker_buy_quote_volume": quote_volume / 2.0,
        "source": key,
        "source_etag": "0" * 32,
        "source_size": 300,
    }


def klines(symbol: str, first: str, last: str, quote_volume: float, **kw) -> list[dict]:
    return [kline(day, symbol, quote_volume, **kw) for day in dates(first, last)]


def write_volume(rows: list[dict], directory: Path, dataset: DatasetConfig) -> None:
    """The volume dataset of `rows` for the availability dataset of `dataset`, committed by
    the volume store as the volume stage commits it."""
    identity = VolumeIdentity(dataset.market, dataset.start_date, dataset.contracts)
    with staged_commit(journal_path(directory)) as commit:
        store.write_volume(
            pl.DataFrame(rows, schema=VOLUME_SCHEMA),
            directory,
            identity,
            previous=pl.DataFrame(schema=VOLUME_SCHEMA),
            commit=commit,
        )


X = "2024-02-05"  # the day the universe is asked for
LOBSTER = "龙虾USDT"  # a real name of the bucket (devtools/emulator/reference_symbols.json)

AVAILABILITY = [
    *support.days("AAAUSDT", "2024-01-25", "2024-02-10"),
    *support.days("BBBUSDT", "2024-01-25", "2024-02-10"),
    # No file on X: not in X's universe, whatever its volume before.
    *support.days("CCCUSDT", "2024-01-25", "2024-02-10", missing=(X,)),
    # First file on X: listed on X, but no kline before it to rank by.
    *support.days("DDDUSDT", X, "2024-02-10"),
    *support.days(LOBSTER, "2024-02-03", "2024-02-10"),
]
VOLUME = [
    *klines("AAAUSDT", "2024-01-25", "2024-02-10", 100.0, trades=50),
    *klines("BBBUSDT", "2024-01-25", "2024-02-04", 300.0, trades=20),
    # On X and later, BBB trades a billion a day: ranking by it would be look-ahead.
    *klines("BBBUSDT", X, "2024-02-10", 1e9, trades=10**6),
    *klines("CCCUSDT", "2024-01-25", "2024-02-04", 1e6),
    *klines("CCCUSDT", "2024-02-06", "2024-02-10", 1e6),
    *klines("DDDUSDT", X, "2024-02-10", 5e8),
    *klines(LOBSTER, "2024-02-03", "2024-02-10", 200.0, trades=90),
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout with params.yaml, the availability dataset and the volume dataset."""
    config = load_config(write_params(tmp_path))
    commit_dataset(
        frame(*AVAILABILITY), tmp_path / config.paths.dataset, config.dataset, previous=empty()
    )
    write_volume(VOLUME, tmp_path / config.paths.volume, config.dataset)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def ask_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict]:
    return json.loads(answer(capsys, *argv, "--format", "json"))


def ranked(*rows: tuple[str, float, int]) -> list[dict]:
    return [
        {"rank": rank, "symbol": symbol, "volume": volume, "days_listed": listed}
        for rank, (symbol, volume, listed) in enumerate(rows, start=1)
    ]


def test_universe_ranks_the_symbols_listed_on_the_day_by_the_day_before(project, capsys):
    # CCC (no file on X) and DDD (no kline before X) are left out; BBB's billions on X too.
    assert ask_json(capsys, "universe", X, "--top", "10") == ranked(
        ("BBBUSDT", 300.0, 11), (LOBSTER, 200.0, 2), ("AAAUSDT", 100.0, 11)
    )
    assert answer(capsys, "universe", X, "--top", "2") == (
        "rank  symbol    volume  days_listed\n"
        "----  --------  ------  -----------\n"
        "   1  BBBUSDT    300.0           11\n"
        f"   2  {LOBSTER}   200.0            2\n"
    )


def test_universe_over_a_window_counts_a_day_without_a_kline_as_zero(project, capsys):
    # The lobster's first kline is on 02-03: (0 + 200 + 200) / 3 over 02-02..02-04.
    found = ask_json(capsys, "universe", X, "--top", "3", "--window", "3")
    assert [row.pop("volume") for row in found] == pytest.approx([300.0, 400.0 / 3, 100.0])
    assert found == [
        {k: v for k, v in row.items() if k != "volume"}
        for row in ranked(("BBBUSDT", 0, 11), (LOBSTER, 0, 2), ("AAAUSDT", 0, 11))
    ]


def test_universe_by_trades_and_min_listed_days(project, capsys):
    assert ask_json(capsys, "universe", X, "--top", "5", "--by", "trades") == ranked(
        (LOBSTER, 90.0, 2), ("AAAUSDT", 50.0, 11), ("BBBUSDT", 20.0, 11)
    )
    found = ask_json(capsys, "universe", X, "--top", "5", "--min-listed-days", "3")
    assert [row["symbol"] for row in found] == ["BBBUSDT", "AAAUSDT"]


def test_universe_on_x_ignores_everything_from_x_on(project):
    """No look-ahead: volume on X or later, and availability after X, change nothing on X."""
    availability = frame(*AVAILABILITY).lazy()
    volume = pl.DataFrame(VOLUME, schema=VOLUME_SCHEMA).lazy()
    day = D(X)

    def universe(avail: pl.LazyFrame, vol: pl.LazyFrame, **options) -> pl.DataFrame:
        return volumes.universe(avail, vol, day, top=10, **options).collect()

    later = pl.col("date") >= day
    inflated = volume.with_columns(
        quote_volume=pl.when(later).then(pl.col("quote_volume") * 1e6).otherwise("quote_volume"),
        trades=pl.when(later).then(pl.col("trades") * 1000).otherwise("trades"),
    )
    # A symbol that appears from X on, with volume and files: neither may reach X's universe.
    newcomer = pl.DataFrame(klines("NEWUSDT", X, "2024-02-10", 1e12), schema=VOLUME_SCHEMA)
    new_files = frame(*support.days("NEWUSDT", "2024-02-06", "2024-02-10"))
    # After X, AAA has no file and CCC has files every day.
    rewritten = availability.with_columns(
        available=pl.when((pl.col("date") > day) & (pl.col("symbol") == "AAAUSDT"))
        .then(False)
        .when(pl.col("symbol") == "CCCUSDT")
        .then(True)
        .otherwise("available")
    ).filter(~((pl.col("symbol") == "CCCUSDT") & (pl.col("date") == day)))
    changed_volume = pl.concat([inflated, newcomer.lazy()])
    changed_availability = pl.concat([rewritten, new_files.lazy()])
    for options in ({}, {"window": 5}, {"by": "trades", "window": 3}):
        before = universe(availability, volume, **options)
        assert before.height == 3, options  # AAA, BBB and the lobster
        assert universe(availability, changed_volume, **options).equals(before), options
        assert universe(changed_availability, changed_volume, **options).equals(before), options


def test_a_symbol_without_a_file_on_x_is_excluded_whatever_its_volume(project):
    found = volumes.universe(
        frame(*AVAILABILITY).lazy(),
        pl.DataFrame(VOLUME, schema=VOLUME_SCHEMA).lazy(),
        D(X),
        top=10,
        window=10,
    ).collect()
    assert "CCCUSDT" not in found["symbol"].to_list()  # a million a day, ten times BBB's
    # The day after, CCC has a file again and is back, ranked by its 02-04 kline (02-05 had
    # none); its days_listed leave out X, a day without a file.
    after = volumes.universe(
        frame(*AVAILABILITY).lazy(),
        pl.DataFrame(VOLUME, schema=VOLUME_SCHEMA).lazy(),
        D("2024-02-06"),
        top=3,
        window=2,
    ).collect()
    assert after.rows() == [
        (1, "BBBUSDT", (300 + 1e9) / 2, 12),
        (2, "DDDUSDT", 5e8 / 2, 1),
        (3, "CCCUSDT", 1e6 / 2, 11),
    ]


def test_a_universe_needing_volume_after_the_volume_dataset_is_refused(project, capsys):
    # The volume dataset ends on 02-10; the availability too: a universe on 02-11 is outside
    # it, and one whose volume ends on 02-10 is answered.
    assert ask(capsys, "universe", "2024-02-10", "--top", "1")[0] == 0
    february = Path("data/volume/2024-02.parquet")
    rows = pl.read_parquet(february)
    rows.filter(pl.col("date") <= D("2024-02-07")).write_parquet(february)
    assert ask(capsys, "universe", "2024-02-10", "--top", "1") == (
        1,
        "",
        "vision-query: error: the volume dataset runs to 2024-02-07, but the universe on "
        "2024-02-10 needs volume through 2024-02-09: run the pipeline (make update) or ask "
        "about an earlier date\n",
    )


def test_volume_of_a_symbol_since_a_date(project, capsys):
    assert answer(capsys, "volume", LOBSTER, "--since", "2024-02-09", "--format", "csv") == (
        "date,symbol,open,high,low,close,volume,quote_volume,trades,taker_buy_volume,"
        "taker_buy_quote_volume,source\n"
        + "".join(
            f"{day},{LOBSTER},1.0,2.0,0.5,1.5,{200 / 1.5},200.0,90,{200 / 3},100.0,"
            f"data/futures/um/daily/klines/{LOBSTER}/1d/{LOBSTER}-1d-{day}.zip\n"
            for day in ("2024-02-09", "2024-02-10")
        )
    )
    assert len(ask_json(capsys, "volume", "AAAUSDT")) == 17
    code, out, err = ask(capsys, "volume", "aaausdt")
    assert (code, out) == (2, "")
    assert err.startswith("vision-query: error: unknown symbol aaausdt; did you mean AAAUSDT")


def test_panel_has_the_days_kline_figures_null_where_none(project, capsys):
    found = ask_json(
        capsys, "panel", "--since", "2024-02-04", "--until", X, "--symbols", "CCCUSDT,DDDUSDT"
    )
    ccc_x = {name: None for name in volumes.KLINE_FIGURES}
    assert found == [
        {"date": "2024-02-04", "symbol": "CCCUSDT", "available": True, "listed": True}
        | {k: v for k, v in kline("2024-02-04", "CCCUSDT", 1e6).items() if k in ccc_x},
        {"date": X, "symbol": "CCCUSDT", "available": False, "listed": True} | ccc_x,
        {"date": X, "symbol": "DDDUSDT", "available": True, "listed": True}
        | {k: v for k, v in kline(X, "DDDUSDT", 5e8).items() if k in ccc_x},
    ]
    assert answer(
        capsys, "panel", "--since", "2024-02-04", "--until", X, "--no-volume", "--format", "csv"
    ) == (
        "date,symbol,available,listed\n"
        "2024-02-04,AAAUSDT,true,true\n"
        "2024-02-04,BBBUSDT,true,true\n"
        "2024-02-04,CCCUSDT,true,true\n"
        f"2024-02-04,{LOBSTER},true,true\n"
        "2024-02-05,AAAUSDT,true,true\n"
        "2024-02-05,BBBUSDT,true,true\n"
        "2024-02-05,CCCUSDT,false,true\n"
        "2024-02-05,DDDUSDT,true,true\n"
        f"2024-02-05,{LOBSTER},true,true\n"
    )


def test_a_wide_panel_of_quote_volume_as_parquet(project, capsys, tmp_path):
    out = tmp_path / "out" / "qv.parquet"
    argv = ("panel", "--since", "2024-02-04", "--until", X, "--wide", "--value", "quote_volume")
    assert answer(capsys, *argv, "--format", "parquet", "-o", str(out)) == ""
    expected = pl.DataFrame(
        {
            "date": [D("2024-02-04"), D(X)],
            "AAAUSDT": [100.0, 100.0],
            "BBBUSDT": [300.0, 1e9],
            "CCCUSDT": [1e6, None],
            "DDDUSDT": [None, 5e8],
            LOBSTER: [200.0, 200.0],
        }
    )
    assert pl.read_parquet(out).equals(expected)


def test_a_partition_of_another_schema_is_refused_in_one_line(project, capsys):
    february = Path("data/volume/2024-02.parquet")
    pl.read_parquet(february).drop("trades").with_columns(
        pl.col("quote_volume").cast(pl.String)
    ).write_parquet(february)
    before = support.snapshot()
    code, out, err = ask(capsys, "universe", X, "--top", "3")
    assert (code, out) == (1, "")
    assert err.startswith(
        f"vision-query: error: {february} has columns date:Date, symbol:String, open:Float64"
    )
    assert err.endswith(
        "expected "
        + ", ".join(f"{k}:{v}" for k, v in VOLUME_SCHEMA.items())
        + ": restore it with `dvc checkout` or `dvc pull`\n"
    )
    assert ask(capsys, "panel", "--since", X)[0] == 1
    assert support.snapshot() == before
    # Without volume, the panel needs none.
    assert ask(capsys, "panel", "--since", X, "--no-volume")[0] == 0


def test_no_volume_dataset_and_another_markets_one(project, capsys):
    Path("data/volume").rename("elsewhere")
    assert ask(capsys, "volume", "AAAUSDT") == (
        1,
        "",
        "vision-query: error: no volume partitions under data/volume: run the pipeline "
        "(make update) or `dvc pull`, or name the volume dataset's folder with --volume DIR\n",
    )
    assert len(ask_json(capsys, "volume", "AAAUSDT", "--volume", "elsewhere")) == 17
    cm = dataclasses.replace(load_config("params.yaml").dataset, market="cm")
    write_volume(VOLUME, Path("cm-volume"), cm)
    assert ask(capsys, "volume", "AAAUSDT", "--volume", "cm-volume") == (
        1,
        "",
        "vision-query: error: cm-volume is not the volume of this availability dataset: "
        "market cm (not um): name the matching one with --volume DIR\n",
    )


def test_universe_arguments_are_checked(project, capsys):
    assert ask(capsys, "universe", "2024-02-11", "--top", "3") == (
        2,
        "",
        "vision-query: error: 2024-02-11 is outside the dataset, which runs from 2024-01-25 "
        "to 2024-02-10\n",
    )
    for bad in (("--top", "0"), ("--top", "3", "--window", "0"), ("--top", "3", "--by", "x")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["universe", X, *bad])
        assert exit_.value.code == 2
    capsys.readouterr()
