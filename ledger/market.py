"""Market clearing per interval: a uniform-price call auction and a continuous double auction.

Both sit behind one interface, :class:`Market`: ``on_order`` runs when an order arrives and
``on_gate`` when the interval's gate closes; each returns the matches it makes.

- :class:`UniformPriceAuction` (``"uniform"``, pay as clear) collects orders and clears them
  all at the gate at one price: the midpoint (rounded down) of the last matched bid and ask,
  so every matched buyer pays at most its bid and every matched seller gets at least its ask.
- :class:`ContinuousDoubleAuction` (``"continuous"``, pay as bid) matches each order the moment
  it arrives against the best resting orders on the other side; each trade is at the price of
  the resting order it hits, the bid or ask that was on the book.

Priority is price, then arrival.  All quantities are integers (Wh, micro-units per Wh).
A node is on one side of an interval's book (the session enforces it), so a node never
trades with itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OpenOrder:
    """An order's unfilled part as the market sees it.

    Parameters
    ----------
    id : bytes
        The order record's id.
    node : bytes
        Public key of the node that placed it.
    side : str
        ``"buy"`` or ``"sell"``.
    energy_wh : int
        Energy still unmatched. [Wh]
    price_micro_per_wh : int
        Limit price: the most a buyer pays, the least a seller takes. [micro-units/Wh]
    expires_ms : int
        Session time after which the order is void. [ms]
    arrival : int
        Arrival rank (earlier first among equal prices).
    """

    id: bytes
    node: bytes
    side: str
    energy_wh: int
    price_micro_per_wh: int
    expires_ms: int
    arrival: int


@dataclass(frozen=True)
class Match:
    """Energy matched between a buy and a sell order at one price."""

    buy: OpenOrder
    sell: OpenOrder
    energy_wh: int
    price_micro_per_wh: int


class Market(Protocol):
    name: str

    def on_order(self, incoming: OpenOrder, book: Sequence[OpenOrder],
                 now_ms: int) -> list[Match]:
        """Matches made when ``incoming`` arrives while ``book`` rests (not containing it)."""
        ...

    def on_gate(self, book: Sequence[OpenOrder], gate_ms: int) -> list[Match]:
        """Matches made when the gate closes on the open orders ``book``."""
        ...


def _by_priority(orders: Sequence[OpenOrder], side: str) -> list[OpenOrder]:
    sign = -1 if side == "buy" else 1
    return sorted((o for o in orders if o.side == side),
                  key=lambda o: (sign * o.price_micro_per_wh, o.arrival))


def clear_uniform(book: Sequence[OpenOrder], gate_ms: int) -> list[Match]:
    """Clear a call auction: match by priority while the bid covers the ask, at one price.

    Orders that expired before ``gate_ms`` take no part.  The price is
    ``(last matched bid + last matched ask) // 2``.
    """
    live = [o for o in book if o.expires_ms >= gate_ms and o.energy_wh > 0]
    buys, sells = _by_priority(live, "buy"), _by_priority(live, "sell")
    pairs: list[tuple[OpenOrder, OpenOrder, int]] = []
    i = j = 0
    left_b = buys[0].energy_wh if buys else 0
    left_s = sells[0].energy_wh if sells else 0
    while i < len(buys) and j < len(sells) and \
            buys[i].price_micro_per_wh >= sells[j].price_micro_per_wh:
        q = min(left_b, left_s)
        pairs.append((buys[i], sells[j], q))
        left_b -= q
        left_s -= q
        if left_b == 0:
            i += 1
            left_b = buys[i].energy_wh if i < len(buys) else 0
        if left_s == 0:
            j += 1
            left_s = sells[j].energy_wh if j < len(sells) else 0
    if not pairs:
        return []
    last_buy, last_sell, _ = pairs[-1]
    price = (last_buy.price_micro_per_wh + last_sell.price_micro_per_wh) // 2
    return [Match(b, s, q, price) for b, s, q in pairs]


def match_continuous(incoming: OpenOrder, book: Sequence[OpenOrder],
                     now_ms: int) -> list[Match]:
    """Match an arriving order against resting orders that have not expired at ``now_ms``.

    Each match is at the resting order's price; what is left of ``incoming`` rests.
    """
    other = "sell" if incoming.side == "buy" else "buy"
    resting = [o for o in _by_priority(book, other)
               if o.expires_ms >= now_ms and o.energy_wh > 0]
    matches = []
    left = incoming.energy_wh
    for order in resting:
        crosses = (order.price_micro_per_wh <= incoming.price_micro_per_wh
                   if incoming.side == "buy"
                   else order.price_micro_per_wh >= incoming.price_micro_per_wh)
        if left == 0 or not crosses:
            break
        q = min(left, order.energy_wh)
        buy, sell = (incoming, order) if incoming.side == "buy" else (order, incoming)
        matches.append(Match(buy, sell, q, order.price_micro_per_wh))
        left -= q
    return matches


class UniformPriceAuction:
    """Pay as clear: every trade of the interval at one clearing price, set at the gate."""

    name = "uniform"

    def on_order(self, incoming: OpenOrder, book: Sequence[OpenOrder],
                 now_ms: int) -> list[Match]:
        return []

    def on_gate(self, book: Sequence[OpenOrder], gate_ms: int) -> list[Match]:
        return clear_uniform(book, gate_ms)


class ContinuousDoubleAuction:
    """Pay as bid: orders trade on arrival at the price of the resting order they hit."""

    name = "continuous"

    def on_order(self, incoming: OpenOrder, book: Sequence[OpenOrder],
                 now_ms: int) -> list[Match]:
        return match_continuous(incoming, book, now_ms)

    def on_gate(self, book: Sequence[OpenOrder], gate_ms: int) -> list[Match]:
        return []


MARKETS: dict[str, type[Market]] = {"uniform": UniformPriceAuction,
                                    "continuous": ContinuousDoubleAuction}
