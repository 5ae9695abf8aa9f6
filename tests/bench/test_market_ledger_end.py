"""How a run leaves its ledger: no trade unsettled when it ends or stops (the recording and
the summary agree with the ledger), an interval a killed run left open settled by the next
run, the ledger's id, operator and head in the summary and in ``/market``, the grid tariff
kept, and the keys a run trades under (``--ledger-keys``, ``[market] keys``, or made beside
the ledger and said)."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from bench.cli import main
from ledger.keys import read_public_key
from ledger.records import MeterReading, Settlement, Trade
from ledger.store import open_store

REPO = Path(__file__).resolve().parents[2]
TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"
# the two-node scenario in the twin: 2 s intervals of 40 ticks, 6 s unless --duration
RUN = ["--mode", "twin", "--quiet"]

#: a controller that sets nothing and, at ``AT`` s, fails (the run stops) or kills its own
#: process with SIGKILL (a power cut): both after interval 1's gate at 2 s, before it settles
CONTROLLERS = """\
import os
import signal

AT = 2.5


class Fail:
    def __init__(self, context, **options):
        pass

    def step(self, obs):
        if obs.t >= AT:
            raise RuntimeError("stopped here")
        return {}


class Kill:
    def __init__(self, context, **options):
        pass

    def step(self, obs):
        if obs.t >= AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return {}
"""


def run(out: Path, ledger: Path, *extra: str) -> int:
    return main(["run", str(TWO_NODES), *RUN, "--out", str(out), "--ledger", str(ledger),
                 *extra])


def verify(ledger: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """``gridloop ledger verify``'s ok line (the check passes)."""
    capsys.readouterr()
    status = main(["ledger", "verify", str(ledger), *extra])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out.strip()


def ledger_records(ledger: Path) -> dict[str, list]:
    """The ledger's trades, settlements and meter readings, and its blocks' intervals."""
    with open_store(str(ledger), create=False) as store:
        found = {cls.NAME: [s.record for s in store.find(kind=cls.NAME)]
                 for cls in (Trade, Settlement, MeterReading)}
        found["blocks"] = [b.interval for b in store.last_blocks(10**6)]
        found["orders"] = [s.record.interval for s in store.find(kind="order")]
    return found


def recorded(out: Path, table: str) -> list:
    with h5py.File(out) as f:
        return list(f[f"market/{table}"][:])


def assert_every_trade_settled_and_recorded(ledger: Path, out: Path) -> None:
    """Every trade on the ledger has its settlement, and the recording lists exactly the
    ledger's trades and settlements."""
    recs = ledger_records(ledger)
    trade_ids = {t.id for t in recs["trade"]}
    assert {s.trade for s in recs["settlement"] if s.trade} == trade_ids
    assert {bytes.fromhex(r["id"].decode()) for r in recorded(out, "trades")} == trade_ids
    assert {bytes.fromhex(r["id"].decode()) for r in recorded(out, "settlements")} == \
        {s.id for s in recs["settlement"]}


@pytest.fixture
def controllers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "endctl.py").write_text(CONTROLLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


# -- finding 6: a continuous market's last interval ---------------------------------------


def test_a_continuous_run_leaves_no_trade_for_an_interval_it_never_reaches(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger, out = tmp_path / "c.ledger.db", tmp_path / "c.h5"
    assert run(out, ledger, "--set", "market.kind=continuous") == 0
    said = capsys.readouterr().out
    recs = ledger_records(ledger)
    assert recs["blocks"] == [0, 1, 2]
    assert recs["trade"], "the scenario must trade for this test to mean anything"
    assert max(recs["orders"]) == 2  # none for interval 3, which starts at the run's end
    assert_every_trade_settled_and_recorded(ledger, out)
    assert f"3 interval(s) settled, {len(recs['trade'])} trade(s), " \
           f"{len(recs['orders'])} order(s)" in said
    assert run(tmp_path / "d.h5", ledger, "--set", "market.kind=continuous",
               "--duration", "4") == 0
    assert ": ok: 5 blocks, " in verify(ledger, capsys)


def test_a_continuous_run_stopped_early_settles_what_it_traded_ahead(
        controllers: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Stopped at 2.5 s: interval 1 settles against the meters until then, and interval 2,
    traded at 2 s, settles at 0 Wh with readings that end at the last tick."""
    ledger, out = controllers / "s.ledger.db", controllers / "s.h5"
    assert run(out, ledger, "--set", "market.kind=continuous",
               "--set", 'controller.name="endctl:Fail"') != 0
    assert "stopped here" in capsys.readouterr().err
    recs = ledger_records(ledger)
    assert recs["blocks"] == [0, 1, 2]
    ahead = [t for t in recs["trade"] if t.interval == 2]
    assert ahead, "the scenario must trade ahead for this test to mean anything"
    assert all(s.energy_wh == 0 for s in recs["settlement"] if s.interval == 2)
    assert_every_trade_settled_and_recorded(ledger, out)
    readings = [r for r in recorded(out, "meter_readings") if r["interval"] == 2]
    assert sorted(r["node"] for r in readings) == [b"north", b"south"]
    assert all(r["import_wh"] == r["export_wh"] == 0 and 2.4 <= r["read_t"] < 2.5
               for r in readings)  # the counters of the last tick, before interval 2
    assert {r.read_ms for r in recs["meter_reading"] if r.interval == 2} == \
        {round(readings[0]["read_t"] * 1000)}
    verify(ledger, capsys)
    assert run(controllers / "t.h5", ledger, "--set", "market.kind=continuous",
               "--duration", "4") == 0
    assert ": ok: 5 blocks, " in verify(ledger, capsys)


# -- finding 7: a run killed between a gate and its settlement -----------------------------


def test_a_run_appended_after_a_killed_one_settles_what_it_left_open(
        controllers: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = controllers / "k.ledger.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(controllers)])}
    killed = subprocess.run(
        [sys.executable, "-m", "bench", "run", str(TWO_NODES), *RUN, "--out",
         str(controllers / "k.h5"), "--ledger", str(ledger), "--set",
         'controller.name="endctl:Kill"'], env=env, capture_output=True, text=True,
        timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    recs = ledger_records(ledger)
    assert recs["blocks"] == [0]
    assert [t for t in recs["trade"] if t.interval == 1], "interval 1 must have traded"
    assert ", 0 blocks, " not in verify(ledger, capsys)  # pending, not yet wrong

    out = controllers / "a.h5"
    assert run(out, ledger, "--duration", "4") == 0
    err = capsys.readouterr().err
    note = (f"interval(s) 1 of {ledger}, left unsettled by an earlier run that stopped before "
            "settling them, settled now against the meter readings the ledger holds (0 Wh "
            "where a node has none)")
    assert f"gridloop: {note}\n" in err
    recs = ledger_records(ledger)
    assert recs["blocks"] == [0, 1, 3, 4]  # the appended run starts two intervals on
    assert {(r.interval, r.import_wh, r.export_wh, r.read_ms) for r in recs["meter_reading"]
            if r.interval == 1} == {(1, 0, 0, 2000)}  # ending where interval 0's ended
    assert {s.trade for s in recs["settlement"] if s.trade} == {t.id for t in recs["trade"]}
    with h5py.File(out) as f:
        events = [(e["kind"], e["message"].decode()) for e in f["events"][:]]
    assert (b"ledger_recovered", note) in events
    assert ": ok: 4 blocks, " in verify(ledger, capsys)
    assert run(controllers / "b.h5", ledger, "--duration", "2") == 0  # and it goes on
    assert "left unsettled" not in capsys.readouterr().err
    verify(ledger, capsys)


# -- finding 3: what ties the run to its ledger ---------------------------------------------


def test_the_summary_and_the_recording_name_the_ledger_its_operator_and_head(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger, out = tmp_path / "h.ledger.db", tmp_path / "h.h5"
    assert run(out, ledger) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("ledger "))
    m = re.fullmatch(rf"ledger {re.escape(str(ledger))}: 3 interval\(s\) settled, .*; "
                     r"ledger id ([0-9a-f]{32}), operator (\S+); check it with: gridloop "
                     rf"ledger verify {re.escape(str(ledger))} --head ([0-9a-f]{{64}})", line)
    assert m, line
    lid, operator, head = m.groups()
    assert verify(ledger, capsys).endswith(f"head {head}")
    market = read_public_key(tmp_path / "h.ledger.keys" / "market.pub")
    assert operator == base64.b64encode(market).decode()
    with open_store(str(ledger), create=False) as store:
        assert lid == store.ledger_id.hex()
    with h5py.File(out) as f:
        attrs = dict(f["market"].attrs)
        assert f.attrs["complete"]
    assert attrs == {"ledger_id": lid, "ledger_operator": operator, "ledger_head": head}
    verify(ledger, capsys, "--head", head)
    assert run(tmp_path / "i.h5", ledger, "--duration", "2") == 0  # appended: the head moves
    with h5py.File(tmp_path / "i.h5") as f:
        later = f["market"].attrs["ledger_head"]
    assert later != head
    verify(ledger, capsys, "--head", head)  # an earlier head is still on the chain
    assert verify(ledger, capsys, "--head", later).endswith(f"head {later}")


# -- finding 8: the grid tariff ----------------------------------------------------------


def test_a_run_at_other_grid_prices_is_refused_on_the_same_ledger(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "p.ledger.db"
    assert run(tmp_path / "p.h5", ledger) == 0
    before = ledger.read_bytes()
    capsys.readouterr()
    assert run(tmp_path / "q.h5", ledger, "--set", "market.export_price_micro_per_wh=60") == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"gridloop: error: {ledger}: was made with grid prices import 300, export 50 "
        "micro-units/Wh, this session has import 300, export 60 micro-units/Wh")
    assert ledger.read_bytes() == before and not (tmp_path / "q.h5").exists()


# -- finding 13 (and 9, 10 through a run): the keys a run trades under ----------------------


def test_a_run_uses_keygen_keys_and_makes_none(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    assert main(["ledger", "keygen", "--dir", str(keys), "market", "grid", "north"]) == 0
    ledger = tmp_path / "r.ledger.db"
    capsys.readouterr()
    assert run(tmp_path / "r.h5", ledger, "--ledger-keys", str(keys)) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"gridloop: error: {keys}: no key for south (make it with: gridloop ledger keygen "
        f"--dir {keys} south)")
    assert not ledger.exists() and not keys.joinpath("south.key").exists()
    assert main(["ledger", "keygen", "--dir", str(keys), "south"]) == 0
    capsys.readouterr()
    assert run(tmp_path / "r.h5", ledger, "--ledger-keys", str(keys)) == 0
    assert "new ledger keys" not in capsys.readouterr().err
    assert not (tmp_path / "r.ledger.keys").exists()
    with open_store(str(ledger), create=False) as store:
        held = {name: key for name, key, _ in store.accounts()}
    assert held == {n: read_public_key(keys / f"{n}.pub")
                    for n in ("market", "grid", "north", "south")}


def test_the_scenario_names_a_key_directory_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "lab"
    folder.mkdir()
    scenario = folder / "s.toml"
    scenario.write_text(TWO_NODES.read_text().replace('interval_s = 2\n',
                                                      'interval_s = 2\nkeys = "k"\n'))
    assert main(["ledger", "keygen", "--dir", str(folder / "k"), "market", "grid", "north",
                 "south"]) == 0
    ledger = tmp_path / "s.ledger.db"
    assert main(["run", str(scenario), *RUN, "--out", str(tmp_path / "s.h5"), "--ledger",
                 str(ledger)]) == 0
    with open_store(str(ledger), create=False) as store:
        held = {name: key for name, key, _ in store.accounts()}
    assert held["north"] == read_public_key(folder / "k" / "north.pub")


def test_keys_made_beside_the_ledger_are_said_once(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "m.ledger.db"
    assert run(tmp_path / "m.h5", ledger) == 0
    made = [x for x in capsys.readouterr().err.splitlines() if "new ledger keys" in x]
    assert made == [f"gridloop: new ledger keys for market, grid, north, south in "
                    f"{tmp_path / 'm.ledger.keys'} (to trade under keys of your own: "
                    "[market] keys or --ledger-keys)"]
    assert run(tmp_path / "n.h5", ledger, "--duration", "2") == 0
    assert "new ledger keys" not in capsys.readouterr().err


def test_key_problems_found_by_a_run_are_one_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    assert main(["ledger", "keygen", "--dir", str(keys), "market", "grid", "north",
                 "south"]) == 0
    for suffix in (".key", ".pub"):
        (keys / f"north{suffix}").write_bytes((keys / f"south{suffix}").read_bytes())
    capsys.readouterr()
    assert run(tmp_path / "x.h5", tmp_path / "x.db", "--ledger-keys", str(keys)) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"gridloop: error: {keys}/north.key and {keys}/south.key hold the same key")
    assert main(["ledger", "keygen", "--dir", str(tmp_path / "k2"), "market", "grid",
                 "north", "south"]) == 0
    (tmp_path / "k2").chmod(0o777)
    capsys.readouterr()
    assert run(tmp_path / "x.h5", tmp_path / "x.db", "--ledger-keys",
               str(tmp_path / "k2")) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"gridloop: error: {tmp_path / 'k2'} is writable by group or others (mode 0777); "
        f"run: chmod 700 {tmp_path / 'k2'}")
    assert not (tmp_path / "x.db").exists()
