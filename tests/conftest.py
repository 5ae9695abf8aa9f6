"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("GRIDLOOP_SHARED_DATA")
    if env:
        return Path(env)
    for base in (REPO.parent, REPO):
        candidate = base / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: the real H100 recordings (never copied into the repository)."""
    path = _shared_data_dir()
    if not (path / "README.md").is_file():
        pytest.fail(f"shared data not found at {path}; set GRIDLOOP_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server: ``GRIDLOOP_TEST_POSTGRES``, or one this session starts on
    loopback in a temporary directory (initdb + pg_ctl).  Without PostgreSQL binaries the
    tests that use it fail: they are never skipped."""
    url = os.environ.get("GRIDLOOP_TEST_POSTGRES")
    if url:
        yield url
        return
    from ledger.pgserver import temporary_server

    with temporary_server() as started:
        yield started
