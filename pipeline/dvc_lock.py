"""Reading dvc.lock as the YAML file it is: which outputs DVC has recorded, and how many files.

The pipeline never imports DVC: dvc.lock's format is DVC's documented, versioned interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError

DVC_LOCK = Path("dvc.lock")


def recorded_stages(lock: Path = DVC_LOCK) -> dict[str, Any]:
    """The stages dvc.lock records, by name; none when there is no dvc.lock (no run yet)."""
    if not lock.exists():
        return {}
    try:
        recorded = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        recorded = None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("stages", {}), dict):
        raise PipelineError(f"{lock} is not DVC's YAML: resolve it (`git checkout {lock}`)")
    return recorded.get("stages", {})


def recorded_output(out: Path, lock: Path = DVC_LOCK) -> dict[str, Any] | None:
    """The output entry dvc.lock records for `out` (its md5, nfiles, ...), if any stage lists it."""
    wanted = out.as_posix().rstrip("/")
    for stage in recorded_stages(lock).values():
        for entry in stage.get("outs", []):
            if entry.get("path", "").rstrip("/") == wanted:
                return entry
    return None
