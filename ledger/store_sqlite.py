"""The embedded store: one SQLite file in WAL mode with full synchronous commits.

``journal_mode=WAL`` lets readers (``gridloop ledger show`` during a run) work while the bench
writes; ``synchronous=FULL`` makes every commit durable before it returns, so a process or
machine that dies after a commit loses nothing.  Writers take the database lock up front
(``BEGIN IMMEDIATE``), so two processes never interleave a nonce check and an insert.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ledger.errors import StoreError
from ledger.store import Store


class SQLiteStore(Store):
    """A ledger in one SQLite file (with its ``-wal`` and ``-shm`` companions)."""

    def __init__(self, path: Path, *, create: bool = True, readonly: bool = False) -> None:
        super().__init__(str(path))
        if path.is_dir():
            raise StoreError(f"{path}: is a directory, not a ledger file")
        if (readonly or not create) and not path.is_file():
            raise StoreError(f"{path}: no such ledger")
        if readonly:
            self._conn = self._connect_readonly(path)
        else:
            try:
                # One connection, used by one thread at a time (the caller serialises), not
                # necessarily the thread that opened it (the bench may call from a worker
                # thread).
                self._conn = sqlite3.connect(path, isolation_level=None, timeout=30.0,
                                             check_same_thread=False)
            except sqlite3.Error as exc:
                raise StoreError(f"{path}: cannot open: {exc}") from None
        try:
            if readonly:  # a file that is not a database fails here
                self._conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            else:
                mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                self._conn.execute("PRAGMA synchronous=FULL")
                if mode.lower() != "wal":
                    raise StoreError(f"{path}: cannot switch to WAL mode (got {mode})")
            if create and not readonly:
                self._create_schema()
            self._check_format()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            what = ("a corrupt SQLite database (truncated or overwritten?)"
                    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CORRUPT
                    else "not a SQLite database")
            raise StoreError(f"{path}: {what}: {exc}") from None
        except StoreError:
            self._conn.close()
            raise

    @staticmethod
    def _connect_readonly(path: Path) -> sqlite3.Connection:
        """Open without writing anything: the file, its journal mode and its directory stay
        as they are (an auditor's copy, read-only media)."""
        uri = path.resolve().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30.0,
                               check_same_thread=False)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # a WAL ledger on read-only media, where its -shm cannot be made: nothing can
            # write there either, so it is read as immutable
            conn.close()
            conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError:
            pass  # not a database: the caller says so
        return conn

    @property
    def _db_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _end(self, commit: bool) -> None:
        if commit or self._conn.in_transaction:  # some errors end the transaction themselves
            self._conn.execute("COMMIT" if commit else "ROLLBACK")

    def _stream(self, sql: str, params: Sequence[Any] = (),
                size: int = 5000) -> Iterator[list[tuple]]:
        try:
            cursor = self._conn.execute(sql, params)
        except sqlite3.Error as exc:  # e.g. a table dropped
            raise StoreError(f"{self.location}: {exc}") from None
        while True:
            try:
                batch = cursor.fetchmany(size)
            except sqlite3.Error as exc:  # e.g. a body rewritten as undecodable text
                reason = str(exc).split(" with text")[0]
                raise StoreError(f"{self.location}: a stored record cannot be read ({reason}); "
                                 "the ledger was altered outside gridloop") from None
            if not batch:
                return
            yield batch

    def close(self) -> None:
        self._conn.close()
