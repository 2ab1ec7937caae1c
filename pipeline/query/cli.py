"""vision-query: ask the availability dataset from the command line.

Each command is one entry of COMMANDS, registered with @command: its name, a one-line summary,
examples, its arguments and a function from the parsed arguments to a polars DataFrame. The
common options (--format, --dataset, --params), error handling and output are shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

from pipeline import query
from pipeline.arguments import iso_date
from pipeline.atomic import write_failure
from pipeline.config import Config, load_config
from pipeline.dataset.changes import CHANGE_KINDS, read_changes
from pipeline.errors import PipelineError
from pipeline.query.output import FORMATS, render

PROG = "vision-query"
# Exit codes: 1 when the dataset or params.yaml cannot be read, 2 when the question is wrong
# (as argparse does for a malformed one): a date outside the dataset, an unknown symbol.
EXIT_DATASET = 1
EXIT_QUESTION = 2
HELP_WIDTH = 78


class Context:
    """What a command needs: the params, the dataset, and its first and last date (read once)."""

    def __init__(self, config: Config, dataset: Path) -> None:
        self.config = config
        self.dataset = dataset

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Context:
        config = load_config(args.params)
        dataset = args.dataset or config.paths.dataset
        query.checked_partitions(dataset, config.dataset)  # a damaged dataset gives no answer
        return cls(config, dataset)

    @property
    def max_gap_days(self) -> int:
        return self.config.spans.max_gap_days

    @cached_property
    def dates(self) -> tuple[dt.date, dt.date]:
        return query.date_range(self.dataset)

    @property
    def last_date(self) -> dt.date:
        return self.dates[1]

    def check_date(self, day: dt.date) -> dt.date:
        query.check_date(day, *self.dates)
        return day

    def check_symbol(self, symbol: str) -> str:
        query.check_symbol(symbol, query.symbols(self.dataset))
        return symbol


Run = Callable[[argparse.Namespace, Context], pl.DataFrame]


@dataclass(frozen=True)
class Argument:
    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    details: str
    examples: tuple[str, ...]
    arguments: tuple[Argument, ...]
    run: Run
    record: bool
    """The result is one row of named figures, shown as name/value lines in a table."""


COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    summary: str,
    *,
    details: str = "",
    examples: Sequence[str],
    arguments: Sequence[Argument] = (),
    record: bool = False,
) -> Callable[[Run], Run]:
    """Register the decorated function as the command `name`."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(
            name, summary, details, tuple(examples), tuple(arguments), run, record
        )
        return run

    return register


SPAN_RULE = (
    "A listing span runs from a day with a file to a day with a file; gaps of at most "
    "spans.max_gap_days days (params.yaml) are missing days inside it, longer ones end it. "
    "The last span is listed while its last file is at most that many days before the "
    "dataset's last date; every other span is delisted."
)


SINCE = Argument(
    ("--since",), {"type": iso_date, "metavar": "DATE", "required": True, "help": "YYYY-MM-DD"}
)
SYMBOL_OPTION = Argument(("--symbol",), {"metavar": "SYMBOL", "help": "only this symbol"})


@command(
    "snapshot",
    "the symbols with a daily file on DATE, with its size and upload time",
    details="The survivorship-bias-free universe of that day. Reads that month's partition only.",
    examples=("snapshot 2024-03-01", "snapshot 2024-03-01 --format csv > universe.csv"),
    arguments=(Argument(("date",), {"type": iso_date, "metavar": "DATE", "help": "YYYY-MM-DD"}),),
)
def snapshot(args: argparse.Namespace, context: Context) -> pl.DataFrame:
    return query.snapshot(context.dataset, context.check_date(args.date)).collect()


@command(
    "timeline",
    "a symbol's listing spans: first and last file, days with and without one, status",
    details=f"{SPAN_RULE} `missing_dates` lists the days without a file inside each span.",
    examples=("timeline BTCUSDT", "timeline BTCUSDT --format json"),
    arguments=(Argument(("symbol",), {"metavar": "SYMBOL", "help": "as in the bucket"}),),
)
def timeline(args: argparse.Namespace, context: Context) -> pl.DataFrame:
    rows = query.history(context.dataset, symbol=context.check_symbol(args.symbol))
    return query.symbol_timeline(rows, context.last_date, context.max_gap_days).collect()


@command(
    "listings",
    "listings, relistings and delistings since a date",
    details=(
        f"{SPAN_RULE} `date` is a span's first file (listed, or relisted after an earlier "
        "span) or its last file (delisted)."
    ),
    examples=("listings --since 2024-01-01", "listings --since 2024-01-01 --format csv"),
    arguments=(SINCE,),
)
def listings(args: argparse.Namespace, context: Context) -> pl.DataFrame:
    since = context.check_date(args.since)
    rows = query.history(context.dataset)
    return query.listings(rows, since, context.last_date, context.max_gap_days).collect()


@command(
    "gaps",
    "stretches of days without a file inside listing spans",
    details=SPAN_RULE,
    examples=("gaps", "gaps --symbol BTCUSDT --format json"),
    arguments=(SYMBOL_OPTION,),
)
def gaps(args: argparse.Namespace, context: Context) -> pl.DataFrame:
    symbol = args.symbol and context.check_symbol(args.symbol)
    rows = query.history(context.dataset, symbol=symbol)
    return query.gaps(rows, context.last_date, context.max_gap_days).collect()


@command(
    "stats",
    "figures about the whole dataset",
    details=(
        "symbols: with any row; listed_symbols / delisted_symbols: whose last span is listed "
        "or delisted; available_on_last_date: symbols with a file on last_date; "
        "available_share: the share of rows with a file; listing_spans, relistings (spans "
        f"after a symbol's first); missing_days_in_spans. {SPAN_RULE}"
    ),
    examples=("stats", "stats --format json"),
    record=True,
)
def stats(args: argparse.Namespace, context: Context) -> pl.DataFrame:
    rows = query.history(context.dataset)
    return query.stats(rows, context.last_date, context.max_gap_days).collect()


@command(
    "changes",
    "files that appeared, were removed or were re-uploaded after the dataset recorded them",
    details=(
        "From the append-only change log (paths.changes): one row per change, with the old and "
        "new size, ETag and Last-Modified. --since selects by detected_at, the day the change "
        "was found; the symbol and date are the file's."
    ),
    examples=("changes --since 2024-06-01", "changes --since 2024-06-01 --kind removed"),
    arguments=(
        SINCE,
        Argument(("--kind",), {"choices": CHANGE_KINDS, "help": "only changes of this kind"}),
        SYMBOL_OPTION,
    ),
)
def changes(args: argparse.Namespace, context: Context) -> pl.DataFrame:
    log = read_changes(context.config.paths.changes).lazy()
    found = pl.col("detected_at").dt.date() >= args.since
    if args.kind:
        found &= pl.col("kind") == args.kind
    if args.symbol:
        found &= pl.col("symbol") == args.symbol
    return log.filter(found).sort("detected_at", "symbol", "date").collect()


EXIT_CODES = (
    "exit codes: 0 with an answer (an empty one too), 1 when params.yaml or the dataset cannot "
    "be read, 2 for a malformed question, a date outside the dataset or an unknown symbol"
)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--format", choices=list(FORMATS), default="table", help="output format (default: table)"
    )
    common.add_argument(
        "--dataset",
        type=Path,
        metavar="PATH",
        help="the partitions' directory (default: paths.dataset of params.yaml)",
    )
    common.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        metavar="PATH",
        help="params.yaml to read paths.dataset and spans.max_gap_days from",
    )
    examples = "\n".join(
        f"  {prog} {example}" for c in COMMANDS.values() for example in c.examples[:1]
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Which Binance futures had a daily file on Binance Vision, and when.",
        epilog=f"examples:\n{examples}\n\n{textwrap.fill(EXIT_CODES, HELP_WIDTH)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in COMMANDS.values():
        sub = commands.add_parser(
            entry.name,
            parents=[common],
            help=entry.summary,
            description=textwrap.fill(
                f"{entry.summary[:1].upper()}{entry.summary[1:]}. {entry.details}", HELP_WIDTH
            ),
            epilog="examples:\n" + "\n".join(f"  {prog} {e}" for e in entry.examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for argument in entry.arguments:
            sub.add_argument(*argument.flags, **argument.options)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    entry = COMMANDS[args.command]
    try:
        result = entry.run(args, Context.from_args(args))
    except query.QueryError as exc:
        return _fail(prog, exc, EXIT_QUESTION)
    except PipelineError as exc:
        return _fail(prog, exc, EXIT_DATASET)
    except OSError as exc:  # a file it may not read, as the stages name it
        failure = write_failure(exc, verb="read")
        return _fail(prog, failure or f"cannot read {exc.filename}: {exc.strerror}", EXIT_DATASET)
    except pl.exceptions.PolarsError as exc:  # a damaged partition, as polars words it
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return _fail(
            prog,
            f"cannot read the dataset ({type(exc).__name__}: {first_line}): "
            "restore it with `dvc checkout` or `dvc pull`",
            EXIT_DATASET,
        )
    try:
        sys.stdout.write(render(result, args.format, record=entry.record))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error. Point stdout at /dev/null so
        # that Python's own flush at exit does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _fail(prog: str, problem: object, code: int) -> int:
    print(f"{prog}: error: {problem}", file=sys.stderr)
    return code
