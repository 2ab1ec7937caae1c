"""A data release's git tags, which `dvc get/import --rev` and `dvc artifacts get` name.

Every run of the scheduled workflow that commits new data is a release, so that any published
version can be named. Its tags, on the commit that records it:
  data-YYYY-MM-DD        the run's as-of date; data-YYYY-MM-DD.N for the N-th later release of
                         that date (the Sunday audit follows the daily run; a dispatch may rerun)
  NAME@vYYYYMMDD.N.0     one per artifact of dvc.yaml: the form DVC's `dvc artifacts get` (GTO)
                         looks for, a semantic version that grows with the date and N
The workflow pipes `git ls-remote --tags --refs` of the hosted repository in, so that a name is
never taken twice: `python -m pipeline.ops.release --as-of DATE < ls-remote-output`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from pipeline.arguments import iso_date
from pipeline.errors import PipelineError

LS_REMOTE_LINE = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?\trefs/tags/(?P<tag>\S+)$")
# The names GTO (and so `dvc artifacts get`) accepts.
ARTIFACT_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-/_]*[a-zA-Z0-9])?$")


def data_tag(as_of: dt.date, n: int) -> str:
    return f"data-{as_of.isoformat()}" + (f".{n}" if n else "")


def artifact_tag(name: str, as_of: dt.date, n: int) -> str:
    return f"{name}@v{as_of:%Y%m%d}.{n}.0"


def release_tags(as_of: dt.date, existing: Iterable[str], artifacts: Sequence[str]) -> list[str]:
    """The tags of the next release as of `as_of`: the first N for which none exists yet."""
    taken = set(existing)
    n = 0
    while data_tag(as_of, n) in taken or any(
        artifact_tag(name, as_of, n) in taken for name in artifacts
    ):
        n += 1
    return [data_tag(as_of, n), *(artifact_tag(name, as_of, n) for name in artifacts)]


def tags_of(ls_remote: str) -> list[str]:
    """The tag names in `git ls-remote --tags --refs` output; any other line is refused."""
    tags = []
    for number, line in enumerate(ls_remote.splitlines(), start=1):
        if not line.strip():
            continue
        match = LS_REMOTE_LINE.match(line)
        if match is None:
            raise PipelineError(f"line {number} of git ls-remote's output is not a tag: {line!r}")
        tags.append(match["tag"])
    return tags


def artifact_names(dvc_yaml: Path) -> list[str]:
    """The names under dvc.yaml's `artifacts:`, in order; a name GTO would refuse is refused."""
    try:
        document = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PipelineError(f"cannot read {dvc_yaml}: {exc}") from None
    artifacts = document.get("artifacts") if isinstance(document, dict) else None
    if not isinstance(artifacts, dict) or not artifacts:
        raise PipelineError(f"{dvc_yaml} declares no artifacts (artifacts: NAME: path: …)")
    names = [str(name) for name in artifacts]
    for name in names:
        if not ARTIFACT_NAME.match(name):
            raise PipelineError(
                f"{dvc_yaml}: artifact name {name!r} is not one DVC accepts (letters, digits, "
                "- _ /, starting and ending with a letter or digit)"
            )
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.ops.release",
        description="Print the git tags of the next data release, one a line, given the "
        "output of `git ls-remote --tags --refs` on stdin.",
    )
    parser.add_argument("--as-of", type=iso_date, required=True, metavar="DATE")
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"), metavar="PATH")
    args = parser.parse_args(argv)
    try:
        tags = release_tags(args.as_of, tags_of(sys.stdin.read()), artifact_names(args.dvc_yaml))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(tags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
