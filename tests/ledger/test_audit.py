"""The audit finds chains that are intact but wrong: hashes, signatures and nonces all check,
yet the money or the energy does not follow the market's rules.

The hardest attacker here holds the operator's key and the nodes' keys and re-seals the chain
after the edit (``reseal``), so only the economics can give the forgery away.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from ledger.errors import SettlementError
from ledger.keys import Identity, KeyDirectory
from ledger.records import MeterReading, Order, Settlement, Trade, Transfer, decode, sign
from ledger.session import MarketSession
from ledger.store import open_store
from ledger.verify import verify_chain

from .conftest import Raw
from .test_session import session, trade_one_interval
from .test_verify import fails, ledger_id, reseal, verify


def trade_then_settle(target: str, keys: KeyDirectory, intervals: range) -> None:
    """Three nodes trading over ``intervals`` (one block each)."""
    with session(target, keys) as s:
        for k in intervals:
            trade_one_interval(s, k)
            s.settle(k)


@pytest.fixture
def chain(ledger_target: str, keys: KeyDirectory) -> str:
    trade_then_settle(ledger_target, keys, range(1, 4))
    return ledger_target


def rows_of(db: Raw, cls: type, block: int) -> list[tuple]:
    """``(seq, position, body)`` of the records of one kind in a block."""
    return db.execute("SELECT seq, position, body FROM records WHERE block = ? AND kind = ? "
                      "ORDER BY position", (block, cls.KIND))


def replace(db: Raw, keys: KeyDirectory, seq: int, record: object, signer: str) -> None:
    forged = sign(record, keys.load(signer), ledger_id(db))
    db.execute("UPDATE records SET body = ?, id = ?, signature = ? WHERE seq = ?",
               (forged.body, forged.id, forged.signature, seq))


def signer_name(keys: KeyDirectory, key: bytes) -> str:
    return next(n for n in ("a", "b", "c", "grid", "market") if keys.load(n).public_key == key)


def test_a_transfer_replayed_from_another_ledger_with_the_same_keys(
        chain: str, new_ledger: Callable[[], str], keys: KeyDirectory,
        raw: Callable[[str], Raw]) -> None:
    """Keys kept, ledger made anew: the old ledger's later transfers carry nonces the new
    one has not reached, but their signatures are bound to the old ledger's id."""
    newer = new_ledger()
    trade_then_settle(newer, keys, range(1, 2))
    old, new = raw(chain), raw(newer)
    signer, nonce, body, signature, record_id = old.execute(
        "SELECT signer, nonce, body, signature, id FROM records WHERE kind = ? ORDER BY seq "
        "DESC LIMIT 1", (Transfer.KIND,))[0]
    assert nonce > new.execute("SELECT MAX(nonce) FROM records WHERE signer = ?",
                               (signer,))[0][0]
    new.execute("INSERT INTO records (id, kind, signer, nonce, interval_no, body, signature) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record_id, Transfer.KIND, signer, nonce, decode(body).interval, body,
                 signature))
    fails(newer, rf"pending: transfer {record_id.hex()[:16]}: signature does not verify")


def test_a_payment_for_a_settlement_not_on_this_ledger(chain: str, keys: KeyDirectory) -> None:
    """A node's own key, this ledger's id, a fresh nonce: a transfer that pays for nothing
    the operator settled."""
    a, b = keys.load("a"), keys.load("b")
    with open_store(chain, create=False) as store:
        store.append([sign(Transfer(b.public_key, store.last_nonce(b.public_key) + 1, 4,
                                    a.public_key, 99, bytes(range(32))), b, store.ledger_id)])
    fails(chain, r"pending: transfer .*: pays for 0001020304050607, which is no settlement of "
                 r"interval 4 on this ledger")


def test_a_deleted_payment_in_a_resealed_chain(chain: str, raw: Callable[[str], Raw],
                                               keys: KeyDirectory) -> None:
    db = raw(chain)
    seq, pos, body = rows_of(db, Transfer, 1)[0]
    paid = decode(body).reference
    db.execute("DELETE FROM records WHERE seq = ?", (seq,))
    db.execute("UPDATE records SET position = position - 1 WHERE block = 1 AND position > ?",
               (pos,))
    reseal(db, keys)
    fails(chain, rf"block 1: interval 2: settlement {paid.hex()[:16]} \(\d+ micro\) is not paid")


def test_settled_energy_the_meters_do_not_show(chain: str, raw: Callable[[str], Raw],
                                               keys: KeyDirectory) -> None:
    """The operator books a trade as fully delivered where the buyer's meter fell short."""
    db = raw(chain)
    seq, _, body = rows_of(db, Settlement, 2)[0]
    s = decode(body)
    more = s.energy_wh + 7
    replace(db, keys, seq, dataclasses.replace(s, energy_wh=more,
                                               amount_micro=more * s.price_micro_per_wh),
            "market")
    # its transfer pays the new amount too, so the payment checks out
    tseq, _, tbody = next(r for r in rows_of(db, Transfer, 2) if decode(r[2]).reference == s.id)
    forged = sign(dataclasses.replace(decode(body), energy_wh=more,
                                      amount_micro=more * s.price_micro_per_wh),
                  keys.load("market"), ledger_id(db))
    t = decode(tbody)
    replace(db, keys, tseq, dataclasses.replace(t, reference=forged.id,
                                                amount_micro=forged.record.amount_micro),
            signer_name(keys, t.signer))
    reseal(db, keys)
    fails(chain, r"block 2: interval 3: its settlements \(\d+\) are not what its 2 trade\(s\) "
                 rf"and 3 meter reading\(s\) settle to \(\d+\); settlement 0 books {more} Wh")


def test_a_trade_of_an_order_that_is_not_on_the_ledger(chain: str, raw: Callable[[str], Raw],
                                                       keys: KeyDirectory) -> None:
    db = raw(chain)
    seq, pos, body = rows_of(db, Trade, 1)[0]
    replace(db, keys, seq, dataclasses.replace(decode(body), buy_order=bytes(32)), "market")
    reseal(db, keys)
    fails(chain, rf"block 1 position {pos}: trade .*: trades buy order 0000000000000000, which "
                 "is not on the ledger before it")


def test_a_second_payment_of_one_settlement(chain: str, raw: Callable[[str], Raw],
                                            keys: KeyDirectory) -> None:
    """A payer's own key, a fresh nonce: the same settlement paid again."""
    db = raw(chain)
    _, _, body = rows_of(db, Transfer, 2)[0]
    t = decode(body)
    payer = signer_name(keys, t.signer)
    with open_store(chain, create=False) as store:
        again = dataclasses.replace(t, nonce=store.last_nonce(t.signer) + 1)
        store.append([sign(again, keys.load(payer), store.ledger_id)])
    last = len(db.execute("SELECT 1 FROM records WHERE block = 2"))
    db.execute("UPDATE records SET block = 2, position = ? WHERE block IS NULL AND kind = ?",
               (last, Transfer.KIND))
    reseal(db, keys)
    fails(chain, rf"block 2 position {last}: transfer .*: pays settlement "
                 rf"{t.reference.hex()[:16]} a second time")


def test_a_payment_after_its_interval_was_settled(chain: str, raw: Callable[[str], Raw],
                                                  keys: KeyDirectory) -> None:
    db = raw(chain)
    _, _, body = rows_of(db, Transfer, 2)[0]
    t = decode(body)
    with open_store(chain, create=False) as store:
        again = dataclasses.replace(t, nonce=store.last_nonce(t.signer) + 1)
        store.append([sign(again, keys.load(signer_name(keys, t.signer)), store.ledger_id)])
    fails(chain, r"pending: transfer .*: belongs to interval 3, which an earlier block "
                 "settled")


def test_a_second_meter_reading(chain: str, keys: KeyDirectory) -> None:
    with open_store(chain, create=False) as store:
        a = keys.load("a")
        for wh in (1, 2):
            store.append([sign(MeterReading(a.public_key, store.last_nonce(a.public_key) + 1,
                                            4, 0, wh), a, store.ledger_id)])
    fails(chain, r"pending: meter_reading .*: a second meter reading of .* for interval 4")


def test_an_interval_left_unsettled_behind_a_later_block(ledger_target: str,
                                                         keys: KeyDirectory) -> None:
    """Trades of interval 1 cleared but never settled; interval 2's block seals them (the
    session refuses to, ``settle(2)``: the operator's key seals it as settle would)."""
    with MarketSession(ledger_target, keys=keys, nodes=["a", "b"], interval_s=60,
                       import_price_micro_per_wh=300, export_price_micro_per_wh=80) as s:
        s.submit_order("a", "sell", 100, 120, 1)
        s.submit_order("b", "buy", 60, 200, 1)
        assert s.clear(1)
        s.submit_meter_reading("a", 2, 0, 0)
        s.submit_meter_reading("b", 2, 0, 0)
        with pytest.raises(SettlementError, match="interval 1 before it has trades"):
            s.settle(2)
        s.store.seal(2, s.operator)  # what settle(2) sealed: 0 Wh readings settle nothing
    fails(ledger_target, r"block 0: interval 1 was never settled: its trade .* has no "
                         "settlement before interval 2's block")


def test_plain_payments_need_no_settlement(ledger_target: str, keys: KeyDirectory) -> None:
    """A transfer with an empty reference pays for nothing the audit could check."""
    a, b, market = keys.get("a"), keys.get("b"), keys.get("market")
    with open_store(ledger_target) as store:
        store.append([sign(Transfer(a.public_key, 1, 0, b.public_key, 5, b""), a,
                           store.ledger_id)])
        store.seal(0, market)
        report = verify_chain(store)
    assert (report.blocks, report.records) == (1, 1)
    verify(ledger_target)


@pytest.mark.parametrize(("market", "interval", "when", "what"), [
    ("uniform", 2, 120_000, r"the gate of interval 2 at 120000 ms, where it traded"),
    ("continuous", 3, 120_000, r"the end of interval 1 at 120000 ms, settled before it traded"),
])
def test_a_trade_of_an_order_that_had_expired(ledger_target: str, keys: KeyDirectory,
                                              market: str, interval: int, when: int,
                                              what: str) -> None:
    """The operator trades orders the market would have refused as expired: a uniform trade
    at a gate after the sell order's expiry; a continuous one after interval 1 was settled
    (session time 120 s), of a sell order that expired before."""
    a, b, market_key = keys.get("a"), keys.get("b"), keys.get("market")
    with session(ledger_target, keys, market=market) as s:
        s.settle(1)  # block 0: session time is now 120000 ms
        lid = s.store.ledger_id

        def order(who: Identity, side: str, expires_ms: int) -> Order:
            o = Order(who.public_key, s.store.last_nonce(who.public_key) + 1, interval, side,
                      10, 100, expires_ms)
            s.submit(sign(o, who, lid))  # signed elsewhere: the session checks no expiry
            return o

        for expires in (when, when - 1):  # on time (verifies), then one ms too early
            sell, buy = order(a, "sell", expires), order(b, "buy", when + 60_000)
            trade = Trade(market_key.public_key, s.store.last_nonce(market_key.public_key) + 1,
                          interval, market, buy.id, sell.id, b.public_key, a.public_key, 10, 100)
            s.store.append([sign(trade, market_key, lid)])
            if market == "uniform":
                s.store.close_gate(interval, market_key)  # as clearing at the gate does
            if expires == when:
                verify(ledger_target)
    fails(ledger_target, rf"pending: trade {trade.id.hex()[:16]}: trades sell order "
                         rf"{sell.id.hex()[:16]} of a \(.{{8}}…\), which expired at {when - 1} "
                         rf"ms, before {what} \(intervals of 60000 ms\); the market refuses an "
                         "expired order")
