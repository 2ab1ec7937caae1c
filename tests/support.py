"""What the in-process tests share: dates, params, dataset rows, stage runs and the bucket.

The bucket is the project's emulator (devtools.emulator) answering ListObjectsV2 in this
process, behind `responses`: each listing request is answered from a `Universe` with the page
the emulator's HTTP server would send, so request counts are exact and no port is opened.
The fixtures built from these helpers are in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import polars as pl
import responses
import yaml
from requests import PreparedRequest

from devtools.emulator import ObjectMeta, Universe
from devtools.emulator.server import listing_body
from pipeline.config import DatasetConfig
from pipeline.dataset.commit import journal_path, staged_commit
from pipeline.dataset.schema import SCHEMA
from pipeline.dataset.store import write_dataset
from pipeline.entry import run_stage
from pipeline.stages import backfill, detect_gaps, discover, update
from pipeline.vision.layout import Layout

ROOT = Path(__file__).resolve().parent.parent

# --- dates ----------------------------------------------------------------------------------

D = dt.date.fromisoformat
ONE_DAY = dt.timedelta(days=1)


def dates(first: str | dt.date, last: str | dt.date) -> list[dt.date]:
    """Every day from `first` through `last`, inclusive (ISO strings or dates)."""
    start = first if isinstance(first, dt.date) else D(first)
    end = last if isinstance(last, dt.date) else D(last)
    return [start + ONE_DAY * i for i in range((end - start).days + 1)]


# --- params ---------------------------------------------------------------------------------

URL = "https://s3.example.test/data.binance.vision"
PARAMS = Path("params.yaml")
# The in-process stage tests: a short history, a fixed as_of, no retries, a few workers.
STAGE_PARAMS: dict[str, dict[str, Any]] = {
    "vision": {"listing_url": URL},
    "dataset": {"start_date": "2023-01-01"},
    "run": {"as_of": "2024-06-01"},
    "update": {"lookback_days": 5},
    "probe": {"workers": 4, "retries": 0, "backoff_s": 0},
}


def build_params(*overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The repository's params.yaml with each override's keys set, section by section.

    `build_params(STAGE_PARAMS, {"run": {"as_of": "2024-06-03"}})`: later overrides win.
    """
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for override in overrides:
        for section, values in override.items():
            params[section] = {**params[section], **values}
    return params


def write_params(directory: Path, *overrides: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write `build_params(*overrides)` as `directory`/params.yaml; its path."""
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(build_params(*overrides), allow_unicode=True), encoding="utf-8")
    return path


def set_params(override: Mapping[str, Mapping[str, Any]], path: Path = PARAMS) -> None:
    """Set the keys of `override` in the params.yaml at `path` (the working directory's)."""
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    for section, values in override.items():
        params[section] = {**params[section], **values}
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")


def set_as_of(day: str) -> None:
    set_params({"run": {"as_of": day}})


# --- stages and what they write -------------------------------------------------------------

STAGES = [
    ("discover", discover.run),
    ("detect_gaps", detect_gaps.run),
    ("backfill", backfill.run),
    ("update", update.run),
]


def run_all() -> list[int]:
    """The four stages `dvc repro` runs before validate, in process; their exit codes."""
    return [run_stage(name, body) for name, body in STAGES]


def dataset() -> pl.DataFrame:
    return pl.read_parquet("data/availability/*.parquet")


def snapshot(root: str = "data") -> dict[str, bytes]:
    """Every file under `root` and its bytes."""
    return {str(p): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


# Files that hold no state: the log files, and the operator lock (the last holder's pid).
STATELESS = ("logs", ".pipeline.lock")


def files_outside_logs() -> dict[Path, bytes]:
    """Every file of the working directory but the stateless ones, and its bytes."""
    return {
        p: p.read_bytes()
        for p in Path().rglob("*")
        if p.is_file() and not set(STATELESS) & set(p.parts)
    }


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --- dataset rows ---------------------------------------------------------------------------

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def row(
    day: str,
    symbol: str,
    available: bool = True,
    *,
    probed: dt.datetime = T0,
    size: int | None = 100,
    etag: str | None = "e",
) -> dict[str, Any]:
    """A dataset row; a file's last_modified is 06:00 UTC of its day."""
    date = D(day)
    return {
        "date": date,
        "symbol": symbol,
        "available": available,
        "file_size_bytes": size if available else None,
        "last_modified": dt.datetime.combine(date, dt.time(6), tzinfo=dt.UTC)
        if available
        else None,
        "etag": etag if available else None,
        "probe_timestamp": probed,
    }


def frame(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=SCHEMA)


def days(symbol: str, first: str, last: str, *, missing: Iterable[str] = ()) -> list[dict]:
    """One row per day from `first` through `last`, without a file on the `missing` days."""
    absent = set(missing)
    return [row(str(day), symbol, str(day) not in absent) for day in dates(first, last)]


def commit_dataset(
    rows: pl.DataFrame, dataset: Path, params: DatasetConfig, *, previous: pl.DataFrame
) -> list[str]:
    """Write `rows` as the dataset, in a commit of its own (as a stage commits its files)."""
    with staged_commit(journal_path(dataset)) as commit:
        return write_dataset(rows, dataset, params, previous=previous, commit=commit)


# --- the bucket -----------------------------------------------------------------------------

LAYOUT = Layout(market="um", data_type="klines", interval="1m")
# The universe's "today": later than every date the tests use, so every file they add is
# listed whatever run.as_of says (a file after as_of - 1 is one the pipeline must not use).
BUCKET_TODAY = dt.date(2030, 1, 1)
XML = {"Content-Type": "application/xml"}


class Bucket:
    """The emulator's universe answering every listing request of `url`, behind `responses`.

    Tests edit the universe (days added or removed, a file uploaded again), break listings
    (`failure` for every request, `failing_symbols` for one folder's) and read the query
    params of every request made (`queries`).
    """

    def __init__(self, url: str = URL) -> None:
        self.url = url.rstrip("/")
        self.universe = Universe(today=BUCKET_TODAY, specs={}).prepare()
        self.queries: list[dict[str, str]] = []
        self.failure: tuple[int, str] | None = None
        """(status, S3 error code) answered to every listing request."""
        self.failing_symbols: set[str] = set()
        """Symbols whose listings answer HTTP 500 InternalError, as one broken folder would."""

    def register(self, mock: responses.RequestsMock) -> None:
        mock.add_callback(responses.GET, self.url + "/", callback=self._answer)

    # Edits of the universe: each makes a new one, indexed before any request sees it.

    def add_days(self, symbol: str, first: str, last: str, *, skip: Iterable[str] = ()) -> None:
        """Files for `symbol` from `first` through `last`, but on the `skip` days."""
        added = set(dates(first, last))
        spec = self.universe.specs.get(symbol)
        spans = [*(spec.spans if spec else ()), (D(first), D(last))]
        missing = (spec.missing - added if spec else set()) | {D(day) for day in skip}
        late = {day: on for day, on in (spec.late if spec else {}).items() if day not in added}
        universe = self.universe.with_symbol(symbol, spans, missing, late)
        for day, on in (spec.reuploaded if spec else {}).items():
            universe = universe.with_reupload(symbol, day, on)
        self.universe = universe.prepare()

    def remove_day(self, symbol: str, day: str) -> None:
        self.universe = self.universe.without_file(symbol, day).prepare()

    def reupload(self, symbol: str, day: str, *, on: str) -> ObjectMeta:
        """Upload `symbol`'s file of `day` again on `on` (other bytes); its new metadata."""
        self.universe = self.universe.with_reupload(symbol, day, on).prepare()
        return self.meta(symbol, day)

    def key(self, symbol: str, day: str) -> str:
        return f"{LAYOUT.stem(symbol)}{day}.zip"

    def meta(self, symbol: str, day: str) -> ObjectMeta:
        """Size, ETag and Last-Modified of `symbol`'s file of `day`, as listed."""
        return self.universe.meta(self.key(symbol, day))

    # What was asked.

    def listed_symbols(self) -> set[str]:
        return {
            LAYOUT.symbol_of(query["prefix"].removesuffix("1m/"))
            for query in self.queries
            if query.get("prefix", "").endswith("/1m/")
        }

    def list_calls(self, symbol: str) -> int:
        prefix = LAYOUT.symbol_prefix(symbol)
        return sum(query.get("prefix") == prefix for query in self.queries)

    def start_dates(self, symbol: str) -> list[dt.date]:
        """The dates `symbol`'s listing requests started at (start-after), sorted.

        One per listing the prober started: a range's first page, and each chunk it lists
        apart; a page reached by continuation token has none.
        """
        prefix = LAYOUT.symbol_prefix(symbol)
        return sorted(
            D(query["start-after"][-len("YYYY-MM-DD") :])
            for query in self.queries
            if query.get("prefix") == prefix and "start-after" in query
        )

    def _answer(self, request: PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        params = parse_qs(urlsplit(request.url).query, keep_blank_values=True)
        query = {name: values[0] for name, values in params.items()}
        self.queries.append(query)
        failure = self.failure
        if any(query.get("prefix") == LAYOUT.symbol_prefix(s) for s in self.failing_symbols):
            failure = (500, "InternalError")
        if failure is not None:
            status, code = failure
            return status, XML, s3_error(code).encode()
        return 200, XML, listing_body(self.universe, params)


def s3_error(code: str, message: str = "") -> str:
    """An S3 error document."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>R1</RequestId></Error>"
    )


# --- a raw HTTP server, for faults no well-behaved server can be asked to make ---------------


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port nothing listens on: bound, never listening, so the kernel refuses connections,
    and kept bound meanwhile, so no other server (another test's, say) can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.contextmanager
def raw_http_server(answer: Callable[[socket.socket, int], None]) -> Iterator[str]:
    """A listener on 127.0.0.1 calling `answer(connection, n)` for its n-th connection (from 1),
    each on a thread of its own; yields the bucket URL. `answer` must end by itself."""
    listener = socket.create_server(("127.0.0.1", 0))
    served = 0

    def serve() -> None:
        nonlocal served
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            served += 1
            threading.Thread(target=answer, args=(conn, served), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/data.binance.vision"
    finally:
        listener.close()
