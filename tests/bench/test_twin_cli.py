"""``gridloop twin``: one model on a CSV profile, and parameter sets imported from PyBaMM and
the CEC library, as a user runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.build import shipped
from bench.cli import main
from bench.csvio import read_columns
from twin import params
from twin.battery import params_from_set
from twin.battery import simulate_profile as battery_profile
from twin.inverter import InverterParams
from twin.inverter import simulate_profile as inverter_profile


def _csv(path: Path, columns: dict[str, np.ndarray]) -> Path:
    names = list(columns)
    rows = np.column_stack([columns[n] for n in names])
    path.write_text(",".join(names) + "\n"
                    + "\n".join(",".join(repr(float(v)) for v in r) for r in rows) + "\n")
    return path


def test_battery_on_a_current_profile_counts_its_charge(tmp_path: Path, capsys) -> None:
    t = np.arange(0.0, 600.0, 1.0)
    current = np.where((t // 60) % 2 == 0, 20.0, -5.0)  # A, positive = discharge
    src = _csv(tmp_path / "in.csv", {"t_s": t, "current_a": current})
    out = tmp_path / "out.csv"
    assert main(["twin", "simulate", "battery", "--params", "battery_ecm_example",
                 "--input", str(src), "--out", str(out)]) == 0
    assert f"wrote {out}: 600 rows" in capsys.readouterr().out
    got = read_columns(out)
    assert {"t_s", "voltage_v", "soc", "current_a", "temp_cell_c"} <= set(got)
    np.testing.assert_allclose(got["current_a"], current)
    # the SOC falls by the charge drawn (discharge counted whole, charge times eta)
    pset = params.load(shipped("battery_ecm_example"))
    pack, init = params_from_set(pset)
    eta = pack.cell.coulombic_efficiency
    drawn_as = np.sum(np.where(current > 0, current, eta * current)[:-1]) * 1.0
    assert got["soc"][-1] == pytest.approx(init.soc - drawn_as / (pack.capacity_ah * 3600),
                                           abs=1e-6)
    # the file is the model's own output, to the CSV's precision
    direct = battery_profile(pset, t, {"current_a": current})
    for name in ("voltage_v", "temp_cell_c"):
        np.testing.assert_allclose(got[name], direct[name], rtol=1e-9)


def test_battery_on_a_power_profile_delivers_it(tmp_path: Path) -> None:
    t = np.arange(0.0, 120.0, 0.5)
    power = np.full_like(t, 400.0)  # W drawn
    src = _csv(tmp_path / "in.csv", {"t_s": t, "power_w": power})
    out = tmp_path / "out.csv"
    assert main(["twin", "simulate", "battery", "--params", "battery_ecm_example",
                 "--input", str(src), "--out", str(out), "--dt", "0.05"]) == 0
    got = read_columns(out)
    assert len(got["t_s"]) == len(np.arange(0.0, t[-1] + 0.025, 0.05))
    np.testing.assert_allclose(got["voltage_v"] * got["current_a"], 400.0, rtol=1e-9)


def test_inverter_on_a_dc_profile_is_the_sandia_curve(tmp_path: Path) -> None:
    t = np.arange(0.0, 30.0, 0.1)
    p_dc = np.linspace(0.0, 70_000.0, t.size)
    v_dc = np.full_like(t, 700.0)
    src = _csv(tmp_path / "in.csv", {"t_s": t, "p_dc_w": p_dc, "v_dc_v": v_dc})
    out = tmp_path / "out.csv"
    assert main(["twin", "simulate", "inverter", "--params", "inverter_pv_abb_trio_60",
                 "--input", str(src), "--out", str(out)]) == 0
    got = read_columns(out)
    direct = inverter_profile(params.load(shipped("inverter_pv_abb_trio_60")), t,
                              {"p_dc_w": p_dc, "v_dc_v": v_dc})
    np.testing.assert_allclose(got["p_ac_w"], direct["p_ac_w"], rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(got["efficiency"], direct["efficiency"], rtol=1e-9, atol=1e-9)
    rated = InverterParams.from_params(params.load(shipped("inverter_pv_abb_trio_60")))
    assert got["p_ac_w"].max() <= rated.p_rated_w * (1 + 1e-9)  # clipped at the rating


@pytest.mark.parametrize(("kind", "columns", "message"), [
    ("inverter", {"p_dc_w": [1.0, 2.0]}, "in.csv: inverter profile: input column 'v_dc_v' "
                                         "is missing"),
    ("battery", {"current_a": [1.0, 1.0], "power_w": [1.0, 1.0]},
     "in.csv: profile: give exactly one of current_a or power_w"),
])
def test_a_profile_the_model_cannot_take_names_its_file(tmp_path: Path, capsys, kind: str,
                                                        columns: dict, message: str) -> None:
    src = _csv(tmp_path / "in.csv", {"t_s": np.array([0.0, 1.0]),
                                     **{k: np.array(v) for k, v in columns.items()}})
    params_name = {"battery": "battery_ecm_example", "inverter": "inverter_pv_abb_trio_60"}
    assert main(["twin", "simulate", kind, "--params", params_name[kind], "--input", str(src),
                 "--out", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gridloop: error: {src.parent / message}"
    assert not (tmp_path / "out.csv").exists()


def test_imported_parameter_sets_run(tmp_path: Path, monkeypatch) -> None:
    """PyBaMM's ECM_Example and a CEC inverter (both test extras), imported by the CLI, then
    run by it."""
    monkeypatch.setenv("PYBAMM_DISABLE_TELEMETRY", "true")
    battery = tmp_path / "ecm.toml"
    assert main(["twin", "params", "import-pybamm", "ECM_Example", "--out", str(battery)]) == 0
    inverter = tmp_path / "cec.toml"
    assert main(["twin", "params", "import-cec", "ABB: TRIO-60.0-TL-OUTD-US-480 [480V]",
                 "--out", str(inverter)]) == 0
    assert params.load(battery).kind == "battery" and params.load(inverter).kind == "inverter"
    t = np.arange(0.0, 10.0, 1.0)
    src = _csv(tmp_path / "in.csv", {"t_s": t, "current_a": np.full_like(t, 30.0)})
    assert main(["twin", "simulate", "battery", "--params", str(battery), "--input", str(src),
                 "--out", str(tmp_path / "out.csv")]) == 0
    got = read_columns(tmp_path / "out.csv")
    assert np.all(np.diff(got["soc"]) < 0) and 3.0 < got["voltage_v"][-1] < 4.3
