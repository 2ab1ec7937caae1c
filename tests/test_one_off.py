"""One-off runs that cannot leak: params.yaml holds a run's one-off params for that run only.

pipeline/ops/one_off.py sets them with a journal, so that a run killed at any instant (SIGKILL
included) leaves params.yaml either as it was or recoverable to its exact bytes; the operator
CLI (pipeline/ops/cli.py) refuses bad one-off input before any request. The last test kills a
real `make update AS_OF=...` and checks that the next `make update` puts params.yaml back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import responses
import yaml

from devtools.emulator import Emulator, Knobs, Universe
from devtools.scratch import ScratchProject
from pipeline.config import ConfigError
from pipeline.ops import cli
from pipeline.ops.one_off import (
    OneOffError,
    journal_path,
    one_off_params,
    recover,
    render_overrides,
)
from pipeline.planner import PlanError
from pipeline.symbols import render

ROOT = Path(__file__).resolve().parent.parent
REPO_PARAMS = (ROOT / "params.yaml").read_bytes()
# The repository's params.yaml (comments and all), and the same with what an editor on another
# system may leave: CRLF line ends, a non-ASCII comment, no final newline.
TEXTS = {
    "repo": REPO_PARAMS,
    "crlf": REPO_PARAMS.replace(b"\n", b"\r\n").rstrip() + " # à été\u00a0".encode(),
}
OVERRIDES = {
    "run.as_of": "2024-06-01",
    "update.lookback_days": 40,
    "run.repair": {"symbols": ["BTCUSDT"], "since": "2024-05-01", "until": None},
}
# An address where nothing listens: a request made by mistake fails at once.
UNREACHABLE = "http://127.0.0.1:9/data.binance.vision"


@pytest.fixture(params=list(TEXTS))
def params(request, tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_bytes(TEXTS[request.param])
    return path


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- one_off_params -----------------------------------------------------------------------


def test_the_block_sees_the_overrides_and_params_come_back_byte_for_byte(params):
    before = params.read_bytes()
    with one_off_params(params, OVERRIDES):
        during = yaml.safe_load(params.read_text(encoding="utf-8"))
        assert during["run"]["as_of"] == "2024-06-01"
        assert during["update"]["lookback_days"] == 40
        assert during["run"]["repair"] == OVERRIDES["run.repair"]
        assert during["probe"] == yaml.safe_load(before)["probe"]  # the rest is as it was
        assert params.read_text(encoding="utf-8").startswith("# One-off params")
        journal = json.loads(journal_path(params).read_text(encoding="utf-8"))
        assert journal["during"] == params.read_text(encoding="utf-8")

    assert params.read_bytes() == before
    assert files_in(params.parent) == {"params.yaml": before}


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_exception_in_the_block_puts_params_back_too(params, error):
    before = params.read_bytes()
    with pytest.raises(error), one_off_params(params, {"run.as_of": "2024-06-01"}):
        assert params.read_bytes() != before
        raise error("the run failed")

    assert files_in(params.parent) == {"params.yaml": before}


def test_no_overrides_leave_params_alone(params):
    before = params.read_bytes()
    with one_off_params(params, {}):
        assert files_in(params.parent) == {"params.yaml": before}
    assert files_in(params.parent) == {"params.yaml": before}


def test_an_override_of_a_missing_section_is_refused_before_anything_is_written(params):
    before = params.read_bytes()
    with (
        pytest.raises(OneOffError, match=r"no section nothere for nothere\.key"),
        one_off_params(params, {"nothere.key": 1}),
    ):
        pytest.fail("the block ran")
    assert files_in(params.parent) == {"params.yaml": before}


def test_the_journal_is_named_after_params_and_hidden(tmp_path):
    assert journal_path(tmp_path / "params.yaml") == tmp_path / ".params.yaml.one-off.json"


# --- a run killed at each instant ----------------------------------------------------------

# Runs one_off_params in a child that SIGKILLs itself right after the n-th file it replaces
# (every write of one_off.py is an atomic rename): 1 the journal, 2 params.yaml with the
# one-off text, 3 params.yaml put back, its journal not yet removed.
KILLED_CHILD = """
import os, signal, sys
from pathlib import Path

real_replace, replaced = os.replace, []

def replace(source, target, *args, **kwargs):
    real_replace(source, target, *args, **kwargs)
    replaced.append(Path(target).name)
    if len(replaced) == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
from pipeline.ops.one_off import one_off_params

with one_off_params(Path(sys.argv[1]), {"run.as_of": "2024-06-01"}):
    pass
print("not killed after", replaced)
"""
INSTANTS = {"journal-written": 1, "params-replaced": 2, "params-restored": 3}


def kill_at(params: Path, instant: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, str(params), str(INSTANTS[instant])],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr


@pytest.mark.parametrize("instant", list(INSTANTS))
def test_recover_after_a_kill_at_each_instant_gives_back_the_exact_bytes(params, instant):
    before = params.read_bytes()
    one_off = render_overrides(before.decode(), {"run.as_of": "2024-06-01"}).encode()
    kill_at(params, instant)
    left = files_in(params.parent)
    assert left == {
        journal_path(params).name: left[journal_path(params).name],
        "params.yaml": one_off if instant == "params-replaced" else before,
    }

    assert recover(params) is (instant == "params-replaced")

    assert files_in(params.parent) == {"params.yaml": before}
    assert recover(params) is False  # nothing left to do


def test_the_next_one_off_run_recovers_first(params):
    before = params.read_bytes()
    kill_at(params, "params-replaced")
    with one_off_params(params, {"update.lookback_days": 3}):
        assert yaml.safe_load(params.read_text(encoding="utf-8"))["run"]["as_of"] is None
    assert files_in(params.parent) == {"params.yaml": before}


@pytest.mark.parametrize("instant", ["journal-written", "params-replaced"])
def test_recover_refuses_when_params_were_edited_since_and_leaves_both_files(params, instant):
    kill_at(params, instant)
    params.write_bytes(params.read_bytes().replace(b"lookback_days: 20", b"lookback_days: 30"))
    left = files_in(params.parent)

    with pytest.raises(OneOffError, match="was edited after a one-off run") as refused:
        recover(params)
    assert str(journal_path(params)) in str(refused.value)
    assert files_in(params.parent) == left
    with pytest.raises(OneOffError), one_off_params(params, {"run.as_of": "2024-06-01"}):
        pytest.fail("a one-off run started over an unrecovered journal")
    assert files_in(params.parent) == left


@pytest.mark.parametrize(
    "journal",
    [
        b'{"before": "run:\\n  as_of: nu',  # cut short
        b"\xff\xfe not text",
        b"[]",
        b'{"before": "a: 1\\n"}',
        b'{"before": null, "during": null}',
        b'{"before": 1, "during": 2}',
    ],
    ids=["truncated", "binary", "list", "no-during", "nulls", "numbers"],
)
@pytest.mark.parametrize("params_exist", [True, False], ids=["params", "no-params"])
def test_an_unreadable_journal_is_refused(params, journal, params_exist):
    journal_path(params).write_bytes(journal)
    if not params_exist:
        params.unlink()
    left = files_in(params.parent)

    with pytest.raises(OneOffError) as refused:
        recover(params)
    assert f"{journal_path(params)} (left by an interrupted one-off run) is unreadable" in str(
        refused.value
    )
    assert files_in(params.parent) == left


# --- the operator CLI, without network -----------------------------------------------------


@pytest.fixture
def root_logging():
    """The root logger as it was: cli.main sets up its handlers (stderr, a log file)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def parsed(*argv: str):
    return cli.parser().parse_args(argv)


def test_update_overrides_only_what_it_is_given():
    assert cli.overrides_of(parsed("update")) == {}
    assert cli.overrides_of(parsed("update", "--as-of", "2024-06-01", "--lookback-days", "40")) == {
        "run.as_of": "2024-06-01",
        "update.lookback_days": 40,
    }


def test_backfill_overrides_set_the_repair():
    assert cli.overrides_of(
        parsed("backfill", "--symbols", "BTCUSDT,ETHUSDT", "--since", "2024-05-01")
    ) == {"run.repair": {"symbols": ["BTCUSDT", "ETHUSDT"], "since": "2024-05-01", "until": None}}
    assert cli.overrides_of(
        parsed(
            "backfill", "--as-of", "2024-06-01", "--since", "2024-05-01", "--until", "2024-05-03"
        )
    ) == {
        "run.as_of": "2024-06-01",
        "run.repair": {"symbols": None, "since": "2024-05-01", "until": "2024-05-03"},
    }


def test_audit_overrides_repair_everything():
    assert cli.overrides_of(parsed("audit", "--lookback-days", "7")) == {
        "update.lookback_days": 7,
        "run.repair": {"symbols": None, "since": None, "until": None},
    }


@pytest.mark.parametrize(
    "argv",
    [["backfill"], ["backfill", "--until", "2024-05-03"], ["update", "--as-of", "2024-13-01"]],
    ids=["nothing-to-repair", "until-alone", "bad-date"],
)
def test_bad_arguments_are_usage_errors(argv, root_logging, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project directory as the working directory: params.yaml on an unreachable bucket,
    symbols.json, no dataset; and any HTTP request made through requests fails the test."""
    real_bucket = yaml.safe_load(REPO_PARAMS)["vision"]["listing_url"]
    text = REPO_PARAMS.decode().replace(real_bucket, UNREACHABLE)
    assert UNREACHABLE in text
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "symbols.json").write_text(render(["BTCUSDT", "ETHUSDT"]), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with responses.RequestsMock():  # no URL registered: a request raises ConnectionError
        yield tmp_path


def yesterday() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("repair", "key", "problem"),
    [
        ({"since": "2024-05-03", "until": "2024-05-01"}, "run.repair.since", "is after"),
        ({"since": "2019-01-01", "until": None}, "run.repair.since", "before dataset.start_date"),
        ({"since": None, "until": "2099-01-01"}, "run.repair.until", "after run.as_of - 1"),
    ],
    ids=["since-after-until", "before-start", "after-as-of"],
)
def test_run_config_refuses_dates_naming_the_key(project, repair, key, problem):
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} .*{problem}") as refused:
        cli.run_config(Path("params.yaml"), {"run.repair": {"symbols": None, **repair}})
    assert "params.yaml for this run" in str(refused.value)


def test_an_unknown_symbol_is_refused_with_did_you_mean(project):
    repair = {"symbols": ["BTCUSTD"], "since": None, "until": None}
    config = cli.run_config(Path("params.yaml"), {"run.repair": repair})
    with pytest.raises(PlanError, match=r"unknown symbol BTCUSTD.*did you mean BTCUSDT"):
        cli.check_repair_symbols(config)


def test_a_good_repair_passes_both_checks(project):
    until = yesterday().isoformat()
    repair = {"symbols": ["ETHUSDT"], "since": "2024-05-01", "until": until}
    config = cli.run_config(Path("params.yaml"), {"run.repair": repair, "update.lookback_days": 3})
    cli.check_repair_symbols(config)
    assert config.repair is not None and config.repair.symbols == ("ETHUSDT",)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backfill", "--symbols", "BTCUSTD"], "did you mean BTCUSDT"),
        (["backfill", "--since", "2024-05-03", "--until", "2024-05-01"], "run.repair.since"),
        (["update", "--as-of", "2099-01-01"], "run.as_of"),
    ],
    ids=["unknown-symbol", "since-after-until", "as-of-in-the-future"],
)
def test_the_cli_refuses_bad_one_off_input_in_one_line_leaving_params(
    project, root_logging, monkeypatch, capsys, argv, message
):
    monkeypatch.setattr(cli, "pull_if_published", lambda: None)
    monkeypatch.setattr(cli, "dvc", lambda *a: pytest.fail(f"dvc {a} ran"))
    before = (project / "params.yaml").read_bytes()

    assert cli.main(argv) == 1

    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert message in errors[0]
    assert (project / "params.yaml").read_bytes() == before
    # The operator lock file is the only file the command leaves (it holds no state).
    assert sorted(p.name for p in project.iterdir()) == [
        ".pipeline.lock",
        "logs",
        "params.yaml",
        "symbols.json",
    ]


# --- the real thing: `make update AS_OF=...` killed, then `make update` ----------------------

TODAY = dt.datetime.now(dt.UTC).date()
START = TODAY - dt.timedelta(days=40)
ONE_OFF_AS_OF = TODAY - dt.timedelta(days=3)
E2E_SYMBOLS = [f"K{n:02d}USDT" for n in range(8)]


@pytest.fixture
def slow_emulator():
    universe = Universe.from_dict(
        {
            "today": TODAY.isoformat(),
            "symbols": {s: {"spans": [[START.isoformat(), None]]} for s in E2E_SYMBOLS},
        }
    )
    # Every request waits: the run is still going when the test kills it.
    with Emulator(universe, knobs=Knobs(latency_ms=300)) as server:
        yield server


def wait_for(predicate, child: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert child.poll() is None, f"the run ended (exit {child.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout}s"
        time.sleep(0.01)


@pytest.mark.e2e
def test_a_killed_one_off_run_is_undone_by_the_next_make_update(tmp_path, slow_emulator):
    project = ScratchProject.create(
        tmp_path / "repo",
        {
            "vision": {
                "listing_url": slow_emulator.listing_url,
                "download_url": slow_emulator.download_url,
            },
            "dataset": {"start_date": START.isoformat()},
            "update": {"lookback_days": 5},
            "probe": {"workers": 2, "timeout_s": 5, "retries": 2, "backoff_s": 0.01},
        },
    )
    committed = project.run("git", "show", "HEAD:params.yaml").stdout.encode()
    assert committed == project.params_path.read_bytes()
    assert yaml.safe_load(committed)["run"]["as_of"] is None  # today, whenever it runs
    one_off = render_overrides(committed.decode(), {"run.as_of": ONE_OFF_AS_OF.isoformat()})
    journal = journal_path(project.params_path)

    # `make update AS_OF=...` as ScratchProject.make runs it, in a process group of its own.
    command, env = project.make_command("update", f"AS_OF={ONE_OFF_AS_OF}")
    with (tmp_path / "killed.out").open("w") as out:
        killed = subprocess.Popen(
            command,
            cwd=project.root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: project.params_path.read_text(encoding="utf-8") == one_off,
                killed,
                "one-off params.yaml",
            )
        finally:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait()
    assert project.params_path.read_text(encoding="utf-8") == one_off
    assert json.loads(journal.read_text(encoding="utf-8")) == {
        "before": committed.decode(),
        "during": one_off,
    }

    again = project.make("update")

    assert again.returncode == 0, again.stderr
    assert "had the one-off params of an interrupted run: put back as before" in again.stderr
    assert project.params_path.read_bytes() == committed
    assert not journal.exists()
    assert project.run("git", "status", "--porcelain", "params.yaml").stdout == ""
    # Put back before anything ran: the stages read the committed params, and DVC recorded them.
    lock = yaml.safe_load(project.read("dvc.lock"))["stages"]
    for stage in ("update", "validate", "report"):
        assert lock[stage]["params"]["params.yaml"]["run.as_of"] is None, stage
    assert lock["update"]["params"]["params.yaml"]["run.repair"] is None
    assert json.loads(project.read("metrics/update.json"))["as_of"] in {
        TODAY.isoformat(),
        dt.datetime.now(dt.UTC).date().isoformat(),  # past midnight UTC since
    }
    log = project.read("logs/pipeline.log").splitlines()
    restored = next(i for i, line in enumerate(log) if "put back as before" in line)
    ran_after = {line.split()[1] for line in log[restored + 1 :] if len(line.split()) > 1}
    assert {"discover", "detect_gaps", "backfill", "update", "validate", "report"} <= ran_after
