"""An order the ledger refuses says whose it was: the ledger names the node and interval, a
run adds the controller and the time (and still settles the interval it ends in)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bench.cli import main
from ledger import MarketSession
from ledger.errors import ExpiredOrderError, RecordError

P2P = Path(__file__).parents[2] / "experiments" / "p2p_trading" / "scenario.toml"

CONTROLLER = '''
class Orders:
    """Good orders for interval 1, then what ``kind`` says."""

    def __init__(self, context, kind="float"):
        self.kind = kind

    def step(self, obs):
        return {}

    def orders(self, obs, interval):
        if interval < 2:
            return [("north", "buy", 10, 100)]
        return {"float": [("north", "buy", 10.5, 100)],
                "both": [("north", "buy", 10, 100), ("north", "sell", 10, 100)],
                "unknown": [("nowhere", "buy", 10, 100)],
                "short": [("north", "buy", 10)],
                "none": None}[self.kind]
'''


@pytest.fixture
def session(tmp_path: Path):
    with MarketSession(str(tmp_path / "l.db"), keys=tmp_path / "keys", nodes=["north", "south"],
                       market="uniform", interval_s=10, import_price_micro_per_wh=300,
                       export_price_micro_per_wh=50) as s:
        yield s


@pytest.mark.parametrize("args, message", [
    (("north", "buy", 10.5, 100), "order of north for interval 2 refused: energy_wh must be an "
                                  "int64, not 10.5"),
    (("north", "buy", 0, 100), "order of north for interval 2 refused: energy_wh must be > 0"),
    (("south", "sell", 5, -1), "order of south for interval 2 refused: price_micro_per_wh must "
                               "be >= 0, not -1"),
    (("north", "hold", 5, 1), "order of north for interval 2 refused: its side must be one of"),
    (("nowhere", "buy", 5, 1), "unknown node 'nowhere'"),
])
def test_the_ledger_names_the_node_and_interval(session: MarketSession, args: tuple,
                                                message: str) -> None:
    with pytest.raises(RecordError) as info:
        session.submit_order(*args, 2)
    assert str(info.value).startswith(message)
    assert session.orders(2) == []


def test_expired_and_second_side_name_the_node(session: MarketSession) -> None:
    session.submit_order("north", "buy", 10, 100, 2)
    with pytest.raises(RecordError, match="^north already has a buy order in interval 2"):
        session.submit_order("north", "sell", 10, 100, 2)
    session.clear(2)
    with pytest.raises(ExpiredOrderError, match="^order of south for interval 2 refused"):
        session.submit_order("south", "sell", 10, 100, 2)


@pytest.mark.parametrize("kind, says", [
    ("float", "order of north for interval 2 refused: energy_wh must be an int64, not 10.5"),
    ("both", "north already has a buy order in interval 2"),
    ("unknown", "unknown node 'nowhere'"),
    ("short", "an order for interval 2 at t = 10.000 s is ('north', 'buy', 10), not "
              "(node, side, energy_wh, price_micro_per_wh)"),
    ("none", "orders() at t = 10.000 s returned None, not a list"),
])
def test_a_run_names_the_controller_node_and_time(kind: str, says: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A twin run of the p2p lab with 10 s intervals: the bad orders come at the edge of
    t = 10 s (for interval 2).  One error line, exit 2, the JSON says the same, and the
    interval the run stopped in is settled on a ledger that verifies."""
    (tmp_path / "ctl_orders.py").write_text(CONTROLLER)
    monkeypatch.syspath_prepend(str(tmp_path))
    out, doc = tmp_path / "r.h5", tmp_path / "r.json"
    status = main(["run", str(P2P), "--mode", "twin", "--quiet", "--out", str(out),
                   "--json", str(doc), "--set", "run.duration_s=31",
                   "--set", "market.interval_s=10",
                   "--set", 'controller.name="ctl_orders:Orders"',
                   "--set", f'controller.options={{kind="{kind}"}}'])
    err = capsys.readouterr().err
    assert status == 2
    line = "gridloop: error: controller ctl_orders:Orders: "
    if kind in ("float", "both", "unknown"):
        line += f"at t = 10.000 s, {says}"
    else:
        line += says
    assert line in err
    assert err.count("gridloop: error:") == 1
    assert says in json.loads(doc.read_text())["stopped"]
    ledger = tmp_path / "r.ledger.db"
    with sqlite3.connect(ledger) as conn:
        blocks = [i for (i,) in conn.execute("SELECT interval_no FROM blocks ORDER BY height")]
    assert blocks == [0, 1]  # interval 1, open when the run stopped, settled too
    capsys.readouterr()
    assert main(["ledger", "verify", str(ledger)]) == 0
