"""`make demo`: the whole pipeline on the emulator, and the project it keeps (`--keep DIR`).

The demo runs once for the module. A kept project must outlive it: its Makefile runs on this
interpreter's environment, `make emulator` serves the demo's bucket again on the port its
params.yaml names, and then `make update` and every `vision-query` example of the README work.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl
import pytest
import requests
import yaml

from devtools import demo
from devtools.scratch import MAKE_ENVIRONMENT
from tests.support import closed_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
EMULATOR_START_S = 60

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Demo:
    out: str
    kept: Path
    untouched: dict[str, bytes]
    had_dataset: bool


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    untouched = {name: (ROOT / name).read_bytes() for name in ("params.yaml", "symbols.json")}
    had_dataset = (ROOT / "data" / "availability").exists()
    kept = tmp_path_factory.mktemp("demo") / "kept"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert demo.main(["--symbols", "12", "--keep", str(kept)]) == 0
    return Demo(out.getvalue(), kept, untouched, had_dataset)


def test_demo_shows_the_new_symbol_backfilled_and_the_rest_on_the_window(ran: Demo):
    out = ran.out
    assert out.count("stages run: discover, detect_gaps, backfill, update") == 2
    assert "detect_gaps found: DEMONEWUSDT" in out
    requests_made = int(re.search(r"DEMONEWUSDT: (\d+) listing requests", out).group(1))
    assert requests_made == 2  # 700 days = 1400 keys = two pages
    others = re.search(r"the other (\d+) symbols: (\d+) requests \(at most 1 each", out)
    assert others is not None and others.group(1) == others.group(2)
    assert "newest listings:" in out
    # The user's own checkout was not touched: the scratch project holds the outputs.
    assert (ran.kept / "data" / "availability").is_dir()
    assert {name: (ROOT / name).read_bytes() for name in ran.untouched} == ran.untouched
    assert (ROOT / "data" / "availability").exists() == ran.had_dataset


def test_the_demo_universe_holds_the_symbols_the_readme_asks_about(ran: Demo):
    rows = pl.read_parquet(ran.kept / "data" / "availability" / "**" / "*.parquet")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        days = rows.filter(pl.col("symbol") == symbol, pl.col("available"))
        assert days.filter(pl.col("date").dt.year() == 2024).height > 350, symbol


def test_the_demo_ends_with_the_commands_to_try_next(ran: Demo):
    steps = ran.out.split("== What to try next\n", 1)[1].splitlines()
    commands = [line.split("#")[0].strip() for line in steps if line.startswith("     ")]
    assert commands == [
        f"cd {ran.kept.resolve()} && make emulator",
        f"cd {ran.kept.resolve()}",
        "make update",
        "make status",
        f"source {VENV_BIN / 'activate'}",
        "vision-query stats",
        "vision-query timeline BTCUSDT",
        "vision-query snapshot 2024-03-01",
        "vision-query listings --since 2024-01-01",
    ]


def test_without_keep_the_demo_says_how_to_keep_the_project(capsys):
    demo._next_steps(None)
    assert "make demo KEEP=/tmp/vision-demo" in capsys.readouterr().out


def test_keep_refuses_an_existing_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        demo.main(["--keep", str(tmp_path)])
    assert exit_.value.code == 2
    assert f"--keep {tmp_path}: it exists already" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_make_demo_passes_keep_on(tmp_path):
    # An existing directory: the demo refuses it before it builds anything.
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENVIRONMENT}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["make", "--no-print-directory", "RUNTIME=", "demo", f"KEEP={tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert f"--keep {tmp_path}: it exists already; name a new directory" in done.stderr


def test_a_kept_project_runs_make_update_and_the_readme_examples(ran: Demo):
    port = urlsplit(params(ran.kept)["vision"]["listing_url"]).port
    with kept_emulator(ran.kept, port):
        update = kept_make(ran.kept, "update")
        assert update.returncode == 0, update.stdout + update.stderr
        assert "Running stage 'discover'" in update.stdout
        counters = requests.get(f"http://127.0.0.1:{port}/_emulator/counters", timeout=10).json()
        assert counters["requests"] > 0  # the restarted emulator answered the run's listings
        # The Makefile did not bootstrap a .venv of its own: it runs on this environment.
        assert not (ran.kept / ".venv").exists()

    examples = readme_query_examples()
    assert len(examples) >= 6
    for args in examples:
        answer = subprocess.run(
            [str(VENV_BIN / "vision-query"), *args],
            cwd=ran.kept,
            capture_output=True,
            text=True,
            check=False,
        )
        assert answer.returncode == 0, (args, answer.stderr)
        if "-o" in args:  # the answer went to that file
            assert (ran.kept / args[args.index("-o") + 1]).stat().st_size > 0, args
        else:
            assert answer.stdout.strip(), args
        for symbol in ("BTCUSDT", "ETHUSDT"):
            if symbol in args:
                assert symbol in answer.stdout, (args, answer.stdout)

    for code in readme_python_blocks():
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ran.kept, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr


def test_a_kept_project_without_its_emulator_says_to_start_it(ran: Demo, tmp_path):
    # A copy: this run must not change what the other tests see.
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(ran.kept), str(copy)], check=True)
    demo_port = urlsplit(params(copy)["vision"]["listing_url"]).port
    # The demo's emulator has stopped, and its port is free for any other test's server to take:
    # the copy is moved to a port bound here, never listening, where connections are refused.
    with closed_port() as port:
        text = (copy / "params.yaml").read_text(encoding="utf-8")
        moved = text.replace(f"127.0.0.1:{demo_port}", f"127.0.0.1:{port}")
        (copy / "params.yaml").write_text(moved, encoding="utf-8")
        url = urlsplit(params(copy)["vision"]["listing_url"])
        assert url.port == port
        update = kept_make(copy, "update", "LOOKBACK_DAYS=1")
    assert update.returncode != 0
    # The last line before make's own ("make: *** [Makefile:…: update] Error 255").
    last = [line for line in update.stderr.splitlines() if not line.startswith("make:")][-1]
    assert last.endswith(
        f"cannot reach {url.netloc} (connection refused): nothing serves vision.listing_url "
        "there; in a project kept by `make demo KEEP=DIR`, `make emulator` serves the demo's "
        "bucket again"
    )


# --- helpers --------------------------------------------------------------------------------


def params(project: Path) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))


def kept_environment() -> dict[str, str]:
    """The caller's environment as a user's shell has it: no make variables from a calling
    make, and no .venv on PATH (the kept Makefile must find its own)."""
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENVIRONMENT}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != VENV_BIN]
    env["PATH"] = os.pathsep.join(path)
    env.pop("VIRTUAL_ENV", None)
    return env


def kept_make(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=project,
        env=kept_environment(),
        capture_output=True,
        text=True,
        check=False,
    )


@contextlib.contextmanager
def kept_emulator(project: Path, port: int) -> Iterator[None]:
    """`make emulator` in `project`, as the demo says to run it, until the block ends."""
    server = subprocess.Popen(
        ["make", "--no-print-directory", "emulator"],
        cwd=project,
        env=kept_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: make and the server stop together
    )
    try:
        deadline = time.monotonic() + EMULATOR_START_S
        while not listening(port):
            if server.poll() is not None:
                pytest.fail(f"make emulator exited {server.returncode}: {server.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail("make emulator did not start listening")
            time.sleep(0.1)
        yield
    finally:
        stop_group(server)


def stop_group(server: subprocess.Popen[str]) -> None:
    """SIGTERM to make and its server; SIGKILL if a loaded machine keeps them past 30 s, so
    that the port is free for the next test either way."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signum)
        try:
            server.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue
    server.wait()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def readme_query_examples() -> list[list[str]]:
    """Every `vision-query ...` line of the README's shell blocks, as arguments; an optional
    part in brackets (`gaps [--symbol BTCUSDT]`) gives both forms."""
    examples: list[list[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", readme(), flags=re.S):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            if not command.startswith("vision-query "):
                continue
            without = re.sub(r"\s*\[[^\]]*\]", "", command)
            with_all = re.sub(r"\[([^\]]*)\]", r"\1", command)
            for form in dict.fromkeys((without, with_all)):
                examples.append(shlex.split(form)[1:])
    return examples


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme(), flags=re.S)


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")
