"""Where one dataset's daily files live in the bucket, and how their keys are named."""

from __future__ import annotations

import datetime as dt
import re
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


CHECKSUM_SUFFIX = ".CHECKSUM"
_MONTH = re.compile(r"\d{4}-\d{2}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def checksum_key(key: str) -> str:
    """The key of the .CHECKSUM file Binance publishes beside `key`."""
    return key + CHECKSUM_SUFFIX


def file_name(key: str) -> str:
    """The last part of a key: the name a zip's CSV member is named after."""
    return key.rsplit("/", 1)[-1]


def month_start(day: dt.date) -> dt.date:
    """The first day of `day`'s month: how a month is named here."""
    return day.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    """The first day of the month after `month`'s."""
    return (month_start(month) + dt.timedelta(days=32)).replace(day=1)


@dataclass(frozen=True)
class KlineLayout:
    """Where one market's kline files of one interval live, monthly and daily:

    data/futures/{market}/monthly/klines/{S}/{interval}/{S}-{interval}-{YYYY-MM}.zip
    data/futures/{market}/daily/klines/{S}/{interval}/{S}-{interval}-{YYYY-MM-DD}.zip

    each beside its .CHECKSUM. A month is named by its first day; a method given any day of
    a month means that month.
    """

    market: str
    interval: str

    @classmethod
    def from_config(cls, config: Config, interval: str) -> KlineLayout:
        """The dataset's market, with `interval` (the volume params' interval, "1d")."""
        return cls(market=config.dataset.market, interval=interval)

    @property
    def daily(self) -> Layout:
        """The daily files, as the availability dataset's Layout names them."""
        return Layout(market=self.market, data_type="klines", interval=self.interval)

    @property
    def monthly_root(self) -> str:
        return f"data/futures/{self.market}/monthly/klines/"

    def monthly_prefix(self, symbol: str) -> str:
        return f"{self.monthly_root}{symbol}/{self.interval}/"

    def daily_prefix(self, symbol: str) -> str:
        return self.daily.symbol_prefix(symbol)

    def monthly_key(self, symbol: str, month: dt.date) -> str:
        return f"{self._monthly_stem(symbol)}{month:%Y-%m}{DAILY_SUFFIX}"

    def daily_key(self, symbol: str, day: dt.date) -> str:
        return f"{self.daily.stem(symbol)}{day.isoformat()}{DAILY_SUFFIX}"

    def month_of(self, symbol: str, key: str) -> dt.date | None:
        """The month (its first day) of a monthly zip of `symbol`; None for any other key."""
        text = _period_text(key, self._monthly_stem(symbol), _MONTH)
        return None if text is None else _date_or_none(text + "-01")

    def day_of(self, symbol: str, key: str) -> dt.date | None:
        """The day of a daily zip of `symbol`; None for any other key (checksums, strays)."""
        text = _period_text(key, self.daily.stem(symbol), _DAY)
        return None if text is None else _date_or_none(text)

    def after_month(self, symbol: str, month: dt.date) -> str:
        """A listing start-after past every monthly key of `month` and earlier months (their
        .CHECKSUMs included), before the next month's."""
        return f"{self._monthly_stem(symbol)}{next_month(month):%Y-%m}"

    def after_day(self, symbol: str, day: dt.date) -> str:
        """A listing start-after past every daily key of `day` and earlier days (their
        .CHECKSUMs included), before the next day's."""
        return self.daily.start_after(symbol, day + dt.timedelta(days=1))

    def _monthly_stem(self, symbol: str) -> str:
        return f"{self.monthly_prefix(symbol)}{symbol}-{self.interval}-"


def _period_text(key: str, stem: str, period: re.Pattern[str]) -> str | None:
    """The period text between `stem` and ".zip" when `key` is exactly such a zip's key."""
    if not key.startswith(stem) or not key.endswith(DAILY_SUFFIX):
        return None
    text = key[len(stem) : -len(DAILY_SUFFIX)]
    return text if period.fullmatch(text) else None


def _date_or_none(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:  # 2024-13, 2024-02-30
        return None
