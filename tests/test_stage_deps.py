"""Deps that follow the code: each stage's dvc.yaml `deps` cover every module it imports.

DVC reruns a stage when one of its deps changes, and only then. A module of the package that a
stage imports but does not declare could change what the stage writes without DVC noticing;
a declared module that no longer exists fails `dvc repro`. The import closure of each stage's
command module is read from the source with `ast` (nothing is imported), within the `pipeline`
package only.
"""

from __future__ import annotations

import ast
import copy
import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pipeline"
COMMAND = re.compile(r"^python -m (pipeline\.stages\.\w+)$")
# Operator code (one-off params, dvc repro) and the query CLI: no stage may depend on them.
FORBIDDEN = ("pipeline/ops", "pipeline/query")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a module of the package (`pipeline.x.y`), relative to `root`; None if none."""
    relative = Path(*module.split("."))
    for candidate in (relative.with_suffix(".py"), relative / "__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


@functools.cache
def _tree(text: str) -> ast.Module:
    """A source's syntax tree, parsed once whatever the number of stages importing it."""
    return ast.parse(text)


def parse(path: Path) -> ast.Module:
    return _tree(path.read_text(encoding="utf-8"))


def imported_modules(module: str, root: Path = ROOT) -> set[str]:
    """Every module of the package that `module`'s source imports, wherever the import is.

    `ast.walk` reaches imports inside functions and under `if TYPE_CHECKING:` too (counted:
    conservative, and a stage's dependency on such a module costs at most a rerun). For
    `from pipeline.x import name`, `pipeline.x` is imported, and so is `pipeline.x.name` when
    it is a submodule.
    """
    path = module_file(module, root)
    assert path is not None, f"no source for {module}"
    tree = parse(root / path)
    # What a relative import is relative to: a package's __init__ is its own package.
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found.update(
                f"{base}.{alias.name}"
                for alias in node.names
                if module_file(f"{base}.{alias.name}", root) is not None
            )
    return {name for name in found if name == PACKAGE or name.startswith(f"{PACKAGE}.")}


def with_parents(module: str) -> list[str]:
    """Importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` first: `a`, `a.b`, `a.b.c`."""
    parts = module.split(".")
    return [".".join(parts[: n + 1]) for n in range(len(parts))]


def closure(module: str, root: Path = ROOT) -> set[str]:
    """`module` and every module of the package it imports, directly or not, with parents."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        current = pending.pop()
        for name in with_parents(current):
            if name in seen or module_file(name, root) is None:
                continue
            seen.add(name)
            pending.extend(imported_modules(name, root))
    return seen


def docstring_only(path: Path) -> bool:
    """A module holding nothing but a docstring (or nothing): it cannot change behaviour, so a
    stage need not declare it (a package's __init__.py, typically)."""
    body = parse(path).body
    return not body or (
        len(body) == 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )


def closure_paths(module: str, root: Path = ROOT) -> set[str]:
    """The files of `module`'s closure, as POSIX paths relative to `root`."""
    files = (module_file(name, root) for name in closure(module, root))
    return {path.as_posix() for path in files if path is not None}


def closure_files(module: str, root: Path = ROOT) -> set[str]:
    """The files of `module`'s closure a stage must declare: docstring-only ones left out."""
    return {path for path in closure_paths(module, root) if not docstring_only(root / path)}


def covers(dep: str, file: str) -> bool:
    """A dep covers a file if it is that file or a folder holding it."""
    dep = dep.rstrip("/")
    return file == dep or file.startswith(f"{dep}/")


def code_deps(stage: dict[str, Any]) -> list[str]:
    """A stage's deps that are paths in the checkout: `${...}` data deps are left out."""
    return [dep for dep in stage.get("deps", []) if "${" not in dep]


def stage_module(name: str, stage: dict[str, Any]) -> str:
    match = COMMAND.match(str(stage.get("cmd", "")).strip())
    assert match, f"stage {name}: cmd is not `python -m pipeline.stages.<name>`: {stage.get('cmd')}"
    return match.group(1)


def problems(dvc: dict[str, Any], root: Path = ROOT) -> list[str]:
    """What is wrong with the code deps of every stage of `dvc` (dvc.yaml as a dict)."""
    found: list[str] = []
    for name, stage in dvc["stages"].items():
        module = stage_module(name, stage)
        files = closure_files(module, root)
        deps = code_deps(stage)
        found.extend(
            f"stage {name}: imports {file}, which no dep of dvc.yaml covers"
            for file in sorted(files)
            if not any(covers(dep, file) for dep in deps)
        )
        found.extend(
            f"stage {name}: dep {dep} does not exist (stale dep)"
            for dep in deps
            if not (root / dep).exists()
        )
        found.extend(
            f"stage {name}: dep {dep} covers no module the stage imports"
            for dep in deps
            if (root / dep).exists() and not any(covers(dep, file) for file in files)
        )
        found.extend(
            f"stage {name}: imports {file}, operator code that no stage may depend on"
            for file in sorted(closure_paths(module, root))
            for forbidden in FORBIDDEN
            if covers(forbidden, file)
        )
    return found


def real_dvc() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))


STAGES = list(real_dvc()["stages"])


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_declares_exactly_the_modules_it_imports(name):
    dvc = real_dvc()
    assert problems({"stages": {name: dvc["stages"][name]}}) == []


@pytest.mark.parametrize("name", STAGES)
def test_no_stage_reaches_operator_code(name):
    files = closure_paths(stage_module(name, real_dvc()["stages"][name]))
    assert f"pipeline/stages/{name}.py" in files
    assert not [f for f in files if any(covers(forbidden, f) for forbidden in FORBIDDEN)]


def test_the_closure_follows_imports_of_every_kind(tmp_path):
    """Absolute and relative imports, `import a.b`, imports inside functions, a submodule
    named in a `from` import, and package __init__ files unless they hold only a docstring."""
    files = {
        "pipeline/__init__.py": '"""Only a docstring."""\n',
        "pipeline/stages/__init__.py": "",
        "pipeline/stages/s.py": (
            "from pipeline.a import b\nfrom . import sibling\n"
            "def f():\n    import pipeline.deep.inner\n    from ..rel import x\n"
        ),
        "pipeline/stages/sibling.py": "y = 1\n",
        "pipeline/a/__init__.py": '"""Doc."""\nVALUE = 1\n',
        "pipeline/a/b.py": "from .c import name\n",
        "pipeline/a/c.py": "name = 1\n",
        "pipeline/deep/__init__.py": '"""Doc."""\n',
        "pipeline/deep/inner.py": "import os\n",
        "pipeline/rel.py": "x = 1\n",
        "pipeline/unused.py": "",
        "pipeline/ops/__init__.py": "import pipeline.ops.cli\n",
        "pipeline/ops/cli.py": "",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text, encoding="utf-8")

    assert closure_files("pipeline.stages.s", tmp_path) == {
        "pipeline/stages/s.py",
        "pipeline/stages/sibling.py",
        "pipeline/a/__init__.py",
        "pipeline/a/b.py",
        "pipeline/a/c.py",
        "pipeline/deep/inner.py",
        "pipeline/rel.py",
    }  # pipeline/, pipeline/stages/ and pipeline/deep/ __init__.py: empty or docstring only

    (tmp_path / "pipeline/rel.py").write_text("from pipeline.ops import cli\n", encoding="utf-8")
    dvc = {"stages": {"s": {"cmd": "python -m pipeline.stages.s", "deps": ["pipeline"]}}}
    assert problems(dvc, tmp_path) == [
        "stage s: imports pipeline/ops/__init__.py, operator code that no stage may depend on",
        "stage s: imports pipeline/ops/cli.py, operator code that no stage may depend on",
    ]


def test_a_module_missing_from_a_stage_deps_fails_naming_stage_and_module():
    dvc = real_dvc()
    assert problems(dvc) == []
    stage = dvc["stages"]["update"]
    module = "pipeline/planner.py"
    assert module in closure_files(stage_module("update", stage))
    broken = copy.deepcopy(dvc)
    broken["stages"]["update"]["deps"].remove(module)

    assert problems(broken) == [f"stage update: imports {module}, which no dep of dvc.yaml covers"]


def test_a_folder_dep_removed_fails_for_each_module_of_it_the_stage_imports():
    dvc = real_dvc()
    broken = copy.deepcopy(dvc)
    broken["stages"]["discover"]["deps"].remove("pipeline/vision")

    found = problems(broken)
    assert found
    assert "stage discover: imports pipeline/vision/client.py, which no dep of dvc.yaml covers" in (
        found
    )
    assert all(m.startswith("stage discover: imports pipeline/vision/") for m in found)


def test_a_stale_dep_fails_naming_stage_and_dep():
    broken = copy.deepcopy(real_dvc())
    broken["stages"]["validate"]["deps"].append("pipeline/repair.py")

    assert problems(broken) == ["stage validate: dep pipeline/repair.py does not exist (stale dep)"]


def test_a_dep_on_a_module_the_stage_does_not_import_fails():
    broken = copy.deepcopy(real_dvc())
    broken["stages"]["detect_gaps"]["deps"].append("pipeline/prober.py")

    assert problems(broken) == [
        "stage detect_gaps: dep pipeline/prober.py covers no module the stage imports"
    ]


def test_data_deps_are_left_alone():
    stage = {"cmd": "python -m pipeline.stages.x", "deps": ["${paths.symbols}", "pipeline/a.py"]}
    assert code_deps(stage) == ["pipeline/a.py"]
    assert covers("pipeline/vision", "pipeline/vision/client.py")
    assert covers("pipeline/vision/", "pipeline/vision/client.py")
    assert not covers("pipeline/vision", "pipeline/visionary.py")
    assert covers("pipeline/entry.py", "pipeline/entry.py")


def test_no_module_of_the_package_imports_dvc():
    """DVC is driven through its command line and dvc.lock's YAML, never its Python API."""
    offenders = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(parse(path)):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
                for name in names
                if name == "dvc" or name.startswith("dvc.")
            ]
    assert offenders == []


def test_backfill_declares_no_probe_params():
    """Timeouts, retries and workers shape no output: changing them must not rerun backfill."""
    params = real_dvc()["stages"]["backfill"].get("params", [])
    assert [p for p in params if str(p).startswith("probe.")] == []
