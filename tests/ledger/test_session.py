"""The session API the bench calls, on both stores: trading, settlement, retries, refusals."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import (
    ConflictError,
    ExpiredOrderError,
    RecordError,
    ReplayError,
    SettlementError,
)
from ledger.keys import Identity, KeyDirectory, fingerprint
from ledger.records import MeterReading, Order, Settlement, Transfer, sign
from ledger.session import MarketSession
from ledger.verify import verify_chain

NODES = ["a", "b", "c"]


def session(target: str, keys: KeyDirectory, market: str = "uniform",
            **kw: object) -> MarketSession:
    args: dict = {"nodes": NODES, "market": market, "interval_s": 60,
                  "import_price_micro_per_wh": 300, "export_price_micro_per_wh": 80}
    args.update(kw)
    return MarketSession(target, keys=keys, **args)


def trade_one_interval(s: MarketSession, k: int) -> None:
    s.submit_order("a", "sell", 100, 120, k)
    s.submit_order("b", "buy", 60, 200, k)
    s.submit_order("c", "buy", 70, 150, k)
    s.clear(k)
    s.submit_meter_reading("a", k, 0, 90)
    s.submit_meter_reading("b", k, 80, 0)
    s.submit_meter_reading("c", k, 30, 5)


def test_uniform_interval_end_to_end(ledger_target: str, keys: KeyDirectory) -> None:
    with session(ledger_target, keys) as s:
        a, b, c, grid = (s.public_key(n) for n in ("a", "b", "c", "grid"))
        trade_one_interval(s, 1)
        trades = s.trades(1)
        assert [(t.seller, t.buyer, t.energy_wh, t.price_micro_per_wh) for t in trades] == \
            [(a, b, 60, 135), (a, c, 40, 135)]  # midpoint of the marginal bid 150 and ask 120
        settled = s.settle(1)
        got = [(x.seller, x.buyer, x.energy_wh, x.amount_micro) for x in settled]
        assert got[:2] == [(a, b, 54, 54 * 135), (a, c, 30, 30 * 135)]  # min of pro-rata shares
        assert sorted(got[2:]) == sorted([(a, grid, 6, 6 * 80), (grid, b, 26, 26 * 300),
                                          (c, grid, 5, 5 * 80)])  # then each node's imbalance
        paid = s.transfers(1)
        assert [(t.signer, t.payee, t.amount_micro, t.reference) for t in paid] == \
            [(x.buyer, x.seller, x.amount_micro, x.id) for x in settled]
        bal = s.balances()
        assert bal["a"].money_micro == 54 * 135 + 30 * 135 + 6 * 80
        assert bal["b"].money_micro == -(54 * 135 + 26 * 300)
        assert (bal["a"].sold_wh, bal["b"].bought_wh, bal["c"].bought_wh) == (90, 80, 30)
        assert sum(x.money_micro for x in bal.values()) == 0
        head = s.store.head()
        assert head.interval == 1 and head.header.records == 3 + 2 + 3 + 5 + 5
        assert verify_chain(s.store).records == 18


def test_continuous_market_trades_on_arrival_at_the_resting_price(ledger_target: str,
                                                                  keys: KeyDirectory) -> None:
    with session(ledger_target, keys, market="continuous") as s:
        s.submit_order("a", "sell", 100, 120, 1)
        assert s.trades(1) == []
        s.submit_order("b", "buy", 60, 200, 1)
        assert [(t.energy_wh, t.price_micro_per_wh, t.market) for t in s.trades(1)] == \
            [(60, 120, "continuous")]
        s.submit_order("c", "buy", 70, 150, 1)
        assert [t.energy_wh for t in s.clear(1)] == [60, 40]
        s.advance(65_000)  # an order that expires before the next arrival no longer trades
        s.submit_order("a", "sell", 10, 100, 2, expires_ms=66_000)
        s.advance(67_000)
        s.submit_order("b", "buy", 10, 200, 2)
        assert s.clear(2) == []


def test_every_step_can_be_retried_without_duplicates(ledger_target: str,
                                                      keys: KeyDirectory) -> None:
    with session(ledger_target, keys) as s:
        trade_one_interval(s, 1)
        before = s.store.count()
        again = s.submit_order("b", "buy", 60, 200, 1)
        assert again == s.orders(1)[1]
        assert s.clear(1) == s.trades(1)
        assert s.submit_meter_reading("a", 1, 0, 90) == s.meter_readings(1)[0]
        assert s.store.count() == before
        first = s.settle(1)
        after = s.store.count()
        assert s.settle(1) == first and s.clear(1) == s.trades(1)
        assert s.submit_order("a", "sell", 100, 120, 1) == s.orders(1)[0]
        assert s.store.count() == after
    with session(ledger_target, keys) as s:  # and across processes: a new session
        assert s.settle(1) == first and s.store.count() == after
        signed = sign(MeterReading(s.public_key("a"), 99, 5, 1, 1), keys.load("a"), s.store.ledger_id)
        s.submit(signed)
        s.submit(signed)  # the same signed record again: stored once
        assert s.store.count() == (after[0], 1)
        with pytest.raises(ReplayError):
            s.submit(sign(MeterReading(s.public_key("a"), 99, 6, 1, 1), keys.load("a"), s.store.ledger_id))


def test_expired_orders_are_refused(ledger_target: str, keys: KeyDirectory) -> None:
    with session(ledger_target, keys) as s:
        s.clear(1)
        assert s.now_ms == 60_000
        with pytest.raises(ExpiredOrderError, match="order of a for interval 1 refused: its "
                                                    "gate closed at 60000 ms"):
            s.submit_order("a", "sell", 1, 1, 1)
        with pytest.raises(ExpiredOrderError, match="expired at 59000 ms, session time is "
                                                    "60000 ms"):
            s.submit_order("a", "sell", 1, 1, 2, expires_ms=59_000)
        s.advance(100_000)
        with pytest.raises(ExpiredOrderError, match="expired at 99999 ms"):
            s.submit_order("a", "sell", 1, 1, 2, expires_ms=99_999)
        assert s.orders(2) == []
        s.submit_order("a", "sell", 1, 1, 2)  # the default expiry is the gate: still open


def test_uniform_auction_drops_orders_that_expire_before_the_gate(ledger_target: str,
                                                                 keys: KeyDirectory) -> None:
    with session(ledger_target, keys) as s:
        s.submit_order("a", "sell", 10, 100, 1, expires_ms=30_000)
        s.submit_order("b", "buy", 10, 200, 1)
        assert s.clear(1) == []


def test_refusals_name_what_is_wrong(ledger_target: str, keys: KeyDirectory) -> None:
    with session(ledger_target, keys) as s:
        s.submit_order("a", "sell", 10, 100, 1)
        with pytest.raises(RecordError, match="a already has a sell order in interval 1; a "
                                              "node takes one side per interval"):
            s.submit_order("a", "buy", 10, 100, 1)
        with pytest.raises(RecordError, match="unknown node 'z'"):
            s.submit_order("z", "buy", 10, 100, 1)
        with pytest.raises(RecordError, match="side"):
            s.submit_order("a", "hold", 10, 100, 1)
        with pytest.raises(RecordError, match="energy_wh must be > 0"):
            s.submit_order("b", "buy", 0, 100, 1)
        with pytest.raises(SettlementError, match="has orders but was not cleared"):
            s.settle(1)
        s.submit_order("b", "buy", 10, 100, 1)
        s.clear(1)
        s.submit_meter_reading("a", 1, 0, 10)
        with pytest.raises(SettlementError, match=r"no meter reading from \['b'\]"):
            s.settle(1)
        with pytest.raises(ConflictError, match=r"a already has a meter reading for interval 1 "
                                                r"\(0 Wh in, 10 Wh out\)"):
            s.submit_meter_reading("a", 1, 0, 11)
        s.submit_meter_reading("b", 1, 10, 0)
        s.settle(1)
        s.settle(3)  # intervals without trading settle on meter readings alone
        with pytest.raises(SettlementError, match="interval 2 comes before the last settled "
                                                  "interval 3"):
            s.settle(2)
        with pytest.raises(ConflictError, match="settled up to interval 3"):
            s.submit_meter_reading("c", 2, 1, 1)
        assert s.store.count()[1] == 0


def test_reopened_ledger_must_keep_interval_and_operator(ledger_target: str, keys: KeyDirectory,
                                                         tmp_path) -> None:
    with session(ledger_target, keys) as s:
        trade_one_interval(s, 1)
        s.settle(1)
    with pytest.raises(ConflictError, match="was made with interval_ms 60000, this session "
                                            "has 900000"):
        session(ledger_target, keys, interval_s=900)
    with pytest.raises(Exception, match="account 'market' \\(operator\\) is registered"):
        session(ledger_target, KeyDirectory(tmp_path / "other-keys"))
    with session(ledger_target, keys) as s:  # same keys and settings: carries on
        assert s.now_ms == 120_000
        trade_one_interval(s, 2)
        s.settle(2)
        assert verify_chain(s.store).blocks == 2


def test_bad_settings_are_refused(ledger_target: str, keys: KeyDirectory) -> None:
    for kw, message in [({"market": "dutch"}, "unknown market 'dutch'"),
                        ({"interval_s": 0}, "interval_s"),
                        ({"import_price_micro_per_wh": 0.3}, "import_price_micro_per_wh"),
                        ({"nodes": ["a", "grid"]}, "must be unique")]:
        with pytest.raises(RecordError, match=message):
            session(ledger_target, keys, **kw)


def test_rows_are_plain(ledger_target: str, keys: KeyDirectory) -> None:
    with session(ledger_target, keys) as s:
        trade_one_interval(s, 1)
        records = [*s.orders(1), *s.clear(1), *s.settle(1)]
        for r in records:
            row = r.row()
            assert all(type(v) in (int, str, bytes) for v in row.values())
        assert records[0].row() == {
            "id": records[0].id, "kind": "order", "signer": s.public_key("a"), "nonce": 1,
            "interval": 1, "side": "sell", "energy_wh": 100, "price_micro_per_wh": 120,
            "expires_ms": 60_000}
        assert s.names[s.public_key("c")] == "c"


interval_plans = st.lists(st.tuples(
    st.lists(st.tuples(st.sampled_from(NODES), st.integers(1, 200), st.integers(50, 350)),
             max_size=4),
    st.lists(st.tuples(st.integers(0, 250), st.integers(0, 250)), min_size=3, max_size=3)),
    min_size=1, max_size=3)


@pytest.mark.slow
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=interval_plans, market=st.sampled_from(["uniform", "continuous"]))
def test_balances_always_balance(new_ledger: Callable[[], str], keys: KeyDirectory,
                                 plans: list, market: str) -> None:
    with session(new_ledger(), keys, market=market) as s:
        metered = {n: [0, 0] for n in NODES}
        for k, (orders, readings) in enumerate(plans):
            sides: dict[str, str] = {}
            for node, energy, price in orders:
                side = sides.setdefault(node, "sell" if node == "a" or energy % 2 else "buy")
                s.submit_order(node, side, energy, price, k)
            s.clear(k)
            for node, (imp, exp) in zip(NODES, readings, strict=True):
                s.submit_meter_reading(node, k, imp, exp)
                metered[node][0] += imp
                metered[node][1] += exp
            settled = s.settle(k)
            for t in s.trades(k):
                assert sum(x.energy_wh for x in settled if x.trade == t.id) <= t.energy_wh
        bal = s.balances()
        assert sum(b.money_micro for b in bal.values()) == 0
        for node in NODES:
            assert (bal[node].bought_wh, bal[node].sold_wh) == tuple(metered[node])
        grid = bal["grid"]
        assert grid.sold_wh - grid.bought_wh == sum(i - e for i, e in metered.values())
        assert verify_chain(s.store).records == sum(s.store.count())


def test_submit_refuses_what_verify_would(ledger_target: str, keys: KeyDirectory) -> None:
    """A record signed elsewhere must be signed by an account whose role signs its kind."""
    mallory = Identity.generate("mallory")
    with session(ledger_target, keys) as s:
        lid = s.store.ledger_id
        with pytest.raises(RecordError, match=rf"transfer .* refused: its signer "
                                              rf"{re.escape(fingerprint(mallory.public_key))} "
                                              "is not an account of this ledger"):
            s.submit(sign(Transfer(mallory.public_key, 1, 1, s.public_key("a"), 5, b""),
                          mallory, lid))
        grid = keys.load("grid")
        with pytest.raises(RecordError, match=r"order .* refused: its signer .* is 'grid', "
                                              r"whose role \(grid\) does not sign orders"):
            s.submit(sign(Order(grid.public_key, 1, 1, "sell", 5, 1, 60_000), grid, lid))
        assert s.store.count() == (0, 0)


def test_balances_leave_out_records_of_strangers(ledger_target: str,
                                                 keys: KeyDirectory) -> None:
    """Stored past the session (the store checks signatures, not accounts): a stranger's
    transfer and a settlement signed by a node move no money and no energy."""
    from ledger.session import balance_sheet

    mallory = Identity.generate("mallory")
    with session(ledger_target, keys) as s:
        trade_one_interval(s, 1)
        s.settle(1)
        honest = s.balances()
        a, b = keys.load("a"), keys.load("b")
        lid = s.store.ledger_id
        s.store.append([
            sign(Transfer(mallory.public_key, 1, 2, a.public_key, 10**6, b""), mallory, lid),
            sign(Settlement(b.public_key, s.store.last_nonce(b.public_key) + 1, 2, b"",
                            a.public_key, b.public_key, 0, 0, 0), b, lid)])
        assert s.balances() == honest
        assert balance_sheet(s.store) == (honest, 2)
