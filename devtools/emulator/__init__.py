"""An offline, S3-compatible emulator of the Binance Vision bucket, for tests, demos and benchmarks.

`Universe` describes which daily files exist (and, from them, the daily and monthly 1d kline
files, whose ground truth `Universe.kline_rows` gives); `Emulator` serves it over HTTP with
optional faults; `generate_universe` builds realistic universes from the real symbol names.
"""

from devtools.emulator.generate import generate_universe, load_reference
from devtools.emulator.server import Emulator, Knobs
from devtools.emulator.universe import (
    BUCKET,
    KlineRow,
    ListPage,
    ObjectMeta,
    SymbolSpec,
    Universe,
    list_objects,
    object_body,
    object_meta,
)

__all__ = [
    "BUCKET",
    "Emulator",
    "KlineRow",
    "Knobs",
    "ListPage",
    "ObjectMeta",
    "SymbolSpec",
    "Universe",
    "generate_universe",
    "list_objects",
    "load_reference",
    "object_body",
    "object_meta",
]
