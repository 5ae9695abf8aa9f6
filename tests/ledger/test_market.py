"""The two auctions: worked examples and the properties that define them."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.market import (
    MARKETS,
    ContinuousDoubleAuction,
    Match,
    OpenOrder,
    UniformPriceAuction,
    clear_uniform,
    match_continuous,
)

GATE = 60_000


def order(k: int, node: str, side: str, energy: int, price: int,
          expires: int = GATE) -> OpenOrder:
    return OpenOrder(hashlib.sha256(bytes([k])).digest(), node.encode() * 4, side, energy, price,
                     expires, k)


def summary(matches: list[Match]) -> list[tuple[int, int, int, int]]:
    return [(m.buy.arrival, m.sell.arrival, m.energy_wh, m.price_micro_per_wh) for m in matches]


def test_uniform_worked_example() -> None:
    book = [order(0, "s1", "sell", 50, 100), order(1, "s2", "sell", 50, 140),
            order(2, "b1", "buy", 30, 200), order(3, "b2", "buy", 60, 150),
            order(4, "b3", "buy", 40, 120), order(5, "s3", "sell", 10, 90)]
    # Bids 200, 150, 120 against asks 90, 100, 140: 30+60 Wh clear, 150 >= 140 is the margin.
    assert summary(clear_uniform(book, GATE)) == [
        (2, 5, 10, 145), (2, 0, 20, 145), (3, 0, 30, 145), (3, 1, 30, 145)]


def test_uniform_ignores_expired_orders_and_uncrossed_books() -> None:
    book = [order(0, "s", "sell", 10, 100, expires=GATE - 1), order(1, "b", "buy", 10, 150)]
    assert clear_uniform(book, GATE) == []
    assert clear_uniform([order(0, "s", "sell", 10, 151), order(1, "b", "buy", 10, 150)],
                         GATE) == []


def test_continuous_worked_example() -> None:
    book: list[OpenOrder] = []
    trades = []
    for o in [order(0, "s1", "sell", 50, 100), order(1, "s2", "sell", 50, 140),
              order(2, "b1", "buy", 70, 150), order(3, "b2", "buy", 60, 120),
              order(4, "s3", "sell", 40, 110)]:
        matches = match_continuous(o, book, now_ms=0)
        trades += summary(matches)
        book = rest(book + [o], matches)
    # b1 takes s1 at 100 then 20 of s2 at 140; b2 rests; s3 hits b2 at b2's 120.
    assert trades == [(2, 0, 50, 100), (2, 1, 20, 140), (3, 4, 40, 120)]


def test_continuous_drops_orders_expired_at_arrival_time() -> None:
    resting = [order(0, "s1", "sell", 10, 100, expires=5_000)]
    assert match_continuous(order(1, "b", "buy", 10, 200), resting, now_ms=5_001) == []
    assert len(match_continuous(order(1, "b", "buy", 10, 200), resting, now_ms=5_000)) == 1


def test_one_interface() -> None:
    book = [order(0, "s", "sell", 10, 100)]
    incoming = order(1, "b", "buy", 10, 150)
    uniform, continuous = UniformPriceAuction(), ContinuousDoubleAuction()
    assert uniform.on_order(incoming, book, 0) == [] and continuous.on_gate(book, GATE) == []
    assert summary(uniform.on_gate(book + [incoming], GATE)) == [(1, 0, 10, 125)]
    assert summary(continuous.on_order(incoming, book, 0)) == [(1, 0, 10, 100)]
    assert set(MARKETS) == {"uniform", "continuous"}


def rest(book: list[OpenOrder], matches: list[Match]) -> list[OpenOrder]:
    filled: dict[bytes, int] = {}
    for m in matches:
        filled[m.buy.id] = filled.get(m.buy.id, 0) + m.energy_wh
        filled[m.sell.id] = filled.get(m.sell.id, 0) + m.energy_wh
    out = []
    for o in book:
        left = o.energy_wh - filled.get(o.id, 0)
        if left:
            out.append(OpenOrder(o.id, o.node, o.side, left, o.price_micro_per_wh, o.expires_ms,
                                 o.arrival))
    return out


@st.composite
def books(draw: st.DrawFn) -> list[OpenOrder]:
    n = draw(st.integers(0, 14))
    result = []
    for k in range(n):
        side = draw(st.sampled_from(["buy", "sell"]))
        node = f"{side[0]}{draw(st.integers(0, 3))}"  # buyers and sellers are distinct nodes
        result.append(order(k, node, side, draw(st.integers(1, 60)), draw(st.integers(0, 40)),
                            draw(st.sampled_from([GATE, GATE, GATE + 1, GATE - 1]))))
    return result


def best(orders: list[OpenOrder], side: str) -> int | None:
    prices = [o.price_micro_per_wh for o in orders if o.side == side and o.energy_wh > 0]
    if not prices:
        return None
    return max(prices) if side == "buy" else min(prices)


@settings(max_examples=200, deadline=None)
@given(books())
def test_uniform_properties(book: list[OpenOrder]) -> None:
    matches = clear_uniform(book, GATE)
    live = [o for o in book if o.expires_ms >= GATE]
    if matches:
        (price,) = {m.price_micro_per_wh for m in matches}  # one price for all
        for m in matches:
            assert m.buy.price_micro_per_wh >= price >= m.sell.price_micro_per_wh
            assert m.buy.expires_ms >= GATE and m.sell.expires_ms >= GATE
            assert m.buy.node != m.sell.node and m.energy_wh > 0
    left = rest(live, matches)
    for o in live:  # never over-filled
        used = sum(m.energy_wh for m in matches if o.id in (m.buy.id, m.sell.id))
        assert used <= o.energy_wh
    bid, ask = best(left, "buy"), best(left, "sell")
    assert bid is None or ask is None or bid < ask  # nothing crossable is left
    for m in matches:  # price priority: a better unfilled order would have traded first
        for o in left:
            if o.side == "buy":
                assert o.price_micro_per_wh <= m.buy.price_micro_per_wh
            else:
                assert o.price_micro_per_wh >= m.sell.price_micro_per_wh


@settings(max_examples=200, deadline=None)
@given(books(), st.integers(GATE - 2, GATE + 2))
def test_continuous_properties(arrivals: list[OpenOrder], now: int) -> None:
    book: list[OpenOrder] = []
    for incoming in arrivals:
        matches = match_continuous(incoming, book, now)
        resting_ids = {o.id for o in book}
        for m in matches:
            hit = m.sell if incoming.side == "buy" else m.buy
            assert hit.id in resting_ids and hit.expires_ms >= now
            assert m.price_micro_per_wh == hit.price_micro_per_wh  # pay as bid
            assert m.buy.price_micro_per_wh >= m.price_micro_per_wh >= m.sell.price_micro_per_wh
        assert sum(m.energy_wh for m in matches) <= incoming.energy_wh
        book = rest(book + [incoming], matches)
        live = [o for o in book if o.expires_ms >= now]
        bid, ask = best(live, "buy"), best(live, "sell")
        assert bid is None or ask is None or bid < ask  # the live book is never crossed
