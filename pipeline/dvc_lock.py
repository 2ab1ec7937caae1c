"""Reading dvc.lock as the YAML file it is: which outputs DVC has recorded, and how many files.

The pipeline never imports DVC: dvc.lock's format is DVC's documented, versioned interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError

DVC_LOCK = Path("dvc.lock")


def recorded_output(out: Path, lock: Path = DVC_LOCK) -> dict[str, Any] | None:
    """The output entry dvc.lock records for `out` (its md5, nfiles, ...), if any stage lists it."""
    if not lock.exists():
        return None
    try:
        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    except yaml.YAMLError:
        raise PipelineError(
            f"{lock} is not valid YAML: resolve it (`git checkout {lock}`)"
        ) from None
    wanted = out.as_posix().rstrip("/")
    for stage in stages.values():
        for entry in stage.get("outs", []):
            if entry.get("path", "").rstrip("/") == wanted:
                return entry
    return None
