"""The hash-chained record store: one schema, two databases (SQLite and PostgreSQL).

Tables (the same in both; ``BLOB`` is ``BYTEA`` in PostgreSQL)::

    meta(key TEXT PRIMARY KEY, value TEXT)               format, ledger_id, operator,
                                                         interval_ms, accounts_signature,
                                                         gates_signature,
                                                         import_price_micro_per_wh,
                                                         export_price_micro_per_wh,
                                                         tariff_signature
    accounts(name TEXT PRIMARY KEY, public_key BLOB UNIQUE, role TEXT)   node | grid | operator
    records(seq PRIMARY KEY, id BLOB UNIQUE, kind, signer BLOB, nonce, interval_no,
            body BLOB, signature BLOB, block, position, UNIQUE (signer, nonce))
    blocks(height PRIMARY KEY, interval_no UNIQUE, hash BLOB UNIQUE, header BLOB,
           signature BLOB)
    intervals(interval_no PRIMARY KEY, cleared)          gates that have closed (cleared = 1)

A record is stored when it arrives (``block`` NULL: pending) and becomes part of a block when
an interval is sealed: the pending records, in arrival order, are the block.  ``kind``,
``signer``, ``nonce`` and ``interval_no`` repeat what the body says, for queries; ``verify``
checks that they agree.  Every write runs in one transaction (:meth:`Store.transaction`), so a
process killed at any moment leaves either all of an operation or none of it.

``intervals`` holds the interval of every gate that closed: every sealed interval (sealing
closes its gate) and every interval cleared (``MarketSession.clear``) but not yet settled.
The session reads it to refuse late orders and to restart at the right time.  What the chain
cannot show, the gates closed after the last block's interval, the operator signs together
with the interval length (``meta.gates_signature`` over :func:`gates_body`), as it signs the
account table (``meta.accounts_signature`` over :func:`accounts_body`).
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from ledger import canonical
from ledger.chain import GENESIS_PREV, Block, BlockHeader, decode_header, merkle_root
from ledger.errors import AlteredStoreError, LedgerError, ReplayError, SignatureError, StoreError
from ledger.keys import Identity, fingerprint, verify_signatures
from ledger.records import BY_NAME, LEDGER_ID_BYTES, SignedRecord, signing_message
from ledger.settlement import TARIFF_KEYS

FORMAT = "gridloop-ledger 1"
ACCOUNTS_MAGIC = b"GLA\x01"
GATES_MAGIC = b"GLG\x01"
SIGNATURE_BYTES = 64

SIGNED_BY: dict[str, tuple[str, ...]] = {
    "order": ("node",), "trade": ("operator",), "meter_reading": ("node",),
    "settlement": ("operator",), "transfer": ("node", "grid")}
"""The account roles that sign each record kind: nodes place orders and read their meters,
the operator trades and settles, the buyer of a settlement (a node or the grid) pays it."""

ALTERED = "the ledger was altered outside gridloop"


def accounts_body(accounts: Iterable[tuple[str, bytes, str]]) -> bytes:
    """The canonical bytes of the account table that the operator signs: names bound to
    keys and roles, so ``show`` and ``export`` name accounts as the operator registered
    them."""
    return ACCOUNTS_MAGIC + canonical.encode([[n, k, r] for n, k, r in sorted(accounts)])


def gates_body(interval_ms: int, open_gates: Iterable[int]) -> bytes:
    """The canonical bytes the operator signs whenever a gate closes or an interval is sealed:
    the interval length and the gates closed after the last block's interval (cleared, not yet
    settled), ascending.  Gates up to the last block's interval are closed by the chain."""
    return GATES_MAGIC + canonical.encode([interval_ms, sorted(open_gates)])


@dataclass(frozen=True)
class Meta:
    """The ``meta`` table, checked to be well-formed (:meth:`Store.meta`).

    Parameters
    ----------
    ledger_id : bytes
        The ledger's random id (16 bytes), empty for a ledger made before ids.
    operator : bytes or None
        The market operator's public key (set by ``MarketSession``).
    interval_ms : int or None
        Length of a market interval, set with the operator. [ms]
    accounts_signature, gates_signature : bytes or None
        The operator's signatures of the account table and of the gates closed after the
        last block (:func:`accounts_body`, :func:`gates_body`).
    import_price_micro_per_wh, export_price_micro_per_wh : int or None
        The grid tariff (``MarketSession`` stores it; ``None`` on a ledger of an older
        gridloop). [micro-units/Wh]
    tariff_signature : bytes or None
        The operator's signature of the tariff
        (:func:`ledger.settlement.tariff_body`); ``verify`` checks that the three come
        together.
    """

    ledger_id: bytes
    operator: bytes | None
    interval_ms: int | None
    accounts_signature: bytes | None
    gates_signature: bytes | None
    import_price_micro_per_wh: int | None = None
    export_price_micro_per_wh: int | None = None
    tariff_signature: bytes | None = None

    def tariff_missing(self) -> list[str]:
        """The tariff's meta keys absent from a ledger that has some of them (empty when
        it has all three, or none: a ledger of an older gridloop)."""
        have = dict(zip((*TARIFF_KEYS, "tariff_signature"),
                        (self.import_price_micro_per_wh, self.export_price_micro_per_wh,
                         self.tariff_signature), strict=True))
        missing = [key for key, value in have.items() if value is None]
        return [] if len(missing) == len(have) else missing

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, public_key BLOB NOT NULL UNIQUE,
                                     role TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq SEQ_PRIMARY_KEY,
    id BLOB NOT NULL UNIQUE,
    kind INTEGER NOT NULL,
    signer BLOB NOT NULL,
    nonce BIGINT NOT NULL,
    interval_no BIGINT NOT NULL,
    body BLOB NOT NULL,
    signature BLOB NOT NULL,
    block BIGINT,
    position BIGINT,
    UNIQUE (signer, nonce));
CREATE INDEX IF NOT EXISTS records_interval ON records (interval_no, kind);
CREATE UNIQUE INDEX IF NOT EXISTS records_place ON records (block, position);
CREATE TABLE IF NOT EXISTS blocks (height BIGINT PRIMARY KEY, interval_no BIGINT NOT NULL UNIQUE,
                                   hash BLOB NOT NULL UNIQUE, header BLOB NOT NULL,
                                   signature BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS intervals (interval_no BIGINT PRIMARY KEY, cleared INTEGER NOT NULL);
"""

RECORD_COLUMNS = "seq, block, position, id, kind, signer, nonce, interval_no, body, signature"


_BLOB_TYPES = (bytes, bytearray, memoryview)


def _blobs(location: str, row: Sequence[Any], columns: dict[int, str], what: str) -> None:
    """Refuse a row whose binary columns hold something else (text written by hand)."""
    for i, name in columns.items():
        if not isinstance(row[i], _BLOB_TYPES):
            raise AlteredStoreError(f"{location}: {what}: {name} is stored as "
                                    f"{type(row[i]).__name__}, not bytes ({ALTERED})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _record_place(row: Sequence[Any]) -> str:
    """``pending record seq 61`` or ``record seq 5 (block 0 position 4)`` of a records row."""
    if row[1] is None:
        return f"pending record seq {row[0]}"
    return f"record seq {row[0]} (block {row[1]} position {row[2]})"


TABLES = {"meta": "key, value", "accounts": "name, public_key, role",
          "records": "seq, block, position, id, kind, signer, nonce, interval_no, body, "
                     "signature",
          "blocks": "height, interval_no, hash, header, signature",
          "intervals": "interval_no, cleared"}


class StoredRow(tuple):
    """One ``records`` row as stored, in :data:`RECORD_COLUMNS` order (its binary columns
    checked to be bytes, nothing else)."""

    __slots__ = ()
    seq = property(lambda s: s[0])
    block = property(lambda s: s[1])
    position = property(lambda s: s[2])
    id = property(lambda s: bytes(s[3]))
    kind = property(lambda s: s[4])
    signer = property(lambda s: bytes(s[5]))
    nonce = property(lambda s: s[6])
    interval = property(lambda s: s[7])
    body = property(lambda s: bytes(s[8]))
    signature = property(lambda s: bytes(s[9]))

    def signed(self) -> SignedRecord:
        return SignedRecord.from_bytes(self.body, self.signature)


class Store(ABC):
    """Records, blocks and accounts in a SQL database; subclasses bring the connection.

    Use :func:`open_store` to get one.  ``location`` names the database in every message.
    """

    placeholder = "?"
    seq_primary_key = "INTEGER PRIMARY KEY"
    blob = "BLOB"

    def __init__(self, location: str) -> None:
        self.location = location
        self._depth = 0
        self._reading = False
        self._streams: list[Iterator[list[tuple]]] = []
        self._ledger_id: bytes | None = None

    # -- what a database back-end provides ------------------------------------------------

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; return a cursor."""

    @abstractmethod
    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    @abstractmethod
    def _begin(self) -> None:
        """Start a write transaction that excludes every other writer until it ends."""

    @abstractmethod
    def _end(self, commit: bool) -> None: ...

    @abstractmethod
    def _begin_read(self) -> None:
        """Start a read transaction: every query until :meth:`_end_read` sees the ledger as
        it was at the first one, whatever other connections commit meanwhile."""

    @abstractmethod
    def _end_read(self) -> None: ...

    @abstractmethod
    def _stream(self, sql: str, params: Sequence[Any] = (),
                size: int = 5000) -> Iterator[list[tuple]]:
        """Batches of rows of a large query, without holding all of them in memory."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def _db_errors(self) -> tuple[type[BaseException], ...]: ...

    def _altered(self, exc: BaseException) -> bool:
        """Whether a database error says the schema is not gridloop's (a table or column
        missing), rather than that the database cannot be read."""
        return False

    def check_integrity(self) -> None:
        """Raise :class:`StoreError` if the database's own structure is damaged (pages
        overwritten); a back-end without such a check does nothing."""
        return None

    def check_unchanged(self) -> None:
        """Raise :class:`StoreError` if the ledger changed under a read that assumed it
        would not (a SQLite ledger read as immutable); otherwise do nothing."""
        return None

    # -- plumbing ---------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _error(self, exc: BaseException) -> StoreError:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self._altered(exc):
            return AlteredStoreError(f"{self.location}: {message} ({ALTERED})")
        return StoreError(f"{self.location}: {message}")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self._execute(self._sql(sql), params).fetchall()
        except self._db_errors as exc:
            raise self._error(exc) from None

    def _write(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            self._execute(self._sql(sql), params)
        except self._db_errors as exc:
            raise self._error(exc) from None

    def _write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self._executemany(self._sql(sql), rows)
        except self._db_errors as exc:
            raise self._error(exc) from None

    @contextmanager
    def snapshot(self) -> Iterator[Store]:
        """Read one state of the ledger: every query inside sees what was committed when the
        first ran, whatever a writer (a run in progress) commits meanwhile, so ``verify``,
        ``show`` and ``export`` never report on a mix of two states.  Inside a write
        transaction, or another snapshot, it joins that one."""
        if self._depth or self._reading:
            yield self
            return
        try:
            self._begin_read()
        except self._db_errors as exc:
            raise self._error(exc) from None
        self._reading = True
        try:
            yield self
        finally:
            self._reading = False
            streams, self._streams = self._streams, []
            for stream in streams:  # a walk stopped at a fault leaves its stream open
                stream.close()
            try:
                self._end_read()
            except self._db_errors:
                pass  # a read transaction has nothing to keep; an error already ended it

    def _streamed(self, sql: str, params: Sequence[Any] = (),
                  size: int = 5000) -> Iterator[list[tuple]]:
        """:meth:`_stream`, closed when the snapshot it reads in ends."""
        stream = self._stream(sql, params, size)
        if self._reading:
            self._streams.append(stream)
        return stream

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """One atomic write: nested uses join the outermost transaction."""
        if self._reading:
            raise StoreError(f"{self.location}: cannot write inside a read snapshot")
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        try:
            self._begin()
        except self._db_errors as exc:
            raise StoreError(f"{self.location}: cannot start a transaction: {exc}") from None
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            self._end(commit=False)
            raise
        self._depth = 0
        try:
            self._end(commit=True)
        except self._db_errors as exc:
            try:
                self._end(commit=False)
            except self._db_errors:
                pass  # the failed commit already ended the transaction
            raise StoreError(f"{self.location}: commit failed: {exc}") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema and metadata --------------------------------------------------------------

    def _create_schema(self) -> None:
        ddl = SCHEMA.replace("SEQ_PRIMARY_KEY", self.seq_primary_key).replace("BLOB", self.blob)
        with self.transaction():
            for statement in filter(str.strip, ddl.split(";")):
                self._write(statement)
            if self.get_meta("format") is None:
                self.set_meta("format", FORMAT)
                # a new ledger: its own id, which every signature on it covers
                self.set_meta("ledger_id", os.urandom(LEDGER_ID_BYTES).hex())

    def _check_format(self) -> None:
        try:
            fmt = self.get_meta("format")
        except AlteredStoreError:  # no meta table: some other database (a damaged one says so)
            fmt = None
        if fmt != FORMAT:
            raise StoreError(f"{self.location}: not a gridloop ledger"
                             + (f" (format {fmt!r})" if fmt else ""))

    def check_tables(self) -> None:
        """Raise :class:`AlteredStoreError` naming a table or column of the schema that is
        missing (dropped or renamed outside gridloop)."""
        for table, columns in TABLES.items():
            self._query(f"SELECT {columns} FROM {table} WHERE 1 = 0")

    @property
    def ledger_id(self) -> bytes:
        """This ledger's random id (``meta.ledger_id``), which every signature on it covers
        (:func:`ledger.records.signing_message`); empty for a ledger made before ids."""
        if self._ledger_id is None:
            value = self.get_meta("ledger_id") or ""
            if not isinstance(value, str):
                raise AlteredStoreError(f"{self.location}: meta: ledger_id is stored as "
                                        f"{type(value).__name__}, not text ({ALTERED})")
            try:
                lid = bytes.fromhex(value)
            except ValueError:
                lid = b""
            if value and len(lid) != LEDGER_ID_BYTES:
                raise AlteredStoreError(f"{self.location}: meta: ledger_id {value[:40]!r} is "
                                        f"not {LEDGER_ID_BYTES} bytes in hex ({ALTERED})")
            self._ledger_id = lid
        return self._ledger_id

    def meta(self) -> Meta:
        """The metadata, each value checked to be well-formed; :class:`AlteredStoreError`
        names the first that is not (``interval_ms`` 'abc', an operator key of 31 bytes, an
        operator without an interval length)."""
        values: dict[str, str] = {}
        for key, value in self._query("SELECT key, value FROM meta"):
            if key in ("ledger_id", "operator", "interval_ms", "accounts_signature",
                       "gates_signature", *TARIFF_KEYS, "tariff_signature"):
                if not isinstance(value, str):
                    raise AlteredStoreError(f"{self.location}: meta: {key} is stored as "
                                            f"{type(value).__name__}, not text ({ALTERED})")
                values[key] = value

        def hex_bytes(key: str, size: int, what: str) -> bytes | None:
            value = values.get(key)
            if value is None:
                return None
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raw = b""
            if len(raw) != size:
                raise AlteredStoreError(f"{self.location}: meta: {key} {value[:20]!r} is not "
                                        f"{what} ({size} bytes in hex; {ALTERED})")
            return raw

        interval_ms = values.get("interval_ms")
        if interval_ms is not None and not re.fullmatch(r"[1-9][0-9]{0,17}", interval_ms):
            raise AlteredStoreError(f"{self.location}: meta: interval_ms {interval_ms[:20]!r} "
                                    f"is not a whole number of ms above 0 ({ALTERED})")
        operator = hex_bytes("operator", 32, "a hex public key")
        if operator is not None and interval_ms is None:
            raise AlteredStoreError(f"{self.location}: meta: the ledger has an operator but no "
                                    f"interval_ms (MarketSession sets both; {ALTERED})")

        def price(key: str) -> int | None:
            value = values.get(key)
            if value is not None and not re.fullmatch(r"0|[1-9][0-9]{0,17}", value):
                raise AlteredStoreError(f"{self.location}: meta: {key} {value[:20]!r} is not "
                                        f"a whole number of micro-units/Wh >= 0 ({ALTERED})")
            return None if value is None else int(value)

        return Meta(ledger_id=self.ledger_id, operator=operator,
                    interval_ms=None if interval_ms is None else int(interval_ms),
                    accounts_signature=hex_bytes("accounts_signature", SIGNATURE_BYTES,
                                                 "a signature"),
                    gates_signature=hex_bytes("gates_signature", SIGNATURE_BYTES,
                                              "a signature"),
                    import_price_micro_per_wh=price(TARIFF_KEYS[0]),
                    export_price_micro_per_wh=price(TARIFF_KEYS[1]),
                    tariff_signature=hex_bytes("tariff_signature", SIGNATURE_BYTES,
                                               "a signature"))

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._write("DELETE FROM meta WHERE key = ?", (key,))
            self._write("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))

    def register(self, name: str, public_key: bytes, role: str) -> None:
        """Record that ``name`` (a node, the grid or the operator) owns ``public_key``."""
        with self.transaction():
            rows = self._query("SELECT name, public_key, role FROM accounts "
                               "WHERE name = ? OR public_key = ?", (name, public_key))
            for have_name, have_key, have_role in rows:
                if have_name == name and bytes(have_key) == public_key and have_role == role:
                    return
                raise StoreError(f"{self.location}: account {have_name!r} ({have_role}) is "
                                 f"registered with key {fingerprint(bytes(have_key))}; cannot "
                                 f"register {name!r} ({role}) with key {fingerprint(public_key)}")
            self._write("INSERT INTO accounts (name, public_key, role) VALUES (?, ?, ?)",
                        (name, public_key, role))

    def accounts(self) -> list[tuple[str, bytes, str]]:
        """``(name, public_key, role)`` of every registered account, by name."""
        rows = self._query("SELECT name, public_key, role FROM accounts ORDER BY name")
        for row in rows:
            _blobs(self.location, row, {1: "public_key"}, f"account {row[0]!r}")
        return [(n, bytes(k), r) for n, k, r in rows]

    def sign_accounts(self, operator: Identity) -> None:
        """Store the operator's signature of the account table (after registering)."""
        message = signing_message(self.ledger_id, accounts_body(self.accounts()))
        self.set_meta("accounts_signature", operator.sign(message).hex())

    # -- records ----------------------------------------------------------------------------

    def last_nonce(self, signer: bytes) -> int:
        """The highest nonce stored for ``signer`` (0 when none)."""
        rows = self._query("SELECT MAX(nonce) FROM records WHERE signer = ?", (signer,))
        return rows[0][0] or 0

    def insert(self, records: Sequence[SignedRecord]) -> int:
        """Store records whose signatures the caller has checked; return how many were new.

        A record whose id is already stored is skipped (a retry); any other record must carry
        a nonce above every stored nonce of its signer, else :class:`ReplayError`.
        """
        with self.transaction():
            ids = [r.id for r in records]
            known: set[bytes] = set()
            for k in range(0, len(ids), 500):
                chunk = ids[k:k + 500]
                marks = ", ".join("?" * len(chunk))
                known.update(bytes(i) for (i,) in
                             self._query(f"SELECT id FROM records WHERE id IN ({marks})", chunk))
            last: dict[bytes, int] = {}
            rows = []
            for r in records:
                if r.id in known:
                    continue
                rec = r.record
                if rec.signer not in last:
                    last[rec.signer] = self.last_nonce(rec.signer)
                if rec.nonce <= last[rec.signer]:
                    raise ReplayError(f"{self.location}: {rec.NAME} {r.id.hex()} reuses nonce "
                                      f"{rec.nonce} of {fingerprint(rec.signer)} (its last "
                                      f"nonce is {last[rec.signer]})")
                last[rec.signer] = rec.nonce
                known.add(r.id)
                rows.append((r.id, rec.KIND, rec.signer, rec.nonce, rec.interval, r.body,
                             r.signature))
            self._write_many("INSERT INTO records (id, kind, signer, nonce, interval_no, body, "
                             "signature) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            return len(rows)

    def append(self, records: Sequence[SignedRecord]) -> int:
        """Check every signature (on all cores), then :meth:`insert` in one transaction."""
        lid = self.ledger_id
        ok = verify_signatures([(r.record.signer, signing_message(lid, r.body), r.signature)
                                for r in records])
        for r, good in zip(records, ok, strict=True):
            if not good:
                raise SignatureError(f"{r.record.NAME} {r.id.hex()}: signature does not "
                                     "verify under its signer's public key")
        return self.insert(records)

    def get(self, record_id: bytes) -> SignedRecord | None:
        rows = self._query("SELECT seq, body, signature FROM records WHERE id = ?",
                           (record_id,))
        return self._decoded(rows[0]) if rows else None

    def _decoded(self, row: tuple) -> SignedRecord:
        """The record of a ``(seq, body, signature)`` row; a malformed one named by place."""
        _blobs(self.location, row, {1: "body", 2: "signature"}, f"record seq {row[0]}")
        try:
            return SignedRecord.from_bytes(bytes(row[1]), bytes(row[2]))
        except LedgerError as exc:
            raise StoreError(f"{self.location}: record seq {row[0]}: {exc} (gridloop ledger "
                             "verify locates every fault)") from None

    def find(self, *, kind: str | None = None, interval: int | None = None,
             signer: bytes | None = None) -> list[SignedRecord]:
        """Records matching every given filter, in arrival order."""
        where, params = [], []
        if kind is not None:
            where.append("kind = ?")
            params.append(BY_NAME[kind].KIND)
        if interval is not None:
            where.append("interval_no = ?")
            params.append(interval)
        if signer is not None:
            where.append("signer = ?")
            params.append(signer)
        sql = "SELECT seq, body, signature FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [self._decoded(r) for r in self._query(sql + " ORDER BY seq", params)]

    def count(self) -> tuple[int, int]:
        """``(records in blocks, pending records)``."""
        rows = self._query("SELECT COUNT(block), COUNT(*) - COUNT(block) FROM records")
        return rows[0][0], rows[0][1]

    def chain_rows(self, size: int = 5000) -> Iterator[list[StoredRow]]:
        """Every sealed record in chain order (block, position), in batches."""
        for batch in self._streamed(self._sql(
                f"SELECT {RECORD_COLUMNS} FROM records WHERE block IS NOT NULL "
                "ORDER BY block, position"), (), size):
            yield [self._stored(r) for r in batch]

    def _stored(self, row: tuple) -> StoredRow:
        _blobs(self.location, row, {3: "id", 5: "signer", 8: "body", 9: "signature"},
               _record_place(row))
        for i, name in ((4, "kind"), (6, "nonce"), (7, "interval_no")):
            if not _is_int(row[i]):
                raise AlteredStoreError(f"{self.location}: {_record_place(row)}: {name} is "
                                        f"stored as {type(row[i]).__name__}, not an integer "
                                        f"({ALTERED})")
        return StoredRow(row)

    def pending_rows(self) -> list[StoredRow]:
        """Records not yet in a block, in arrival order."""
        return [self._stored(r) for r in self._query(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE block IS NULL ORDER BY seq")]

    def all_rows(self, size: int = 5000) -> Iterator[list[StoredRow]]:
        """Every record, sealed ones in chain order, then pending ones in arrival order."""
        yield from self.chain_rows(size)
        yield self.pending_rows()

    # -- intervals and blocks ---------------------------------------------------------------

    def is_cleared(self, interval: int) -> bool:
        return bool(self._query("SELECT 1 FROM intervals WHERE interval_no = ?", (interval,)))

    def mark_cleared(self, interval: int) -> None:
        with self.transaction():
            if not self.is_cleared(interval):
                self._write("INSERT INTO intervals (interval_no, cleared) VALUES (?, 1)",
                            (interval,))

    def close_gate(self, interval: int, operator: Identity) -> None:
        """Mark ``interval``'s gate closed and have the operator sign the open gates."""
        with self.transaction():
            self.mark_cleared(interval)
            self.sign_gates(operator)

    def last_cleared(self) -> int | None:
        return self._query("SELECT MAX(interval_no) FROM intervals")[0][0]

    def cleared_intervals(self, after: int | None = None) -> list[int]:
        """The intervals whose gates closed (those after ``after`` if given), ascending;
        :class:`AlteredStoreError` for a row that is not an interval number and 1."""
        sql, params = "SELECT interval_no, cleared FROM intervals", ()
        if after is not None:
            sql, params = sql + " WHERE interval_no > ?", (after,)
        rows = self._query(sql + " ORDER BY interval_no", params)
        for k, cleared in rows:
            if not _is_int(k) or not _is_int(cleared) or cleared != 1:
                raise AlteredStoreError(f"{self.location}: intervals: the row ({k!r}, "
                                        f"{cleared!r}) is not an interval number and 1 "
                                        f"({ALTERED})")
        return [k for k, _ in rows]

    def sign_gates(self, operator: Identity) -> None:
        """Store the operator's signature of the interval length and of the gates closed
        after the last block's interval (:func:`gates_body`)."""
        interval_ms = self.meta().interval_ms
        if interval_ms is None:
            raise StoreError(f"{self.location}: no interval_ms: only a ledger of a "
                             "MarketSession has gates to sign")
        head = self.head()
        body = gates_body(interval_ms, self.cleared_intervals(head.interval if head else None))
        self.set_meta("gates_signature",
                      operator.sign(signing_message(self.ledger_id, body)).hex())

    def seal(self, interval: int, operator: Identity) -> Block:
        """Make the pending records (in arrival order) the next block, for ``interval``."""
        with self.transaction():
            head = self.head()
            if head is not None and interval <= head.interval:
                raise StoreError(f"{self.location}: cannot seal interval {interval} after "
                                 f"block {head.height} of interval {head.interval}")
            pending = self._query("SELECT seq, id FROM records WHERE block IS NULL ORDER BY seq")
            height = head.height + 1 if head else 0
            header = BlockHeader(height=height, interval=interval,
                                 prev=head.hash if head else GENESIS_PREV,
                                 merkle_root=merkle_root([bytes(i) for _, i in pending]),
                                 records=len(pending), signer=operator.public_key)
            block = Block(header, operator.sign(signing_message(self.ledger_id, header.body)))
            self._write_many("UPDATE records SET block = ?, position = ? WHERE seq = ?",
                             [(height, pos, seq) for pos, (seq, _) in enumerate(pending)])
            self._write("INSERT INTO blocks (height, interval_no, hash, header, signature) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (height, interval, block.hash, header.body, block.signature))
            self.mark_cleared(interval)  # a sealed interval's gate is closed
            if self.get_meta("interval_ms") is not None:  # a MarketSession's ledger
                self.sign_gates(operator)
            return block

    def _blocks(self, where: str = "", params: Sequence[Any] = (),
                order: str = "height") -> list[Block]:
        rows = self._query(f"SELECT header, signature FROM blocks {where} ORDER BY {order}",
                           params)
        for row in rows:
            _blobs(self.location, row, {0: "header", 1: "signature"}, "a block")
        try:
            return [Block(decode_header(bytes(h)), bytes(s)) for h, s in rows]
        except LedgerError as exc:
            raise StoreError(f"{self.location}: a block: {exc}") from None

    def head(self) -> Block | None:
        """The last block, or None before the first seal."""
        blocks = self._blocks(order="height DESC LIMIT 1")
        return blocks[0] if blocks else None

    def block_for(self, interval: int) -> Block | None:
        blocks = self._blocks("WHERE interval_no = ?", (interval,))
        return blocks[0] if blocks else None

    def last_blocks(self, n: int) -> list[Block]:
        """The last ``n`` blocks, oldest first."""
        return self._blocks(order=f"height DESC LIMIT {int(n)}")[::-1]

    def block_rows(self) -> list[tuple[int, int, bytes, bytes, bytes]]:
        """``(height, interval_no, hash, header, signature)`` of every block as stored."""
        rows = self._query(
            "SELECT height, interval_no, hash, header, signature FROM blocks ORDER BY height")
        for row in rows:
            _blobs(self.location, row, {2: "hash", 3: "header", 4: "signature"},
                   f"block {row[0]}")
        return [(h, i, bytes(x), bytes(b), bytes(s)) for h, i, x, b, s in rows]


def is_postgres_url(target: str | os.PathLike[str]) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_store(target: str | os.PathLike[str], *, create: bool = True,
               readonly: bool = False) -> Store:
    """Open the ledger at a SQLite path or a ``postgresql://`` URL.

    With ``create=False`` a missing ledger is an error instead of a new empty one;
    ``readonly`` (verify, export, show) also never writes to a SQLite file (nor converts its
    journal), so evidence is read as it was handed over.
    """
    if is_postgres_url(target):
        from ledger.store_postgres import PostgresStore

        return PostgresStore(str(target), create=create and not readonly)
    from ledger.store_sqlite import SQLiteStore

    if not str(target):
        raise StoreError("no ledger named (an empty path)")
    return SQLiteStore(Path(target), create=create, readonly=readonly)
