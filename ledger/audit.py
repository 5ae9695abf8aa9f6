"""The economics of a chain: what the signatures and hashes alone do not prove.

A chain can be intact, every record signed by its signer with fresh nonces, and still be
wrong: a transfer that pays for a settlement this ledger never made (replayed from another
ledger signed by the same keys), a settlement left unpaid, a trade of orders that are not on
the ledger, energy settled that no meter measured.  :class:`Audit` takes the records in
chain order, as :mod:`ledger.verify` checks them, and holds them to the rules the market
session follows:

* an order is signed by a node; a trade by the operator, of a buy and a sell order of the
  same interval, signed by its buyer and its seller, within both limit prices and the
  orders' energy, and of orders that had not expired when it was made: a uniform trade at
  its interval's gate (``interval * interval_ms``), a continuous one no earlier than the end
  of the last interval settled before it (the market refuses an expired order,
  ``ExpiredOrderError``);
* a node has at most one meter reading per interval; one that ends at the meter's last valid
  counters (``read_ms``: the meter missed the interval's end) was read before that end;
* when an interval's block closes, its settlements are exactly what
  :func:`ledger.settlement.settle` gives for its trades and meter readings (energy per
  trade by the min-of-two rule, the rest to and from one grid account at one import and
  one export price: the signed tariff's, where the ledger has one), signed by the operator,
  and every settlement with an amount is paid by exactly one transfer from its buyer to its
  seller, of that amount;
* nothing arrives for an interval that is already settled, and no trade or meter reading
  is left unsettled behind a later interval's block.

A transfer with an empty reference is a plain payment and pays for nothing to check.
Memory is what the unsettled intervals hold (orders, trades, readings), not the chain.
Messages name a key by its account (``east (nslyjoTC…)``) where the ledger has one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ledger.errors import SettlementError
from ledger.keys import named
from ledger.records import MeterReading, Order, Record, Settlement, Trade, Transfer
from ledger.settlement import TARIFF_KEYS, grid_price, settle


class AuditFault(Exception):
    """A record, or an interval, breaks the market's rules (the message says which)."""


@dataclass(frozen=True)
class Tariff:
    """The grid prices the operator signed for a ledger (``meta``): every grid settlement
    must be at them, so a grid charge cannot be changed by re-signing settlements alone.
    [micro-units/Wh]"""

    import_price_micro_per_wh: int
    export_price_micro_per_wh: int

    def price(self, key: str) -> int:
        """The price of a meta key of :data:`ledger.settlement.TARIFF_KEYS`."""
        return getattr(self, key)

    def __str__(self) -> str:
        return (f"import {self.import_price_micro_per_wh}, export "
                f"{self.export_price_micro_per_wh} micro-units/Wh")


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
    ``interval_ms`` (the ledger's interval length [ms]) places the gates that orders' expiries
    are checked against: without it a trade, or a reading with ``read_ms``, is a fault, as
    only a session, which records the length, makes them; ``names`` (public key to account name)
    names keys in messages.  :attr:`gated` collects the intervals that have uniform trades,
    which are made when the interval's gate closes.  ``tariff`` (the signed grid prices, None
    on a ledger of an older gridloop) is what every grid settlement must be at.
    """

    def __init__(self, operator: bytes | None, interval_ms: int | None = None,
                 names: Mapping[bytes, str] | None = None,
                 tariff: Tariff | None = None) -> None:
        self.operator = operator
        self.interval_ms = interval_ms
        self.tariff = tariff
        self.names: Mapping[bytes, str] = names or {}
        self.closed: int | None = None
        self.gated: set[int] = set()
        self._intervals: dict[int, _Interval] = {}
        self._orders: dict[bytes, list] = {}  # id -> [order, energy traded so far]

    def who(self, key: bytes) -> str:
        """A key as messages name it (:func:`ledger.keys.named`)."""
        return named(key, self.names)

    def _interval(self, k: int) -> _Interval:
        iv = self._intervals.get(k)
        if iv is None:
            iv = self._intervals[k] = _Interval()
        return iv

    def _by_operator(self, rec: Record) -> None:
        if self.operator is not None and rec.signer != self.operator:
            raise AuditFault(f"signed by {self.who(rec.signer)}, not the operator "
                             f"{self.who(self.operator)}")

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
                raise AuditFault(f"a second meter reading of {self.who(rec.signer)} for "
                                 f"interval {rec.interval}")
            if rec.read_ms is not None and self.interval_ms is None:
                raise AuditFault(f"a meter reading of {self.who(rec.signer)} read at "
                                 f"{rec.read_ms} ms on a ledger without meta.interval_ms, so "
                                 "the interval's end it must precede is unknown (deleted "
                                 "outside gridloop?)")
            end = None if self.interval_ms is None else (rec.interval + 1) * self.interval_ms
            if rec.read_ms is not None and end is not None and rec.read_ms >= end:
                raise AuditFault(f"a meter reading of {self.who(rec.signer)} for interval "
                                 f"{rec.interval} read at {rec.read_ms} ms, not before the "
                                 f"interval's end at {end} ms")
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
                                 f"of {self.who(party)} for interval {t.interval}")
            if traded + t.energy_wh > order.energy_wh:
                raise AuditFault(f"trades {traded + t.energy_wh} Wh of {side} order "
                                 f"{_short(order_id)}, which offered {order.energy_wh} Wh")
            held[1] = traded + t.energy_wh
        buy, sell = self._orders[t.buy_order][0], self._orders[t.sell_order][0]
        if not sell.price_micro_per_wh <= t.price_micro_per_wh <= buy.price_micro_per_wh:
            raise AuditFault(f"price {t.price_micro_per_wh} is outside its orders' limits "
                             f"(ask {sell.price_micro_per_wh}, bid {buy.price_micro_per_wh})")
        self._unexpired(t, buy, sell)
        if t.market == "uniform":
            self.gated.add(t.interval)
        self._interval(t.interval).trades[t.id] = t

    def _unexpired(self, t: Trade, buy: Order, sell: Order) -> None:
        """Both orders of a trade were still valid when it was made: a uniform trade at its
        interval's gate, a continuous one on an order's arrival, which is no earlier than the
        end of the last interval settled before it (settling moves session time there)."""
        if self.interval_ms is None:
            raise AuditFault(f"a {t.market} trade on a ledger without meta.interval_ms, so "
                             "its orders' expiry cannot be checked (a MarketSession, which "
                             "makes trades, records the interval length: deleted outside "
                             "gridloop?)")
        if t.market == "uniform":
            when = t.interval * self.interval_ms
            what = f"the gate of interval {t.interval} at {when} ms, where it traded"
        elif self.closed is not None:
            when = (self.closed + 1) * self.interval_ms
            what = (f"the end of interval {self.closed} at {when} ms, settled before it "
                    "traded")
        else:
            return
        for side, order in (("buy", buy), ("sell", sell)):
            if order.expires_ms < when:
                raise AuditFault(f"trades {side} order {_short(order.id)} of "
                                 f"{self.who(order.signer)}, which expired at "
                                 f"{order.expires_ms} ms, before {what} (intervals of "
                                 f"{self.interval_ms} ms); the market refuses an expired order")

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
                             f"{self.who(p.signer)} to {self.who(p.payee)}, where it "
                             f"owes {s.amount_micro} from {self.who(s.buyer)} to "
                             f"{self.who(s.seller)}")
        if iv.paid[s.id]:
            raise AuditFault(f"pays settlement {_short(s.id)} a second time")
        iv.paid[s.id] += 1

    def close(self, interval: int) -> None:
        """The block of ``interval`` has closed: settle it in full, or say what is wrong."""
        for k in sorted(k for k, iv in self._intervals.items()
                        if k < interval and (iv.trades or iv.readings)):
            iv = self._intervals[k]
            what = f"trade {_short(next(iter(iv.trades)))}" if iv.trades else \
                f"the meter reading of {self.who(next(iter(iv.readings)))}"
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
                             f"{sorted(self.who(g) for g in grids)}, which have no meter "
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
                             f"reading(s) settle to ({len(want)})"
                             f"{_first_difference(got, want, self.who)}")
        self._check_tariff(interval, stored, grid)
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

    def _check_tariff(self, interval: int, stored: list[Settlement], grid: bytes) -> None:
        """Each grid settlement is at the signed tariff: the import price where the grid
        sells, the export price where it buys (nothing to check without a tariff)."""
        if self.tariff is None:
            return
        for s in stored:
            kp = grid_price(s, grid)
            if kp is None or kp[1] == self.tariff.price(kp[0]):
                continue
            key, price = kp
            verb, word = ("sells", "import") if key == TARIFF_KEYS[0] else ("buys", "export")
            raise AuditFault(f"interval {interval}: settlement {_short(s.id)}: the grid {verb} "
                             f"at {price} micro-units/Wh, not the {word} price of the signed "
                             f"tariff ({self.tariff})")


def _first_difference(got: list[tuple], want: list[tuple], who: Callable[[bytes], str]) -> str:
    for k, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return (f"; settlement {k} books {g[3]} Wh from {who(g[1])} to {who(g[2])}, the "
                    f"meters say {w[3]} Wh from {who(w[1])} to {who(w[2])}")
    return ""
