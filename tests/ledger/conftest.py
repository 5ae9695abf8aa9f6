"""Fixtures of the ledger tests: one suite over both stores, on a real PostgreSQL server.

``ledger_target`` is parametrised over ``sqlite`` (a file in the test's tmp dir) and
``postgres`` (a fresh schema in the session's server: the ``postgres_server`` fixture of
``tests/conftest.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.keys import KeyDirectory
from ledger.pgserver import new_schema_url
from ledger.store import is_postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Make targets for new, empty ledgers: SQLite paths or PostgreSQL URLs (both, by
    parametrisation)."""
    if request.param == "sqlite":
        counter = iter(range(10**9))
        return lambda: str(tmp_path / f"ledger{next(counter)}.db")
    server = request.getfixturevalue("postgres_server")
    return lambda: new_schema_url(server)


@pytest.fixture
def ledger_target(new_ledger: Callable[[], str]) -> str:
    """Where a new ledger goes: a SQLite path or a PostgreSQL URL."""
    return new_ledger()


@pytest.fixture
def keys(tmp_path: Path) -> KeyDirectory:
    return KeyDirectory(tmp_path / "keys")


class Raw:
    """A plain DB-API connection to a ledger, for tests that tamper with it as an attacker
    with write access to the database would."""

    def __init__(self, target: str) -> None:
        self.postgres = is_postgres_url(target)
        if self.postgres:
            import psycopg

            self.conn: Any = psycopg.connect(target, autocommit=True)
        else:
            self.conn = sqlite3.connect(target, isolation_level=None)

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        cursor = self.conn.execute(sql.replace("?", "%s") if self.postgres else sql, params)
        rows = cursor.fetchall() if cursor.description else []
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def raw() -> Iterator[Callable[[str], Raw]]:
    """Open :class:`Raw` connections; all are closed after the test."""
    opened: list[Raw] = []

    def connect(target: str) -> Raw:
        opened.append(Raw(target))
        return opened[-1]

    yield connect
    for conn in opened:
        conn.close()
