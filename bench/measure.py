"""Run a command and report its process tree's wall time, CPU time and peak RSS as JSON.

    python bench/measure.py OUT.json -- dvc repro

A process of its own per measurement, because getrusage's peak RSS of children is a
high-water mark over every child a process ever had.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    out, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        raise SystemExit("usage: measure.py OUT.json -- COMMAND ...")
    started = time.monotonic()
    result = subprocess.run(command, check=False)
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(out).write_text(
        json.dumps(
            {
                "returncode": result.returncode,
                "wall_s": wall,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "peak_rss_mb": usage.ru_maxrss / 1024,
            }
        )
    )
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
