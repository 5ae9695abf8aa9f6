"""Tampering of every kind is found by ``verify_chain``, which names the first bad place.

The attacker here writes to the database directly (the ``raw`` fixture), and in the hardest
cases also holds every private key, the operator's included, and re-seals the whole chain so
that every hash, Merkle root and block signature is consistent again.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import pytest

from ledger.chain import GENESIS_PREV, BlockHeader, decode_header, merkle_root
from ledger.errors import VerificationError
from ledger.keys import Identity, KeyDirectory, fingerprint
from ledger.records import Order, Transfer, decode, sign, signing_message
from ledger.session import MarketSession
from ledger.store import open_store
from ledger.verify import verify_chain

from .conftest import Raw

PER_BLOCK = 18  # records per settled interval in the chain below


@pytest.fixture
def chain(ledger_target: str, keys: KeyDirectory) -> str:
    """Two settled intervals (blocks 0 and 1, 18 records each), three pending orders."""
    with MarketSession(ledger_target, keys=keys, nodes=["a", "b", "c"], interval_s=60,
                       import_price_micro_per_wh=300, export_price_micro_per_wh=80) as s:
        for k in (1, 2, 3):
            s.submit_order("a", "sell", 100, 120, k)
            s.submit_order("b", "buy", 60, 200, k)
            s.submit_order("c", "buy", 70, 150, k)
            if k == 3:
                break
            s.clear(k)
            s.submit_meter_reading("a", k, 0, 90)
            s.submit_meter_reading("b", k, 80, 0)
            s.submit_meter_reading("c", k, 30, 5)
            s.settle(k)
    return ledger_target


def verify(target: str) -> None:
    with open_store(target, create=False) as store:
        verify_chain(store)


def fails(target: str, match: str) -> VerificationError:
    with pytest.raises(VerificationError, match=match) as info:
        verify(target)
    return info.value


def record_at(db: Raw, block: int | None, position: int | None = None) -> tuple:
    """``(seq, id, body, signature)`` of a sealed record, or of the first pending one."""
    if block is None:
        return db.execute("SELECT seq, id, body, signature FROM records WHERE block IS NULL "
                          "ORDER BY seq")[0]
    return db.execute("SELECT seq, id, body, signature FROM records WHERE block = ? AND "
                      "position = ?", (block, position))[0]


def transfer_position(db: Raw, block: int) -> int:
    rows = db.execute("SELECT position FROM records WHERE block = ? AND kind = ? ORDER BY "
                      "position", (block, Transfer.KIND))
    return rows[0][0]


def ledger_id(db: Raw) -> bytes:
    """The id the ledger's signatures are bound to."""
    return bytes.fromhex(db.execute("SELECT value FROM meta WHERE key = 'ledger_id'")[0][0])


def reseal(db: Raw, keys: KeyDirectory) -> None:
    """Recompute every block header from the records as they now are, and re-sign it."""
    reseal_as(db, keys.load("market"))


def reseal_as(db: Raw, operator: Identity) -> None:
    """:func:`reseal` with the operator's identity."""
    lid = ledger_id(db)
    prev = GENESIS_PREV
    for height, interval in db.execute("SELECT height, interval_no FROM blocks ORDER BY height"):
        ids = [i for (i,) in db.execute("SELECT id FROM records WHERE block = ? ORDER BY "
                                        "position", (height,))]
        header = BlockHeader(height, interval, prev, merkle_root(ids), len(ids),
                             operator.public_key)
        db.execute("UPDATE blocks SET header = ?, hash = ?, signature = ? WHERE height = ?",
                   (header.body, header.hash, operator.sign(signing_message(lid, header.body)),
                    height))
        prev = header.hash


def without_constraints(db: Raw) -> None:
    """Rebuild ``records`` without its UNIQUE constraints, as an attacker with DDL rights can."""
    db.execute("CREATE TABLE records_copy AS SELECT * FROM records")
    db.execute("DROP TABLE records")
    db.execute("ALTER TABLE records_copy RENAME TO records")


def test_an_untouched_chain_verifies(chain: str) -> None:
    with open_store(chain, create=False) as store:
        report = verify_chain(store)
        assert (report.blocks, report.records, report.pending) == (2, 2 * PER_BLOCK, 3)
        assert report.head == store.head().hash


def test_changed_amount(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    pos = transfer_position(db, 1)
    seq, record_id, body, _ = record_at(db, 1, pos)
    paid = decode(body)
    forged = dataclasses.replace(paid, amount_micro=paid.amount_micro * 10)
    db.execute("UPDATE records SET body = ? WHERE seq = ?", (forged.body, seq))
    err = fails(chain, rf"block 1 position {pos}: transfer {record_id.hex()[:16]}: id is not "
                       r"the SHA-256 of its body")
    assert (err.block, err.position, err.record_id) == (1, pos, record_id)


def test_changed_amount_with_a_matching_id(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    pos = transfer_position(db, 0)
    seq, _, body, _ = record_at(db, 0, pos)
    forged = dataclasses.replace(decode(body), amount_micro=1)
    db.execute("UPDATE records SET body = ?, id = ? WHERE seq = ?", (forged.body, forged.id, seq))
    fails(chain, rf"block 0 position {pos}: transfer .*: signature does not verify")


def test_changed_amount_re_signed_with_a_stolen_key(chain: str, raw: Callable[[str], Raw],
                                                    keys: KeyDirectory) -> None:
    db = raw(chain)
    pos = transfer_position(db, 1)
    seq, _, body, _ = record_at(db, 1, pos)
    paid = decode(body)
    payer = next(keys.load(n) for n in ("a", "b", "c", "grid")
                 if keys.load(n).public_key == paid.signer)
    forged = sign(dataclasses.replace(paid, amount_micro=1), payer, ledger_id(db))
    db.execute("UPDATE records SET body = ?, id = ?, signature = ? WHERE seq = ?",
               (forged.body, forged.id, forged.signature, seq))
    # the amount no longer pays its settlement, which the audit sees before the Merkle root
    fails(chain, rf"block 1 position {pos}: transfer .*: does not pay settlement")


def test_reordered_records_of_different_signers(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    first, second = record_at(db, 0, 0), record_at(db, 0, 1)  # orders of a and b
    db.execute("UPDATE records SET position = -1 WHERE seq = ?", (first[0],))
    db.execute("UPDATE records SET position = 0 WHERE seq = ?", (second[0],))
    db.execute("UPDATE records SET position = 1 WHERE seq = ?", (first[0],))
    fails(chain, r"block 0: Merkle root does not match its records \(reordered")


def test_reordered_records_of_one_signer(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    # Move the first settlement of block 0 behind the second: the operator's nonces go down.
    seqs = [s for (s,) in db.execute("SELECT seq FROM records WHERE block = 0 AND kind = 4 "
                                     "ORDER BY position")]
    a, b = (db.execute("SELECT position FROM records WHERE seq = ?", (s,))[0][0]
            for s in seqs[:2])
    db.execute("UPDATE records SET position = -1 WHERE seq = ?", (seqs[0],))
    db.execute("UPDATE records SET position = ? WHERE seq = ?", (a, seqs[1]))
    db.execute("UPDATE records SET position = ? WHERE seq = ?", (b, seqs[0]))
    fails(chain, rf"block 0 position {b}: settlement .*: nonce \d+ of .* is not above its "
                 r"previous nonce")


def test_deleted_record(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    db.execute("DELETE FROM records WHERE block = 1 AND position = 4")
    fails(chain, r"block 1 position 5: .*: expected position 4 \(record missing")


def test_deleted_last_record_of_a_block(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    db.execute("DELETE FROM records WHERE block = 0 AND position = ?", (PER_BLOCK - 1,))
    fails(chain, rf"block 0: holds {PER_BLOCK - 1} records, its header says {PER_BLOCK} "
                 r"\(record deleted or inserted\)")


def test_inserted_record(chain: str, raw: Callable[[str], Raw], keys: KeyDirectory) -> None:
    db = raw(chain)
    a = keys.load("a")
    extra = sign(Order(a.public_key, 10_000, 1, "sell", 5, 1, 60_000), a,
                 ledger_id(db))  # validly signed
    db.execute("INSERT INTO records (id, kind, signer, nonce, interval_no, body, signature, "
               "block, position) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
               (extra.id, Order.KIND, a.public_key, 10_000, 1, extra.body, extra.signature,
                PER_BLOCK))
    fails(chain, rf"block 0: holds {PER_BLOCK + 1} records, its header says {PER_BLOCK}")


def test_inserted_record_with_a_resealed_chain(chain: str, raw: Callable[[str], Raw],
                                               keys: KeyDirectory) -> None:
    """Even with the operator's key, a record inserted in the past breaks the nonce order."""
    db = raw(chain)
    a = keys.load("a")
    last = db.execute("SELECT MAX(nonce) FROM records WHERE signer = ?", (a.public_key,))[0][0]
    extra = sign(Order(a.public_key, last + 1, 1, "sell", 5, 1, 60_000), a, ledger_id(db))
    db.execute("UPDATE records SET position = position + 100 WHERE block = 0")
    db.execute("INSERT INTO records (id, kind, signer, nonce, interval_no, body, signature, "
               "block, position) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0)",
               (extra.id, Order.KIND, a.public_key, last + 1, 1, extra.body, extra.signature))
    db.execute("UPDATE records SET position = position - 99 WHERE block = 0 AND position >= 100")
    reseal(db, keys)
    fails(chain, rf"block 0 position 1: order .*: nonce 1 of .* is not above its previous "
                 rf"nonce {last + 1}")


def test_forged_signature(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    seq, record_id, _, signature = record_at(db, 1, 7)
    db.execute("UPDATE records SET signature = ? WHERE seq = ?",
               (bytes(b ^ 0x55 for b in signature), seq))
    err = fails(chain, rf"block 1 position 7: .* {record_id.hex()[:16]}: signature does not "
                       "verify under its signer")
    assert err.record_id == record_id


def test_swapped_signatures(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    one, two = record_at(db, 0, 2), record_at(db, 0, 9)
    db.execute("UPDATE records SET signature = ? WHERE seq = ?", (two[3], one[0]))
    db.execute("UPDATE records SET signature = ? WHERE seq = ?", (one[3], two[0]))
    fails(chain, r"block 0 position 2: .*: signature does not verify")


def test_replayed_record_in_the_pending_area(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    without_constraints(db)
    _, record_id, body, signature = record_at(db, 0, 0)
    order = decode(body)
    db.execute("INSERT INTO records (seq, id, kind, signer, nonce, interval_no, body, signature) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (10**6, record_id, Order.KIND, order.signer, order.nonce, order.interval, body,
                signature))
    fails(chain, rf"pending: order {record_id.hex()[:16]}: nonce {order.nonce} of .* is not "
                 r"above its previous nonce \d+ \(replayed")


def test_replayed_nonce_in_a_resealed_chain(chain: str, raw: Callable[[str], Raw],
                                            keys: KeyDirectory) -> None:
    """The holder of every key re-signs a block-1 record with a reused nonce and re-seals:
    only the nonce check can tell."""
    db = raw(chain)
    without_constraints(db)
    seq, _, body, _ = record_at(db, 1, 0)  # a's order of interval 2
    a = keys.load("a")
    replay = sign(dataclasses.replace(decode(body), nonce=1, energy_wh=1), a, ledger_id(db))
    db.execute("UPDATE records SET id = ?, nonce = 1, body = ?, signature = ? WHERE seq = ?",
               (replay.id, replay.body, replay.signature, seq))
    reseal(db, keys)
    fails(chain, r"block 1 position 0: order .*: nonce 1 of .* is not above its previous nonce")


def test_stored_columns_must_agree_with_the_body(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    seq = record_at(db, 1, 3)[0]
    db.execute("UPDATE records SET interval_no = 99 WHERE seq = ?", (seq,))
    fails(chain, r"block 1 position 3: trade .*: stored kind, signer, nonce or interval "
                 "disagrees")


def test_deleted_block(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    db.execute("DELETE FROM blocks WHERE height = 1")
    fails(chain, r"block 1 position 0: .*: belongs to block 1, which is not in the chain")


def test_truncated_chain_is_found_against_a_known_head(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    with open_store(chain, create=False) as store:
        head = store.head().hash
    db.execute("DELETE FROM records WHERE block = 1")
    db.execute("DELETE FROM blocks WHERE height = 1")
    # the gate of the cut interval is still closed: after the new last block, unsigned
    fails(chain, r"intervals: .* the gates closed after interval 1, the last block's \(\[2\]\) "
                 "are not as the operator signed them")
    db.execute("DELETE FROM intervals WHERE interval_no = 2")
    verify(chain)  # a cleanly cut tail is a valid shorter chain ...
    with open_store(chain, create=False) as store, pytest.raises(
            VerificationError, match=f"no block has the hash {head.hex()}"):
        verify_chain(store, known_head=head)  # ... but not one that holds a known head


def test_deleted_first_block(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    db.execute("DELETE FROM records WHERE block = 0")
    db.execute("DELETE FROM blocks WHERE height = 0")
    fails(chain, r"block 1: block heights jump from -1 to 1")


def test_rewritten_block_header(chain: str, raw: Callable[[str], Raw], keys: KeyDirectory) -> None:
    db = raw(chain)
    old = decode_header(db.execute("SELECT header FROM blocks WHERE height = 0")[0][0])
    forged = dataclasses.replace(old, merkle_root=bytes(32))
    db.execute("UPDATE blocks SET header = ?, hash = ? WHERE height = 0",
               (forged.body, forged.hash))
    fails(chain, r"block 0: block signature does not verify")


def test_broken_link(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    db.execute("UPDATE blocks SET hash = ? WHERE height = 0", (bytes(32),))
    fails(chain, r"block 0: stored hash is not the SHA-256 of the header")


def test_foreign_operator(chain: str, raw: Callable[[str], Raw], keys: KeyDirectory) -> None:
    db = raw(chain)
    db.execute("UPDATE meta SET value = ? WHERE key = 'operator'", (bytes(32).hex(),))
    fails(chain, r"block 0: signed by .*, not the operator")



def test_the_first_fault_in_chain_order_is_named(chain: str, raw: Callable[[str], Raw]) -> None:
    db = raw(chain)
    db.execute("UPDATE blocks SET signature = ? WHERE height = 1", (bytes(64),))
    seq, _, _, signature = record_at(db, 0, 5)
    db.execute("UPDATE records SET signature = ? WHERE seq = ?", (bytes(64), seq))
    fails(chain, r"block 0 position 5: .*: signature does not verify")  # before block 1
    db.execute("UPDATE records SET signature = ? WHERE seq = ?", (signature, seq))
    fails(chain, r"block 1: block signature does not verify")


# -- signers are accounts of the ledger, each signing the kinds its role signs ---------------


@pytest.mark.parametrize("sealed", [False, True], ids=["pending", "sealed"])
def test_a_record_signed_by_a_key_that_is_no_account(chain: str, raw: Callable[[str], Raw],
                                                     keys: KeyDirectory, sealed: bool) -> None:
    """Validly signed for this ledger, by a key the ledger has never heard of."""
    db = raw(chain)
    mallory = Identity.generate("mallory")
    b = keys.load("b").public_key
    forged = sign(Transfer(mallory.public_key, 1, 2, b, 10, b""), mallory, ledger_id(db))
    place = "pending"
    if sealed:  # in block 1, after its records, by an attacker holding the operator's key
        db.execute("INSERT INTO records (id, kind, signer, nonce, interval_no, body, signature, "
                   "block, position) VALUES (?, ?, ?, 1, 2, ?, ?, 1, ?)",
                   (forged.id, Transfer.KIND, mallory.public_key, forged.body, forged.signature,
                    PER_BLOCK))
        reseal(db, keys)
        place = f"block 1 position {PER_BLOCK}"
    else:
        with open_store(chain, create=False) as store:
            store.append([forged])  # the store checks signatures, not accounts
    fails(chain, rf"{place}: transfer {forged.id.hex()[:16]}: signer "
                 rf"{re.escape(fingerprint(mallory.public_key))} is not an account of this "
                 "ledger")


def test_a_record_of_a_kind_its_signer_does_not_sign(chain: str, keys: KeyDirectory) -> None:
    """The grid account pays for what it buys; it places no orders."""
    grid = keys.load("grid")
    with open_store(chain, create=False) as store:
        store.append([sign(Order(grid.public_key, store.last_nonce(grid.public_key) + 1, 4,
                                 "sell", 5, 1, 240_000), grid, store.ledger_id)])
    fails(chain, r"pending: order .*: signed by grid \([A-Za-z0-9+/]{8}…\), an account of "
                 r"role 'grid': orders are signed by a node")


def test_messages_name_a_key_by_its_account(chain: str, raw: Callable[[str], Raw],
                                            keys: KeyDirectory) -> None:
    db = raw(chain)
    without_constraints(db)
    _, record_id, body, signature = record_at(db, 0, 0)
    order = decode(body)
    db.execute("INSERT INTO records (seq, id, kind, signer, nonce, interval_no, body, signature) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (10**6, record_id, Order.KIND, order.signer, order.nonce, order.interval, body,
                signature))
    name = re.escape(f"a ({fingerprint(keys.load('a').public_key)[:8]}…)")
    fails(chain, rf"pending: order {record_id.hex()[:16]}: nonce {order.nonce} of {name} is "
                 r"not above its previous nonce")


# -- the metadata and the table of closed gates ------------------------------------------------


@pytest.mark.parametrize(("key", "value", "message"), [
    ("interval_ms", "abc", "meta: interval_ms 'abc' is not a whole number of ms above 0"),
    ("interval_ms", "-60000", "meta: interval_ms '-60000' is not a whole number"),
    ("interval_ms", None, "meta: the ledger has an operator but no interval_ms"),
    ("operator", "00" * 31, "meta: operator '00000000000000000000' is not a hex public key"),
    ("ledger_id", "zz", "meta: ledger_id 'zz' is not 16 bytes in hex"),
    ("accounts_signature", "zz", "meta: accounts_signature 'zz' is not a signature"),
    ("gates_signature", "00" * 63, "meta: gates_signature '00000000000000000000' is not a "
                                   "signature"),
])
def test_malformed_metadata(chain: str, raw: Callable[[str], Raw], key: str,
                            value: str | None, message: str) -> None:
    db = raw(chain)
    if value is None:
        db.execute("DELETE FROM meta WHERE key = ?", (key,))
    else:
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    fails(chain, re.escape(message))


def test_a_deleted_row_of_a_sealed_interval(chain: str, raw: Callable[[str], Raw]) -> None:
    raw(chain).execute("DELETE FROM intervals WHERE interval_no = 1")
    fails(chain, r"intervals: interval 1 has block 0 but is not among the closed gates: the "
                 "table of closed gates disagrees with the chain")


def test_a_gate_marked_closed_by_hand(chain: str, raw: Callable[[str], Raw]) -> None:
    """A row for a later interval would make a restarted session refuse its orders."""
    raw(chain).execute("INSERT INTO intervals (interval_no, cleared) VALUES (9, 1)")
    fails(chain, r"intervals: the interval length \(meta.interval_ms 60000\) and the gates "
                 r"closed after interval 2, the last block's \(\[9\]\) are not as the operator "
                 "signed them")


@pytest.mark.parametrize(("sql", "message"), [
    ("DROP TABLE intervals", r"(no such table: intervals|relation \"intervals\" does not "
                             r"exist) \(the ledger was altered outside gridloop\)"),
    ("UPDATE intervals SET cleared = 'yes' WHERE interval_no = 2",
     r"intervals: the row \(2, 'yes'\) is not an interval number and 1"),
])
def test_a_table_of_gates_the_store_cannot_read(chain: str, raw: Callable[[str], Raw],
                                                sql: str, message: str) -> None:
    db = raw(chain)
    if "'yes'" in sql and db.postgres:
        pytest.skip("a PostgreSQL integer column holds integers only")
    db.execute(sql)
    fails(chain, message)


def test_gates_closed_after_the_last_block(chain: str, raw: Callable[[str], Raw],
                                           keys: KeyDirectory) -> None:
    """Interval 3 cleared (its uniform trades made at the gate), interval 5 cleared with
    nothing to trade; neither settled.  Each row must stay as the operator signed it."""
    with MarketSession(chain, keys=keys, nodes=["a", "b", "c"], interval_s=60,
                       import_price_micro_per_wh=300, export_price_micro_per_wh=80) as s:
        assert s.clear(3) and not s.clear(5)
    verify(chain)
    with MarketSession(chain, keys=keys, nodes=["a", "b", "c"], interval_s=60,
                       import_price_micro_per_wh=300, export_price_micro_per_wh=80):
        pass  # reopening keeps the gates as signed
    verify(chain)
    db = raw(chain)
    db.execute("DELETE FROM intervals WHERE interval_no = 5")
    fails(chain, r"the gates closed after interval 2, the last block's \(\[3\]\) are not as the "
                 "operator signed them")
    db.execute("DELETE FROM intervals WHERE interval_no = 3")
    fails(chain, r"intervals: interval 3 has trades of the uniform auction, made when its gate "
                 "closed, but is not among the closed gates")


def test_a_changed_interval_length(ledger_target: str, raw: Callable[[str], Raw],
                                   keys: KeyDirectory) -> None:
    """No trades whose expiries could give it away: the operator's signature does."""
    with MarketSession(ledger_target, keys=keys, nodes=["a"], interval_s=60,
                       import_price_micro_per_wh=300, export_price_micro_per_wh=80) as s:
        s.submit_meter_reading("a", 1, 10, 0)
        s.settle(1)
    verify(ledger_target)
    raw(ledger_target).execute("UPDATE meta SET value = '120000' WHERE key = 'interval_ms'")
    fails(ledger_target, r"intervals: the interval length \(meta.interval_ms 120000\) and the "
                         r"gates closed after interval 1, the last block's \(none\) are not as "
                         "the operator signed them")


def test_a_ledger_without_a_signature_of_its_gates(chain: str, raw: Callable[[str], Raw],
                                                   keys: KeyDirectory) -> None:
    """An older gridloop signed no gates: fine while the chain shows every closed gate."""
    db = raw(chain)
    db.execute("DELETE FROM meta WHERE key = 'gates_signature'")
    verify(chain)
    db.execute("INSERT INTO intervals (interval_no, cleared) VALUES (3, 1)")
    fails(chain, r"intervals: the gate of interval 3 is marked closed after interval 2, the "
                 "last block's, but the operator has not signed the gates closed after the "
                 "last block")
