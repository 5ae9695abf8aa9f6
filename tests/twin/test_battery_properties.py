"""Properties of the battery twin for any parameters and any input sequence (Hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.battery import OUTPUT_NAMES, STATE_NAMES, Battery, BatteryInitial, PackParams

from .test_battery import simple_cell

Y = {name: k for k, name in enumerate(OUTPUT_NAMES)}
X = {name: k for k, name in enumerate(STATE_NAMES)}

maybe = st.one_of(st.none(), st.floats(1.0, 500.0))


@st.composite
def batteries(draw: st.DrawFn) -> Battery:
    soc_min = draw(st.floats(0.0, 0.4))
    cell = simple_cell(
        r0_ohm=draw(st.floats(0.0, 5e-3)),
        r1_ohm=draw(st.floats(0.0, 5e-3)),
        c1_f=draw(st.floats(1.0, 1e6)),
        r2_ohm=draw(st.sampled_from([0.0, 1e-4, 2e-3])),
        c2_f=draw(st.floats(1.0, 1e7)),
        coulombic_efficiency=draw(st.floats(0.8, 1.0)),
        hysteresis_v=draw(st.sampled_from([0.0, 0.01, 0.05])),
        hysteresis_rate=draw(st.floats(0.0, 200.0)),
        entropic_v_per_k=draw(st.floats(-1e-3, 1e-3)),
        current_max_discharge_a=draw(maybe),
        current_max_charge_a=draw(maybe),
        power_max_discharge_w=draw(maybe),
        power_max_charge_w=draw(maybe),
        voltage_min_v=draw(st.one_of(st.none(), st.floats(2.5, 3.6))),
        voltage_max_v=draw(st.one_of(st.none(), st.floats(3.7, 4.5))),
        soc_min=soc_min,
        soc_max=draw(st.floats(soc_min + 0.1, 1.0)),
    )
    pack = PackParams(cell, draw(st.integers(1, 16)), draw(st.integers(1, 4)))
    initial = BatteryInitial(soc=draw(st.floats(0.0, 1.0)),
                             v_rc1_v=draw(st.floats(-0.2, 0.2)),
                             v_rc2_v=draw(st.floats(-0.2, 0.2)),
                             hysteresis=draw(st.floats(-1.0, 1.0)))
    return Battery(pack, n=2, mode=["current", "power"], initial=initial)


commands = st.one_of(st.floats(-3000.0, 3000.0), st.floats(allow_nan=True, allow_infinity=True))
steps = st.lists(st.tuples(commands, st.sampled_from([0.001, 0.05, 1.0, 60.0])),
                 min_size=1, max_size=25)


# The initial SOC is drawn over [0, 1], outside the window too, on purpose (BatteryWarning).
@pytest.mark.filterwarnings("ignore::twin.battery.BatteryWarning")
@settings(max_examples=100, deadline=None)
@given(bat=batteries(), seq=steps)
def test_limits_hold_soc_stays_in_range_outputs_stay_finite(
        bat: Battery, seq: list[tuple[float, float]]) -> None:
    pack = bat.params[0]
    cell, ns, npar = pack.cell, pack.cells_series, pack.cells_parallel
    x = bat.initial_state()
    for cmd, dt in seq:
        # the current-mode unit gets the command in A, the power-mode unit in W (x ns)
        u = np.array([[cmd, 0.0], [0.0, cmd * ns]])
        soc = x[:, X["soc"]].copy()
        w = bat.hold(0.0, x, u, dt)
        y = bat.outputs(0.0, x, w)
        x = bat.step_exact(x, w, dt)
        y_end = bat.outputs(dt, x, w)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(x)) and np.all(np.isfinite(y_end))

        i_cell = y[:, Y["current_a"]] / npar
        new_soc = x[:, X["soc"]]
        assert np.all((0.0 <= new_soc) & (new_soc <= 1.0))
        assert np.all(new_soc >= np.minimum(soc, cell.soc_min) - 1e-12)
        assert np.all(new_soc <= np.maximum(soc, cell.soc_max) + 1e-12)
        assert np.all(np.abs(x[:, X["hysteresis"]]) <= 1.0 + 1e-12)
        if cell.current_max_discharge_a is not None:
            assert np.all(i_cell <= cell.current_max_discharge_a * (1 + 1e-12))
        if cell.current_max_charge_a is not None:
            assert np.all(i_cell >= -cell.current_max_charge_a * (1 + 1e-12))
        p_cell = y[:, Y["p_w"]] / (ns * npar)
        if cell.power_max_discharge_w is not None:
            assert np.all(p_cell <= cell.power_max_discharge_w * (1 + 1e-9) + 1e-9)
        if cell.power_max_charge_w is not None:
            assert np.all(p_cell >= -cell.power_max_charge_w * (1 + 1e-9) - 1e-9)
        for yy in (y, y_end):  # both ends of the step
            v_cell = yy[:, Y["voltage_v"]] / ns
            v_min = 0.0 if cell.voltage_min_v is None else cell.voltage_min_v
            assert np.all(v_cell[i_cell > 0] >= v_min - 1e-9)
            if cell.voltage_max_v is not None:
                assert np.all(v_cell[i_cell < 0] <= cell.voltage_max_v + 1e-9)
        e = x[:, X["e_out_j"]:]
        assert np.all(np.abs(e.sum(axis=1)) <= 1e-9 * np.abs(e).sum(axis=1) + 1e-12)
