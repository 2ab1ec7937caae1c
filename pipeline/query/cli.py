"""vision-query: ask the availability and volume datasets from the command line.

Each command is one entry of COMMANDS, registered with @command: its name, a one-line summary,
examples, its arguments and a function from the parsed arguments to a polars DataFrame. The
common options (--format, -o, --dataset, --params), error handling and output are shared.
Where the datasets are is pipeline.query.sources' business: from any folder of the repository,
or a dataset folder alone (`--dataset DIR`, no params.yaml needed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
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
from pipeline.arguments import iso_date, positive_int, symbol_list
from pipeline.atomic import write_failure
from pipeline.config import ConfigError, DatasetConfig
from pipeline.dataset.changes import CHANGE_KINDS, read_changes
from pipeline.errors import PipelineError
from pipeline.query import volume as volumes
from pipeline.query.output import BINARY_FORMATS, FORMATS, render, write
from pipeline.query.sources import Sources, dataset_identity, locate

PROG = "vision-query"
DISTRIBUTION = "vision-availability"
# Exit codes: 1 when the dataset or params.yaml cannot be read, 2 when the question is wrong
# (as argparse does for a malformed one): a date outside the dataset, an unknown symbol.
EXIT_DATASET = 1
EXIT_QUESTION = 2
HELP_WIDTH = 78


class Context:
    """What a command needs: where the datasets are, the availability dataset's identity and
    first and last date, and the volume dataset's partitions (each read once, when asked)."""

    def __init__(self, sources: Sources, identity: DatasetConfig) -> None:
        self.sources = sources
        self.dataset = sources.dataset
        self.identity = identity

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Context:
        sources = locate(
            dataset=args.dataset,
            params=args.params,
            volume=getattr(args, "volume", None),
            cwd=Path.cwd(),
        )
        # A damaged dataset gives no answer.
        query.checked_partitions(sources.dataset, sources.identity, lock=sources.lock)
        return cls(sources, sources.identity or dataset_identity(sources.dataset))

    @property
    def max_gap_days(self) -> int:
        return self.sources.max_gap_days

    @property
    def changes(self) -> Path:
        if self.sources.changes is None:
            raise ConfigError(
                "the change log is found through params.yaml (paths.changes), and there is "
                "none here or above: run inside the repository, or name it with --params"
            )
        return self.sources.changes

    @cached_property
    def volume_files(self) -> list[Path]:
        if self.sources.volume is None:
            raise ConfigError(
                "the volume dataset is found through params.yaml (paths.volume), and there is "
                "none here or above: name its folder with --volume DIR"
            )
        return volumes.checked_volume_partitions(
            self.sources.volume, self.identity, lock=self.sources.lock
        )

    def volume(self) -> pl.LazyFrame:
        return volumes.scan_volume(self.volume_files)

    def check_volume_covers(self, day: dt.date, what: str) -> None:
        volumes.check_covers(volumes.volume_last_date(self.volume_files), day, what)

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


def whole_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


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
    log = read_changes(context.changes).lazy()
    found = pl.col("detected_at").dt.date() >= args.since
    if args.kind:
        found &= pl.col("kind") == args.kind
    if args.symbol:
        found &= pl.col("symbol") == args.symbol
    return log.filter(found).sort("detected_at", "symbol", "date").collect()


VOLUME_OPTION = Argument(
    ("--volume",),
    {
        "type": Path,
        "metavar": "DIR",
        "help": "the volume dataset's folder (default: paths.volume of params.yaml)",
    },
)
PANEL_VALUES = ("available", "listed", *volumes.KLINE_FIGURES)


@command(
    "panel",
    "membership per day, with the day's volume: a long table or a date x symbol matrix",
    details=(
        "One row per date and symbol from --since through --until (default: the last date), "
        "for the symbols listed on at least one day of the range (or those of --symbols), "
        "from each symbol's first file on: available (a file that day), listed (inside a "
        "listing span, or after the last file of a span still listed), and the 1d kline's "
        "figures, null where the symbol had no kline that day (--no-volume: none). listed "
        "uses the whole history (a gap is known once a file follows it): use available, or "
        "`universe`, as a point-in-time signal. --wide: a row per date and a column per "
        f"symbol of --value; before a symbol's first file a flag is false, a figure null. "
        f"{SPAN_RULE}"
    ),
    examples=(
        "panel --since 2024-01-01 --until 2024-03-31 --format parquet -o panel.parquet",
        "panel --since 2024-01-01 --symbols BTCUSDT,ETHUSDT --wide --format csv -o listed.csv",
        "panel --since 2024-01-01 --wide --value quote_volume --format parquet -o qv.parquet",
    ),
    arguments=(
        SINCE,
        Argument(("--until",), {"type": iso_date, "metavar": "DATE", "help": "YYYY-MM-DD"}),
        Argument(
            ("--symbols",),
            {"type": symbol_list, "metavar": "A,B", "help": "only these symbols, comma-separated"},
        ),
        Argument(("--wide",), {"action": "store_true", "help": "a date x symbol matrix"}),
        Argument(
            ("--value",),
            {
                "choices": PANEL_VALUES,
                "default": "available",
                "help": "the matrix's cells with --wide (default: available)",
            },
        ),
        Argument(("--no-volume",), {"action": "store_true", "help": "no volume columns"}),
        VOLUME_OPTION,
    ),
)
def panel(args: argparse.Namespace, context: Context) -> pl.DataFrame:
    since = context.check_date(args.since)
    until = context.check_date(args.until or context.last_date)
    if since > until:
        raise query.QueryError(f"--since {since} is after --until {until}")
    if args.value not in query.MEMBERSHIP_COLUMNS and args.no_volume:
        raise query.QueryError(f"--value {args.value} is a volume column, but --no-volume")
    symbols = args.symbols and [context.check_symbol(name) for name in args.symbols]
    rows = query.history(context.dataset)
    found = query.membership(
        rows, since, until, context.last_date, context.max_gap_days, symbols=symbols
    )
    if not args.no_volume:
        context.check_volume_covers(until, f"a panel through {until}")
        found = volumes.with_volume(found, context.volume())
    long = found.collect()
    return query.wide(long, args.value) if args.wide else long


@command(
    "universe",
    "the point-in-time universe on DATE: the top N listed symbols by trailing volume",
    details=(
        "No look-ahead: the candidates are the symbols with a file on DATE (listed that "
        "day), ranked by what was known before it. volume: the mean daily --by figure over "
        "the --window days before DATE (DATE - window .. DATE - 1), a day without a kline "
        "counting as 0; a candidate with no kline in the window is left out. days_listed: "
        "the days before DATE with a file, over all its listing spans (--min-listed-days "
        "keeps those with at least that many). Ties rank by symbol name."
    ),
    examples=(
        "universe 2024-03-01 --top 20",
        "universe 2024-03-01 --top 50 --by trades --window 30 --min-listed-days 30",
    ),
    arguments=(
        Argument(("date",), {"type": iso_date, "metavar": "DATE", "help": "YYYY-MM-DD"}),
        Argument(("--top",), {"type": positive_int, "metavar": "N", "required": True}),
        Argument(("--by",), {"choices": volumes.MEASURES, "default": "quote_volume"}),
        Argument(
            ("--window",),
            {"type": positive_int, "default": 1, "metavar": "D", "help": "days (default: 1)"},
        ),
        Argument(
            ("--min-listed-days",),
            {"type": whole_number, "default": 0, "metavar": "K", "help": "(default: 0)"},
        ),
        VOLUME_OPTION,
    ),
)
def universe(args: argparse.Namespace, context: Context) -> pl.DataFrame:
    day = context.check_date(args.date)
    context.check_volume_covers(day - dt.timedelta(days=1), f"the universe on {day}")
    return volumes.universe(
        query.history(context.dataset),
        context.volume(),
        day,
        top=args.top,
        by=args.by,
        window=args.window,
        min_listed_days=args.min_listed_days,
    ).collect()


@command(
    "volume",
    "a symbol's daily volume: the figures of its 1d klines, oldest first",
    details="One row per day with a kline; source is the zip it came from.",
    examples=("volume BTCUSDT --since 2024-01-01", "volume BTCUSDT --format csv"),
    arguments=(
        Argument(("symbol",), {"metavar": "SYMBOL", "help": "as in the bucket"}),
        Argument(("--since",), {"type": iso_date, "metavar": "DATE", "help": "YYYY-MM-DD"}),
        VOLUME_OPTION,
    ),
)
def volume(args: argparse.Namespace, context: Context) -> pl.DataFrame:
    symbol = context.check_symbol(args.symbol)
    return volumes.symbol_volume(context.volume(), symbol, args.since).collect()


EXIT_CODES = (
    "exit codes: 0 with an answer (an empty one too), 1 when params.yaml or the dataset cannot "
    "be read, 2 for a malformed question, a date outside the dataset or an unknown symbol"
)


def package_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout never installed
        return "(not installed)"


def add_common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes. They are accepted before the command too
    (`vision-query --dataset DIR stats`): there with their defaults, and after it without
    (argparse.SUPPRESS), so that a subcommand does not overwrite what was given before it."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--format",
        choices=list(FORMATS),
        default=default("table"),
        help="output format (default: table; parquet needs -o)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=default(None),
        metavar="FILE",
        help="write the answer to FILE (atomically) instead of standard output",
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=default(None),
        metavar="DIR",
        help="the availability dataset's folder; no params.yaml needed (default: paths.dataset "
        "of params.yaml)",
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=default(None),
        metavar="PATH",
        help="params.yaml (default: that of the working directory or the nearest folder above)",
    )


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_common_options(common, defaults=False)
    examples = "\n".join(
        f"  {prog} {example}" for c in COMMANDS.values() for example in c.examples[:1]
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Which Binance futures had a daily file on Binance Vision, and when.",
        epilog=f"examples:\n{examples}\n\n{textwrap.fill(EXIT_CODES, HELP_WIDTH)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    add_common_options(parser, defaults=True)
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
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.format in BINARY_FORMATS and args.output is None:
        parser.error(f"--format {args.format} writes a file: name it with -o FILE")
    entry = COMMANDS[args.command]
    try:
        result = entry.run(args, Context.from_args(args))
        if args.output is not None:
            return _write(prog, result, args, record=entry.record)
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


def _write(prog: str, result: pl.DataFrame, args: argparse.Namespace, *, record: bool) -> int:
    try:
        write(result, args.format, args.output, record=record)
    except OSError as exc:  # not the disk or the permissions (WriteError): a folder, say
        return _fail(prog, f"cannot write {args.output}: {exc.strerror}", EXIT_DATASET)
    return 0


def _fail(prog: str, problem: object, code: int) -> int:
    print(f"{prog}: error: {problem}", file=sys.stderr)
    return code
