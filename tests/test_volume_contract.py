"""validate's volume checks: the volume contract, and its coverage of the availability dataset."""

from __future__ import annotations

import polars as pl

from pipeline.config import parse_config
from pipeline.stages.validate import validate
from pipeline.volume.schema import SCHEMA
from tests.support import D, build_params, days, frame

AS_OF = "2024-01-11"
CONFIG = parse_config(
    build_params(
        {"dataset": {"start_date": "2024-01-01"}, "run": {"as_of": AS_OF}},
        {"update": {"lookback_days": 3}},
    ),
    today=D(AS_OF),
)
DAILY = "data/futures/um/daily/klines/{s}/1d/{s}-1d-{d}.zip"
MONTHLY = "data/futures/um/monthly/klines/{s}/1d/{s}-1d-{m}.zip"


def kline(day: str, symbol: str = "BTCUSDT", **changes) -> dict:
    row = {
        "date": D(day),
        "symbol": symbol,
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": 1.5,
        "volume": 3.0,
        "quote_volume": 4.0,
        "trades": 7,
        "taker_buy_volume": 1.0,
        "taker_buy_quote_volume": 2.0,
        "source": DAILY.format(s=symbol, d=day),
        "source_etag": "0" * 32,
        "source_size": 123,
    }
    return {**row, **changes}


def check(volume: list[dict]):
    availability = frame(*days("BTCUSDT", "2024-01-01", "2024-01-10"))
    report = validate(
        availability.lazy(),
        CONFIG,
        ["BTCUSDT"],
        [],
        volume=pl.DataFrame(volume, schema=SCHEMA).lazy(),
    )
    found = {**report.violations, **report.figures}
    return {name: f.count for name, f in found.items() if f.count and name.startswith("volume")}


def full() -> list[dict]:
    return [kline(f"2024-01-{day:02d}") for day in range(1, 11)]


def test_a_volume_row_for_every_available_day_breaks_nothing():
    assert check(full()) == {}


def test_days_older_than_the_window_without_volume_fail_and_recent_ones_are_pending():
    rows = [r for r in full() if r["date"] not in (D("2024-01-02"), D("2024-01-09"))]
    assert check(rows) == {"volume_rows_missing": 1, "volume_pending": 1}


def test_contract_violations_of_the_volume_rows():
    rows = full()
    rows[0] = kline("2024-01-01", high=0.9)  # below the close
    rows[1] = kline("2024-01-02", source=MONTHLY.format(s="BTCUSDT", m="2024-02"))
    rows[2] = kline("2024-01-03", source_etag=None)
    rows.append(kline("2024-01-04", trades=8))  # the key twice
    rows.append(kline("2024-01-11"))  # after as_of - 1, and no availability row
    assert check(rows) == {
        "volume_impossible_klines": 1,
        "volume_sources_mismatched": 1,
        "volume_null_fields": 1,
        "volume_duplicate_keys": 1,
        "volume_dates_out_of_range": 1,
        "volume_without_availability": 1,
    }


def test_a_monthly_source_of_the_rows_month_is_its_own():
    rows = [
        kline(r["date"].isoformat(), source=MONTHLY.format(s="BTCUSDT", m="2024-01"))
        for r in full()
    ]
    assert check(rows) == {}
