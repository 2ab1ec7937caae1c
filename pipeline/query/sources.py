"""Where the query reads from: the repository's params.yaml, found from any of its folders, or a
dataset folder alone (one fetched with `dvc get`), which carries its own identity.

Without params.yaml the query needs one setting, spans.max_gap_days, and uses the repository's
committed value (DEFAULT_MAX_GAP_DAYS, which a test keeps equal to params.yaml's).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, fields
from pathlib import Path

from pipeline.config import (
    CONTRACTS,
    DATA_TYPES,
    INTERVALS,
    MARKETS,
    ConfigError,
    DatasetConfig,
    load_config,
)
from pipeline.dataset.store import IDENTITY_FILE, StoreError, refuse_denied_read
from pipeline.dvc_lock import DVC_LOCK

PARAMS_FILE = "params.yaml"
DEFAULT_MAX_GAP_DAYS = 30
"""spans.max_gap_days of the committed params.yaml, for a dataset asked without one."""

IDENTITY_CHOICES: dict[str, tuple[str, ...]] = {
    "market": MARKETS,
    "data_type": DATA_TYPES,
    "interval": INTERVALS,
    "contracts": CONTRACTS,
}


@dataclass(frozen=True)
class Sources:
    """What the query reads, each path relative to the working directory as given or found."""

    dataset: Path
    identity: DatasetConfig | None
    """What the dataset must hold: params.yaml's, or None for the dataset's own _dataset.json."""
    max_gap_days: int
    lock: Path
    """The dvc.lock whose record of the dataset (if any) says how many files it must have."""
    changes: Path | None
    """The change log, known only through params.yaml."""
    volume: Path | None
    """The volume dataset: --volume, else paths.volume of params.yaml."""


def find_root(start: Path) -> Path | None:
    """The nearest folder at or above `start` holding params.yaml, as a path relative to
    `start` (`.`, `..`, `../..`), so that messages name files as the user reaches them."""
    here = start.absolute()
    for level, folder in enumerate([here, *here.parents]):
        if (folder / PARAMS_FILE).is_file():
            return Path(*[".."] * level)
    return None


def locate(*, dataset: Path | None, params: Path | None, volume: Path | None, cwd: Path) -> Sources:
    """The sources of the query run in `cwd` (relative paths are relative to it).

    The repository root is `cwd` or the nearest folder above with a params.yaml; the paths
    params.yaml names, and dvc.lock, are relative to it. The params are `params` if given,
    else the root's params.yaml. `dataset` given: that folder, of whatever identity its
    _dataset.json records (a cm dataset too); else paths.dataset, which must hold what
    params.yaml asks for. With neither params.yaml nor `params`, `dataset` is needed, and
    spans.max_gap_days is the committed value.
    """
    found = find_root(cwd)
    root = found if found is not None else Path()
    if params is None and found is not None:
        params = found / PARAMS_FILE
    if params is None:
        if dataset is None:
            raise ConfigError(
                f"no {PARAMS_FILE} in {cwd.absolute()} or a folder above it: run inside the "
                "repository, or name the dataset's folder with --dataset DIR"
            )
        return Sources(dataset, None, DEFAULT_MAX_GAP_DAYS, root / DVC_LOCK, None, volume)
    config = load_config(params)
    return Sources(
        dataset=dataset if dataset is not None else root / config.paths.dataset,
        identity=None if dataset is not None else config.dataset,
        max_gap_days=config.spans.max_gap_days,
        lock=root / DVC_LOCK,
        changes=root / config.paths.changes,
        volume=volume if volume is not None else root / config.paths.volume,
    )


def dataset_identity(dataset: Path) -> DatasetConfig:
    """The params a dataset was built with, read from its own _dataset.json and checked."""
    path = dataset / IDENTITY_FILE
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        refuse_denied_read(exc, path)
        raise StoreError(
            f"{path} is missing or unreadable, so {dataset} cannot be told apart from another "
            "dataset: fetch the whole folder (`dvc get`, `dvc pull`)"
        ) from None
    keys = [field.name for field in fields(DatasetConfig)]
    problem = _identity_problem(found, keys)
    if problem:
        raise StoreError(f"{path} is not a dataset identity ({problem}): restore it")
    return DatasetConfig(
        market=found["market"],
        data_type=found["data_type"],
        interval=found["interval"],
        start_date=dt.date.fromisoformat(found["start_date"]),
        contracts=found["contracts"],
    )


def _identity_problem(found: object, keys: list[str]) -> str | None:
    """What is wrong with `found` as a dataset identity, or None."""
    if not isinstance(found, dict) or sorted(found) != sorted(keys):
        return f"expected an object of {', '.join(keys)}"
    for key, allowed in IDENTITY_CHOICES.items():
        if found[key] not in allowed:
            return f"{key} {found[key]!r} is none of {', '.join(allowed)}"
    start = found["start_date"]
    try:
        valid = isinstance(start, str) and dt.date.fromisoformat(start).isoformat() == start
    except ValueError:
        valid = False
    return None if valid else f"start_date {start!r} is not a date like 2019-09-25"
