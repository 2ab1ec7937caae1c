"""Command line of the emulator: `serve` a universe file, or `generate` one."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path

from devtools.emulator.generate import (
    DEFAULT_START,
    REFERENCE_PATH,
    generate_universe,
    load_reference,
)
from devtools.emulator.server import PREFIX_FAULTS, Emulator, Knobs
from devtools.emulator.universe import Universe


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.emulator",
        description="An offline, S3-compatible emulator of the Binance Vision bucket.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve a universe over HTTP until SIGTERM or SIGINT",
        description="Serve a universe file on 127.0.0.1 until SIGTERM or SIGINT (exit 0).",
    )
    serve.add_argument("--universe", type=Path, required=True, help="universe JSON file")
    serve.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    serve.add_argument(
        "--port-file", type=Path, help="write the bound port here, atomically, once listening"
    )
    serve.add_argument("--latency-ms", type=float, default=0.0, help="delay of every request")
    serve.add_argument(
        "--slowdown-rate", type=float, default=0.0, help="fraction answered 503 SlowDown"
    )
    serve.add_argument(
        "--reset-rate", type=float, default=0.0, help="fraction whose connection is reset"
    )
    serve.add_argument(
        "--retry-after",
        type=_retry_after,
        default=0,
        metavar="SECONDS",
        help="Retry-After of a 503 SlowDown, in whole seconds, or 'none' (default: 0)",
    )
    serve.add_argument(
        "--fault",
        action="append",
        type=_prefix_fault,
        default=[],
        metavar="PREFIX=KIND",
        help=f"listings of prefixes starting with PREFIX, and HEADs and GETs of keys that do, "
        f"always get KIND where it applies, one of {', '.join(PREFIX_FAULTS)} (repeatable)",
    )
    serve.add_argument("--seed", type=int, default=0, help="seed of the fault generator")
    serve.set_defaults(run=_serve)

    generate = commands.add_parser(
        "generate",
        help="write a realistic universe built from the real symbol names",
        description="Write a realistic universe file built from the real symbol names.",
    )
    generate.add_argument("--out", type=Path, required=True, help="universe JSON file to write")
    generate.add_argument(
        "--today", type=date.fromisoformat, help="the universe's today (default: UTC today)"
    )
    generate.add_argument(
        "--start",
        type=date.fromisoformat,
        default=DEFAULT_START,
        help=f"first day of the oldest listings (default: {DEFAULT_START})",
    )
    generate.add_argument("--symbols", type=int, help="keep a seeded subset of N symbols")
    generate.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    generate.add_argument(
        "--no-delivery", action="store_true", help="leave out delivery contracts (X_YYMMDD)"
    )
    generate.add_argument(
        "--reference",
        type=Path,
        default=REFERENCE_PATH,
        help="reference symbol file (default: the packaged copy)",
    )
    generate.set_defaults(run=_generate)
    return parser


def _retry_after(text: str) -> int | None:
    if text == "none":
        return None
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not whole seconds or 'none': {text!r}")
    return int(text)


def _prefix_fault(text: str) -> tuple[str, str]:
    prefix, equals, kind = text.rpartition("=")
    if not equals or kind not in PREFIX_FAULTS:
        raise argparse.ArgumentTypeError(
            f"expected PREFIX=KIND with KIND one of {', '.join(PREFIX_FAULTS)}: {text!r}"
        )
    return prefix, kind


def _serve(args: argparse.Namespace) -> int:
    knobs = Knobs(
        latency_ms=args.latency_ms,
        slowdown_rate=args.slowdown_rate,
        reset_rate=args.reset_rate,
        retry_after_s=args.retry_after,
        prefix_faults=dict(args.fault),
        seed=args.seed,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with Emulator(Universe.load(args.universe), knobs, port=args.port) as emulator:
        if args.port_file:
            _write_atomically(args.port_file, f"{emulator.port}\n")
        print(f"serving {args.universe} at {emulator.listing_url}", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            if args.port_file:
                args.port_file.unlink(missing_ok=True)
    return 0


def _write_atomically(path: Path, text: str) -> None:
    """Readers polling for the file never see it half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _generate(args: argparse.Namespace) -> int:
    today = args.today or datetime.now(UTC).date()
    universe = generate_universe(
        load_reference(args.reference),
        today=today,
        start=args.start,
        n_symbols=args.symbols,
        include_delivery=not args.no_delivery,
        seed=args.seed,
    )
    universe.save(args.out)
    print(
        f"wrote {args.out}: {len(universe.specs)} symbols, {universe.key_count} keys "
        f"visible on {today}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
