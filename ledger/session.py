"""The API the bench trades through: one :class:`MarketSession` per run.

Time on the ledger is session time in integer ms (the run's simulated time).  Interval ``k``
is delivered over ``[k * interval_ms, (k + 1) * interval_ms)``; its gate closes at its start,
when :meth:`MarketSession.clear` runs, and :meth:`MarketSession.settle` runs after its end::

    t = k * interval_ms: clear(k)                     orders for k+1 arrive during k
    t = (k + 1) * interval_ms: clear(k + 1), meter readings of k, settle(k)

Every method is one transaction and may be retried: an order, meter reading or signed record
that is already stored is returned, not stored twice, and clearing or settling an interval
again returns what the first call stored.  An order is "already stored" when the same node
placed an order with the same interval, side, energy, price and expiry (a node that wants
more of the same places one larger order).

An interval is settled before a later one is sealed: a process that stopped before settling
one (killed) leaves it for the next to settle (:meth:`MarketSession.unsettled`,
:meth:`MarketSession.settle_unread`), else ``verify`` would refuse the ledger for good.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Self, TypeVar

from ledger.errors import ConflictError, ExpiredOrderError, RecordError, SettlementError
from ledger.keys import Identity, KeyDirectory, fingerprint
from ledger.market import MARKETS, Match, OpenOrder
from ledger.records import (
    SIDES,
    MeterReading,
    Order,
    Record,
    Settlement,
    SignedRecord,
    Trade,
    Transfer,
    sign,
    signing_message,
)
from ledger.settlement import TARIFF_KEYS, Balance, grid_price, settle, tariff_body
from ledger.store import SIGNED_BY, Store, open_store
from ledger.verify import counted_balances

R = TypeVar("R", bound=Record)


def balance_sheet(store: Store) -> tuple[dict[str, Balance], int]:
    """Balances of every account in ``store`` by name, and how many records were left out:
    what ``gridloop ledger show`` counts (:func:`ledger.verify.counted_balances`: a
    settlement or transfer counts when its signature verifies under an account whose role
    signs that kind; a store without accounts, used without a session, counts every signed
    record, each key by base64)."""
    sheet = counted_balances(store)
    return sheet.balances, sum(sheet.left_out.values())


def balances(store: Store) -> dict[str, Balance]:
    """Balances of every account in ``store`` by name (other keys by base64), from the
    settlements and transfers signed by accounts allowed to sign them (:func:`balance_sheet`)."""
    return balance_sheet(store)[0]


class MarketSession:
    """A market between named bench nodes, settled on a hash-chained ledger.

    Parameters
    ----------
    store : Store, str or path
        An open store, a SQLite path or a ``postgresql://`` URL (:func:`open_store`).
    keys : KeyDirectory, str or path
        Where the identities live; missing ones are created (private keys mode 0600), and
        listed in :attr:`created_keys`.
    nodes : sequence of str
        Names of the trading nodes.
    market : str
        ``"uniform"`` (uniform-price call auction at the gate, pay as clear) or
        ``"continuous"`` (continuous double auction, pay as bid).
    interval_s : float
        Length of a market interval; stored in the ledger, which refuses another later. [s]
    import_price_micro_per_wh, export_price_micro_per_wh : int
        Grid prices for imbalances: paid by a node per Wh imported from the grid, paid to it
        per Wh exported to the grid; stored in the ledger, signed by the operator, which
        refuses others later. [micro-units/Wh]
    operator, grid : str
        Names of the market operator's identity (signs trades, settlements and blocks) and of
        the grid account.
    create_keys : bool
        Make the keys missing from ``keys``; ``False`` refuses them (a fixed key directory).
    """

    def __init__(self, store: Store | str | os.PathLike[str], *,
                 keys: KeyDirectory | str | os.PathLike[str], nodes: Sequence[str],
                 import_price_micro_per_wh: int, export_price_micro_per_wh: int,
                 market: str = "uniform", interval_s: float = 900.0,
                 operator: str = "market", grid: str = "grid",
                 create_keys: bool = True) -> None:
        if market not in MARKETS:
            raise RecordError(f"unknown market {market!r}; choose one of {sorted(MARKETS)}")
        self.interval_ms = round(interval_s * 1000)
        if self.interval_ms <= 0:
            raise RecordError(f"interval_s must be at least 1 ms, not {interval_s!r}")
        for name, price in (("import_price_micro_per_wh", import_price_micro_per_wh),
                            ("export_price_micro_per_wh", export_price_micro_per_wh)):
            if not isinstance(price, int) or isinstance(price, bool) or price < 0:
                raise RecordError(f"{name} must be an integer >= 0, not {price!r}")
        if len(set(nodes)) != len(nodes) or {operator, grid} & set(nodes) or operator == grid:
            raise RecordError(f"node names {list(nodes)} must be unique and differ from the "
                              f"operator {operator!r} and the grid {grid!r}")
        self.market = MARKETS[market]()
        self.import_price_micro_per_wh = import_price_micro_per_wh
        self.export_price_micro_per_wh = export_price_micro_per_wh
        self.keys = keys if isinstance(keys, KeyDirectory) else KeyDirectory(keys)
        identities, made = self.keys.load_all([operator, grid, *nodes], create=create_keys)
        self.created_keys: list[str] = made
        """Names whose keys this session made (none were in ``keys``)."""
        self._owns_store = not isinstance(store, Store)
        self.store = open_store(store) if self._owns_store else store
        try:
            self._open(identities, list(nodes), operator, grid)
        except BaseException:
            self.close()
            raise

    def _open(self, identities: dict[str, Identity], nodes: list[str], operator: str,
              grid: str) -> None:
        self.operator = identities[operator]
        self.grid = identities[grid]
        self._nodes = {name: identities[name] for name in nodes}
        store = self.store
        with store.transaction():
            for identity, role in ((self.operator, "operator"), (self.grid, "grid")):
                store.register(identity.name, identity.public_key, role)
            for identity in self._nodes.values():
                store.register(identity.name, identity.public_key, "node")
            store.sign_accounts(self.operator)
            for key, value in (("operator", self.operator.public_key.hex()),
                               ("interval_ms", str(self.interval_ms))):
                have = store.get_meta(key)
                if have is None:
                    store.set_meta(key, value)
                elif have != value:
                    raise ConflictError(f"{store.location}: was made with {key} {have}, "
                                        f"this session has {value}")
            self._keep_tariff()
            if store.get_meta("gates_signature") is None:  # a new ledger (or an older one)
                store.sign_gates(self.operator)
        self._by_key: dict[bytes, Identity] = {
            i.public_key: i for i in (self.grid, *self._nodes.values())}
        accounts = store.accounts()
        self.names: dict[bytes, str] = {k: n for n, k, _ in accounts}
        """Public key to account name, for every account the ledger knows."""
        self._roles: dict[bytes, str] = {k: r for _, k, r in accounts}
        head, cleared = store.head(), store.last_cleared()
        self._now_ms = max(self.gate_ms(cleared) if cleared is not None else 0,
                           self.gate_ms(head.interval + 1) if head else 0)

    def _keep_tariff(self) -> None:
        """Store the grid prices in ``meta`` with the operator's signature of them
        (:func:`ledger.settlement.tariff_body`), or refuse other prices than the ledger's.
        A ledger without a signed tariff (made before it was stored) gets it only if its
        grid settlements were all at these prices."""
        store = self.store
        mine = dict(zip(TARIFF_KEYS, (self.import_price_micro_per_wh,
                                      self.export_price_micro_per_wh), strict=True))
        have = {key: store.get_meta(key) for key in TARIFF_KEYS}
        signed = store.get_meta("tariff_signature") is not None
        stored = signed and None not in have.values()
        if not stored:
            have = self._settled_tariff()
        if any(v is not None and v != str(mine[k]) for k, v in have.items()):
            raise ConflictError(f"{store.location}: was made with grid prices "
                                f"{_tariff_text(have)}, this session has {_tariff_text(mine)}")
        if not stored:
            for key, price in mine.items():
                store.set_meta(key, str(price))
            body = tariff_body(self.import_price_micro_per_wh, self.export_price_micro_per_wh)
            signature = self.operator.sign(signing_message(store.ledger_id, body))
            store.set_meta("tariff_signature", signature.hex())

    def _settled_tariff(self) -> dict[str, str | None]:
        """The grid prices of the settlements already on a ledger without a stored tariff
        (made before it was), by meta key; ``None`` where none was settled.  Prices that
        changed within such a ledger are refused: no one tariff holds for it."""
        found: dict[str, str | None] = dict.fromkeys(TARIFF_KEYS)
        for s in self._find(Settlement):
            kp = grid_price(s, self.grid.public_key)
            if kp is None:
                continue
            key, price = kp
            if found[key] not in (None, str(price)):
                raise ConflictError(f"{self.store.location}: its grid settlements are at two "
                                    f"{key.split('_')[0]} prices ({found[key]} and {price} "
                                    "micro-units/Wh); a ledger keeps one tariff")
            found[key] = str(price)
        return found

    # -- time -------------------------------------------------------------------------------

    def gate_ms(self, interval: int) -> int:
        """Session time at which ``interval`` starts and its gate closes. [ms]"""
        return interval * self.interval_ms

    @property
    def now_ms(self) -> int:
        """The latest session time the session has been told of. [ms]"""
        return self._now_ms

    def advance(self, now_ms: int) -> None:
        """Move session time forward to ``now_ms`` (earlier times are ignored). [ms]"""
        self._now_ms = max(self._now_ms, int(now_ms))

    # -- identities -------------------------------------------------------------------------

    def node(self, name: str) -> Identity:
        try:
            return self._nodes[name]
        except KeyError:
            raise RecordError(f"unknown node {name!r}; this session trades between "
                              f"{sorted(self._nodes)}") from None

    def public_key(self, name: str) -> bytes:
        """Raw public key of a node, the grid or the operator, by name."""
        for identity in (self.operator, self.grid, *self._nodes.values()):
            if identity.name == name:
                return identity.public_key
        raise RecordError(f"unknown account {name!r}")

    def _nonces(self, identity: Identity) -> int:
        return self.store.last_nonce(identity.public_key) + 1

    # -- reading back -----------------------------------------------------------------------

    def _find(self, cls: type[R], interval: int | None = None,
              signer: bytes | None = None) -> list[R]:
        found = self.store.find(kind=cls.NAME, interval=interval, signer=signer)
        return [s.record for s in found if isinstance(s.record, cls)]

    def orders(self, interval: int) -> list[Order]:
        return self._find(Order, interval)

    def trades(self, interval: int) -> list[Trade]:
        return self._find(Trade, interval)

    def meter_readings(self, interval: int) -> list[MeterReading]:
        return self._find(MeterReading, interval)

    def settlements(self, interval: int) -> list[Settlement]:
        return self._find(Settlement, interval)

    def transfers(self, interval: int) -> list[Transfer]:
        return self._find(Transfer, interval)

    def balances(self) -> dict[str, Balance]:
        """Money and settled energy of every account, by name."""
        return balances(self.store)

    def _closed(self, interval: int) -> bool:
        head = self.store.head()
        return self.store.is_cleared(interval) or (head is not None and interval <= head.interval)

    def _book(self, interval: int) -> list[OpenOrder]:
        filled: dict[bytes, int] = {}
        for t in self.trades(interval):
            filled[t.buy_order] = filled.get(t.buy_order, 0) + t.energy_wh
            filled[t.sell_order] = filled.get(t.sell_order, 0) + t.energy_wh
        return [OpenOrder(o.id, o.signer, o.side, o.energy_wh - filled.get(o.id, 0),
                          o.price_micro_per_wh, o.expires_ms, arrival)
                for arrival, o in enumerate(self.orders(interval))]

    # -- writing ----------------------------------------------------------------------------

    def _trade(self, interval: int, matches: list[Match]) -> list[Trade]:
        nonce = self._nonces(self.operator)
        trades = [Trade(self.operator.public_key, nonce + k, interval, self.market.name,
                        m.buy.id, m.sell.id, m.buy.node, m.sell.node, m.energy_wh,
                        m.price_micro_per_wh) for k, m in enumerate(matches)]
        self.store.insert([sign(t, self.operator, self.store.ledger_id) for t in trades])
        return trades

    def submit_order(self, node: str, side: str, energy_wh: int, price_micro_per_wh: int,
                     interval: int, *, expires_ms: int | None = None) -> Order:
        """Place an order signed by ``node``; in a continuous market it may trade at once.

        Parameters
        ----------
        node : str
            Name of the node placing the order.
        side : str
            ``"buy"`` or ``"sell"``; a node takes one side per interval.
        energy_wh : int
            Energy to buy or sell over the interval. [Wh]
        price_micro_per_wh : int
            Limit price. [micro-units/Wh]
        interval : int
            Delivery interval.
        expires_ms : int, optional
            Session time after which the order is void; default the interval's gate. [ms]
        """
        identity = self.node(node)
        refused = f"order of {node} for interval {interval} refused"
        if side not in SIDES:
            raise RecordError(f"{refused}: its side must be one of {SIDES}, not {side!r}")
        expires = self.gate_ms(interval) if expires_ms is None else expires_ms
        with self.store.transaction():
            mine = self._find(Order, interval, identity.public_key)
            for o in mine:
                if (o.side, o.energy_wh, o.price_micro_per_wh, o.expires_ms) == \
                        (side, energy_wh, price_micro_per_wh, expires):
                    return o
            try:
                order = Order(identity.public_key, self._nonces(identity), interval, side,
                              energy_wh, price_micro_per_wh, expires)
            except RecordError as exc:  # a field out of range: say whose order it was
                raise RecordError(f"{refused}: "
                                  f"{str(exc).removeprefix(Order.NAME + ': ')}") from None
            if self._closed(interval):
                raise ExpiredOrderError(f"order of {node} for interval {interval} refused: its "
                                        f"gate closed at {self.gate_ms(interval)} ms")
            if expires < self.now_ms:
                raise ExpiredOrderError(f"order of {node} for interval {interval} refused: it "
                                        f"expired at {expires} ms, session time is "
                                        f"{self.now_ms} ms")
            if any(o.side != side for o in mine):
                raise RecordError(f"{node} already has a {mine[0].side} order in interval "
                                  f"{interval}; a node takes one side per interval")
            book = self._book(interval)
            self.store.insert([sign(order, identity, self.store.ledger_id)])
            incoming = OpenOrder(order.id, order.signer, side, energy_wh, price_micro_per_wh,
                                 expires, len(book))
            self._trade(interval, self.market.on_order(incoming, book, self.now_ms))
        return order

    def clear(self, interval: int) -> list[Trade]:
        """Close ``interval``'s gate and return all its trades (clearing it if not yet done)."""
        with self.store.transaction():
            if not self._closed(interval):
                self.advance(self.gate_ms(interval))
                self._trade(interval, self.market.on_gate(self._book(interval),
                                                          self.gate_ms(interval)))
                self.store.close_gate(interval, self.operator)
            return self.trades(interval)

    def submit_meter_reading(self, node: str, interval: int, import_wh: int,
                             export_wh: int, *, read_ms: int | None = None) -> MeterReading:
        """Record, signed by ``node``, the energy its meter measured over ``interval``.

        Parameters
        ----------
        import_wh, export_wh : int
            Energy drawn from and fed into the shared bus over the interval: the rise of
            the meter's counters since the node's previous reading. [Wh]
        read_ms : int, optional
            Only when the meter gave no valid reading at the interval's end: the session
            time of the last valid counters the reading ends at (the energy after it goes
            into the next reading).  Before the interval's end. [ms]
        """
        identity = self.node(node)
        if read_ms is not None and read_ms >= self.gate_ms(interval + 1):
            raise RecordError(f"meter reading of {node} for interval {interval} refused: "
                              f"read_ms {read_ms} is not before the interval's end at "
                              f"{self.gate_ms(interval + 1)} ms")
        with self.store.transaction():
            for r in self._find(MeterReading, interval, identity.public_key):
                if (r.import_wh, r.export_wh, r.read_ms) == (import_wh, export_wh, read_ms):
                    return r
                raise ConflictError(f"{node} already has a meter reading for interval "
                                    f"{interval} ({r.import_wh} Wh in, {r.export_wh} Wh out)")
            head = self.store.head()
            if head is not None and interval <= head.interval:
                raise ConflictError(f"meter reading of {node} for interval {interval} refused: "
                                    f"the ledger is settled up to interval {head.interval}")
            reading = MeterReading(identity.public_key, self._nonces(identity), interval,
                                   import_wh, export_wh, read_ms)
            self.store.insert([sign(reading, identity, self.store.ledger_id)])
        return reading

    def settle(self, interval: int) -> list[Settlement]:
        """Settle ``interval`` against its meter readings, pay, and seal its block.

        Returns the interval's settlements: one per trade (delivered energy by the
        min-of-two rule), then each node's import from and export to the grid.  Each
        settlement with a non-zero amount is paid by a transfer signed by its buyer.
        """
        with self.store.transaction():
            if self.store.block_for(interval) is not None:
                return self.settlements(interval)
            head = self.store.head()
            if head is not None and interval < head.interval:
                raise SettlementError(f"interval {interval} comes before the last settled "
                                      f"interval {head.interval}")
            earlier = [i for i in self.unsettled() if i < interval]
            if earlier:
                raise SettlementError(f"cannot settle interval {interval}: interval "
                                      f"{earlier[0]} before it has trades or meter readings "
                                      "and is not settled; settle it first")
            if self.orders(interval) and not self.store.is_cleared(interval):
                raise SettlementError(f"interval {interval} has orders but was not cleared; "
                                      "call clear first")
            trades = self.trades(interval)
            readings = {r.signer: (r.import_wh, r.export_wh) for r in self.meter_readings(interval)}
            missing = ({t.buyer for t in trades} | {t.seller for t in trades}) - set(readings)
            if missing:
                names = sorted(self.names.get(k, fingerprint(k)) for k in missing)
                raise SettlementError(f"cannot settle interval {interval}: no meter reading "
                                      f"from {names}")
            deliveries = settle(trades, readings, self.grid.public_key,
                                self.import_price_micro_per_wh, self.export_price_micro_per_wh)
            nonce = self._nonces(self.operator)
            settlements = [Settlement(self.operator.public_key, nonce + k, interval, d.trade,
                                      d.seller, d.buyer, d.energy_wh, d.price_micro_per_wh,
                                      d.amount_micro) for k, d in enumerate(deliveries)]
            signed = [sign(s, self.operator, self.store.ledger_id) for s in settlements]
            next_nonce: dict[bytes, int] = {}
            for s in settlements:
                if not s.amount_micro:
                    continue
                payer = self._by_key.get(s.buyer)
                if payer is None:
                    raise SettlementError(f"cannot pay settlement {s.id.hex()}: this session "
                                          "holds no key for its buyer")
                n = next_nonce.get(payer.public_key) or self._nonces(payer)
                next_nonce[payer.public_key] = n + 1
                signed.append(sign(Transfer(payer.public_key, n, interval, s.seller,
                                            s.amount_micro, s.id), payer, self.store.ledger_id))
            self.store.insert(signed)
            self.store.seal(interval, self.operator)  # closes the gate and signs the gates
        self.advance(self.gate_ms(interval + 1))
        return settlements

    def unsettled(self) -> list[int]:
        """Intervals after the last block that hold trades or meter readings, ascending:
        a process stopped before settling them (killed) left them open.  Each must be settled
        before a later block is sealed (:meth:`settle` refuses it): ``verify`` refuses a
        trade or reading left behind a later block."""
        head = self.store.head()
        kinds = (Trade.KIND, MeterReading.KIND)
        return sorted({r.interval for r in self.store.pending_rows()
                       if r.kind in kinds and (head is None or r.interval > head.interval)})

    def settle_unread(self, interval: int,
                      read_ms: Mapping[str, int] | None = None) -> list[Settlement]:
        """Settle ``interval`` although its meters were not all read at its end: a process
        that stopped before (killed: :meth:`unsettled`), or a run that ended before the
        interval it already traded in.

        Its gate closes without clearing (nothing more trades in it).  Each node without a
        reading of it signs one of 0 Wh that ends at the counters its previous reading ended
        at, read at ``read_ms[node]`` (default: where that reading ended, at most the
        interval's start), so its trades settle against what the ledger holds and what the
        meters counted after is in no reading.  Then :meth:`settle`; one transaction.
        """
        with self.store.transaction():
            if self.store.block_for(interval) is not None:
                return self.settlements(interval)
            if not self._closed(interval):
                self.store.close_gate(interval, self.operator)
            have = {r.signer for r in self.meter_readings(interval)}
            for name, identity in self._nodes.items():
                if identity.public_key not in have:
                    at = (read_ms or {}).get(name)
                    self.submit_meter_reading(
                        name, interval, 0, 0,
                        read_ms=self._read_end(identity, interval) if at is None else at)
            return self.settle(interval)

    def _read_end(self, identity: Identity, interval: int) -> int:
        """Session time at which ``identity``'s last reading before ``interval`` ended
        (its ``read_ms``, else its interval's end), at most ``interval``'s start. [ms]"""
        ends = [r.read_ms if r.read_ms is not None else self.gate_ms(r.interval + 1)
                for r in self._find(MeterReading, None, identity.public_key)
                if r.interval < interval]
        return max(0, min(max(ends, default=self.gate_ms(interval)), self.gate_ms(interval)))

    def submit(self, record: SignedRecord) -> Record:
        """Store a record signed elsewhere (after checking its signature and nonce); it must
        be signed for this ledger (``sign(record, key, session.store.ledger_id)``) by an
        account whose role signs its kind (``ledger.store.SIGNED_BY``), as ``verify``
        requires."""
        rec = record.record
        role = self._roles.get(rec.signer)
        if role not in SIGNED_BY[rec.NAME]:
            kinds = rec.NAME.replace("_", " ") + "s"
            who = ("is not an account of this ledger" if role is None else
                   f"is {self.names[rec.signer]!r}, whose role ({role}) does not sign {kinds}")
            raise RecordError(f"{rec.NAME} {record.id.hex()} refused: its signer "
                              f"{fingerprint(rec.signer)} {who}")
        self.store.append([record])
        return rec

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store if the session opened it."""
        if self._owns_store and getattr(self, "store", None) is not None:
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tariff_text(prices: Mapping[str, object]) -> str:
    """``import 300, export 50 micro-units/Wh`` (``?`` for a price not known)."""
    def text(key: str) -> str:
        value = prices.get(key)
        return "?" if value is None else str(value)

    return (f"import {text(TARIFF_KEYS[0])}, export {text(TARIFF_KEYS[1])} "
            "micro-units/Wh")
