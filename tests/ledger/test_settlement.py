"""Settlement: min-of-two with pro-rata allocation; energy and money balance exactly."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import SettlementError
from ledger.records import Settlement, Trade, Transfer
from ledger.settlement import Delivery, allocate, settle, tally

GRID = b"g" * 32
OP = b"o" * 32
IMPORT, EXPORT = 300, 80


def key(name: str) -> bytes:
    return name.encode().ljust(32, b".")


def trade(k: int, seller: str, buyer: str, energy: int, price: int) -> Trade:
    return Trade(OP, k + 1, 0, "uniform", bytes([k]) * 32, bytes([100 + k]) * 32, key(buyer),
                 key(seller), energy, price)


def test_allocate_worked_examples() -> None:
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]  # tie: earlier index
    assert allocate(90, [60, 40]) == [54, 36]
    assert allocate(7, [5, 0, 5]) == [4, 0, 3]
    assert allocate(0, [0, 0]) == [0, 0]
    with pytest.raises(ValueError):
        allocate(1, [0, 0])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=12), st.data())
def test_allocate_is_exact_bounded_and_proportional(weights: list[int],
                                                    data: st.DataObject) -> None:
    total_weight = sum(weights)
    total = data.draw(st.integers(0, total_weight)) if total_weight else 0
    shares = allocate(total, weights)
    assert sum(shares) == total
    for share, w in zip(shares, weights, strict=True):
        assert 0 <= share <= w
        if total_weight:
            assert abs(share - Fraction(total * w, total_weight)) < 1
    assert allocate(total, weights) == shares


def test_min_of_two_worked_example() -> None:
    # a sold 60 Wh to b and 40 Wh to c but exported 90: its shares are 54 and 36.
    # b imported 80 (share 60), c imported 30 (share 30): delivered 54 and 30.
    trades = [trade(0, "a", "b", 60, 135), trade(1, "a", "c", 40, 135)]
    readings = {key("a"): (0, 90), key("b"): (80, 0), key("c"): (30, 5)}
    result = settle(trades, readings, GRID, IMPORT, EXPORT)
    assert result == [
        Delivery(trades[0].id, key("a"), key("b"), 54, 135),
        Delivery(trades[1].id, key("a"), key("c"), 30, 135),
        Delivery(b"", key("a"), GRID, 6, EXPORT),    # a's export beyond delivered sales
        Delivery(b"", GRID, key("b"), 26, IMPORT),   # b's import beyond delivered purchases
        Delivery(b"", key("c"), GRID, 5, EXPORT),
    ]


def test_missing_reading_and_grid_reading_are_refused() -> None:
    with pytest.raises(SettlementError, match="no meter reading"):
        settle([trade(0, "a", "b", 1, 1)], {key("a"): (0, 1)}, GRID, IMPORT, EXPORT)
    with pytest.raises(SettlementError, match="grid"):
        settle([], {GRID: (0, 0)}, GRID, IMPORT, EXPORT)


@st.composite
def intervals(draw: st.DrawFn) -> tuple[list[Trade], dict[bytes, tuple[int, int]]]:
    sellers = [f"s{i}" for i in range(draw(st.integers(1, 3)))]
    buyers = [f"b{i}" for i in range(draw(st.integers(1, 3)))]
    trades = [trade(k, draw(st.sampled_from(sellers)), draw(st.sampled_from(buyers)),
                    draw(st.integers(1, 500)), draw(st.integers(0, 400)))
              for k in range(draw(st.integers(0, 8)))]
    readings = {key(n): (draw(st.integers(0, 800)), draw(st.integers(0, 800)))
                for n in sellers + buyers + ["idle"]}
    return trades, readings


@settings(max_examples=300, deadline=None)
@given(intervals())
def test_energy_and_money_balance(case: tuple[list[Trade], dict]) -> None:
    trades, readings = case
    result = settle(trades, readings, GRID, IMPORT, EXPORT)
    for node, (import_wh, export_wh) in readings.items():  # settled energy equals metering
        assert sum(d.energy_wh for d in result if d.seller == node) == export_wh
        assert sum(d.energy_wh for d in result if d.buyer == node) == import_wh
    for t, d in zip(trades, result, strict=False):  # one delivery per trade, never above it
        assert d.trade == t.id and 0 <= d.energy_wh <= t.energy_wh
        assert d.price_micro_per_wh == t.price_micro_per_wh
        seller_export, buyer_import = readings[t.seller][1], readings[t.buyer][0]
        if seller_export >= sum(x.energy_wh for x in trades if x.seller == t.seller) and \
                buyer_import >= sum(x.energy_wh for x in trades if x.buyer == t.buyer):
            assert d.energy_wh == t.energy_wh  # both metered enough: fully delivered
        if seller_export == 0 or buyer_import == 0:
            assert d.energy_wh == 0
    grid = [d for d in result if not d.trade]
    assert all(GRID in (d.seller, d.buyer) and d.energy_wh > 0 for d in grid)
    # As records paid by transfers, money and energy net to zero over nodes and grid.
    records = []
    for k, d in enumerate(result):
        records.append(Settlement(OP, 100 + k, 0, d.trade, d.seller, d.buyer, d.energy_wh,
                                  d.price_micro_per_wh, d.amount_micro))
        if d.amount_micro:
            records.append(Transfer(d.buyer, 1, 0, d.seller, d.amount_micro, b""))
    balances = tally(records)
    assert sum(b.money_micro for b in balances.values()) == 0
    assert sum(b.sold_wh - b.bought_wh for b in balances.values()) == 0
    imported = sum(i for i, _ in readings.values())
    exported = sum(e for _, e in readings.values())
    grid_balance = balances.get(GRID)
    net_from_grid = grid_balance.sold_wh - grid_balance.bought_wh if grid_balance else 0
    assert net_from_grid == imported - exported
