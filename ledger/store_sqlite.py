"""The embedded store: one SQLite file in WAL mode with full synchronous commits.

``journal_mode=WAL`` lets readers (``gridloop ledger show`` during a run) work while the bench
writes; ``synchronous=FULL`` makes every commit durable before it returns, so a process or
machine that dies after a commit loses nothing.  Writers take the database lock up front
(``BEGIN IMMEDIATE``), so two processes never interleave a nonce check and an insert.

Read-only opening (``verify``, ``export``, ``show``) writes nothing, not even the ``-wal`` and
``-shm`` files a WAL reader would make: a WAL ledger that no process has open (it has no
``-wal`` file; a writer keeps one while it has the ledger open) is read as ``immutable``, and
:meth:`SQLiteStore.check_unchanged` then tells whether a writer changed the file meanwhile.
A ledger that a process has open is read through its existing ``-wal`` and ``-shm``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ledger.errors import StoreError
from ledger.store import Store

SQLITE_HEADER = b"SQLite format 3\x00"
CORRUPT = "a corrupt SQLite database (truncated or overwritten?)"


def _text(raw: bytes) -> str:
    """TEXT values as str; bytes that are not UTF-8 (a key rewritten as text by hand) are
    read with replacement characters instead of failing the whole query."""
    return raw.decode("utf-8", "replace")


def _is_wal(path: Path) -> bool:
    """Whether the file's header says WAL mode (read and write versions 2)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return header[:16] == SQLITE_HEADER and header[18:20] == b"\x02\x02"


def _stat(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


class SQLiteStore(Store):
    """A ledger in one SQLite file (with its ``-wal`` and ``-shm`` companions)."""

    def __init__(self, path: Path, *, create: bool = True, readonly: bool = False) -> None:
        super().__init__(str(path))
        self._path = path
        self._snapshot: tuple[int, int, int] | None = None
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
        self._conn.text_factory = _text
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
            what = (CORRUPT
                    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CORRUPT
                    else "not a SQLite database")
            raise StoreError(f"{path}: {what}: {exc}") from None
        except StoreError:
            self._conn.close()
            raise

    def _connect_readonly(self, path: Path) -> sqlite3.Connection:
        """Open without writing anything: the file, its journal mode and its directory stay
        as they are (an auditor's copy, read-only media), and no ``-wal`` or ``-shm`` file is
        left beside it."""
        uri = path.resolve().as_uri()
        if _is_wal(path) and not Path(f"{path}-wal").exists():
            # no process has it open, and all it holds is in the file: a mode=ro reader would
            # create -wal and -shm (and could not remove them), so read it as immutable
            self._snapshot = _stat(path)
            return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True,
                                   isolation_level=None, check_same_thread=False)
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30.0,
                               check_same_thread=False)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # a WAL ledger on read-only media, where its -shm cannot be made: nothing can
            # write there either, so it is read as immutable
            conn.close()
            self._snapshot = _stat(path)
            conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError:
            pass  # not a database: the caller says so
        return conn

    def _check_format(self) -> None:
        """As :meth:`Store._check_format`, but a WAL file read without its ``-wal`` (read as
        immutable) that holds no table at all is named as such: what a killed run committed is
        in its ``-wal``, not yet checkpointed into the file."""
        if self._snapshot is not None and _is_wal(self._path) and \
                not Path(f"{self._path}-wal").exists() and \
                not self._conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
            raise StoreError(
                f"{self._path}: not a gridloop ledger on its own: the file is in WAL mode and "
                f"{self._path.name}-wal, which holds what was not yet checkpointed into it, is "
                "missing (a ledger of a killed run, copied without its -wal?); copy the -wal "
                "beside it")
        super()._check_format()

    @property
    def _db_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def _altered(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and \
            str(exc).startswith(("no such table", "no such column"))

    def _error(self, exc: BaseException) -> StoreError:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CORRUPT:
            return StoreError(f"{self.location}: {CORRUPT}: {exc}")
        return super()._error(exc)

    def check_integrity(self) -> None:
        """``PRAGMA quick_check``: every page and b-tree of the file well-formed."""
        problems = [" ".join(str(p).split()) for (p,) in self._query("PRAGMA quick_check")
                    if p != "ok"]
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise StoreError(f"{self.location}: {CORRUPT}: quick_check: {problems[0]}{more}")

    def check_unchanged(self) -> None:
        """A ledger read as immutable must not have changed while it was read (a run that
        started on it and checkpointed): then what was read may mix two states."""
        if self._snapshot is None:
            return
        try:
            now = _stat(self._path)
        except OSError:
            now = None
        if now != self._snapshot:
            raise StoreError(f"{self.location}: changed while it was read (a run writing to "
                             "it?); run the command again")

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _end(self, commit: bool) -> None:
        if commit or self._conn.in_transaction:  # some errors end the transaction themselves
            self._conn.execute("COMMIT" if commit else "ROLLBACK")

    def _begin_read(self) -> None:
        """``BEGIN`` and a first read: in WAL mode that fixes the snapshot, and a writer's
        later commits (or checkpoints) do not reach this reader until :meth:`_end_read`."""
        self._conn.execute("BEGIN")
        try:
            self._conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            self._conn.execute("ROLLBACK")
            raise

    def _end_read(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def _stream(self, sql: str, params: Sequence[Any] = (),
                size: int = 5000) -> Iterator[list[tuple]]:
        try:
            cursor = self._conn.execute(sql, params)
        except sqlite3.Error as exc:  # e.g. a table dropped
            raise self._error(exc) from None
        while True:
            try:
                batch = cursor.fetchmany(size)
            except sqlite3.Error as exc:  # e.g. a damaged page
                raise self._error(exc) from None
            if not batch:
                return
            yield batch

    def close(self) -> None:
        self._conn.close()
