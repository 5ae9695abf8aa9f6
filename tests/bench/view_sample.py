"""A realistic two-node recording for the view's tests, written through the real Recorder.

::

    north (grid-connected)                 south (islanded)
      pv -> inverter --+                     battery --+
      battery ---------+-- bus -- meter       rack -----+-- bus -- grid (freq_hz, 0 W)
      rack ------------+

Both racks draw the measured H100 power of ``train_a`` (a synchronous-training rhythm with
a 2 s step, ``../shared/data``) times eight GPUs plus overhead.  North's battery shaves the
grid import above 2 kW; south's battery carries the island.  The battery devices disagree
with the twin (a voltage excursion past its tolerance at 60-70 s), north's battery times out
at 40-41 s, south's battery reports a fault at 60 s, a real-time tick is late at 30 s, and
a uniform market clears every 15 s.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

from bench.market_tables import TABLES
from bench.recorder import Column, Layout, Recorder, Residual

SCENARIO = """\
[run]
name = "view-sample"
dt_s = 0.02
duration_s = 90
realtime = true

[market]
kind = "uniform"
interval_s = 15

[profiles.sun]
kind = "irradiance"
generator = "clear_sky_clouds"

[profiles.train]
kind = "power"
file = "h100_power_calibration.csv.gz"
column = "power_inst_w"
scale = 8

[nodes.north.battery]
kind = "battery"
tolerance = { voltage_v = 0.5 }

[nodes.north.pv]
kind = "pv"
mode = "twin"
profile = "sun"

[nodes.north.inverter]
kind = "inverter"
source = "pv"

[nodes.north.rack]
kind = "gpu_rack"
profile = "train"

[nodes.north.meter]
kind = "meter"

[nodes.south.battery]
kind = "battery"
tolerance = { soc = 0.01 }

[nodes.south.rack]
kind = "gpu_rack"
profile = "train"

[nodes.south.grid]
kind = "grid"
mode = "twin"
"""

#: what each asset records: (signal, unit); ``True`` when a device measures it (with a twin)
SIGNALS = {
    ("north", "battery"): [("p_w", "W"), ("soc", ""), ("temp_cell_c", "degC"),
                           ("voltage_v", "V"), ("current_a", "A")],
    ("north", "pv"): [("p_dc_w", "W"), ("irradiance_w_m2", "W/m2")],
    ("north", "inverter"): [("p_ac_w", "W")],
    ("north", "rack"): [("p_w", "W"), ("temp_c", "degC"), ("power_cap_w", "W")],
    ("north", "meter"): [("p_w", "W"), ("v_ac_v", "V")],
    ("south", "battery"): [("p_w", "W"), ("soc", ""), ("temp_cell_c", "degC"),
                           ("voltage_v", "V"), ("current_a", "A")],
    ("south", "rack"): [("p_w", "W"), ("temp_c", "degC")],
    ("south", "grid"): [("p_w", "W"), ("freq_hz", "Hz")],
}
DEVICES = [("north", "battery"), ("north", "inverter"), ("north", "rack"), ("north", "meter"),
           ("south", "battery"), ("south", "rack")]
TRAIN_STEP_HZ = 0.5


def h100_training_trace(shared_data: Path) -> np.ndarray:
    """One H100's instantaneous power through ``train_a`` (1.4 s compute, 0.6 s memory),
    sampled every 10 ms. [W]"""
    with gzip.open(shared_data / "h100_power_calibration.csv.gz", "rt") as fh:
        rows = [float(r["power_inst_w"]) for r in csv.DictReader(fh) if r["segment"] == "train_a"]
    return np.array(rows[500:])  # from the tenth second: the card is warm, the rhythm steady


class Sample:
    """The rows, events and market tables of the sample run, ready to write in slices."""

    def __init__(self, trace_w: np.ndarray, dt_s: float = 0.02, duration_s: float = 90.0,
                 seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        n = round(duration_s / dt_s)
        self.n, self.dt_s = n, dt_s
        t = np.arange(n) * dt_s
        gpu = np.resize(np.interp(np.arange(0, len(trace_w) * 0.01, dt_s),
                                  np.arange(len(trace_w)) * 0.01, trace_w), n)
        v: dict[str, np.ndarray] = {}
        irr = 800.0 * (1 - 0.6 * np.exp(-0.5 * ((t - 50.0) / 6.0) ** 2))
        v["north/pv/irradiance_w_m2"] = irr
        v["north/pv/p_dc_w"] = 10.0 * irr
        v["north/inverter/p_ac_w"] = 0.96 * v["north/pv/p_dc_w"]
        for node, shift, overhead in (("north", 0, 1500.0), ("south", 35, 1200.0)):
            rack = 8 * np.roll(gpu, shift) + overhead
            v[f"{node}/rack/p_w"] = rack
            v[f"{node}/rack/temp_c"] = 30.0 + 15.0 * _lag(rack / rack.max(), 20.0, dt_s)
        v["north/rack/power_cap_w"] = np.full(n, 7000.0)
        v["north/battery/p_w"] = np.clip(v["north/rack/p_w"] - v["north/inverter/p_ac_w"]
                                         - 2000.0, -3000.0, 5000.0)
        v["north/meter/p_w"] = (v["north/rack/p_w"] - v["north/inverter/p_ac_w"]
                                - v["north/battery/p_w"])
        v["north/meter/v_ac_v"] = 230.0 + rng.normal(0, 0.3, n)
        v["south/battery/p_w"] = v["south/rack/p_w"].copy()
        v["south/grid/p_w"] = np.zeros(n)
        load = v["south/rack/p_w"]
        v["south/grid/freq_hz"] = 50.0 - 4e-5 * (load - _lag(load, 1.5, dt_s))
        for node, soc0 in (("north", 0.6), ("south", 0.8)):
            p = v[f"{node}/battery/p_w"]
            soc = soc0 - np.cumsum(p) * dt_s / (10_000 * 3600.0)
            volt = 51.2 + 2.0 * (soc - 0.5) - 0.002 * p / 51.2
            v[f"{node}/battery/soc"] = soc
            v[f"{node}/battery/voltage_v"] = volt
            v[f"{node}/battery/current_a"] = p / volt
            v[f"{node}/battery/temp_cell_c"] = 25.0 + 4.0 * _lag(np.abs(p) / 5000.0, 30.0, dt_s)
        twin = {}
        for (node, asset) in DEVICES:
            for sig, _ in SIGNALS[(node, asset)]:
                x = v[f"{node}/{asset}/{sig}"]
                scale = np.nanstd(x) * 0.02 + 1e-4
                twin[f"{node}/{asset}/{sig}"] = x + rng.normal(0, scale, n)
        excursion = (t >= 60.0) & (t < 70.0)
        twin["north/battery/voltage_v"] = v["north/battery/voltage_v"] + 0.1 + 0.8 * excursion
        quality = {a: np.zeros(n, dtype=np.uint8) for a in SIGNALS}
        timeout = (t >= 40.0) & (t < 41.0)
        quality[("north", "battery")][timeout] = 2
        for sig, _ in SIGNALS[("north", "battery")]:
            v[f"north/battery/{sig}"] = np.where(timeout, np.nan, v[f"north/battery/{sig}"])
        quality[("south", "battery")][(t % 10.0) < 0.2] = 1
        lateness = rng.exponential(5e-5, n)
        lateness[t == 30.0] = 3.1e-3

        columns = [Column("time", "s"), Column("wall", "s"), Column("timing/lateness", "s"),
                   Column("timing/skipped")]
        data = [t, t + lateness, lateness, np.zeros(n)]
        residuals = []
        for (node, asset), sigs in SIGNALS.items():
            for sig, unit in sigs:
                columns.append(Column(f"nodes/{node}/{asset}/{sig}", unit))
                data.append(v[f"{node}/{asset}/{sig}"])
                if (node, asset) in DEVICES:
                    residuals.append(Residual(f"nodes/{node}/{asset}/residual/{sig}",
                                              len(columns) - 1, len(columns), unit))
                    columns.append(Column(f"nodes/{node}/{asset}/twin/{sig}", unit))
                    data.append(twin[f"{node}/{asset}/{sig}"])
        for node in ("north", "south"):
            columns.append(Column(f"nodes/{node}/battery/setpoint/p_set_w", "W"))
            data.append(v[f"{node}/battery/p_w"])
        for node, asset in DEVICES:
            columns.append(Column(f"timing/rtt/{node}/{asset}", "s"))
            data.append(rng.uniform(1e-3, 3e-3, n))
        self.layout = Layout(columns, [Column(f"quality/{n_}/{a}") for n_, a in SIGNALS],
                             residuals, dict(TABLES))
        self.floats = np.column_stack(data)
        self.flags = np.column_stack([quality[a] for a in SIGNALS])
        self.attrs = {"scenario": SCENARIO, "mode": "emulated", "dt": dt_s, "seed": seed,
                      "realtime": True, "late_after_s": 0.002, "name": "view-sample"}
        self.events = [(30.0, "catch_up", "hold: tick 1500 late by 3.10 ms"),
                       (40.0, "device_timeout", "north.battery: no answer within 16 ms"),
                       (60.0, "fault_cell_imbalance", "south.battery: cell 7 out of balance")]
        self.tables = _market(duration_s)

    def write(self, rec: Recorder, k0: int, k1: int) -> None:
        """Record ticks ``k0 <= k < k1`` with the events and market rows of their time."""
        for k in range(k0, k1):
            rec.append(self.floats[k], self.flags[k])
        t0, t1 = k0 * self.dt_s, k1 * self.dt_s
        for t, kind, message in self.events:
            if t0 <= t < t1:
                rec.event(t, kind, message)
        for table, rows in self.tables.items():
            rows = [r for r in rows if t0 <= r[0] < t1]
            if rows:
                rec.table_rows(table, rows)


def _lag(x: np.ndarray, tau_s: float, dt_s: float) -> np.ndarray:
    """First-order lag of ``x`` with time constant ``tau_s``, starting at ``x[0]``."""
    a = dt_s / (tau_s + dt_s)
    out = np.empty_like(x)
    acc = x[0]
    for i, xi in enumerate(x):
        acc += a * (xi - acc)
        out[i] = acc
    return out


def _market(duration_s: float) -> dict[str, list[tuple]]:
    """Orders, trades and settlements as bench/market.py records them (micro-units per Wh)."""
    orders, trades, settlements = [], [], []
    for i, t in enumerate(np.arange(15.0, duration_s, 15.0)):
        ask, bid = 120 + 4 * i, 200 - 3 * i
        price = (ask + bid) // 2
        energy = 200 + 10 * i
        orders += [(t, i, b"north", b"sell", energy, ask, f"o{i}n".encode()),
                   (t, i, b"south", b"buy", energy + 50, bid, f"o{i}s".encode())]
        trades.append((t, i, b"south", b"north", energy, price, f"t{i}".encode()))
        settlements += [(t, i, b"north", b"south", energy, price, energy * price,
                         f"t{i}".encode(), f"s{i}n".encode()),
                        (t, i, b"grid", b"south", 50, 300, 50 * 300, b"",
                         f"s{i}g".encode())]
    return {"market/orders": orders, "market/trades": trades,
            "market/settlements": settlements}


def write_sample(path: Path, trace_w: np.ndarray, duration_s: float = 90.0) -> Sample:
    """Write the whole sample run to ``path``; returns what was written."""
    sample = Sample(trace_w, duration_s=duration_s)
    with Recorder(path, sample.layout, sample.attrs, flush_s=1.0) as rec:
        sample.write(rec, 0, sample.n)
    return sample


if __name__ == "__main__":  # python -m tests.bench.view_sample OUT.h5 SHARED_DATA [SECONDS]
    import sys

    write_sample(Path(sys.argv[1]), h100_training_trace(Path(sys.argv[2])),
                 float(sys.argv[3]) if len(sys.argv) > 3 else 90.0)


NO_METER = """\
[run]
name = "no_meter"
dt_s = 0.1
duration_s = 20
mode = "twin"

[controller]
name = "schedule"
options = { "solo.battery.p_set_w" = [[0, 0], [5, 20000], [10, -20000], [15, 0]] }

[nodes.solo.battery]
kind = "battery"
"""


def run_no_meter(folder: Path) -> Path:
    """Twenty seconds of a node with a battery and no meter, in the twin: its grid power is
    its bus's (asset ``grid``, which the twin records and the scenario does not list); the
    battery discharges at 5-10 s and charges at 10-15 s, and the grid carries both."""
    from bench.cli import main

    scenario = folder / "no_meter.toml"
    scenario.write_text(NO_METER)
    out = folder / "no_meter.h5"
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 0
    return out
