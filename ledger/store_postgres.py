"""The scale-out store: the same schema in a PostgreSQL database (``postgresql://...``).

Several processes or machines may share one ledger: every write transaction first takes a
transaction-scoped advisory lock keyed on the schema, so nonce checks, inserts and block
seals are serialised exactly as ``BEGIN IMMEDIATE`` serialises them in SQLite.  Point several
ledgers at one database with ``?options=-csearch_path%3DNAME`` in the URL.  Needs the
``postgres`` extra (psycopg 3).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ledger.errors import StoreError
from ledger.store import Store

try:
    import psycopg
except ImportError:  # the optional extra is missing: only this store is unavailable
    psycopg = None


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


class PostgresStore(Store):
    """A ledger in a PostgreSQL schema (the first one on the connection's search path)."""

    placeholder = "%s"
    seq_primary_key = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    blob = "BYTEA"

    def __init__(self, url: str, *, create: bool = True) -> None:
        super().__init__(redact(url))
        self._cursors = 0
        if psycopg is None:
            raise StoreError(f"{self.location}: the PostgreSQL store needs psycopg; "
                             "install gridloop[postgres]")
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"{self.location}: cannot connect: "
                             f"{str(exc).strip().splitlines()[0]}") from None
        try:
            if create:
                self._create_schema()
            self._check_format()
        except StoreError:
            self._conn.close()
            raise

    @property
    def _db_errors(self) -> tuple[type[BaseException], ...]:
        return (psycopg.Error,)

    def _altered(self, exc: BaseException) -> bool:
        return isinstance(exc, (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn))

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, params)

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(sql, rows)

    def _begin(self) -> None:
        self._conn.execute("BEGIN")
        self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")

    def _end(self, commit: bool) -> None:
        self._conn.execute("COMMIT" if commit else "ROLLBACK")

    def _begin_read(self) -> None:
        """One ``REPEATABLE READ`` transaction: every query in it sees the snapshot taken at
        its first, whatever other sessions commit meanwhile."""
        self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        self._conn.execute("SELECT 1")  # the snapshot is taken at the first query

    def _end_read(self) -> None:
        self._conn.execute("ROLLBACK")

    def _stream(self, sql: str, params: Sequence[Any] = (),
                size: int = 5000) -> Iterator[list[tuple]]:
        """Batches through a server-side cursor: inside a snapshot, in its transaction;
        otherwise in a transaction of its own (a server-side cursor needs one)."""
        self._cursors += 1
        name = f"ledger_stream_{self._cursors}"
        try:
            if self._reading:
                with self._conn.cursor(name=name) as cursor:
                    yield from self._batches(cursor, sql, params, size)
            else:
                with self._conn.transaction(), self._conn.cursor(name=name) as cursor:
                    yield from self._batches(cursor, sql, params, size)
        except psycopg.Error as exc:
            raise self._error(exc) from None

    @staticmethod
    def _batches(cursor: Any, sql: str, params: Sequence[Any],
                 size: int) -> Iterator[list[tuple]]:
        cursor.execute(sql, params)
        while batch := cursor.fetchmany(size):
            yield batch

    def close(self) -> None:
        self._conn.close()
