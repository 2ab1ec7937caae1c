"""Publishing and getting the data: `make configure-remote`, `make publish`, `make pull`, and
consumers' `dvc get`, `dvc import`, `dvc update` and `dvc artifacts get` from the repository's URL.

The scratch repository gets this project's Makefile and .dvc/config, so it starts with the
shipped placeholder read remote. The publisher then configures the read remote (committed) as
an HTTP server on 127.0.0.1 that serves, read-only, the directory the write remote (in
.dvc/config.local) fills. The data is built twice (v1, then v2 with a one-off AS_OF and
LOOKBACK_DAYS), published and released each time with the tags the workflow creates
(pipeline/ops/release.py). Consumers work from unrelated directories with only the repository's
file:// URL: DVC clones it, so it sees only what git holds (never config.local or the cache),
and the data can only come over HTTP.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from devtools.emulator import Emulator, Universe
from devtools.scratch import MAKE_ENVIRONMENT, SOURCE, ScratchProject
from pipeline.errors import PipelineError
from pipeline.ops import remote
from pipeline.ops.release import artifact_names, release_tags
from tests import e2e_support as e2e

pytestmark = pytest.mark.e2e

AS_OF = "2024-04-30"
NEXT_AS_OF = "2024-05-02"
NEXT_LOOKBACK = 3
UNIVERSE = {
    "today": NEXT_AS_OF,
    "market": "um",
    "data_type": "klines",
    "intervals": ["1m"],
    "symbols": {
        "BTCUSDT": {"spans": [["2019-09-25", None]], "missing": ["2024-03-20"]},
        "ETHUSDT": {"spans": [["2024-03-10", None]]},
        "OLDUSDT": {"spans": [["2024-01-01", "2024-03-31"]]},
    },
}
PLACEHOLDER_ERROR = (
    "the DVC remote 'read' is still the placeholder "
    "https://not-configured.invalid/run-make-configure-remote: the publisher sets it with "
    "make configure-remote READ_URL=URL [WRITE_URL=URL] (docs/publishing.md)"
)


class ReadOnlyStore:
    """A directory served over HTTP on 127.0.0.1, GET and HEAD only (anything else: 501),
    recording the paths asked for."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        store = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                store.requests.append(f"{self.command} {self.path}")

        handler = functools.partial(Handler, directory=str(directory))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ReadOnlyStore:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def objects_served(self) -> list[str]:
        return [r for r in self.requests if r.startswith("GET /store/files/md5/")]


@dataclass(frozen=True)
class Published:
    project: ScratchProject
    store: ReadOnlyStore
    storage: Path
    """The write remote's directory, which the HTTP server serves as /store."""
    placeholder_update: subprocess.CompletedProcess[str]
    placeholder_pull: subprocess.CompletedProcess[str]
    placeholder_publish: subprocess.CompletedProcess[str]
    v1_tags: list[str]
    v2_tags: list[str]
    v1: dict[str, bytes]
    """data/availability at the first release, by path inside it."""
    v2: dict[str, bytes]
    tracking: ScratchProject
    """A consumer that imported the branch (no --rev) when only the first release existed."""
    params_before: bytes
    params_after: bytes


def succeed(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def recorded_outputs(root: Path) -> dict[str, bytes]:
    """Every file of every output dvc.lock records, by path from the repository root."""
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    outs = [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
    assert outs, "dvc.lock records no output"
    files: dict[str, bytes] = {}
    for out in outs:
        if (root / out).is_file():
            files[out] = (root / out).read_bytes()
        else:
            files |= {f"{out}/{name}": data for name, data in tree_bytes(root / out).items()}
    return files


def release(project: ScratchProject, as_of: str, message: str) -> list[str]:
    """What the workflow does after a publish: commit symbols.json, dvc.lock and the metrics,
    then tag the commit with the release's tags (annotated, as the workflow makes them)."""
    tracked = [p for p in ("symbols.json", "dvc.lock", "metrics") if (project.root / p).exists()]
    project.run("git", "add", "--", *tracked)
    project.run("git", "commit", "--quiet", "-m", message)
    existing = project.run("git", "tag", "--list").stdout.split()
    tags = release_tags(
        dt.date.fromisoformat(as_of), existing, artifact_names(project.root / "dvc.yaml")
    )
    for tag in tags:
        project.run("git", "tag", "--annotate", "--message", f"release {as_of}", tag)
    return tags


def consumer_env() -> dict[str, str]:
    """A consumer's environment: this interpreter's DVC, and DVC Studio off (`dvc artifacts
    get` asks Studio first when a token is set: that would leave 127.0.0.1)."""
    env = ScratchProject(SOURCE).env()
    env = {k: v for k, v in env.items() if not k.startswith(("DVC_STUDIO", "STUDIO_"))}
    env["DVC_STUDIO_OFFLINE"] = "1"
    return env


def consume(cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        command, cwd=cwd, env=consumer_env(), capture_output=True, text=True, check=False
    )


def new_dvc_project(root: Path) -> ScratchProject:
    """An unrelated git + DVC project (a consumer's own)."""
    succeed(consume(root, "git", "init", "--quiet"))
    succeed(consume(root, "dvc", "init", "--quiet"))
    return ScratchProject(root)


def file_url(project: ScratchProject) -> str:
    return project.root.resolve().as_uri()


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Iterator[Published]:
    base = tmp_path_factory.mktemp("publish")
    served = base / "served"
    storage = served / "store"
    storage.mkdir(parents=True)
    with Emulator(Universe.from_dict(UNIVERSE)) as emulator, ReadOnlyStore(served) as store:
        project = ScratchProject.create(
            base / "repo",
            {
                "vision": {
                    "listing_url": emulator.listing_url,
                    "download_url": emulator.download_url,
                },
                "dataset": {"start_date": "2024-03-01"},
                "run": {"as_of": AS_OF},
                "update": {"lookback_days": 5},
                "probe": {"workers": 4, "timeout_s": 5, "retries": 2, "backoff_s": 0.01},
            },
        )
        for name in ("Makefile", ".dvc/config"):
            shutil.copy2(SOURCE / name, project.root / name)
        project.commit("the shipped Makefile and DVC remote")
        params_before = project.params_path.read_bytes()

        # The shipped placeholder: the run works without a remote; pull and publish refuse.
        placeholder_update = project.make("update")
        placeholder_pull = project.make("pull")
        placeholder_publish = project.make("publish")

        # The publisher's one-time setup: the read remote, committed; the write remote, local.
        succeed(
            project.make("configure-remote", f"READ_URL={store.url}/store", f"WRITE_URL={storage}")
        )
        project.run("git", "add", ".dvc/config")
        project.run("git", "commit", "--quiet", "-m", "the read remote")

        succeed(project.make("publish"))
        v1_tags = release(project, AS_OF, "data: v1")
        v1 = tree_bytes(project.root / "data" / "availability")
        tracking = new_dvc_project(base / "tracking")
        succeed(tracking.run("dvc", "import", file_url(project), "data/availability", "-o", "a"))

        succeed(project.make("update", f"AS_OF={NEXT_AS_OF}", f"LOOKBACK_DAYS={NEXT_LOOKBACK}"))
        params_after = project.params_path.read_bytes()
        succeed(project.make("publish"))
        v2_tags = release(project, NEXT_AS_OF, "data: v2")
        v2 = tree_bytes(project.root / "data" / "availability")
        yield Published(
            project,
            store,
            storage,
            placeholder_update,
            placeholder_pull,
            placeholder_publish,
            v1_tags,
            v2_tags,
            v1,
            v2,
            tracking,
            params_before,
            params_after,
        )


def last_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line pipeline.ops logs (make adds its own line after it)."""
    lines = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(lines) == 1, result.stderr
    return lines[0].split(" ERROR ", 1)[1]


def test_the_shipped_placeholder_runs_without_a_remote_and_refuses_pull_and_publish(published):
    assert published.placeholder_update.returncode == 0, published.placeholder_update.stderr
    # No pull was tried: the placeholder never resolves.
    assert "not-configured.invalid" not in published.placeholder_update.stderr
    for result in (published.placeholder_pull, published.placeholder_publish):
        assert result.returncode != 0
        assert last_error(result) == PLACEHOLDER_ERROR


def test_the_read_remote_is_committed_and_the_write_remote_is_not(published):
    committed = published.project.run("git", "show", "HEAD:.dvc/config").stdout
    assert f"url = {published.store.url}/store" in committed
    assert "remote = read" in committed
    assert str(published.storage) not in committed
    local = published.project.read(".dvc/config.local")
    assert f"url = {published.storage}" in local and "remote = write" in local
    # `make publish` pushed to the write remote: both releases are complete there.
    in_sync = published.project.run("dvc", "status", "--cloud", "--all-tags")
    assert in_sync.stdout.strip() == "Cache and remote 'write' are in sync."


def test_release_tags_name_the_date_and_each_artifact(published):
    assert published.v1_tags == [
        "data-2024-04-30",
        "availability@v20240430.0.0",
        "volume@v20240430.0.0",
    ]
    assert published.v2_tags[0] == "data-2024-05-02"
    assert published.v1 != published.v2


def test_dvc_get_by_release_tag_from_the_repository_url_over_http(published, tmp_path):
    for tags, expected in ((published.v1_tags, published.v1), (published.v2_tags, published.v2)):
        served = len(published.store.objects_served())
        out = tmp_path / tags[0]
        succeed(
            consume(
                tmp_path,
                "dvc",
                "get",
                file_url(published.project),
                "data/availability",
                "--rev",
                tags[0],
                "-o",
                str(out),
            )
        )
        assert tree_bytes(out) == expected
        # The partitions came from the read remote over HTTP (DVC clones the repository from
        # its URL: neither config.local nor the publisher's cache is seen).
        assert len(published.store.objects_served()) - served >= len(expected)


QUERIES = (
    ("stats",),
    ("snapshot", "2024-03-20"),
    ("timeline", "BTCUSDT"),
    ("gaps", "--symbol", "BTCUSDT"),
    ("universe", "2024-04-01", "--top", "2", "--window", "7"),
    ("panel", "--since", "2024-03-01", "--until", "2024-05-01", "--wide"),
)


def vision_query(cwd: Path, *args: str) -> str:
    """The installed console script's JSON answer in `cwd`."""
    return e2e.answer(consume(cwd, *e2e.vision_query_json(*args)))


def test_vision_query_on_a_dvc_get_outside_the_repository_answers_as_the_repository(
    published, tmp_path
):
    """Done when: from an unrelated directory, with only the repository's file:// URL and the
    HTTP-served remote, `dvc get` then `vision-query --dataset` give the repository's answers."""
    outside = tmp_path / "outside"
    url, tag = file_url(published.project), published.v2_tags[0]
    for name in ("availability", "volume"):
        got = consume(outside, "dvc", "get", url, f"data/{name}", "--rev", tag, "-o", name)
        succeed(got)
    assert not (outside / "params.yaml").exists() and not (outside / "dvc.lock").exists()
    answers = {}
    for question in QUERIES:
        fetched = ("--dataset", "availability")
        if question[0] in ("universe", "panel"):
            fetched += ("--volume", "volume")
        answers[question] = vision_query(outside, *question, *fetched)
        assert answers[question] == vision_query(published.project.root, *question)
    # Real answers, not two empty ones: the emulator's universe as of the second release.
    stats = json.loads(answers[("stats",)])
    assert (stats["symbols"], stats["last_date"]) == (3, "2024-05-01")
    assert [row["symbol"] for row in json.loads(answers[("snapshot", "2024-03-20")])] == [
        "ETHUSDT",
        "OLDUSDT",
    ]
    universe = json.loads(answers[("universe", "2024-04-01", "--top", "2", "--window", "7")])
    assert sorted(row["symbol"] for row in universe) == ["BTCUSDT", "ETHUSDT"]


def test_dvc_import_by_tag_then_update_to_the_next_release(published, tmp_path):
    consumer = new_dvc_project(tmp_path / "consumer")
    url = file_url(published.project)
    first, second = published.v1_tags[0], published.v2_tags[0]
    succeed(consumer.run("dvc", "import", url, "data/availability", "--rev", first, "-o", "v"))
    assert tree_bytes(consumer.root / "v") == published.v1
    assert yaml.safe_load(consumer.read("v.dvc"))["deps"][0]["repo"]["rev"] == first
    succeed(consumer.run("dvc", "update", "--rev", second, "v.dvc"))
    assert tree_bytes(consumer.root / "v") == published.v2
    assert yaml.safe_load(consumer.read("v.dvc"))["deps"][0]["repo"]["rev"] == second


def test_dvc_update_moves_a_branch_import_to_the_new_release(published):
    tracking = published.tracking
    assert tree_bytes(tracking.root / "a") == published.v1
    succeed(tracking.run("dvc", "update", "a.dvc"))
    assert tree_bytes(tracking.root / "a") == published.v2
    released = published.project.run("git", "rev-parse", f"{published.v2_tags[0]}^{{commit}}")
    record = yaml.safe_load(tracking.read("a.dvc"))["deps"][0]["repo"]
    assert record["rev_lock"] == released.stdout.strip()


def test_dvc_artifacts_get_by_name_takes_the_greatest_release_or_the_one_named(published, tmp_path):
    url = file_url(published.project)
    latest = tmp_path / "latest"
    succeed(consume(tmp_path, "dvc", "artifacts", "get", url, "availability", "-o", str(latest)))
    assert tree_bytes(latest) == published.v2
    pinned = tmp_path / "pinned"
    version = published.v1_tags[1].split("@", 1)[1]
    succeed(
        consume(
            tmp_path,
            "dvc",
            "artifacts",
            "get",
            url,
            "availability",
            "--rev",
            version,
            "-o",
            str(pinned),
        )
    )
    assert tree_bytes(pinned) == published.v1


def test_a_fresh_clone_pulls_byte_identical_outputs_over_http(published, tmp_path):
    clone = ScratchProject(tmp_path / "clone")
    succeed(
        published.project.run(
            "git", "clone", "--quiet", file_url(published.project), str(clone.root)
        )
    )
    assert not (clone.root / "data" / "availability").exists()
    served = len(published.store.objects_served())
    succeed(clone.make("pull"))
    assert recorded_outputs(clone.root) == recorded_outputs(published.project.root)
    assert clone.read("symbols.json") == published.project.read("symbols.json")
    assert len(published.store.objects_served()) > served


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("../../vision-availability-dvc-storage", "is not a URL DVC can use here"),
        ("/srv/dvc", "is not a URL DVC can use here"),
        ("ftp://host/x", "is not a URL DVC can use here"),
        ("https://", "names no host (or bucket)"),
        ("https://user:secret@host/x", "holds credentials"),
        ("https://host/x?sig=1", "has a query or fragment"),
        ("https://host/a b", "holds spaces or control characters"),
        ("https://host:port/x", "is not a valid URL"),
        ("https://not-configured.invalid/x", "is under .invalid, which never resolves"),
    ],
)
def test_a_read_url_everyone_cannot_read_is_refused_naming_it(url, says):
    with pytest.raises(PipelineError, match=r"^READ_URL ") as caught:
        remote.check_read_url(url)
    assert says in str(caught.value) and repr(url) in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["https://bucket.s3.eu-west-1.amazonaws.com/vision", "http://127.0.0.1:8080/s", "s3://b/p"],
)
def test_a_public_read_url_is_accepted(url):
    assert remote.check_read_url(url) == url


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("s3://bucket/vision", True),
        ("/srv/dvc-storage", True),
        ("file:///srv/dvc-storage", True),
        ("ssh://user@host/srv/dvc", True),
        ("../storage", False),
        ("storage", False),
        ("file://host/srv", False),
        ("s3://", False),
    ],
)
def test_write_urls_are_absolute(url, ok):
    if ok:
        assert remote.check_write_url(url) == url
    else:
        with pytest.raises(PipelineError, match=r"^WRITE_URL "):
            remote.check_write_url(url)


@pytest.fixture
def dvc_project(tmp_path) -> ScratchProject:
    """A git + DVC project with the shipped .dvc/config and Makefile."""
    project = new_dvc_project(tmp_path / "repo")
    for name in ("Makefile", ".dvc/config"):
        shutil.copy2(SOURCE / name, project.root / name)
    return project


def test_configure_remote_sets_read_committed_and_write_local(dvc_project):
    project = dvc_project
    succeed(
        project.make(
            "configure-remote", "READ_URL=https://example.org/data", "WRITE_URL=s3://bucket/data"
        )
    )
    config = project.read(".dvc/config")
    assert "remote = read" in config and "url = https://example.org/data" in config
    assert "s3://" not in config
    local = project.read(".dvc/config.local")
    assert "remote = write" in local and "url = s3://bucket/data" in local
    # Setting one leaves the other as it was.
    succeed(project.make("configure-remote", "READ_URL=https://example.org/v2"))
    assert "url = https://example.org/v2" in project.read(".dvc/config")
    assert project.read(".dvc/config.local") == local


@pytest.mark.parametrize(
    "args",
    [
        ["READ_URL=../../storage", "WRITE_URL=s3://bucket/data"],
        ["READ_URL=https://example.org/data", "WRITE_URL=relative/dir"],
        [],
    ],
)
def test_configure_remote_refuses_a_bad_url_in_one_line_changing_nothing(dvc_project, args):
    project = dvc_project
    before = project.read(".dvc/config")
    result = project.make("configure-remote", *args)
    assert result.returncode != 0
    error = last_error(result)
    assert error.startswith(("READ_URL '../../storage'", "WRITE_URL 'relative/dir'", "give "))
    assert project.read(".dvc/config") == before
    assert not (project.root / ".dvc" / "config.local").exists()


def test_one_off_as_of_and_lookback_leave_params_yaml_as_committed(published):
    assert published.params_after == published.params_before
    assert published.project.run("git", "status", "--porcelain", "params.yaml").stdout == ""
    # dvc.lock records what the run used, which is what the published data was made with.
    lock = yaml.safe_load(published.project.read("dvc.lock"))
    used = lock["stages"]["update"]["params"]["params.yaml"]
    assert used["run.as_of"] == NEXT_AS_OF
    assert used["update.lookback_days"] == NEXT_LOOKBACK
    newest = max(published.project.dataset()["date"]).isoformat()
    assert newest == "2024-05-01"


@pytest.mark.parametrize(
    ("value", "code", "says"),
    [
        # argparse refuses what is not a number, naming the option
        ("LOOKBACK_DAYS=many", 2, "argument --lookback-days: 'many' is not a whole number"),
        # the config what no run can use, naming the key
        ("AS_OF=2999-01-01", 1, "run.as_of is in the future (2999-01-01)"),
    ],
)
def test_a_bad_one_off_value_fails_before_the_run_and_leaves_params_yaml(
    published, tmp_path, value, code, says
):
    project = published.project.copy(tmp_path / "repo")
    before = project.params_path.read_bytes()
    result = project.make("update", value)
    assert result.returncode != 0
    assert says in result.stderr, result.stderr
    assert f"Error {code}" in result.stderr.splitlines()[-1]
    assert "Running stage" not in result.stdout
    assert project.params_path.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        (["update"], ["update"]),
        (
            ["update", "AS_OF=2024-06-01", "LOOKBACK_DAYS=3"],
            ["update", "--as-of", "2024-06-01", "--lookback-days", "3"],
        ),
        (["backfill", "SYMBOLS=A,B"], ["backfill", "--symbols", "A,B"]),
        (
            ["backfill", "SINCE=2024-05-01", "UNTIL=2024-05-03"],
            ["backfill", "--since", "2024-05-01", "--until", "2024-05-03"],
        ),
        (["audit"], ["audit"]),
        (["publish"], ["publish"]),
        (
            ["configure-remote", "WRITE_URL=s3://b/p"],
            ["configure-remote", "--write-url", "s3://b/p"],
        ),
        (
            ["configure-remote", "READ_URL=https://h/p", "WRITE_URL=/srv/d"],
            ["configure-remote", "--read-url", "https://h/p", "--write-url", "/srv/d"],
        ),
    ],
)
def test_make_passes_only_the_values_it_is_given_to_pipeline_ops(tmp_path, args, argv):
    """Without AS_OF and friends, `make update` is `python -m pipeline.ops update`: no flag,
    so no one-off param (ops then runs plain `dvc repro`)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n', encoding="utf-8")
    (fake / "python").chmod(0o755)
    shutil.copy2(SOURCE / "Makefile", tmp_path / "Makefile")
    env = {
        k: v for k, v in os.environ.items() if k not in (*MAKE_ENVIRONMENT, "READ_URL", "WRITE_URL")
    }
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        ["make", "--silent", "--no-print-directory", "RUNTIME=", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines() == ["-m", "pipeline.ops", *argv]
