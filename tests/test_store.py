import datetime as dt
import errno
from pathlib import Path

import polars as pl
import pytest

from pipeline.atomic import WriteError
from pipeline.config import DatasetConfig
from pipeline.dataset.commit import finish_interrupted_commit
from pipeline.dataset.merge import merge
from pipeline.dataset.schema import SCHEMA, empty
from pipeline.dataset.store import (
    StoreError,
    partition_files,
    read_months,
    summarize,
    write_parquet,
)
from tests.support import T0, commit_dataset, frame, row

T1 = T0 + dt.timedelta(days=1)
ID = DatasetConfig("um", "klines", "1m", dt.date(2019, 9, 25), "perpetual")


def test_newest_probe_wins_and_keys_are_unique():
    old = frame(row("2024-01-01", "A"), row("2024-01-02", "A", False))
    new = frame(row("2024-01-02", "A", probed=T1, size=555))
    merged = merge(old, new)
    assert merged.select("date", "symbol", "available", "file_size_bytes").rows() == [
        (dt.date(2024, 1, 1), "A", True, 100),
        (dt.date(2024, 1, 2), "A", True, 555),
    ]


def test_an_older_probe_never_overwrites_a_newer_one_whatever_the_order():
    newer = frame(row("2024-01-02", "A", False, probed=T1), row("2024-01-01", "A"))
    older = frame(row("2024-01-02", "A", probed=T0, size=7))
    assert merge(newer, older).equals(merge(older, newer))
    assert merge(newer, older).filter(pl.col("date") == dt.date(2024, 1, 2))[
        "available"
    ].to_list() == [False]


def test_equal_timestamps_go_to_the_later_frame():
    first = frame(row("2024-01-01", "A", size=1))
    second = frame(row("2024-01-01", "A", size=2))
    assert merge(first, second)["file_size_bytes"].to_list() == [2]


def test_merge_is_idempotent_and_sorted():
    data = frame(row("2024-01-02", "B"), row("2024-01-01", "B"), row("2024-01-01", "A"))
    once = merge(data)
    assert merge(once, data).equals(once)
    assert once.select("date", "symbol").rows() == sorted(once.select("date", "symbol").rows())
    assert dict(once.schema) == SCHEMA


def test_rows_before_a_symbols_first_file_are_dropped():
    probes = frame(
        row("2024-01-01", "NEW", False),
        row("2024-01-02", "NEW", False),
        row("2024-01-03", "NEW"),
        row("2024-01-04", "NEW", False),
        row("2024-01-01", "NEVER", False),
    )
    kept = merge(probes)
    assert kept.select("date", "symbol", "available").rows() == [
        (dt.date(2024, 1, 3), "NEW", True),
        (dt.date(2024, 1, 4), "NEW", False),
    ]


def test_write_dataset_partitions_by_month_and_reads_back(tmp_path):
    rows = merge(
        frame(row("2024-01-31", "A"), row("2024-02-01", "A"), row("2024-02-01", "币安人生USDT"))
    )
    months = commit_dataset(rows, tmp_path / "ds", ID, previous=empty())
    assert months == ["2024-01", "2024-02"]
    assert [p.name for p in partition_files(tmp_path / "ds")] == [
        "2024-01.parquet",
        "2024-02.parquet",
    ]
    assert pl.read_parquet(tmp_path / "ds" / "**" / "*.parquet").equals(rows)
    assert read_months(tmp_path / "ds", ["2024-01", "2024-02"]).equals(rows)
    assert summarize(tmp_path / "ds", ID).symbols == {"A", "币安人生USDT"}


def test_only_changed_months_are_rewritten_and_unchanged_bytes_stay(tmp_path):
    ds = tmp_path / "ds"
    before = merge(frame(row("2024-01-31", "A"), row("2024-02-01", "A")))
    commit_dataset(before, ds, ID, previous=empty())
    january = (ds / "2024-01.parquet").stat()
    after = merge(before, frame(row("2024-02-01", "A", False, probed=T1)))
    assert commit_dataset(after, ds, ID, previous=read_months(ds, ["2024-01", "2024-02"])) == [
        "2024-02"
    ]
    assert (ds / "2024-01.parquet").stat().st_mtime_ns == january.st_mtime_ns
    assert commit_dataset(after, ds, ID, previous=read_months(ds, ["2024-01", "2024-02"])) == []


def test_identical_rows_give_byte_identical_files(tmp_path):
    rows = merge(frame(row("2024-01-02", "B"), row("2024-01-01", "A")))
    write_parquet(rows, tmp_path / "one.parquet")
    write_parquet(rows.reverse(), tmp_path / "two.parquet")
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "2024-01.parquet"
    write_parquet(merge(frame(row("2024-01-01", "A"))), path)
    original = path.read_bytes()

    def explode(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", explode)
    with pytest.raises(OSError, match="disk full"):
        write_parquet(merge(frame(row("2024-01-01", "B"))), path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["2024-01.parquet"]


def test_missing_dataset_is_empty_only_on_a_genuine_first_run(tmp_path):
    assert summarize(tmp_path / "ds", ID, lock=tmp_path / "dvc.lock").symbols == set()
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  update:\n    cmd: python -m pipeline.stages.update\n"
        "    outs:\n    - path: " + str(tmp_path / "ds") + "\n      hash: md5\n"
    )
    with pytest.raises(
        StoreError, match=r"recorded in .*dvc.lock but missing here: run `dvc pull`"
    ):
        summarize(tmp_path / "ds", ID, lock=tmp_path / "dvc.lock")


def test_damaged_partitions_are_refused_with_the_fix(tmp_path):
    ds = tmp_path / "ds"
    commit_dataset(merge(frame(row("2024-01-01", "A"))), ds, ID, previous=empty())
    path = ds / "2024-01.parquet"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(
        StoreError, match=r"2024-01.parquet is not a readable Parquet file .*dvc checkout"
    ):
        summarize(ds, ID)
    pl.DataFrame({"date": [dt.date(2024, 1, 1)], "symbol": ["A"]}).write_parquet(path)
    with pytest.raises(
        StoreError, match=r"has columns date:Date, symbol:String, expected date:Date"
    ):
        summarize(ds, ID)


def test_a_failure_while_writing_any_month_leaves_every_month_as_it_was(tmp_path, monkeypatch):
    ds = tmp_path / "ds"
    before = merge(frame(row("2024-01-31", "A"), row("2024-02-01", "A")))
    commit_dataset(before, ds, ID, previous=empty())
    original = {p.name: p.read_bytes() for p in ds.iterdir()}
    after = merge(
        before,
        frame(row("2024-01-31", "A", probed=T1, size=9), row("2024-02-01", "A", probed=T1, size=9)),
    )
    writes = []

    def second_write_fails(self, path, **kwargs):
        writes.append(path)
        if len(writes) == 2:
            raise OSError("disk full")
        return real_write(self, path, **kwargs)

    real_write = pl.DataFrame.write_parquet
    monkeypatch.setattr(pl.DataFrame, "write_parquet", second_write_fails)
    with pytest.raises(OSError, match="disk full"):
        commit_dataset(after, ds, ID, previous=before)
    assert {p.name: p.read_bytes() for p in ds.iterdir()} == original


def test_a_partly_missing_dataset_is_not_read_as_truncated(tmp_path):
    ds = tmp_path / "ds"
    commit_dataset(
        merge(frame(row("2024-01-31", "A"), row("2024-02-01", "A"))), ds, ID, previous=empty()
    )
    lock = tmp_path / "dvc.lock"
    lock.write_text(f"stages:\n  update:\n    outs:\n    - path: {ds}\n      nfiles: 3\n")
    assert summarize(ds, ID, lock=lock).symbols == {"A"}
    (ds / "2024-01.parquet").unlink()
    with pytest.raises(
        StoreError, match=r"has 2 of the 3 files .*dvc.lock records: run `dvc checkout`"
    ):
        summarize(ds, ID, lock=lock)


def test_a_dataset_of_other_params_is_never_merged_into(tmp_path):
    ds = tmp_path / "ds"
    commit_dataset(merge(frame(row("2024-01-31", "A"))), ds, ID, previous=empty())
    hourly = DatasetConfig("um", "klines", "1h", dt.date(2019, 9, 25), "perpetual")
    with pytest.raises(StoreError) as refused:
        summarize(ds, hourly)
    assert str(refused.value) == (
        f"{ds} holds contracts perpetual, data_type klines, interval 1m, market um, start_date "
        "2019-09-25 but params.yaml asks for contracts perpetual, data_type klines, interval 1h, "
        f"market um, start_date 2019-09-25: move {ds} aside to build a new dataset"
    )
    (ds / "_dataset.json").unlink()
    with pytest.raises(StoreError, match=r"_dataset\.json is missing or unreadable"):
        summarize(ds, ID)


def test_merging_part_of_the_dataset_keeps_rows_of_symbols_whose_first_file_is_elsewhere():
    window = frame(row("2024-03-01", "OLD", False, probed=T1), row("2024-03-01", "NEW", False))
    known = pl.DataFrame(
        {"symbol": ["OLD"], "first_file": [dt.date(2020, 1, 1)]},
        schema={"symbol": pl.String, "first_file": pl.Date},
    )
    assert merge(window, first_files=known).select("symbol", "available").rows() == [("OLD", False)]
    assert merge(window).is_empty()


def test_a_leftover_temporary_file_does_not_hide_a_missing_partition(tmp_path):
    ds = tmp_path / "ds"
    rows = merge(frame(row("2024-01-31", "A"), row("2024-02-01", "A")))
    commit_dataset(rows, ds, ID, previous=empty())
    lock = tmp_path / "dvc.lock"
    lock.write_text(f"stages:\n  update:\n    outs:\n    - path: {ds}\n      nfiles: 3\n")
    (ds / "2024-01.parquet").unlink()
    (ds / ".2024-02.parquet.abcd.tmp").write_bytes(b"half written")
    with pytest.raises(StoreError, match="has 2 of the 3 files"):
        summarize(ds, ID, lock=lock)
    finish_interrupted_commit(ds, tmp_path / "changes.parquet")  # every stage's first step
    commit_dataset(rows, ds, ID, previous=empty())
    assert sorted(p.name for p in ds.iterdir()) == [
        "2024-01.parquet",
        "2024-02.parquet",
        "_dataset.json",
    ]


def test_a_dataset_with_no_rows_yet_is_empty_not_missing(tmp_path):
    ds = tmp_path / "ds"
    commit_dataset(empty(), ds, ID, previous=empty())
    lock = tmp_path / "dvc.lock"
    lock.write_text(f"stages:\n  update:\n    outs:\n    - path: {ds}\n      nfiles: 1\n")
    assert summarize(ds, ID, lock=lock).symbols == set()


def denied(source, *_args, **_kwargs):
    """A read the permissions refuse, as the OS reports it."""
    raise PermissionError(errno.EACCES, "Permission denied", str(source))


def permission_denied(path) -> str:
    return (
        f"cannot read {path}: permission denied: "
        "check the permissions of the file and its folder, and rerun"
    )


@pytest.mark.parametrize(
    ("reader", "read"),
    [
        ("read_parquet_schema", lambda ds: summarize(ds, ID)),
        ("read_parquet", lambda ds: read_months(ds, ["2024-01"])),
    ],
)
def test_a_partition_we_may_not_read_names_the_permissions_not_damage(
    tmp_path, monkeypatch, reader, read
):
    ds = tmp_path / "ds"
    commit_dataset(merge(frame(row("2024-01-31", "A"))), ds, ID, previous=empty())
    monkeypatch.setattr(pl, reader, denied)
    with pytest.raises(WriteError) as refused:
        read(ds)
    assert str(refused.value) == permission_denied(ds / "2024-01.parquet")


def test_an_identity_file_we_may_not_read_names_the_permissions_not_damage(tmp_path, monkeypatch):
    ds = tmp_path / "ds"
    commit_dataset(merge(frame(row("2024-01-31", "A"))), ds, ID, previous=empty())
    read_text = Path.read_text

    def identity_denied(self, *args, **kwargs):
        if self.name == "_dataset.json":
            denied(self)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", identity_denied)
    with pytest.raises(WriteError) as refused:
        summarize(ds, ID)
    assert str(refused.value) == permission_denied(ds / "_dataset.json")
