"""A meter that misses an interval's edge: its reading ends at the meter's last valid counters
(signed with their time, ``read_ms``), the rest lands in the next reading, the run says so,
and the ledger verifies.  Also: the recorded settlements are in an order that does not
depend on the run's random keys.

The runs are real: a two-node scenario whose meters are emulated (Modbus TCP) with a
timeout fault card on north's meter, intervals of 10 s.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main
from ledger import MarketSession, verify_chain
from ledger.errors import ConflictError, RecordError, VerificationError
from ledger.records import HEADER, MAGIC, MeterReading, decode, sign

NODES = ("north", "south")
P2P = Path(__file__).parents[2] / "experiments" / "p2p_trading" / "scenario.toml"

#: north exports (PV), south imports (a rack): trades every interval; only the meters have a
#: device (emulated), the rest is the twin
SCENARIO = """\
[run]
name = "meter_gaps"
dt_s = 1.0
duration_s = 31
seed = 11
mode = "emulated"

[controller]
name = "passthrough"

[market]
kind = "uniform"
interval_s = 10
import_price_micro_per_wh = 300
export_price_micro_per_wh = 50

[profiles.sun]
kind = "irradiance"
generator = "clear_sky_clouds"
options = { latitude_deg = 40.0, day_of_year = 172, start_hour = 12.0 }

[profiles.training]
kind = "workload"
generator = "training"
options = { step_s = 2.0, compute_fraction = 0.7, comm_fraction = 0.2 }

[nodes.north.pv]
kind = "pv"
params = "pv_80kwp"
profile = "sun"

[nodes.north.inverter]
kind = "inverter"
mode = "twin"
source = "pv"

[nodes.north.rack]
kind = "gpu_rack"
mode = "twin"
params = "rack_h100_4x8gpu"
profile = "training"

[nodes.north.meter]
kind = "meter"

[nodes.south.rack]
kind = "gpu_rack"
mode = "twin"
params = "rack_h100_4x8gpu"
profile = "training"

[nodes.south.meter]
kind = "meter"
"""


class Run:
    """One run: its recording, ledger, printed summary and --json."""

    def __init__(self, folder: Path, fault: str) -> None:
        scenario = folder / "gaps.toml"
        scenario.write_text(SCENARIO)
        self.out, self.ledger = folder / "gaps.h5", folder / "gaps.ledger.db"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            self.status = main(["run", str(scenario), "--out", str(self.out), "--quiet",
                                "--json", str(folder / "gaps.json"),
                                "--set", f"north.meter.faults=[{fault}]"])
        self.stdout = printed.getvalue()
        self.json = json.loads((folder / "gaps.json").read_text())
        with h5py.File(self.out) as f:
            self.readings = f["market/meter_readings"][:]
            self.events = f["events"][:]
            self.exports = {n: f[f"nodes/{n}/meter/e_export_wh"][:] for n in NODES}
            self.imports = {n: f[f"nodes/{n}/meter/e_import_wh"][:] for n in NODES}

    def of(self, node: str) -> np.ndarray:
        return self.readings[self.readings["node"] == node.encode()]

    def ledger_readings(self, capsys: pytest.CaptureFixture[str]) -> list[dict]:
        capsys.readouterr()
        assert main(["ledger", "export", str(self.ledger), "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return [r for r in rows if r["kind"] == "meter_reading"]

    def sold_wh(self, node: str, capsys: pytest.CaptureFixture[str]) -> int:
        """``sold [Wh]`` of ``node`` in ``gridloop ledger show``."""
        capsys.readouterr()
        assert main(["ledger", "show", str(self.ledger)]) == 0
        row = next(line.split() for line in capsys.readouterr().out.splitlines()
                   if line.startswith(node + " "))
        return int(row[3])

    def gap_events(self) -> list[tuple[float, str]]:
        return [(float(e["t"]), e["message"].decode()) for e in self.events
                if e["kind"] == b"meter_gap"]


def counter(run: Run, node: str, t: float, which: str = "export") -> int:
    """The floored counter of ``node``'s meter at run time ``t`` (one tick a second)."""
    value = (run.exports if which == "export" else run.imports)[node][int(t)]
    assert math.isfinite(value)
    return int(math.floor(value))


@pytest.fixture(scope="module")
def mid(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """North's meter silent from 12 s to 25 s: it misses the edge at 20 s."""
    return Run(tmp_path_factory.mktemp("mid"), "{ timeout = true, start_s = 12.0, stop_s = 25.0 }")


@pytest.fixture(scope="module")
def end(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """North's meter silent from 25 s to the end (31 s): it misses the edge at 30 s and the
    run's last tick."""
    return Run(tmp_path_factory.mktemp("end"), "{ timeout = true, start_s = 25.0 }")


def test_a_missed_edge_is_not_signed_as_zero(mid: Run, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    """Interval 1 ends at north's last valid counters (t = 11 s), not at 0 Wh; interval 2
    takes what was counted from there to its end; south (no fault) is read at the edges."""
    assert mid.status == 0
    north = mid.of("north")
    assert list(north["interval"]) == [0, 1, 2, 3]
    assert list(north["read_t"]) == [10.0, 11.0, 30.0, 30.0]
    assert north["export_wh"][0] == counter(mid, "north", 10)
    assert north["export_wh"][1] == counter(mid, "north", 11) - counter(mid, "north", 10) > 0
    assert north["export_wh"][2] == counter(mid, "north", 30) - counter(mid, "north", 11)
    assert list(mid.of("south")["read_t"]) == [10.0, 20.0, 30.0, 30.0]
    # the signed records: only north's reading of interval 1 carries read_ms
    signed = {(r["signer"], r["interval"]): r["fields"] for r in mid.ledger_readings(capsys)}
    assert signed[("north", 1)] == {"import_wh": int(north["import_wh"][1]),
                                    "export_wh": int(north["export_wh"][1]), "read_ms": 11000}
    assert all("read_ms" not in f for k, f in signed.items() if k != ("north", 1))
    assert main(["ledger", "verify", str(mid.ledger)]) == 0
    assert "ok: 4 blocks" in capsys.readouterr().out


def test_energy_is_conserved_across_the_gap(mid: Run, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    """Every node's readings add up to its meter's counters at the last tick, and what the
    ledger settled out of north is what its meter counted."""
    for node in NODES:
        mine = mid.of(node)
        assert mine["export_wh"].sum() == counter(mid, node, 30)
        assert mine["import_wh"].sum() == counter(mid, node, 30, "import")
    assert mid.sold_wh("north", capsys) == counter(mid, "north", 30)


def test_the_run_says_so(mid: Run) -> None:
    """An event at the edge, and a line under the ledger's in the run summary."""
    ((t, message),) = mid.gap_events()
    assert t == 20.0
    assert message.startswith("north.meter: no valid reading at the interval's end; its "
                              "reading of interval 1 ends at its last valid counters, read "
                              "at t = 11.000 s (read_ms 11000)")
    assert "goes into its next reading" in message
    assert ("  north: no valid meter reading at the end of interval(s) 1: those readings end "
            "at the meter's last valid counters") in mid.stdout
    assert "in no reading" not in mid.stdout
    assert mid.json["status"] == 0


def test_at_the_end_the_last_valid_reading_settles(end: Run,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The meter silent from 25 s: interval 2 ends at its counters of 24 s, interval 3 (the
    one the run ends in) is 0 Wh from those same counters; all north counted until 24 s is
    settled, and the run names the time after which nothing is."""
    assert end.status == 0
    north = end.of("north")
    assert list(north["read_t"]) == [10.0, 20.0, 24.0, 24.0]
    assert list(north["export_wh"][2:]) == [counter(end, "north", 24) -
                                            counter(end, "north", 20), 0]
    assert north["export_wh"].sum() == counter(end, "north", 24)
    signed = {(r["signer"], r["interval"]): r["fields"] for r in end.ledger_readings(capsys)}
    assert signed[("north", 2)]["read_ms"] == signed[("north", 3)]["read_ms"] == 24000
    assert "read_ms" not in signed[("north", 1)]
    assert [t for t, _ in end.gap_events()] == [30.0, 31.0]
    assert "no valid reading at the run's last tick" in end.gap_events()[1][1]
    assert ("the run's last reading ends at t = 24.000 s, what the meter counted after that "
            "is in no reading") in end.stdout
    assert end.sold_wh("north", capsys) == counter(end, "north", 24)
    assert main(["ledger", "verify", str(end.ledger)]) == 0


# -- the ledger side of read_ms ----------------------------------------------------------------


def test_a_reading_without_read_ms_is_encoded_as_before() -> None:
    """Readings at the edge keep their old bytes (ids, signatures of existing ledgers); one
    with read_ms round-trips."""
    from ledger import canonical

    pk = bytes(range(32))
    old = HEADER.pack(MAGIC, 3, pk, 4, 9) + canonical.encode({"export_wh": 5, "import_wh": 7})
    assert MeterReading(pk, 4, 9, 7, 5).body == old
    assert decode(old) == MeterReading(pk, 4, 9, 7, 5)
    short = MeterReading(pk, 4, 9, 7, 5, read_ms=1234)
    assert short.body != old and decode(short.body) == short
    assert decode(short.body).read_ms == 1234
    with pytest.raises(RecordError, match="read_ms must be >= 0"):
        MeterReading(pk, 4, 9, 7, 5, read_ms=-1)


def test_read_ms_must_be_before_the_interval_end(tmp_path: Path) -> None:
    """The session refuses it, and verify names a reading signed with one anyway."""
    with MarketSession(str(tmp_path / "l.db"), keys=tmp_path / "keys", nodes=["a", "b"],
                       market="uniform", interval_s=10, import_price_micro_per_wh=300,
                       export_price_micro_per_wh=50) as s:
        s.clear(1)
        with pytest.raises(RecordError, match="read_ms 20000 is not before the interval's end"):
            s.submit_meter_reading("a", 1, 0, 5, read_ms=20000)
        assert s.submit_meter_reading("a", 1, 0, 5, read_ms=12000).read_ms == 12000
        # the same call again returns the stored reading; one without read_ms differs
        assert s.submit_meter_reading("a", 1, 0, 5, read_ms=12000).read_ms == 12000
        with pytest.raises(ConflictError, match="already has a meter reading"):
            s.submit_meter_reading("a", 1, 0, 5)
        bad = MeterReading(s.public_key("b"), 1, 1, 0, 0, read_ms=20000)
        s.submit(sign(bad, s.keys.load("b"), s.store.ledger_id))
        s.settle(1)
        with pytest.raises(VerificationError, match="read at 20000 ms, not before the "
                                                    "interval's end at 20000 ms"):
            verify_chain(s.store)


# -- the recorded settlements do not depend on the keys --------------------------------------


def test_settlement_rows_are_in_the_same_order_whatever_the_keys(tmp_path: Path) -> None:
    """Two identical twin runs to two outputs (two sets of random keys): the same rows in the
    same order (only ids differ); grid exchanges by node name within an interval."""
    tables = []
    for name in ("a", "b"):
        out = tmp_path / name / "p2p.h5"
        assert main(["run", str(P2P), "--mode", "twin", "--duration", "2000", "--quiet",
                     "--out", str(out)]) == 0
        with h5py.File(out) as f:
            tables.append(f["market/settlements"][:])
    a, b = tables
    columns = [c for c in a.dtype.names if c not in ("trade", "id")]
    assert len(a) == len(b) > 6
    for c in columns:
        assert np.array_equal(a[c], b[c]), c
    for k in np.unique(a["interval"]):
        rows = a[(a["interval"] == k) & (a["trade"] == b"")]
        nodes = [(s if by == b"grid" else by).decode() for s, by in
                 zip(rows["seller"], rows["buyer"], strict=True)]
        assert nodes == sorted(nodes)
