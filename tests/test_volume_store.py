"""The volume store: the availability dataset's layout with the volume schema, round trip,
refusals, the checkpoint of downloaded rows, and the merge of fetched rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline.dataset.commit import journal_path, staged_commit
from pipeline.dataset.store import StoreError
from pipeline.stages.volume import VolumeMergeError, merge, per_day
from pipeline.volume.checkpoint import VolumeCheckpoint
from pipeline.volume.planner import DROPS_SCHEMA, FILES_SCHEMA, FetchPlan
from pipeline.volume.schema import SCHEMA, STORED_SCHEMA
from pipeline.volume.store import (
    VolumeIdentity,
    read_sources,
    read_volume_months,
    volume_files,
    write_volume,
)
from tests.support import D

IDENTITY = VolumeIdentity(market="um", start_date=D("2024-01-01"), contracts="perpetual")


def kline(day: str, symbol: str, *, source: str | None = None, quote: float = 10.0) -> dict:
    return {
        "date": D(day),
        "symbol": symbol,
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": 1.5,
        "volume": 3.0,
        "quote_volume": quote,
        "trades": 7,
        "taker_buy_volume": 1.0,
        "taker_buy_quote_volume": 4.0,
        "source": source or f"d/{symbol}-1d-{day}.zip",
        "source_etag": "0" * 32,
        "source_size": 123,
    }


def rows(*klines: dict) -> pl.DataFrame:
    return pl.DataFrame(list(klines), schema=SCHEMA)


def write(path: Path, new: pl.DataFrame, previous: pl.DataFrame | None = None) -> list[str]:
    with staged_commit(journal_path(path)) as commit:
        return write_volume(
            new,
            path,
            IDENTITY,
            previous=rows() if previous is None else previous,
            commit=commit,
        )


def test_a_round_trip_keeps_every_row_in_its_month_sorted_by_symbol_and_date(tmp_path):
    path = tmp_path / "volume"
    data = rows(
        kline("2024-02-01", "BTCUSDT"),
        kline("2024-01-31", "ETHUSDT"),
        kline("2024-01-30", "BTCUSDT", source="m/BTCUSDT-1d-2024-01.zip"),
    )
    assert write(path, data) == ["2024-01", "2024-02"]
    assert sorted(p.name for p in path.iterdir()) == [
        "2024-01.parquet",
        "2024-02.parquet",
        "_dataset.json",
    ]
    january = pl.read_parquet(path / "2024-01.parquet")
    assert january["symbol"].to_list() == ["BTCUSDT", "ETHUSDT"]
    back = read_volume_months(path, [D("2024-01-01"), D("2024-02-01"), D("2024-03-01")])
    assert back.sort("date", "symbol").equals(data.sort("date", "symbol"))
    assert (
        read_sources(path, IDENTITY)
        .sort("date")
        .equals(data.select(list(STORED_SCHEMA)).sort("date"))
    )
    assert len(volume_files(path, IDENTITY)) == 2
    # Unchanged months are not rewritten.
    assert write(path, data, previous=back) == []


def test_an_empty_store_has_no_sources(tmp_path):
    assert read_sources(tmp_path / "volume", IDENTITY).schema == pl.Schema(STORED_SCHEMA)


def test_a_store_of_other_params_or_schema_is_refused(tmp_path):
    path = tmp_path / "volume"
    write(path, rows(kline("2024-01-02", "BTCUSDT")))
    other = VolumeIdentity(market="cm", start_date=D("2024-01-01"), contracts="perpetual")
    with pytest.raises(StoreError, match=r"holds .*market um.* but params\.yaml asks for"):
        read_sources(path, other)
    rows(kline("2024-01-02", "BTCUSDT")).drop("source_size").write_parquet(path / "2024-01.parquet")
    with pytest.raises(StoreError, match=r"2024-01\.parquet has columns"):
        read_sources(path, IDENTITY)


def test_a_row_in_another_months_partition_is_refused(tmp_path):
    path = tmp_path / "volume"
    write(path, rows(kline("2024-01-02", "BTCUSDT")))
    rows(kline("2024-02-02", "BTCUSDT")).write_parquet(path / "2024-01.parquet")
    with pytest.raises(StoreError, match=r"2024-01.parquet holds rows of another month"):
        read_sources(path, IDENTITY)


def test_merge_replaces_the_days_fetched_and_the_dropped_rows_and_refuses_a_key_twice():
    month = [kline(f"2024-01-0{day}", "BTCUSDT") for day in (2, 3, 4)]
    previous = rows(*month, kline("2024-01-02", "ETHUSDT"))
    fetched = rows(kline("2024-01-02", "BTCUSDT", quote=99.0))
    keep_all = FetchPlan(files=pl.DataFrame(schema=FILES_SCHEMA), drops=drops())
    merged = merge(previous, keep_all, fetched).sort("symbol", "date")
    assert merged["quote_volume"].to_list() == [99.0, 10.0, 10.0, 10.0]
    rebuild = FetchPlan(
        files=pl.DataFrame(schema=FILES_SCHEMA),
        drops=drops(
            ("BTCUSDT", "2024-01-02"), ("BTCUSDT", "2024-01-03"), ("BTCUSDT", "2024-01-04")
        ),
    )
    merged = merge(previous, rebuild, fetched).sort("symbol", "date")
    assert merged.select("symbol", "quote_volume").rows() == [("BTCUSDT", 99.0), ("ETHUSDT", 10.0)]
    twice = rows(kline("2024-01-02", "BTCUSDT", source="m/BTCUSDT-1d-2024-01.zip"))
    with pytest.raises(VolumeMergeError, match="BTCUSDT 2024-01-02 comes from two files"):
        merge(previous, keep_all, pl.concat([fetched, twice]))


def drops(*keys: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        [(symbol, D(day)) for symbol, day in keys], schema=DROPS_SCHEMA, orient="row"
    )


def test_per_day_sums_quote_volume_and_the_top_symbols_share():
    data = [kline("2024-01-02", f"S{n:02d}USDT", quote=float(n + 1)) for n in range(12)]
    frame = per_day(rows(*data, kline("2024-01-03", "BTCUSDT", quote=0.0)).lazy())
    assert frame.rows() == [
        (D("2024-01-02"), 78.0, round((78 - 1 - 2) / 78, 6), 12),
        (D("2024-01-03"), 0.0, None, 1),
    ]


def test_the_checkpoint_keeps_batches_for_its_scope_only(tmp_path):
    volume = tmp_path / "data" / "volume"
    checkpoint = VolumeCheckpoint.beside(volume, IDENTITY.identity())
    assert checkpoint.directory == tmp_path / "data" / ".volume.checkpoint"
    assert checkpoint.load().is_empty()
    checkpoint.save(rows(kline("2024-01-02", "BTCUSDT")))
    checkpoint.save(rows(kline("2024-01-03", "BTCUSDT")))
    assert checkpoint.load()["date"].sort().to_list() == [D("2024-01-02"), D("2024-01-03")]
    other = VolumeCheckpoint.beside(volume, {**IDENTITY.identity(), "market": "cm"})
    assert other.load().is_empty()
    assert not checkpoint.directory.exists()  # discarded: made for another dataset
