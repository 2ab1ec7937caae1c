"""Where one dataset's daily files live in the bucket, and how their keys are named."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pipeline.config import KLINE_DATA_TYPES, Config

DAILY_SUFFIX = ".zip"
DATE_TEXT_LENGTH = len("YYYY-MM-DD")


@dataclass(frozen=True)
class Layout:
    """Daily keys: data/futures/{market}/daily/{data_type}/{S}/{interval}/{S}-{interval}-{date}.zip

    (data types without an interval have no {interval} folder and name the data type instead).
    """

    market: str
    data_type: str
    interval: str

    @classmethod
    def from_config(cls, config: Config) -> Layout:
        ds = config.dataset
        return cls(market=ds.market, data_type=ds.data_type, interval=ds.interval)

    @property
    def root(self) -> str:
        """The folder whose subfolders are the symbols."""
        return f"data/futures/{self.market}/daily/{self.data_type}/"

    def _has_interval(self) -> bool:
        return self.data_type in KLINE_DATA_TYPES

    def symbol_prefix(self, symbol: str) -> str:
        folder = f"{symbol}/{self.interval}/" if self._has_interval() else f"{symbol}/"
        return self.root + folder

    def stem(self, symbol: str) -> str:
        """What every daily key of `symbol` starts with, up to its date."""
        kind = self.interval if self._has_interval() else self.data_type
        return f"{self.symbol_prefix(symbol)}{symbol}-{kind}-"

    def start_after(self, symbol: str, day: dt.date) -> str:
        """A listing start that sorts after every key of earlier days and before `day`'s keys."""
        return self.stem(symbol) + day.isoformat()

    def day_of(self, symbol: str, key: str) -> dt.date | None:
        """The date of a daily zip of `symbol`; None for anything else (checksums, strays)."""
        stem = self.stem(symbol)
        if len(key) != len(stem) + DATE_TEXT_LENGTH + len(DAILY_SUFFIX):
            return None
        if not key.startswith(stem) or not key.endswith(DAILY_SUFFIX):
            return None
        try:
            return dt.date.fromisoformat(key[len(stem) : -len(DAILY_SUFFIX)])
        except ValueError:
            return None

    def symbol_of(self, common_prefix: str) -> str:
        return common_prefix[len(self.root) :].rstrip("/")
