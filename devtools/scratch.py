"""Throwaway copies of this project, for the demo, the end-to-end tests and the benchmark.

A scratch project is a git + DVC repository holding the pipeline, its dvc.yaml and a
params.yaml pointed elsewhere (usually at the local emulator), so that `dvc repro` can run
for real without touching the user's params, symbols.json or dataset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from pipeline.symbols import render

SOURCE = Path(__file__).resolve().parent.parent
COPIED_FILES = ("dvc.yaml", "params.yaml", ".dvcignore")
# Variables a calling make or shell could pass down and change what the Makefile does.
MAKE_ENVIRONMENT = (
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "AS_OF",
    "LOOKBACK_DAYS",
    "SYMBOLS",
    "SINCE",
    "UNTIL",
    "ALLOW_REMOVALS",
    "KEEP",
)
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "reference_symbols.json")


class ScratchProject:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def create(cls, root: Path, params: dict[str, Any], *, source: Path = SOURCE) -> ScratchProject:
        """A fresh, committed repository at `root` with `params` merged into params.yaml."""
        root.mkdir(parents=True)
        shutil.copytree(source / "pipeline", root / "pipeline", ignore=IGNORED)
        for name in COPIED_FILES:
            shutil.copy2(source / name, root / name)
        (root / "symbols.json").write_text(render([]), encoding="utf-8")
        project = cls(root)
        project.set_params(params)
        project.run("git", "init", "--quiet", "--initial-branch=main")
        project.run("dvc", "init", "--quiet")
        # What `dvc config core.analytics false` writes, without a second DVC process.
        (root / ".dvc" / "config").write_text("[core]\n    analytics = false\n", encoding="utf-8")
        project.commit("scratch project")
        return project

    def copy(self, root: Path) -> ScratchProject:
        """An independent copy (git history, DVC cache and all), cheaper than `create`."""
        shutil.copytree(self.root, root, symlinks=True)
        return ScratchProject(root)

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    def set_params(self, params: dict[str, Any]) -> None:
        """Merge `params` ({"run": {"as_of": "2024-01-01"}}, ...) into params.yaml."""
        current = yaml.safe_load(self.params_path.read_text(encoding="utf-8"))
        self.params_path.write_text(
            yaml.safe_dump(_deep_merge(current, params), sort_keys=False), encoding="utf-8"
        )

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Stages run `python -m pipeline...`: make `python` the interpreter running this code.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            DVC_NO_ANALYTICS="1",
            PYTHONUTF8="1",
            GIT_AUTHOR_NAME="scratch",
            GIT_AUTHOR_EMAIL="scratch@localhost",
            GIT_COMMITTER_NAME="scratch",
            GIT_COMMITTER_EMAIL="scratch@localhost",
        )
        return env

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
        )

    def make_command(self, *args: str) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of `make ARGS` here, the Makefile copied in first.

        RUNTIME= skips bootstrapping a .venv of the scratch repository's own, and make's
        variables from a calling make (`make test`) or shell are not passed down.
        """
        if not (self.root / "Makefile").exists():
            shutil.copy2(SOURCE / "Makefile", self.root / "Makefile")
        env = {k: v for k, v in self.env().items() if k not in MAKE_ENVIRONMENT}
        return ["make", "--no-print-directory", "RUNTIME=", *args], env

    def make(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A target of the project's Makefile, on this interpreter (see make_command)."""
        command, env = self.make_command(*args)
        return subprocess.run(
            command, cwd=self.root, env=env, capture_output=True, text=True, check=False
        )

    def repro(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("dvc", "repro", *args, check=check)

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "--quiet", "--allow-empty", "-m", message)

    def dataset(self) -> pl.DataFrame:
        return pl.read_parquet(self.root / "data" / "availability" / "**" / "*.parquet")

    def read(self, relative: str) -> str:
        return (self.root / relative).read_text(encoding="utf-8")


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
