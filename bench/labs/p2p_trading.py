"""Grader of the peer-to-peer trading lab.

Two recordings of the same afternoon: with the market (the main one, its ledger beside it
as ``RUN.ledger.db``) and without (``no_trading``).  A node's bill without trading is its
metered grid energy at grid prices; with trading it is what its settlements make it pay
minus what they pay it (the recording's ``/market/settlements``).  The ledger is verified
(hash chain, signatures, Merkle roots) and its balances compared with the recording.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.labs import LabError
from bench.labs.grading import Grade, Question, Recordings, grade_answers, relative_error
from bench.scenario import Scenario

QUESTIONS = {
    "saving_total": Question("what the three nodes together save with trading over the "
                             "afternoon", "currency units"),
    "traded_kwh": Question("energy delivered between nodes by trades", "kWh"),
}
MICRO = 1e-6


@dataclass(frozen=True)
class Bills:
    """Per node: bills with and without trading [currency units], metered energy [Wh]."""

    with_trading: dict[str, float]
    without: dict[str, float]
    metered: dict[str, tuple[int, int]]
    metered_no_trading: dict[str, tuple[int, int]]
    traded_wh: int
    trades: int

    @property
    def saving(self) -> dict[str, float]:
        return {n: self.without[n] - self.with_trading[n] for n in self.without}


def _meters(s: Scenario) -> dict[str, str]:
    return {node: name for node, name, cfg in s.assets() if cfg.kind == "meter"}


def _names(rows: np.ndarray, field: str) -> np.ndarray:
    return np.array([x.decode() for x in rows[field]]) if len(rows) else np.zeros(0, str)


def bills(recs: Recordings) -> Bills:
    """Both runs' bills and energies."""
    s = recs.scenario()
    meters = _meters(s)
    imp, exp = s.market.import_price_micro_per_wh, s.market.export_price_micro_per_wh
    with recs.open() as run:
        st = run.table("market/settlements")
        readings = run.table("market/meter_readings")
    if not len(readings):
        raise LabError(f"{recs.path}: the run settled no market interval (was the market "
                       f"off?)")
    sellers, buyers = _names(st, "seller"), _names(st, "buyer")
    who = _names(readings, "node")
    with_trading, metered = {}, {}
    for node in meters:
        paid = int(st["amount_micro"][buyers == node].sum())
        got = int(st["amount_micro"][sellers == node].sum())
        with_trading[node] = (paid - got) * MICRO
        metered[node] = (int(readings["import_wh"][who == node].sum()),
                         int(readings["export_wh"][who == node].sum()))
    p2p = (st["trade"] != b"") if len(st) else np.zeros(0, bool)
    without, metered0 = {}, {}
    with recs.open("no_trading") as run:
        for node, meter in meters.items():
            e_imp = run.signal(node, meter, "e_import_wh")
            e_exp = run.signal(node, meter, "e_export_wh")
            wh = (int(math.floor(e_imp[-1])), int(math.floor(e_exp[-1])))
            metered0[node] = wh
            without[node] = (wh[0] * imp - wh[1] * exp) * MICRO
    with recs.open() as run:
        trades = len(run.table("market/trades"))
    return Bills(with_trading, without, metered, metered0,
                 int(st["energy_wh"][p2p].sum()) if len(st) else 0, trades)


def ledger_check(recs: Recordings, b: Bills) -> tuple[str, dict[str, float] | None]:
    """Verify the ledger beside the recording; its money balance of every account."""
    from bench.runner import default_ledger_path
    from ledger import open_store, verify_chain
    from ledger.errors import LedgerError
    from ledger.session import balances

    path = default_ledger_path(recs.path)
    if not path.is_file():
        raise LabError(f"{path}: the run's ledger is missing (it is written beside the "
                       f"recording by gridloop lab run)")
    store = open_store(path, create=False)
    try:
        try:
            report = verify_chain(store)
        except LedgerError as exc:
            return f"FAILED: {exc}", None
        money = {name: bal.money_micro * MICRO for name, bal in balances(store).items()}
    finally:
        store.close()
    return f"ok: {report.blocks} blocks, {report.records} records", money


def grade(recs: Recordings, answers: dict | None) -> Grade:
    g = recs.new_grade()
    b = bills(recs)
    for node in b.without:
        g.find(f"bill of {node}", f"without trading {b.without[node]:8.2f} | with trading "
               f"{b.with_trading[node]:8.2f} | saving {b.saving[node]:+.2f} (currency units)")
    total = sum(b.saving.values())
    g.find("traded between nodes", f"{b.traded_wh / 1e3:.2f} kWh in {b.trades} trade(s)")
    verified, money = ledger_check(recs, b)
    g.find("ledger", verified)

    g.check("the ledger verifies (chain, signatures, Merkle roots)", verified.split(":")[0],
            "ok", money is not None, 2)
    agree = money is not None and all(abs(money.get(n, math.nan) + b.with_trading[n]) < 1e-6
                                      for n in b.with_trading)
    g.check("ledger balances = the recording's settlements", "agree" if agree else "differ",
            "agree", agree)
    zero = money is not None and abs(sum(money.values())) < 1e-6
    g.check("money sums to zero over nodes and grid",
            f"{sum(money.values()):.6f}" if money is not None else "-", "0", zero)
    same = all(max(abs(b.metered[n][0] - b.metered_no_trading[n][0]),
                   abs(b.metered[n][1] - b.metered_no_trading[n][1])) <= 1 for n in b.metered)
    g.check("trading is financial: metered energy the same in both runs",
            "same" if same else "differs", "within 1 Wh per node", same)
    g.check("the nodes together pay less with trading", f"{total:+.2f} saved", "> 0",
            total > 0 and b.trades > 0)
    worse = [n for n, v in b.saving.items() if v < -1e-9]
    g.check("no node pays more with trading", ", ".join(worse) or "none", "none", not worse)

    measured = {"saving_total": total, "traded_kwh": b.traded_wh / 1e3}
    grade_answers(g, QUESTIONS, answers, {
        key: (f"{want:.4g} +- 2 %",
              lambda value, want=want: relative_error(value, want) <= 0.02)
        for key, want in measured.items()})
    return g


def figures(recs: Recordings, out: Path) -> list[Path]:
    """Bills per node with and without trading, and energy per interval by counterparty."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    b = bills(recs)
    with recs.open() as run:
        st = run.table("market/settlements")
    fig = Figure(figsize=(10.0, 7.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(2, 1, 1)
    nodes = list(b.without)
    x = np.arange(len(nodes))
    ax.bar(x - 0.2, [b.without[n] for n in nodes], 0.4, label="without trading")
    ax.bar(x + 0.2, [b.with_trading[n] for n in nodes], 0.4, label="with trading")
    ax.set_xticks(x, nodes)
    ax.set_ylabel("bill [currency units]")
    ax.axhline(0, color="k", lw=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Bills over the afternoon (negative: the node is paid)")
    ax = fig.add_subplot(2, 1, 2)
    if len(st):
        k = st["interval"]
        intervals = np.unique(k)
        p2p = st["trade"] != b""
        grid_in = st["seller"] == b"grid"
        grid_out = st["buyer"] == b"grid"
        for mask, label, sign in ((p2p, "between nodes", 1), (grid_in, "from the grid", 1),
                                  (grid_out, "to the grid", -1)):
            ax.plot(intervals, [sign * st["energy_wh"][mask & (k == i)].sum() / 1e3
                                for i in intervals], marker="o", label=label)
    ax.set_xlabel("market interval")
    ax.set_ylabel("energy settled [kWh]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{recs.lab.name}_bills.png"
    fig.savefig(path, format="png")
    return [path]
