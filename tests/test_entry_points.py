"""Every entry point parses its arguments before it does anything else.

`--help` prints a usage and exits 0, and a misspelt flag exits 2 with argparse's message, both
before params.yaml is read, logs/ is written or a request is made: each runs in an empty
directory, with any HTTP request sent to a closed port, and the directory stays empty.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# A port nothing listens on: a request that goes through the proxy fails at once.
DEAD_PROXY = "http://127.0.0.1:9"


def _stage_modules() -> list[str]:
    """The module each stage of dvc.yaml runs (`python -m pipeline.stages.X`)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    commands = [str(stage["cmd"]).split() for stage in stages.values()]
    assert all(len(c) == 3 and c[:2] == ["python", "-m"] for c in commands), commands
    return [c[2] for c in commands]


VISION_QUERY = "import sys; from pipeline.query.cli import main; sys.exit(main())"
ENTRY_POINTS: dict[str, tuple[list[str], str]] = {
    # id: (arguments after the interpreter, the program name its usage line shows)
    **{
        f"stage-{module.rpartition('.')[2]}": (["-m", module], f"python -m {module}")
        for module in _stage_modules()
    },
    "ops": (["-m", "pipeline.ops"], "python -m pipeline.ops"),
    **{
        f"ops-{command}": (["-m", "pipeline.ops", command], "python -m pipeline.ops")
        for command in ("update", "backfill", "audit", "report")
    },
    "query": (["-m", "pipeline.query"], "python -m pipeline.query"),
    "vision-query": (["-c", VISION_QUERY], "vision-query"),
    "demo": (["-m", "devtools.demo"], "python -m devtools.demo"),
    "emulator": (["-m", "devtools.emulator"], "python -m devtools.emulator"),
}


def environment(home: Path) -> dict[str, str]:
    """No proxy but a dead one; HOME and the temporary directory empty, to be checked after."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONDONTWRITEBYTECODE="1",
        http_proxy=DEAD_PROXY,
        https_proxy=DEAD_PROXY,
        HTTP_PROXY=DEAD_PROXY,
        HTTPS_PROXY=DEAD_PROXY,
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        TMPDIR=str(home),
    )
    return env


class Run:
    """An entry point run with `--help` and with `--no-such-flag`, each in an empty directory."""

    def __init__(self, root: Path, arguments: list[str]) -> None:
        self.folders = {
            name: root / name for name in ("help", "help-home", "refused", "refused-home")
        }
        for folder in self.folders.values():
            folder.mkdir()
        children = [
            subprocess.Popen(
                [sys.executable, *arguments, flag],
                cwd=self.folders[name],
                env=environment(self.folders[f"{name}-home"]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, flag in (("help", "--help"), ("refused", "--no-such-flag"))
        ]
        # Side by side: two processes at a time keep ~15 entry points quick.
        done = []
        for child in children:
            stdout, stderr = child.communicate(timeout=60)
            done.append(subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr))
        self.help, self.refused = done

    def created(self) -> dict[str, list[str]]:
        """What the runs left in their directories: nothing, expected."""
        return {
            name: sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
            for name, folder in self.folders.items()
            if any(folder.iterdir())
        }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """Every entry point, run once with each flag."""
    return {
        name: Run(tmp_path_factory.mktemp(name), arguments)
        for name, (arguments, _prog) in ENTRY_POINTS.items()
    }


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_help_prints_usage_and_exits_0_touching_nothing(name, runs):
    run = runs[name]
    assert run.help.returncode == 0, run.help.stderr
    assert "usage:" in run.help.stdout
    assert run.help.stderr == ""
    assert run.created() == {}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_an_unknown_flag_exits_2_touching_nothing(name, runs):
    refused = runs[name].refused
    assert refused.returncode == 2, refused.stderr
    # A program with subcommands says its command is missing: argparse's same refusal.
    assert (
        "unrecognized arguments: --no-such-flag" in refused.stderr
        or "the following arguments are required: COMMAND" in refused.stderr
    ), refused.stderr
    assert "usage:" in refused.stderr
    assert refused.stdout == ""
    assert runs[name].created() == {}


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_usage_names_the_program_as_it_is_run(name, runs):
    prog = ENTRY_POINTS[name][1]
    assert runs[name].help.stdout.startswith(f"usage: {prog} ")
    assert f"{prog}: error:" in runs[name].refused.stderr


def test_every_stage_of_dvc_yaml_is_an_entry_point():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert {f"stage-{name}" for name in stages} <= set(ENTRY_POINTS)
    assert len(stages) == 7
