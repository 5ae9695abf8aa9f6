"""The market inside the lockstep loop: orders, clearing and settlement at interval edges.

Interval ``k`` is delivered over ``[k I, (k + 1) I)``.  At the tick where ``t = k I``:

1. the node meters' energy counters over interval ``k - 1`` become signed meter readings
   and interval ``k - 1`` is settled (its block sealed);
2. interval ``k`` is cleared (its gate closes);
3. each node places its order for interval ``k + 1``: from the controller's
   ``orders(obs, interval)`` if it has one, else the default strategy below; no orders for
   an interval that starts at or after the run's end (the run never delivers it).

When the run ends (at its duration, or stopped early), the interval it ends in is settled
against the energy metered until its last tick, so no trade is left unsettled.  A run
stopped early in a continuous market may have traded in the next interval already: that
one is settled too, at 0 Wh (readings that end at the run's last counters), as is an
interval a late run skipped whole.  A ledger an earlier run left with an interval unsettled
(killed between a gate and its settlement) has it settled when this run opens the ledger,
against the readings it holds (:meth:`ledger.MarketSession.settle_unread`), said in one line
on stderr and an event ``ledger_recovered``: a later block never leaves it open.

Keys: ``[market] keys`` (or ``gridloop run --ledger-keys DIR``) names a key directory made
with ``gridloop ledger keygen``, used as it is (a missing key is an error); without it, the
keys live beside the ledger (``RUN.ledger.keys``, ``runs/ledger.keys`` for a PostgreSQL
URL) and missing ones are made, said in one line on stderr by ``gridloop run`` (a sweep's
points, each with a ledger of its own, make theirs without a word).

Everything lands on the ledger (SQLite or PostgreSQL, hash-chained, one block per interval)
and in the recording's ``/market`` tables.  Meter energy is the difference of the floored
cumulative counters at the interval edges, so the Wh of all intervals add up exactly to the
meter's total.

A meter without a valid reading at an edge (a timeout, an error: its counters are NaN there)
is not read as 0 Wh: the node's reading ends at the meter's last valid counters before the
edge, signed with their session time (``read_ms``), and what the meter counts after them
lands in the node's next reading, whose counters start there; at the end of the run the
last interval is settled with the last valid counters.  Each such reading is an event
``meter_gap`` in the recording and the market's line in the run summary names them.  A
node's readings start at its meter's first valid counters in the run.

Default strategy: a node expects the next interval to be like the last one it was metered
over (persistence; at the first edge, the power it draws at that moment held for an
interval).  A node that expects to import bids for that energy at a quarter of the way down
from the import price; a node that expects to export asks a quarter of the way up from the
export price.  Both beat the grid, so trades clear when some nodes have surplus while
others are short.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError, ControllerError
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
        #: a key directory the scenario names is used as it is: no key is made there
        self.fixed_keys = bool(s.market.keys)
        self.keys = s.resolve(s.market.keys) if self.fixed_keys else _keys_dir(ledger)
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
        #: signal keys of each metered node's counters (import, export)
        self._keys = {n: (f"{n}.{self.meters[n]}.e_import_wh",
                          f"{n}.{self.meters[n]}.e_export_wh")
                      for n in self.nodes if n not in self._grid_wh}
        #: the floored counters each node's last reading ended at (its first valid counters
        #: before it has one); a node is absent until its meter gave valid counters
        self._last_wh: dict[str, tuple[int, int]] = {}
        #: the last valid floored counters of each node and the run time they were read at
        self._valid: dict[str, tuple[tuple[int, int], float]] = {}
        #: run time of the last tick the market saw
        self._t: float | None = None
        #: readings that ended before their edge: node -> [(ledger interval, read at [s]
        #: or None when the meter never gave valid counters), ...]
        self.gaps: dict[str, list[tuple[int, float | None]]] = {}
        #: the run's last reading of a node ended before its last tick: node -> read at [s]
        self.unsettled_after: dict[str, float | None] = {}
        #: net import of each node over the last metered interval [Wh]
        self._net_wh: dict[str, int] = {}
        self.session: Any = None
        #: the interval this run cleared last and has not settled yet
        self._open_interval: int | None = None
        #: ledger interval of this run's interval 0 (a ledger may hold earlier runs)
        self.offset = 0
        self.settled = 0
        self.trades = 0
        self.orders = 0
        #: lines said when the ledger opened, recorded as events at the first tick
        self._notes: list[str] = []
        #: what ties the recording to the ledger, read when the run ends: the ledger's id
        #: (hex), its operator's public key (base64) and its last block's hash (hex)
        self.identity: dict[str, str] = {}

    def tables(self) -> dict[str, Any]:
        return dict(TABLES)

    def open(self, say_keys: bool = True) -> None:
        """Open the ledger (``gridloop run`` does before it starts, else the first tick): a
        ledger that refuses this run (another interval length, other keys) says so before
        anything is written.  ``say_keys``: keys made for it are said on stderr (a sweep's
        points, opened at their first tick, each make theirs and say nothing)."""
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
            export_price_micro_per_wh=self.cfg.export_price_micro_per_wh,
            create_keys=not self.fixed_keys)
        made = self.session.created_keys
        if made and say_keys:
            print(f"gridloop: new ledger keys for {', '.join(made)} in {self.keys} (to trade "
                  "under keys of your own: [market] keys or --ledger-keys)", file=sys.stderr)
        self._settle_left_open()
        # continue after what the ledger holds: this run's intervals come after the last one
        store = self.session.store
        head, cleared = store.head(), store.last_cleared()
        last = max([i for i in (head.interval if head else None, cleared) if i is not None],
                   default=None)
        self.offset = 0 if last is None else last + 2

    def _settle_left_open(self) -> None:
        """Settle the intervals an earlier run left unsettled (killed between a gate and its
        settlement), against the meter readings the ledger holds: sealing this run's blocks
        after them would leave their trades unsettled for good."""
        from ledger.errors import LedgerError, SettlementError

        left = self.session.unsettled()
        for interval in left:
            try:
                self.session.settle_unread(interval)
            except LedgerError as exc:
                raise SettlementError(f"{self.ledger}: interval {interval}, left unsettled by "
                                      f"an earlier run, cannot be settled: {exc}") from None
        if left:
            note = (f"interval(s) {', '.join(map(str, left))} of {self.ledger}, left "
                    "unsettled by an earlier run that stopped before settling them, settled "
                    "now against the meter readings the ledger holds (0 Wh where a node has "
                    "none)")
            print(f"gridloop: {note}", file=sys.stderr)
            self._notes.append(note)

    def _reaches(self, interval: int) -> bool:
        """Whether the run, if it runs to its end, ticks in ledger ``interval``."""
        first = (interval - self.offset) * self.ticks_per_interval
        return first < self.scenario.run.n_ticks

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

    def _track(self, t: float, obs: Any) -> None:
        """Keep each node's last valid counters (floored) and when they were read: a meter
        that does not answer (NaN counters) keeps the ones before."""
        self._t = t
        for node, wh in self._grid_wh.items():
            self._valid[node] = ((int(math.floor(wh[0])), int(math.floor(wh[1]))), t)
        for node, (k_imp, k_exp) in self._keys.items():
            imp, exp = obs.get(k_imp), obs.get(k_exp)
            if math.isfinite(imp) and math.isfinite(exp):
                self._valid[node] = ((int(math.floor(imp)), int(math.floor(exp))), t)
        if len(self._last_wh) < len(self._valid):
            for node, (now, _) in self._valid.items():
                # a node's readings start at its meter's first valid counters
                self._last_wh.setdefault(node, now)

    def tick(self, k: int, t: float, obs: Any, controller: Any) -> None:
        """The market's part of tick ``k``: meters, and at an interval's edge the settlement
        of the interval that ends, the clearing of the one that starts and the orders for
        the next.  An edge is taken at the first tick at or after it: a real-time run that
        skipped late ticks (``catch_up = "skip"``) may have skipped the edge's own."""
        self._integrate(k, obs)
        self._track(t, obs)
        b = k // self.ticks_per_interval + self.offset
        if b == self._open_interval:
            return
        from ledger.errors import RecordError

        if self.session is None:
            self.open(say_keys=False)
        rec = self.plan._rec
        for note in self._notes:
            rec.event(t, "ledger_recovered", note)
        self._notes = []
        if self._open_interval is not None:
            self._settle(self._open_interval, t)
            for skipped in range(self._open_interval + 1, b):  # a late run skipped it whole
                self._settle_unreached(skipped, t)
        self._open_interval = b
        self._record_trades(t, self.session.clear(b))
        if not self._reaches(b + 1):
            return  # the run ends first: no orders, no trades, for an interval never delivered
        who = (f"controller {self.scenario.controller.name}"
               if getattr(controller, "orders", None) is not None
               else "the default order strategy")
        orders = self._orders(obs, controller, b + 1, who, t)
        rows = []
        for order in orders:
            try:
                node, side, energy, price = order
            except (TypeError, ValueError):
                raise ControllerError(
                    f"{who}: an order for interval {b + 1} at t = {t:.3f} s is {order!r}, not "
                    "(node, side, energy_wh, price_micro_per_wh)") from None
            try:
                o = self.session.submit_order(node, side, energy, price, b + 1)
            except RecordError as exc:  # the order itself is wrong: the controller's fault
                raise ControllerError(f"{who}: at t = {t:.3f} s, {exc}") from exc
            rows.append((t, b + 1, str(node).encode(), side.encode(), o.energy_wh,
                         o.price_micro_per_wh, o.id.hex().encode()))
        self.orders += len(rows)
        rec.table_rows("market/orders", rows)

    def _record_trades(self, t: float, trades: list[Any]) -> None:
        """Trades as ``/market/trades`` rows at run time ``t``, counted for the summary."""
        name = self.session.names
        self.trades += len(trades)
        self.plan._rec.table_rows("market/trades", [
            (t, tr.interval, name[tr.buyer].encode(), name[tr.seller].encode(), tr.energy_wh,
             tr.price_micro_per_wh, tr.id.hex().encode()) for tr in trades])

    def _orders(self, obs: Any, controller: Any, interval: int, who: str = "",
                t: float = math.nan) -> list[tuple[str, str, int, int]]:
        custom = getattr(controller, "orders", None)
        if custom is not None:
            placed = custom(obs, interval)
            try:
                return [tuple(o) for o in placed]  # type: ignore[misc]
            except TypeError:
                raise ControllerError(
                    f"{who}: orders() at t = {t:.3f} s returned {placed!r}, not a list of "
                    "(node, side, energy_wh, price_micro_per_wh)") from None
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

    def _read_ms(self, t: float) -> int:
        """Session time [ms] of run time ``t`` [s] (the ledger may hold earlier runs)."""
        return self.offset * self.session.interval_ms + int(round(t * 1000.0))

    def _settle(self, interval: int, t: float, last: bool = False) -> None:
        """Meter readings of ``interval``, each from its node's last valid counters (those
        of the tick the market saw last, unless the meter missed it), then its settlement.

        ``t`` is the time of the row (the edge, or the run's end when ``last``)."""
        rec = self.plan._rec
        rows = []
        for node in self.nodes:
            valid = self._valid.get(node)
            base = self._last_wh.get(node, (0, 0))
            now, read_t = valid if valid is not None else (base, None)
            missed = read_t is None or read_t != self._t
            # counters of a missed edge are those of an earlier tick: signed with their time
            # (none yet: the run's start, the reading empty), the rest goes to the next one
            read_ms = None if not missed else self._read_ms(0.0 if read_t is None else read_t)
            r = self.session.submit_meter_reading(node, interval, max(0, now[0] - base[0]),
                                                  max(0, now[1] - base[1]), read_ms=read_ms)
            if valid is not None:
                self._last_wh[node] = now
            if missed:
                self.gaps.setdefault(node, []).append((interval, read_t))
                if last:
                    self.unsettled_after[node] = read_t
                rec.event(t, "meter_gap", self._gap_message(node, interval, read_t, last, r))
            else:  # a short reading says little of the next interval: keep the last one's
                self._net_wh[node] = r.import_wh - r.export_wh
            rows.append((t, interval, node.encode(), r.import_wh, r.export_wh,
                         r.id.hex().encode(), math.nan if read_t is None else read_t))
        rec.table_rows("market/meter_readings", rows)
        self._record_settlements(t, self.session.settle(interval))

    def _record_settlements(self, t: float, settlements: list[Any]) -> None:
        """An interval's settlements as ``/market/settlements`` rows, counted as settled."""
        name = self.session.names
        self.plan._rec.table_rows("market/settlements", [
            (t, s.interval, name.get(s.seller, "?").encode(), name.get(s.buyer, "?").encode(),
             s.energy_wh, s.price_micro_per_wh, s.amount_micro, s.trade.hex().encode(),
             s.id.hex().encode())
            for s in _stable_order(settlements, name, self.session.grid.public_key)])
        self.settled += 1

    def _settle_unreached(self, interval: int, t: float,
                          read_ms: dict[str, int] | None = None) -> None:
        """Settle an interval that holds trades although the run delivers nothing in it (a
        continuous market traded in it before the run stopped, or a late run skipped it):
        its meter readings are 0 Wh, ending at counters read before it (``read_ms`` per
        node; default where each node's previous reading ended), so its trades settle at
        0 Wh and nothing is left open.  An interval without trades is left as it is."""
        trades = self.session.trades(interval)
        if not trades:
            return
        self._record_trades(t, trades)
        settlements = self.session.settle_unread(interval, read_ms)
        start_ms = self.offset * self.session.interval_ms
        self.plan._rec.table_rows("market/meter_readings", [
            (t, interval, self.session.names[r.signer].encode(), r.import_wh, r.export_wh,
             r.id.hex().encode(),
             math.nan if r.read_ms is None else (r.read_ms - start_ms) / 1000.0)
            for r in self.session.meter_readings(interval)])
        self._record_settlements(t, settlements)

    def _last_read_ms(self) -> dict[str, int]:
        """Session time of each node's last valid counters in the run (the run's start for
        a node without any). [ms]"""
        return {node: self._read_ms(self._valid[node][1] if node in self._valid else 0.0)
                for node in self.nodes}

    def _gap_message(self, node: str, interval: int, read_t: float | None, last: bool,
                     r: Any) -> str:
        where = f"{node}.{self.meters[node]}"
        edge = "the run's last tick" if last else "the interval's end"
        if read_t is None:
            return (f"{where}: no valid counters yet, so its reading of interval {interval} "
                    "is 0 Wh (read_ms is the run's start); its readings start at its first "
                    "valid counters")
        then = (f"its last valid counters, read at t = {read_t:.3f} s "
                f"(read_ms {r.read_ms}): {r.import_wh} Wh in, {r.export_wh} Wh out")
        rest = ("what it counted after them is in no reading" if last else
                "what it counted after them goes into its next reading")
        return (f"{where}: no valid reading at {edge}; its reading of interval {interval} "
                f"ends at {then}; {rest}")

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
                self._settle(self._open_interval, t_end, last=True)
                self._settle_unreached(self._open_interval + 1, t_end, self._last_read_ms())
        except Exception:
            if stopped_by is None:
                raise
        finally:
            try:
                self._keep_identity(rec)
            finally:
                self.close()

    def _keep_identity(self, rec: Any) -> None:
        """Read the ledger's id, operator key and head, for the summary and as attributes
        of ``/market`` (``ledger_id``, ``ledger_operator``, ``ledger_head``): with them,
        ``gridloop ledger verify LEDGER --head HASH`` shows later that the ledger was not
        cut or replaced.  A ledger that cannot be read then leaves them out."""
        from ledger.errors import LedgerError
        from ledger.keys import fingerprint

        store = self.session.store
        try:
            head = store.head()
            self.identity = {"ledger_id": store.ledger_id.hex(),
                             "ledger_operator": fingerprint(self.session.operator.public_key),
                             "ledger_head": head.hash.hex() if head is not None else ""}
        except LedgerError:
            return
        rec.set_attrs("market", self.identity)

    def close(self) -> None:
        """Close the ledger session (again: a no-op)."""
        if self.session is not None:
            self.session.close()

    def describe(self) -> str:
        """The market's line of the run summary, and a line per node whose meter missed an
        interval's end (its readings there end at its last valid counters)."""
        lines = [f"{self.settled} interval(s) settled, {self.trades} trade(s), "
                 f"{self.orders} order(s); {self._identity_text()}"]
        for node, gaps in self.gaps.items():
            intervals = ", ".join(str(i) for i, _ in gaps)
            line = (f"  {node}: no valid meter reading at the end of interval(s) {intervals}: "
                    "those readings end at the meter's last valid counters before it "
                    "(read_ms on the ledger), the rest is in the next reading")
            if node in self.unsettled_after:
                after = self.unsettled_after[node]
                line += ("; its meter gave no valid counters in the run, nothing is settled"
                         if after is None else
                         f"; the run's last reading ends at t = {after:.3f} s, what the meter "
                         "counted after that is in no reading")
            lines.append(line)
        return "\n".join(lines)

    def _identity_text(self) -> str:
        """``ledger id I, operator K; check it with: gridloop ledger verify L --head H``
        (H: the head block's hash; the command alone when the ledger could not be read at
        the end, no ``--head`` before a first block)."""
        ident = self.identity
        check = f"check it with: gridloop ledger verify {self.ledger}"
        if not ident:
            return check
        head = ident["ledger_head"]
        return (f"ledger id {ident['ledger_id'] or 'none'}, operator "
                f"{ident['ledger_operator']}; {check}{f' --head {head}' if head else ''}")


def _stable_order(settlements: list[Any], name: dict[bytes, str], grid: bytes) -> list[Any]:
    """An interval's settlements as the recording lists them: its trades' in chain order,
    then the grid exchanges by node name (the ledger lists those by public key, which differs
    from one set of keys to another), import before export."""
    def key(k_s: tuple[int, Any]) -> tuple:
        k, s = k_s
        if s.trade:
            return (0, "", 0, k)
        grid_sells = s.seller == grid
        node = name.get(s.buyer if grid_sells else s.seller, "?")
        return (1, node, 0 if grid_sells else 1, k)

    return [s for _, s in sorted(enumerate(settlements), key=key)]


def _keys_dir(ledger: str) -> Path:
    """Node identities live beside a SQLite ledger (``RUN.ledger.keys``), else in runs/."""
    if "://" in ledger:
        return Path("runs") / "ledger.keys"
    p = Path(ledger)
    return p.with_name(p.name.removesuffix(".db") + ".keys")
