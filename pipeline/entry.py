"""What every stage entry point shares: arguments, params, logging, timing, one-line failures."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.atomic import write_failure
from pipeline.config import Config, load_config
from pipeline.dataset.commit import finish_interrupted_commit
from pipeline.errors import PipelineError
from pipeline.logs import FILE_ONLY, setup_logging

# Where logging goes until params.yaml is read: a bad params.yaml must be logged too.
FALLBACK_LOG = Path("logs/pipeline.log")
PARAMS = Path("params.yaml")


def finish_interrupted_commits(config: Config) -> None:
    """Finish (or undo) the commit a killed run had begun, of every dataset the pipeline
    writes: availability (with its change log) and volume."""
    finish_interrupted_commit(config.paths.dataset, config.paths.changes)
    finish_interrupted_commit(config.paths.volume)


def run_stage(name: str, body: Callable[[Config], object], *, params: Path = PARAMS) -> int:
    """Run `body` with the validated params; turn a PipelineError into one line and exit 1."""
    setup_logging(name, FALLBACK_LOG)
    log = logging.getLogger(f"pipeline.{name}")
    started = time.monotonic()
    try:
        config = load_config(params)
        if config.paths.log != FALLBACK_LOG:
            setup_logging(name, config.paths.log)
        # Before anything reads the dataset: a killed run's commit is finished (or undone).
        finish_interrupted_commits(config)
        body(config)
    except PipelineError as exc:
        log.error("%s", exc)
        return 1
    except OverflowError as exc:  # params.yaml bounds its numbers; this is a last resort
        log.error("a number or date is out of range (%s): check the numbers of %s", exc, params)
        log.error("traceback of the error above", exc_info=True, extra={FILE_ONLY: True})
        return 1
    except Exception as exc:  # one line for the operator; the traceback goes to the log file
        # A full disk or a denied permission, wherever it happened, names the file.
        failure = write_failure(exc, verb="access")
        first_line = (str(exc).strip().splitlines() or [""])[0]
        log.error("%s", failure or f"unexpected {type(exc).__name__}: {first_line}")
        log.error("traceback of the error above", exc_info=True, extra={FILE_ONLY: True})
        return 1
    except KeyboardInterrupt as exc:
        # Every file is replaced whole (atomically), and the dataset's files together: a
        # commit under way when Ctrl-C came is finished by the next run, and says so.
        log.error("%s", str(exc) or "interrupted; no file was left half-written: rerun to finish")
        return 130
    log.info("done in %.1fs", time.monotonic() - started)
    return 0


def stage_main(
    name: str,
    body: Callable[[Config], object],
    description: str | None,
    argv: Sequence[str] | None = None,
) -> None:
    """A DVC stage's command line: it takes no arguments (params.yaml says everything).

    `--help` prints what the stage does and exits before params.yaml is read or any request
    is made; an unknown argument exits 2.
    """
    summary, _, details = (description or "").strip().partition("\n")
    argparse.ArgumentParser(
        prog=f"python -m pipeline.stages.{name}",
        description=summary,
        epilog=(details.strip() + "\n\n" if details.strip() else "")
        + "Reads its settings from params.yaml; DVC runs it (`dvc repro`, `make update`).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    sys.exit(run_stage(name, body))
