"""Settlement of one interval against meter readings, and account balances.

Pure functions over integers.  Delivered energy per trade follows the min-of-two rule:

1. each seller's metered export, capped at what it sold, is shared over its sell trades in
   proportion to their contracted energy; each buyer's metered import, capped at what it
   bought, over its buy trades likewise (largest-remainder rounding, :func:`allocate`);
2. a trade delivered the smaller of its seller's and its buyer's share;
3. what a node exported beyond its delivered sales went to the grid account at the export
   price; what it imported beyond its delivered purchases came from the grid at the import
   price.

So for every node, energy sold in settlements equals its metered export and energy bought
equals its metered import, and every settlement is paid by one transfer from buyer to seller:
energy and money balance exactly across the nodes and the grid account.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ledger import canonical
from ledger.errors import SettlementError
from ledger.keys import fingerprint
from ledger.records import Record, Settlement, Trade, Transfer

TARIFF_MAGIC = b"GLT\x01"
#: the ``meta`` keys of a ledger's grid tariff: set by ``MarketSession`` when it makes the
#: ledger (or first opens an older one), one price per direction for the whole ledger
TARIFF_KEYS = ("import_price_micro_per_wh", "export_price_micro_per_wh")


def tariff_body(import_price_micro_per_wh: int, export_price_micro_per_wh: int) -> bytes:
    """The canonical bytes the operator signs for the grid tariff (``meta.tariff_signature``,
    bound to the ledger's id as records are): every grid settlement on the ledger is at
    these prices, so an auditor can check the grid charges against them."""
    return TARIFF_MAGIC + canonical.encode({
        "export_price_micro_per_wh": export_price_micro_per_wh,
        "import_price_micro_per_wh": import_price_micro_per_wh})


def grid_price(settlement: Settlement, grid: bytes) -> tuple[str, int] | None:
    """``(meta key, price)`` of a settlement with the grid account (``None`` for a trade's):
    the import price when the grid sells, the export price when it buys."""
    if settlement.trade:
        return None
    if settlement.seller == grid:
        return TARIFF_KEYS[0], settlement.price_micro_per_wh
    if settlement.buyer == grid:
        return TARIFF_KEYS[1], settlement.price_micro_per_wh
    return None


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` by the largest-remainder method.

    The shares are integers that sum to ``total`` exactly; each is the floor of its exact
    share or one more, the extra units going to the largest remainders (the earlier index on
    a tie).  With ``total <= sum(weights)`` no share exceeds its weight.

    Parameters
    ----------
    total : int
        Non-negative amount to share out.
    weights : sequence of int
        Non-negative weights; at least one positive unless ``total`` is 0.
    """
    denominator = sum(weights)
    if total < 0 or any(w < 0 for w in weights):
        raise ValueError("allocate needs a non-negative total and weights")
    if denominator == 0:
        if total:
            raise ValueError(f"cannot allocate {total} over zero weights")
        return [0] * len(weights)
    shares = [total * w // denominator for w in weights]
    remainders = [total * w % denominator for w in weights]
    left = total - sum(shares)
    for i in sorted(range(len(weights)), key=lambda k: (-remainders[k], k))[:left]:
        shares[i] += 1
    return shares


@dataclass(frozen=True)
class Delivery:
    """Energy settled from ``seller`` to ``buyer`` at a price; ``trade`` is empty for the grid."""

    trade: bytes
    seller: bytes
    buyer: bytes
    energy_wh: int
    price_micro_per_wh: int

    @property
    def amount_micro(self) -> int:
        return self.energy_wh * self.price_micro_per_wh


def settle(trades: Sequence[Trade], readings: Mapping[bytes, tuple[int, int]], grid: bytes,
           import_price_micro_per_wh: int, export_price_micro_per_wh: int) -> list[Delivery]:
    """Deliveries of one interval: one per trade, then each node's exchange with the grid.

    Parameters
    ----------
    trades : sequence of Trade
        The interval's trades, in chain order.
    readings : mapping
        Node public key to ``(import_wh, export_wh)`` metered over the interval. [Wh]
    grid : bytes
        Public key of the grid account.
    import_price_micro_per_wh, export_price_micro_per_wh : int
        What a node pays the grid per Wh imported, and is paid per Wh exported.
        [micro-units/Wh]

    Returns
    -------
    list of Delivery
        Trades first (in the given order, zero energy when nothing was delivered), then for
        each node in public-key order its grid import and grid export when not zero.
    """
    missing = {t.seller for t in trades} | {t.buyer for t in trades}
    missing -= set(readings)
    if missing:
        raise SettlementError("no meter reading from " +
                              ", ".join(sorted(fingerprint(k) for k in missing)))
    if grid in readings:
        raise SettlementError("the grid account cannot have a meter reading")
    delivered = {t.id: t.energy_wh for t in trades}
    for side, metered in (("seller", 1), ("buyer", 0)):
        by_node: dict[bytes, list[Trade]] = {}
        for t in trades:
            by_node.setdefault(getattr(t, side), []).append(t)
        for node, own in by_node.items():
            contracted = [t.energy_wh for t in own]
            shares = allocate(min(readings[node][metered], sum(contracted)), contracted)
            for t, share in zip(own, shares, strict=True):
                delivered[t.id] = min(delivered[t.id], share)
    result = [Delivery(t.id, t.seller, t.buyer, delivered[t.id], t.price_micro_per_wh)
              for t in trades]
    for node in sorted(readings):
        import_wh, export_wh = readings[node]
        from_grid = import_wh - sum(delivered[t.id] for t in trades if t.buyer == node)
        to_grid = export_wh - sum(delivered[t.id] for t in trades if t.seller == node)
        if from_grid:
            result.append(Delivery(b"", grid, node, from_grid, import_price_micro_per_wh))
        if to_grid:
            result.append(Delivery(b"", node, grid, to_grid, export_price_micro_per_wh))
    return result


@dataclass
class Balance:
    """An account's totals over the ledger.

    Parameters
    ----------
    money_micro : int
        Received minus paid. [micro-units]
    sold_wh, bought_wh : int
        Energy settled out of and into the account. [Wh]
    """

    money_micro: int = 0
    sold_wh: int = 0
    bought_wh: int = 0


def tally(records: Iterable[Record]) -> dict[bytes, Balance]:
    """Balances by public key from settlements (energy) and transfers (money)."""
    balances: dict[bytes, Balance] = {}

    def of(key: bytes) -> Balance:
        return balances.setdefault(key, Balance())

    for r in records:
        if isinstance(r, Transfer):
            of(r.signer).money_micro -= r.amount_micro
            of(r.payee).money_micro += r.amount_micro
        elif isinstance(r, Settlement):
            of(r.seller).sold_wh += r.energy_wh
            of(r.buyer).bought_wh += r.energy_wh
    return balances
