"""The economics of a chain: what the signatures and hashes alone do not prove.

A chain can be intact, every record signed by its signer with fresh nonces, and still be
wrong: a transfer that pays for a settlement this ledger never made (replayed from another
ledger signed by the same keys), a settlement left unpaid, a trade of orders that are not on
the ledger, energy settled that no meter measured.  :class:`Audit` takes the records in
chain order, as :mod:`ledger.verify` checks them, and holds them to the rules the market
session follows:

* an order is signed by a node; a trade by the operator, of a buy and a sell order of the
  same interval, signed by its buyer and its seller, within both limit prices and the
  orders' energy;
* a node has at most one meter reading per interval;
* when an interval's block closes, its settlements are exactly what
  :func:`ledger.settlement.settle` gives for its trades and meter readings (energy per
  trade by the min-of-two rule, the rest to and from one grid account at one import and
  one export price), signed by the operator, and every settlement with an amount is paid
  by exactly one transfer from its buyer to its seller, of that amount;
* nothing arrives for an interval that is already settled, and no trade or meter reading
  is left unsettled behind a later interval's block.

A transfer with an empty reference is a plain payment and pays for nothing to check.
Memory is what the unsettled intervals hold (orders, trades, readings), not the chain.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ledger.errors import SettlementError
from ledger.keys import fingerprint
from ledger.records import MeterReading, Order, Record, Settlement, Trade, Transfer
from ledger.settlement import settle


class AuditFault(Exception):
    """A record, or an interval, breaks the market's rules (the message says which)."""


@dataclass
class _Interval:
    """What the chain holds so far for one market interval."""

    trades: dict[bytes, Trade] = field(default_factory=dict)
    readings: dict[bytes, MeterReading] = field(default_factory=dict)
    settlements: dict[bytes, Settlement] = field(default_factory=dict)
    settled: set[bytes] = field(default_factory=set)
    paid: Counter[bytes] = field(default_factory=Counter)


def _short(record_id: bytes) -> str:
    return record_id.hex()[:16]


class Audit:
    """Economic checks of one pass over a chain; ``operator`` signs trades and settlements.

    Call :meth:`record` for every record in chain order (sealed ones, then pending ones)
    and :meth:`close` when the block of an interval closes.  Both raise :class:`AuditFault`.
    """

    def __init__(self, operator: bytes | None) -> None:
        self.operator = operator
        self.closed: int | None = None
        self._intervals: dict[int, _Interval] = {}
        self._orders: dict[bytes, list] = {}  # id -> [order, energy traded so far]

    def _interval(self, k: int) -> _Interval:
        iv = self._intervals.get(k)
        if iv is None:
            iv = self._intervals[k] = _Interval()
        return iv

    def _by_operator(self, rec: Record) -> None:
        if self.operator is not None and rec.signer != self.operator:
            raise AuditFault(f"signed by {fingerprint(rec.signer)}, not the operator "
                             f"{fingerprint(self.operator)}")

    def record(self, rec: Record) -> None:
        """Check one record against what came before it in the chain."""
        late = self.closed is not None and rec.interval <= self.closed
        if late and not (isinstance(rec, Transfer) and not rec.reference):
            raise AuditFault(f"belongs to interval {rec.interval}, which an earlier block "
                             "settled")
        if isinstance(rec, Order):
            if rec.signer == self.operator:
                raise AuditFault("an order signed by the operator")
            self._orders[rec.id] = [rec, 0]
        elif isinstance(rec, Trade):
            self._trade(rec)
        elif isinstance(rec, MeterReading):
            iv = self._interval(rec.interval)
            if rec.signer == self.operator:
                raise AuditFault("a meter reading signed by the operator")
            if rec.signer in iv.readings:
                raise AuditFault(f"a second meter reading of {fingerprint(rec.signer)} for "
                                 f"interval {rec.interval}")
            iv.readings[rec.signer] = rec
        elif isinstance(rec, Settlement):
            self._settlement(rec)
        elif isinstance(rec, Transfer) and rec.reference:
            self._transfer(rec)

    def _trade(self, t: Trade) -> None:
        self._by_operator(t)
        for side, order_id, party in (("buy", t.buy_order, t.buyer),
                                      ("sell", t.sell_order, t.seller)):
            held = self._orders.get(order_id)
            if held is None:
                raise AuditFault(f"trades {side} order {_short(order_id)}, which is not on "
                                 "the ledger before it")
            order, traded = held
            if (order.side, order.signer, order.interval) != (side, party, t.interval):
                raise AuditFault(f"its {side} order {_short(order_id)} is not a {side} order "
                                 f"of {fingerprint(party)} for interval {t.interval}")
            if traded + t.energy_wh > order.energy_wh:
                raise AuditFault(f"trades {traded + t.energy_wh} Wh of {side} order "
                                 f"{_short(order_id)}, which offered {order.energy_wh} Wh")
            held[1] = traded + t.energy_wh
        buy, sell = self._orders[t.buy_order][0], self._orders[t.sell_order][0]
        if not sell.price_micro_per_wh <= t.price_micro_per_wh <= buy.price_micro_per_wh:
            raise AuditFault(f"price {t.price_micro_per_wh} is outside its orders' limits "
                             f"(ask {sell.price_micro_per_wh}, bid {buy.price_micro_per_wh})")
        self._interval(t.interval).trades[t.id] = t

    def _settlement(self, s: Settlement) -> None:
        self._by_operator(s)
        iv = self._interval(s.interval)
        if s.trade:
            t = iv.trades.get(s.trade)
            if t is None:
                raise AuditFault(f"settles trade {_short(s.trade)}, which is no trade of "
                                 f"interval {s.interval} before it")
            if s.trade in iv.settled:
                raise AuditFault(f"settles trade {_short(s.trade)} a second time")
            if (s.seller, s.buyer, s.price_micro_per_wh) != \
                    (t.seller, t.buyer, t.price_micro_per_wh):
                raise AuditFault(f"its seller, buyer or price differ from trade "
                                 f"{_short(s.trade)}'s")
            iv.settled.add(s.trade)
        iv.settlements[s.id] = s

    def _transfer(self, p: Transfer) -> None:
        iv = self._intervals.get(p.interval)
        s = iv.settlements.get(p.reference) if iv else None
        if iv is None or s is None:
            raise AuditFault(f"pays for {_short(p.reference)}, which is no settlement of "
                             f"interval {p.interval} on this ledger (replayed from another?)")
        if (p.signer, p.payee, p.amount_micro) != (s.buyer, s.seller, s.amount_micro):
            raise AuditFault(f"does not pay settlement {_short(s.id)}: {p.amount_micro} from "
                             f"{fingerprint(p.signer)} to {fingerprint(p.payee)}, where it "
                             f"owes {s.amount_micro} from {fingerprint(s.buyer)} to "
                             f"{fingerprint(s.seller)}")
        if iv.paid[s.id]:
            raise AuditFault(f"pays settlement {_short(s.id)} a second time")
        iv.paid[s.id] += 1

    def close(self, interval: int) -> None:
        """The block of ``interval`` has closed: settle it in full, or say what is wrong."""
        for k in sorted(k for k, iv in self._intervals.items()
                        if k < interval and (iv.trades or iv.readings)):
            iv = self._intervals[k]
            what = f"trade {_short(next(iter(iv.trades)))}" if iv.trades else \
                f"the meter reading of {fingerprint(next(iter(iv.readings)))}"
            raise AuditFault(f"interval {k} was never settled: its {what} has no settlement "
                             f"before interval {interval}'s block")
        iv = self._intervals.pop(interval, _Interval())
        if iv.trades or iv.readings or iv.settlements:
            self._check_settlements(interval, iv)
        self._orders = {i: o for i, o in self._orders.items() if o[0].interval > interval}
        self.closed = interval if self.closed is None else max(self.closed, interval)

    def _check_settlements(self, interval: int, iv: _Interval) -> None:
        stored = list(iv.settlements.values())
        readings = {k: (r.import_wh, r.export_wh) for k, r in iv.readings.items()}
        grids = {key for s in stored for key in (s.seller, s.buyer)} - set(readings)
        if len(grids) > 1:
            raise AuditFault(f"interval {interval}: energy is settled with "
                             f"{sorted(fingerprint(g) for g in grids)}, which have no meter "
                             "reading; only one grid account may")
        grid = next(iter(grids), bytes(32))
        try:
            expected = settle(list(iv.trades.values()), readings, grid, 0, 0)
        except SettlementError as exc:
            raise AuditFault(f"interval {interval} cannot be settled: {exc}") from None
        got = [(s.trade, s.seller, s.buyer, s.energy_wh) for s in stored]
        want = [(d.trade, d.seller, d.buyer, d.energy_wh) for d in expected]
        if got != want:
            raise AuditFault(f"interval {interval}: its settlements ({len(got)}) are not what "
                             f"its {len(iv.trades)} trade(s) and {len(readings)} meter "
                             f"reading(s) settle to ({len(want)}){_first_difference(got, want)}")
        for direction in ("seller", "buyer"):
            prices = {s.price_micro_per_wh for s in stored
                      if not s.trade and getattr(s, direction) == grid}
            if len(prices) > 1:
                verb = "sells" if direction == "seller" else "buys"
                raise AuditFault(f"interval {interval}: the grid {verb} at {len(prices)} "
                                 f"prices {sorted(prices)}")
        for s in stored:
            count = iv.paid[s.id]
            if s.amount_micro and count == 0:
                raise AuditFault(f"interval {interval}: settlement {_short(s.id)} "
                                 f"({s.amount_micro} micro) is not paid")
            if not s.amount_micro and count:
                raise AuditFault(f"interval {interval}: settlement {_short(s.id)} of no amount "
                                 "is paid")


def _first_difference(got: list[tuple], want: list[tuple]) -> str:
    for k, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return (f"; settlement {k} books {g[3]} Wh from {fingerprint(g[1])} to "
                    f"{fingerprint(g[2])}, the meters say {w[3]} Wh from {fingerprint(w[1])} "
                    f"to {fingerprint(w[2])}")
    return ""
