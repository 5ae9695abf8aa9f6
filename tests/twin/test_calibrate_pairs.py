"""An RC pair is fitted as a pair: tau = R C ties its two fields, so a field fitted beside a
partner held at the twin's value takes up the partner's error.  A pair the twin does not
have, and the recording does not show, stays absent rather than keep the fit's start."""

from __future__ import annotations

import numpy as np
import pytest

from twin.battery import PackParams
from twin.calibrate_battery import fit_battery
from twin.params import Table

from .test_battery import simple_cell
from .test_calibrate_battery import pulse_profile, record, scaled

FLAT = Table((("soc", np.array([0.0, 1.0])),), np.array([3.3, 3.3]))


def test_a_second_pair_the_twin_lacks_and_the_recording_does_not_show_stays_absent() -> None:
    """A one-pair cell fitted with two pairs: the fit gives the second a start (a tenth of
    R1, a hundred times C1); the recording does not determine it, so the fitted cell has
    none, as the twin, and the first pair is the emulator's."""
    twin = simple_cell(r2_ohm=0.0, c2_f=0.0)
    off = {"r0_ohm": 1.2, "r1_ohm": 0.8, "c1_f": 1.2}
    current = pulse_profile(3, 1.0, 80.0)
    t, v, temp = record(PackParams(scaled(twin, off)), current, 1.0, 0.6, seed=7)
    fitted, report = fit_battery(t, current, v, temp, twin, soc0=0.6, n_rc=2)
    assert {"r2_ohm", "c2_f"} <= set(report["not_determined"])
    assert fitted.r2_ohm == 0.0 and fitted.c2_f == 0.0 and fitted.n_rc == 1
    assert all("the twin has no second RC pair" in report["why_not_determined"][n]
               for n in ("r2_ohm", "c2_f"))
    for name, factor in off.items():
        assert report["factors"][name] == pytest.approx(factor, rel=0.05), name
    # the residual before is the twin's own, not that of the start the fit gave the pair
    _, one = fit_battery(t, current, v, temp, twin, soc0=0.6, n_rc=1)
    assert report["rms_base_v"] == pytest.approx(one["rms_base_v"], rel=1e-9)


def test_a_field_fitted_beside_its_held_partner_says_how_far_it_leans_on_it() -> None:
    """tau2 = 1000 s over a 175 s recording: R2 is not determined (held), C2 is (the slope
    of the second pair's voltage).  C2 stays fitted, and the report says what it owes R2's
    held value; its standard error is the one with R2 free too."""
    twin = simple_cell(ocv_v=FLAT, r0_ohm=1e-3, r1_ohm=2e-3, c1_f=5e3, r2_ohm=1e-2, c2_f=1e5)
    emulator = scaled(twin, {"r0_ohm": 1.2, "r1_ohm": 0.8, "r2_ohm": 1.3})
    current = np.concatenate([np.zeros(5), np.full(60, 90.0), np.zeros(40),
                              np.full(60, -90.0), np.zeros(10)])
    t, v, temp = record(PackParams(emulator), current, 1.0, 0.5, seed=3)
    _, report = fit_battery(t, current, v, temp, twin, soc0=0.5)
    assert "r2_ohm" in report["not_determined"] and "c2_f" in report["fitted"]
    note = report["leaning"]["c2_f"]
    assert note.startswith("fitted beside r2_ohm held at the twin's value: with r2_ohm free "
                           "too it moves ")
    said = float(note.split("its standard error is ")[1].split("%")[0])
    assert said == pytest.approx(100 * report["std_errors"]["c2_f"], rel=1e-2)
    assert report["factors"]["c2_f"] == pytest.approx(1.0, abs=0.05)


def test_a_field_whose_held_partner_moves_it_is_kept_with_it() -> None:
    """4 s pulses of 3 A against a 10 s time constant, R1 20 % above the twin's: R1 is not
    determined; C1, fitted beside it held, takes up its error: both keep the twin's values,
    and the reason gives C1's error with R1 free too."""
    twin = simple_cell(ocv_v=FLAT, r0_ohm=1e-3, r1_ohm=2e-3, c1_f=5e3, r2_ohm=0.0, c2_f=0.0)
    emulator = scaled(twin, {"r0_ohm": 1.2, "r1_ohm": 1.2})
    current = np.concatenate([np.zeros(20), np.full(40, 3.0), np.zeros(20), np.full(40, -3.0),
                              np.zeros(20)])
    t, v, temp = record(PackParams(emulator), current, 0.1, 0.5, seed=6)
    fitted, report = fit_battery(t, current, v, temp, twin, soc0=0.5, n_rc=1)
    assert report["fitted"] == ["r0_ohm"]
    assert report["why_not_determined"]["r1_ohm"].startswith("its standard error is ")
    why = report["why_not_determined"]["c1_f"]
    assert why.startswith("kept with r1_ohm, its RC partner (tau1 = R1*C1): fitted beside "
                          "r1_ohm held at the twin's value, it takes up r1_ohm's error; with "
                          "r1_ohm free too it moves ")
    together = float(why.split("%: ")[1].split("%")[0])
    assert together > 5.0
    assert fitted.c1_f == twin.c1_f and fitted.r1_ohm == twin.r1_ohm
