"""The store contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ledger.chain import GENESIS_PREV, merkle_root
from ledger.errors import ReplayError, SignatureError, StoreError
from ledger.keys import Identity
from ledger.records import MeterReading, SignedRecord, sign
from ledger.store import Store, open_store

NODE = Identity.from_seed("n", bytes(32))
OPERATOR = Identity.from_seed("op", bytes([1]) * 32)


def reading(store: Store, nonce: int, interval: int = 0, wh: int = 1,
            who: Identity = NODE) -> SignedRecord:
    """A meter reading signed for ``store``'s ledger."""
    return sign(MeterReading(who.public_key, nonce, interval, wh, 0), who, store.ledger_id)


def test_insert_is_idempotent_per_id(ledger_target: str) -> None:
    with open_store(ledger_target) as store:
        first = [reading(store, 1), reading(store, 2)]
        assert store.append(first) == 2
        assert store.append(first) == 0  # a retry stores nothing twice
        assert store.append([first[1], reading(store, 3)]) == 1
        assert store.count() == (0, 3)
        assert store.get(first[0].id) == first[0]
        assert store.get(bytes(32)) is None
        assert [s.record.nonce for s in store.find(kind="meter_reading")] == [1, 2, 3]
        assert store.last_nonce(NODE.public_key) == 3


def test_old_nonces_are_refused_and_nothing_of_the_batch_is_stored(ledger_target: str) -> None:
    with open_store(ledger_target) as store:
        store.append([reading(store, 5)])
        with pytest.raises(ReplayError, match=r"reuses nonce 5 .* \(its last nonce is 6\)"):
            store.append([reading(store, 6, wh=2), reading(store, 5, wh=9)])
        with pytest.raises(ReplayError, match="nonce 4"):
            store.append([reading(store, 4)])
        with pytest.raises(ReplayError, match="nonce 7"):  # not increasing inside a batch
            store.append([reading(store, 8), reading(store, 7)])
        assert store.count() == (0, 1)


def test_forged_signatures_are_refused_before_anything_is_stored(ledger_target: str) -> None:
    with open_store(ledger_target) as store:
        good = reading(store, 1)
        forged = SignedRecord(reading(store, 2).record, good.signature)
        with pytest.raises(SignatureError, match=f"meter_reading {forged.id.hex()}"):
            store.append([good, forged])
        assert store.count() == (0, 0)


def test_seal_makes_a_hash_chain_of_merkle_committed_blocks(ledger_target: str) -> None:
    with open_store(ledger_target) as store:
        batch = [reading(store, n) for n in range(1, 6)]
        store.append(batch)
        b0 = store.seal(3, OPERATOR)
        assert (b0.height, b0.interval, b0.header.records) == (0, 3, 5)
        assert b0.header.prev == GENESIS_PREV
        assert b0.header.merkle_root == merkle_root([r.id for r in batch])
        b1 = store.seal(4, OPERATOR)  # an interval without records still gets its block
        assert b1.header.prev == b0.hash and b1.header.records == 0
        assert store.head() == b1 and store.block_for(3) == b0 and store.block_for(5) is None
        assert store.last_blocks(1) == [b1] and store.last_blocks(5) == [b0, b1]
        with pytest.raises(StoreError, match="cannot seal interval 4 after block 1"):
            store.seal(4, OPERATOR)
        assert store.count() == (5, 0)
        rows = [r for batch in store.chain_rows(size=2) for r in batch]
        assert [(r.block, r.position, r.id) for r in rows] == \
            [(0, k, r.id) for k, r in enumerate(batch)]


def test_a_failed_transaction_leaves_nothing(ledger_target: str) -> None:
    with open_store(ledger_target) as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.append([reading(store, 1)])
            store.mark_cleared(1)
            raise RuntimeError("crash in the middle")
        assert store.count() == (0, 0) and not store.is_cleared(1)
        store.append([reading(store, 1)])  # and the store still works
        assert store.count() == (0, 1)


def test_accounts_bind_one_name_to_one_key(ledger_target: str) -> None:
    with open_store(ledger_target) as store:
        store.register("n", NODE.public_key, "node")
        store.register("n", NODE.public_key, "node")  # idempotent
        with pytest.raises(StoreError, match="account 'n' \\(node\\) is registered"):
            store.register("n", OPERATOR.public_key, "node")
        with pytest.raises(StoreError, match="account 'n'"):
            store.register("other", NODE.public_key, "node")
        assert store.accounts() == [("n", NODE.public_key, "node")]


def test_reopening_keeps_everything(ledger_target: str) -> None:
    with open_store(ledger_target) as store:
        store.append([reading(store, 1)])
        store.seal(0, OPERATOR)
        head = store.head()
    with open_store(ledger_target, create=False) as store:
        assert store.head() == head and store.count() == (1, 0)


def test_writers_on_separate_connections_are_serialised(ledger_target: str) -> None:
    open_store(ledger_target).close()
    errors: list[BaseException] = []

    def writer(wh: int) -> None:
        try:
            with open_store(ledger_target) as store:
                for _ in range(25):
                    with store.transaction():
                        n = store.last_nonce(NODE.public_key) + 1
                        store.insert([reading(store, n, wh=wh)])
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(wh,)) for wh in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with open_store(ledger_target) as store:
        assert [s.record.nonce for s in store.find()] == list(range(1, 51))


def test_missing_and_foreign_databases_are_named(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"nope\.db: no such ledger"):
        open_store(tmp_path / "nope.db", create=False)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"garbage\.db: not a SQLite database"):
        open_store(garbage)
    import sqlite3

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreError, match=r"other\.db: not a gridloop ledger"):
        open_store(other, create=False)


def test_a_truncated_ledger_is_named_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with open_store(path) as store:
        store.append([reading(store, n) for n in range(1, 2001)])
    data = path.read_bytes()
    cut = tmp_path / "cut.db"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(StoreError, match=r"cut\.db: a corrupt SQLite database \(truncated"):
        with open_store(cut) as store:
            store.count()


@pytest.mark.postgres
def test_postgres_errors_name_the_server_without_its_password(postgres_server: str) -> None:
    from ledger.pgserver import schema_url

    with pytest.raises(StoreError, match="not a gridloop ledger"):
        open_store(schema_url(postgres_server, "no_such_schema"), create=False)
    with pytest.raises(StoreError, match=r"postgresql://u:\*\*\*@127\.0\.0\.1:1/x: cannot "
                                         "connect"):
        open_store("postgresql://u:secret@127.0.0.1:1/x")


def test_sqlite_runs_in_wal_mode_with_full_synchronous_commits(tmp_path: Path) -> None:
    with open_store(tmp_path / "l.db") as store:
        conn = store._conn  # the store's own connection: synchronous is per connection
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_read_only_opening_leaves_nothing_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with open_store(path) as store:
        store.append([reading(store, 1)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.db"]  # WAL, closed cleanly
    with open_store(path, create=False, readonly=True) as store:
        assert store.count() == (0, 1)
        store.check_unchanged()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.db"]


def test_a_ledger_read_as_immutable_that_changes_meanwhile_is_named(tmp_path: Path) -> None:
    """No process had it open, so it is read as immutable; a writer then opens it, commits
    and closes (which checkpoints into the file): what was read may mix two states."""
    path = tmp_path / "l.db"
    with open_store(path) as store:
        store.append([reading(store, 1)])
    with open_store(path, create=False, readonly=True) as reader:
        with open_store(path) as writer:
            writer.append([reading(writer, 2)])
        with pytest.raises(StoreError, match=r"l\.db: changed while it was read .*run the "
                                             "command again"):
            reader.check_unchanged()


def test_a_missing_meta_table_is_no_ledger_and_a_damaged_one_is_corrupt(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "l.db"
    open_store(path).close()
    with sqlite3.connect(path) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = "
                            "'sqlite_autoindex_meta_1'").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xa5" * size)
    with pytest.raises(StoreError, match=r"l\.db: a corrupt SQLite database"):
        open_store(path, create=False, readonly=True)
