"""Fixtures shared by the test modules; their helpers are in tests/support.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import responses

from devtools.emulator import Emulator
from tests import e2e_support as e2e
from tests.support import STAGE_PARAMS, Bucket, write_params

# --- in process: a working directory and the emulator behind `responses` --------------------
# Fixture names here: workspace, empty_bucket, bucket.


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory as the working directory, with the stage tests' params.yaml."""
    write_params(tmp_path, STAGE_PARAMS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def empty_bucket() -> Iterator[Bucket]:
    """An in-process bucket with no file yet; any other HTTP request fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        bucket = Bucket()
        bucket.register(mock)
        yield bucket


@pytest.fixture
def bucket(empty_bucket: Bucket) -> Bucket:
    """The stage tests' bucket: an old symbol with one missing day, a delivery contract and a
    new listing whose name is not ASCII."""
    empty_bucket.add_days("BTCUSDT", "2019-09-25", "2024-05-31", skip=("2023-03-03",))
    empty_bucket.add_days("BTCUSDT_240628", "2024-03-01", "2024-05-31")
    empty_bucket.add_days("币安人生USDT", "2024-05-20", "2024-05-31")
    return empty_bucket


# --- end to end: the real dvc repro on the emulator over HTTP (tests/e2e_support.py) --------
# Fixture names here: e2e_emulator, built, emulator.


@pytest.fixture(scope="session")
def e2e_emulator() -> Iterator[Emulator]:
    """The session's emulator on 127.0.0.1; the `emulator` fixture resets it for each test."""
    with Emulator(e2e.universe()) as server:
        yield server


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, e2e_emulator: Emulator) -> e2e.Built:
    """One project built for the session by a real first run and rerun (e2e.build); copy it."""
    return e2e.build(tmp_path_factory.mktemp("e2e"), e2e_emulator)


@pytest.fixture
def emulator(e2e_emulator: Emulator) -> Emulator:
    """The session's emulator serving the e2e universe, with no fault and no request counted."""
    return e2e.reset(e2e_emulator)
