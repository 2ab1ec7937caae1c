"""Logging to stderr and to a rotating file that several processes may write at once."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from concurrent_log_handler import ConcurrentRotatingFileHandler

FORMAT = "%(asctime)s %(stage)s %(levelname)s %(message)s"
MAX_LOG_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 5
# A record carrying this attribute (a traceback) goes to the log file, not to stderr.
FILE_ONLY = "file_only"
# Marks the handlers set up here, so that a second call replaces them and leaves others alone.
_OURS = "_vision_availability"


class _StageFilter(logging.Filter):
    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def filter(self, record: logging.LogRecord) -> bool:
        record.stage = self.stage
        return True


def setup_logging(stage: str, log_file: Path, *, level: int = logging.INFO) -> None:
    """Send every record to stderr and to `log_file`, stamped in UTC with the stage's name."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(lambda record: not getattr(record, FILE_ONLY, False))
    handlers: list[logging.Handler] = [
        console,
        ConcurrentRotatingFileHandler(
            str(log_file), maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        ),
    ]
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_StageFilter(stage))
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    root.setLevel(level)
    # urllib3 logs every retry at WARNING with a long repr; our own summary counts them.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
