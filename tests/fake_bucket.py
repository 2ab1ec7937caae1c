"""A minimal in-memory bucket behind `responses`: ListObjectsV2 over a sorted key list.

Unit tests use it to count requests exactly; end-to-end tests use the real emulator over HTTP.
"""

from __future__ import annotations

import bisect
import datetime as dt
from urllib.parse import parse_qs, urlsplit

import responses

from pipeline.vision.layout import Layout
from tests.s3xml import listing

LAYOUT = Layout(market="um", data_type="klines", interval="1m")


class FakeBucket:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.keys: list[str] = []
        self.queries: list[dict[str, str]] = []
        self.failure: tuple[int, str] | None = None
        # Symbols whose listings fail (HTTP 500), as one broken folder would.
        self.failing_symbols: set[str] = set()
        self.sizes: dict[str, int] = {}  # keys re-uploaded with another size

    def add_days(self, symbol: str, first: str, last: str, *, skip: tuple[str, ...] = ()) -> None:
        day, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
        while day <= end:
            if day.isoformat() not in skip:
                name = LAYOUT.symbol_prefix(symbol) + f"{symbol}-1m-{day}.zip"
                self.keys += [name, name + ".CHECKSUM"]
            day += dt.timedelta(days=1)
        self.keys.sort()

    def key(self, symbol: str, day: str) -> str:
        return LAYOUT.symbol_prefix(symbol) + f"{symbol}-1m-{day}.zip"

    def remove_day(self, symbol: str, day: str) -> None:
        self.keys.remove(self.key(symbol, day))
        self.keys.remove(self.key(symbol, day) + ".CHECKSUM")

    def register(self, mock: responses.RequestsMock | None = None) -> None:
        (mock or responses).add_callback(responses.GET, self.url + "/", callback=self._answer)

    def listed_symbols(self) -> set[str]:
        return {
            LAYOUT.symbol_of(query["prefix"].removesuffix("1m/"))
            for query in self.queries
            if query.get("prefix", "").endswith("/1m/")
        }

    def list_calls(self, symbol: str) -> int:
        prefix = LAYOUT.symbol_prefix(symbol)
        return sum(query.get("prefix") == prefix for query in self.queries)

    def _answer(self, request) -> tuple[int, dict[str, str], str]:
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        self.queries.append(query)
        failure = self.failure
        if any(query.get("prefix") == LAYOUT.symbol_prefix(s) for s in self.failing_symbols):
            failure = (500, "InternalError")
        if failure:
            status, code = failure
            return (
                status,
                {"Content-Type": "application/xml"},
                f"<Error><Code>{code}</Code></Error>",
            )
        prefix = query.get("prefix", "")
        after = query.get("continuation-token") or query.get("start-after") or ""
        if query.get("delimiter") == "/":
            folders = sorted(
                {
                    prefix + k[len(prefix) :].split("/")[0] + "/"
                    for k in self.keys
                    if k.startswith(prefix)
                }
            )
            return (
                200,
                {"Content-Type": "application/xml"},
                listing(common_prefixes=folders, prefix=prefix),
            )
        start = bisect.bisect_right(self.keys, after)
        matching = [k for k in self.keys[start : start + 1001] if k.startswith(prefix)]
        page, more = matching[:1000], len(matching) > 1000
        token = page[-1] if more else None
        body = listing(page, prefix=prefix, truncated=more, token=token, sizes=self.sizes)
        return 200, {"Content-Type": "application/xml"}, body
