import datetime as dt
import errno

import polars as pl
import pytest

from pipeline.atomic import WriteError
from pipeline.dataset.changes import CHANGES_SCHEMA, append_changes, detect_changes, read_changes
from pipeline.dataset.commit import staged_commit
from pipeline.dataset.store import StoreError
from tests.support import D, frame, row

NOW = dt.datetime(2026, 11, 29, 6, tzinfo=dt.UTC)


def changes_of(previous: pl.DataFrame, merged: pl.DataFrame, through: str = "2024-01-05"):
    found = detect_changes(previous, merged, known_through=D(through), detected_at=NOW)
    assert dict(found.schema) == CHANGES_SCHEMA
    assert found["detected_at"].to_list() == [NOW] * found.height
    return found.drop("detected_at", "old_last_modified", "new_last_modified").rows()


def test_each_kind_of_change_is_one_row_with_old_and_new_file():
    previous = frame(
        row("2024-01-01", "A"),
        row("2024-01-02", "A", False),
        row("2024-01-03", "A"),
        row("2024-01-04", "A", size=100, etag="old"),
        row("2024-01-05", "A"),
    )
    merged = frame(
        row("2024-01-01", "A"),
        row("2024-01-02", "A", size=7, etag="late"),
        row("2024-01-03", "A", False),
        row("2024-01-04", "A", size=120, etag="new"),
        row("2024-01-05", "A"),
    )
    assert changes_of(previous, merged) == [
        (D("2024-01-02"), "A", "appeared", None, 7, None, "late"),
        (D("2024-01-03"), "A", "removed", 100, None, "e", None),
        (D("2024-01-04"), "A", "replaced", 100, 120, "old", "new"),
    ]


def test_a_reupload_with_the_same_bytes_is_a_replacement_with_both_timestamps():
    previous = frame(row("2019-09-25", "A", etag="same"))
    reuploaded = dt.datetime(2022, 3, 1, tzinfo=dt.UTC)
    merged = previous.with_columns(last_modified=pl.lit(reuploaded))
    found = detect_changes(previous, merged, known_through=D("2019-09-25"), detected_at=NOW)
    assert found.select("kind", "old_etag", "new_etag", "new_last_modified").rows() == [
        ("replaced", "same", "same", reuploaded)
    ]
    assert found["old_last_modified"].to_list() == previous["last_modified"].to_list()


def test_new_days_and_new_symbols_are_growth_not_changes():
    previous = frame(row("2024-01-05", "A"))
    merged = frame(row("2024-01-05", "A"), row("2024-01-06", "A"), row("2024-01-01", "NEW"))
    assert changes_of(previous, merged) == []


def test_a_file_found_before_a_symbols_first_file_appeared_and_a_dropped_first_file_was_removed():
    previous = frame(row("2024-01-03", "A"), row("2024-01-04", "A"), row("2024-01-03", "B"))
    merged = frame(row("2024-01-01", "A"), row("2024-01-03", "A"), row("2024-01-04", "A"))
    assert changes_of(previous, merged) == [
        (D("2024-01-01"), "A", "appeared", None, 100, None, "e"),
        (D("2024-01-03"), "B", "removed", 100, None, "e", None),
    ]


def test_an_unchanged_merge_and_a_newer_probe_of_the_same_files_log_nothing():
    previous = frame(row("2024-01-01", "A"), row("2024-01-02", "A", False))
    reprobed = previous.with_columns(probe_timestamp=pl.lit(NOW))
    assert changes_of(previous, previous) == []
    assert changes_of(previous, reprobed) == []


def test_the_log_is_appended_atomically_and_only_when_the_commit_applies(tmp_path):
    path = tmp_path / "changes.parquet"
    journal = tmp_path / ".commit.json"
    first = detect_changes(
        frame(row("2024-01-01", "A", False)),
        frame(row("2024-01-01", "A")),
        known_through=D("2024-01-01"),
        detected_at=NOW,
    )
    with staged_commit(journal) as commit:
        assert append_changes(path, first, commit=commit) == 1
        assert not path.exists()
    with pytest.raises(RuntimeError), staged_commit(journal) as commit:
        append_changes(path, first, commit=commit)
        raise RuntimeError("the dataset write failed")
    assert read_changes(path).equals(first)
    with staged_commit(journal) as commit:
        assert append_changes(path, first.head(0), commit=commit) == 0
    assert read_changes(path).height == 1
    # Besides the log, only the writers' lock file (empty: it holds no state).
    assert sorted(p.name for p in tmp_path.iterdir()) == [".commit.json.lock", "changes.parquet"]


def test_a_damaged_log_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "changes.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(StoreError, match="is not a readable Parquet file: restore it with `dvc"):
        read_changes(path)


def test_a_log_we_may_not_read_names_the_permissions_not_damage(tmp_path, monkeypatch):
    path = tmp_path / "changes.parquet"
    path.write_bytes(b"PAR1 any bytes")

    def denied(source, *_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(source))

    monkeypatch.setattr(pl, "read_parquet", denied)
    with pytest.raises(WriteError) as refused:
        read_changes(path)
    assert str(refused.value) == (
        f"cannot read {path}: permission denied: "
        "check the permissions of the file and its folder, and rerun"
    )
