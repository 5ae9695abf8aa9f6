"""The market inside the lockstep loop: orders, clearing and settlement at interval edges.

Interval ``k`` is delivered over ``[k I, (k + 1) I)``.  At the tick where ``t = k I``:

1. the node meters' energy counters over interval ``k - 1`` become signed meter readings
   and interval ``k - 1`` is settled (its block sealed);
2. interval ``k`` is cleared (its gate closes);
3. each node places its order for interval ``k + 1``: from the controller's
   ``orders(obs, interval)`` if it has one, else the default strategy below.

When the run ends (at its duration, or stopped early), the interval it ends in is settled
against the energy metered until its last tick, so no trade is left unsettled.

Everything lands on the ledger (SQLite or PostgreSQL, hash-chained, one block per interval)
and in the recording's ``/market`` tables.  Meter energy is the difference of the floored
cumulative counters at the interval edges, so the Wh of all intervals add up exactly to the
meter's total.

Default strategy: a node expects the next interval to be like the last one it was metered
over (persistence; at the first edge, the power it draws at that moment held for an
interval).  A node that expects to import bids for that energy at a quarter of the way down
from the import price; a node that expects to export asks a quarter of the way up from the
export price.  Both beat the grid, so trades clear when some nodes have surplus while
others are short.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.market_tables import TABLES
from bench.scenario import Scenario


class MarketLink:
    """The run's market session, driven by the engine once per tick."""

    def __init__(self, s: Scenario, plan: Any, ledger: str | None) -> None:
        self.scenario = s
        self.plan = plan
        self.cfg = s.market
        self.ticks_per_interval = int(round(s.market.interval_s / s.run.dt_s))
        if ledger is None:
            ledger = str(Path("runs") / f"{s.run.name}.ledger.db")
        self.ledger = ledger
        self.keys = _keys_dir(ledger)
        kinds = plan.asset_kinds
        self.meters: dict[str, str] = {}
        for (node, asset), kind in kinds.items():
            if kind == "meter" or (kind == "grid" and node not in self.meters):
                self.meters[node] = asset
        self.nodes = [n for n in s.nodes if n in self.meters]
        #: nodes metered from their ``grid`` asset (no meter): its power integrated per tick
        #: into import and export counters as a meter does, ``node -> [import, export]``
        #: [Wh], and the tick they were last advanced at
        self._grid_wh = {n: [0.0, 0.0] for n in self.nodes
                         if kinds[(n, self.meters[n])] == "grid"}
        self._grid_k: int | None = None
        self._h = s.run.dt_s / 3600.0
        self._last_wh: dict[str, tuple[int, int]] = {}
        #: net import of each node over the last metered interval [Wh]
        self._net_wh: dict[str, int] = {}
        self.session: Any = None
        self._obs: Any = None
        #: the interval this run cleared last and has not settled yet
        self._open_interval: int | None = None
        #: ledger interval of this run's interval 0 (a ledger may hold earlier runs)
        self.offset = 0
        self.settled = 0
        self.trades = 0
        self.orders = 0

    def tables(self) -> dict[str, Any]:
        return dict(TABLES)

    def open(self) -> None:
        """Open the ledger (a run does at its first tick): a ledger that refuses this run
        (another interval length, other keys) says so before anything is written."""
        if self.session is not None:
            return
        from ledger import MarketSession

        if "://" not in self.ledger:  # opened before the recording makes its folder
            try:
                Path(self.ledger).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BenchError(f"{self.ledger}: cannot create its folder: "
                                 f"{exc.strerror or exc}") from None
        self.session = MarketSession(
            self.ledger, keys=self.keys, nodes=self.nodes, market=self.cfg.kind,
            interval_s=self.cfg.interval_s,
            import_price_micro_per_wh=self.cfg.import_price_micro_per_wh,
            export_price_micro_per_wh=self.cfg.export_price_micro_per_wh)
        # continue after what the ledger holds: this run's intervals come after the last one
        store = self.session.store
        head, cleared = store.head(), store.last_cleared()
        last = max([i for i in (head.interval if head else None, cleared) if i is not None],
                   default=None)
        self.offset = 0 if last is None else last + 2

    def _integrate(self, k: int, obs: Any) -> None:
        """Advance the counters of the nodes metered from their grid asset to tick ``k``:
        as a meter's (twin.microgrid ``_close``), each tick adds its power, import and export
        apart; ticks skipped by a late run hold the power of the tick that follows them."""
        if not self._grid_wh:
            return
        steps = 0 if self._grid_k is None else k - self._grid_k
        self._grid_k = k
        for node, wh in self._grid_wh.items():
            p = obs.get(f"{node}.{self.meters[node]}.p_w")
            if steps <= 0 or not math.isfinite(p):
                continue
            for _ in range(steps):
                wh[0] += max(p, 0.0) * self._h
                wh[1] += max(-p, 0.0) * self._h

    def _counters(self, obs: Any, node: str) -> tuple[int, int]:
        if node in self._grid_wh:
            imp, exp = self._grid_wh[node]
            return int(math.floor(imp)), int(math.floor(exp))
        asset = self.meters[node]
        imp = obs.get(f"{node}.{asset}.e_import_wh")
        exp = obs.get(f"{node}.{asset}.e_export_wh")
        if not (math.isfinite(imp) and math.isfinite(exp)):
            # the meter did not answer at the edge: keep the last counters (the energy of
            # this interval is then booked to the next one, nothing is lost)
            return self._last_wh.get(node, (0, 0))
        return int(math.floor(imp)), int(math.floor(exp))

    def tick(self, k: int, t: float, obs: Any, controller: Any) -> None:
        self._obs = obs
        self._integrate(k, obs)
        if k % self.ticks_per_interval:
            return
        if self.session is None:
            self.open()
        rec = self.plan._rec
        b = k // self.ticks_per_interval + self.offset
        name = self.session.names
        if b > self.offset:
            self._settle(b - 1, t, obs)
        else:
            for node in self.nodes:
                self._last_wh[node] = self._counters(obs, node)
        self._open_interval = b
        trades = self.session.clear(b)
        self.trades += len(trades)
        rec.table_rows("market/trades", [
            (t, tr.interval, name[tr.buyer].encode(), name[tr.seller].encode(), tr.energy_wh,
             tr.price_micro_per_wh, tr.id.hex().encode()) for tr in trades])
        orders = self._orders(obs, controller, b + 1)
        rows = []
        for node, side, energy, price in orders:
            o = self.session.submit_order(node, side, energy, price, b + 1)
            rows.append((t, b + 1, node.encode(), side.encode(), o.energy_wh,
                         o.price_micro_per_wh, o.id.hex().encode()))
        self.orders += len(rows)
        rec.table_rows("market/orders", rows)

    def _orders(self, obs: Any, controller: Any,
                interval: int) -> list[tuple[str, str, int, int]]:
        custom = getattr(controller, "orders", None)
        if custom is not None:
            return [tuple(o) for o in custom(obs, interval)]  # type: ignore[misc]
        imp, exp = self.cfg.import_price_micro_per_wh, self.cfg.export_price_micro_per_wh
        spread = max(imp - exp, 0)
        out = []
        for node in self.nodes:
            if node in self._net_wh:
                net = float(self._net_wh[node])
            else:
                net = obs.get(f"{node}.{self.meters[node]}.p_w") * self.cfg.interval_s / 3600.0
            if not math.isfinite(net):
                continue
            energy = int(abs(net))
            if energy <= 0:
                continue
            if net > 0:
                out.append((node, "buy", energy, imp - spread // 4))
            else:
                out.append((node, "sell", energy, exp + spread // 4))
        return out

    def _settle(self, interval: int, t: float, obs: Any) -> None:
        """Meter readings of ``interval`` from the counters in ``obs``, then its settlement."""
        rec, name = self.plan._rec, self.session.names
        rows = []
        for node in self.nodes:
            now = self._counters(obs, node)
            last = self._last_wh.get(node, (0, 0))
            r = self.session.submit_meter_reading(node, interval, max(0, now[0] - last[0]),
                                                  max(0, now[1] - last[1]))
            self._last_wh[node] = now
            self._net_wh[node] = r.import_wh - r.export_wh
            rows.append((t, interval, node.encode(), r.import_wh, r.export_wh,
                         r.id.hex().encode()))
        rec.table_rows("market/meter_readings", rows)
        settlements = self.session.settle(interval)
        rec.table_rows("market/settlements", [
            (t, s.interval, name.get(s.seller, "?").encode(), name.get(s.buyer, "?").encode(),
             s.energy_wh, s.price_micro_per_wh, s.amount_micro, s.trade.hex().encode(),
             s.id.hex().encode()) for s in settlements])
        self.settled += 1

    def finish(self, rec: Any, t_end: float, stopped_by: BaseException | None = None) -> None:
        """Settle the interval the run ends in (its trades against the energy metered until
        the last tick), so no trade is left open on the ledger; then close the session.

        A run stopped early (``stopped_by``) settles too, unless the ledger stopped it; a
        failure to settle then does not hide why the run stopped.
        """
        from ledger.errors import LedgerError

        if self.session is None:
            return
        try:
            if self._open_interval is not None and not isinstance(stopped_by, LedgerError):
                self._settle(self._open_interval, t_end, self._obs)
        except Exception:
            if stopped_by is None:
                raise
        finally:
            self.close()

    def close(self) -> None:
        """Close the ledger session (again: a no-op)."""
        if self.session is not None:
            self.session.close()

    def describe(self) -> str:
        return (f"{self.settled} interval(s) settled, {self.trades} trade(s), "
                f"{self.orders} order(s); check it with: gridloop ledger verify {self.ledger}")


def _keys_dir(ledger: str) -> Path:
    """Node identities live beside a SQLite ledger (``RUN.ledger.keys``), else in runs/."""
    if "://" in ledger:
        return Path("runs") / "ledger.keys"
    p = Path(ledger)
    return p.with_name(p.name.removesuffix(".db") + ".keys")
