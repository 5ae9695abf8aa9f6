"""``gridloop calibrate`` does not fit a battery straight across an outage of its device: it
fits the longest unbroken stretch, from that stretch's first reading, and says what it left
out in one line (on the terminal and in the parameter file).

The recording is real: an emulated battery whose cells have 20 % more R0 than the twin's,
silent (a timeout fault card) from 5.1 s to 20 s.  Its last reading before the outage was
taken under a 40 kW pulse that the next write ended, so a fit across the outage holds 40 kW
through it (R0 came out x 1.09 that way) while the battery rested."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.calibrate import SOC_JUMP, _split, _split_note, calibrate
from bench.cli import main
from bench.errors import DeviceWarning
from bench.recording import open_run
from twin import params

OUTAGE = """
[run]
name = "outage"
dt_s = 0.2
duration_s = 50
seed = 7
mode = "emulated"
deadline_s = 0.01
[controller]
name = "schedule"
options = { "lab.battery.p_set_w" = [[0, 0.0], [4, 40000.0], [5, 0.0], [24, 40000.0], [30, 0.0], [38, -40000.0], [42, 0.0]] }
[nodes.lab.battery]
kind = "battery"
initial = { soc = 0.6 }
emulator_scale = { r0_ohm = 1.2 }
faults = [{ timeout = true, start_s = 5.1, stop_s = 20.0 }]
"""

NOTE = ("74 ticks without a reading (5.2 to 20 s) left out; fitted on the longest unbroken "
        "stretch, 20 to 49.8 s (150 of 250 ticks), from its first reading")


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("outage")
    (folder / "outage.toml").write_text(OUTAGE)
    out = folder / "outage.h5"
    with pytest.warns(DeviceWarning):
        assert main(["run", str(folder / "outage.toml"), "--out", str(out), "--quiet"]) == 0
    return out


def test_an_outage_is_left_out_of_the_fit_and_said(outage: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    with open_run(outage) as run:
        i = run.signal("lab", "battery", "current_a")
        silent = np.flatnonzero(~np.isfinite(i))
        assert len(silent) == 74 and i[silent[0] - 1] > 700  # read under the pulse
    out = tmp_path / "cal.toml"
    capsys.readouterr()
    assert main(["calibrate", str(outage), "--asset", "lab.battery", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == NOTE
    result = calibrate(outage, "lab.battery")
    old, new = result.changes["r0_ohm (table mean)"]
    assert new / old == pytest.approx(1.2, rel=0.02)
    assert result.rms_after < result.rms_before / 5
    assert params.load(out).meta["calibration"]["note"] == NOTE


def test_a_state_of_charge_reset_splits_the_readings_too(outage: Path) -> None:
    """A device that came back with its state of charge reset, with no outage long enough to
    tell: the jump splits the readings; the current's own moves do not."""
    with open_run(outage) as run:
        t = run.time
        i = run.signal("lab", "battery", "current_a")
        soc = run.signal("lab", "battery", "soc").copy()
    ok = np.isfinite(i)
    capacity_ah = 2240.0
    assert _split(ok, soc, i, t, capacity_ah).jumps == []
    k = int(np.searchsorted(t, 35.0))  # under the -40 kW pulse
    soc[k:] -= 0.04
    split = _split(ok, soc, i, t, capacity_ah)
    assert split.jumps == [(k - 1, k)] and len(split.gaps) == 1
    assert len(split.spans) == 3 and split.spans[-1] == (k, len(t))
    note = _split_note(split, split.spans[1], t, soc)
    assert note.startswith("74 ticks without a reading (5.2 to 20 s) and state of charge "
                           f"jumped ({soc[k - 1]:.4g} to {soc[k]:.4g} at 35 s) left out")
    # a jump within what the current moved plus SOC_JUMP is no reset
    soc[k:] += 0.04 - 0.5 * SOC_JUMP
    assert _split(ok, soc, i, t, capacity_ah).jumps == []


def test_a_battery_with_no_state_of_charge_reading_is_one_line(outage: Path, tmp_path: Path,
                                                               capsys) -> None:
    """The fit starts from the measured state of charge: none at all was an IndexError."""
    import shutil

    import h5py

    bad = tmp_path / "no_soc.h5"
    shutil.copy(outage, bad)
    with h5py.File(bad, "r+") as f:
        f["nodes/lab/battery/soc"][...] = np.nan
    assert main(["calibrate", str(bad), "--asset", "lab.battery",
                 "--out", str(tmp_path / "c.toml")]) == 2
    assert capsys.readouterr().err == (f"gridloop: error: {bad}: lab.battery has no "
                                       "state-of-charge reading; the fit starts from the "
                                       "measured state of charge\n")
    assert not (tmp_path / "c.toml").exists()


def test_an_outage_to_the_end_is_said_too(outage: Path, tmp_path: Path, capsys) -> None:
    """A device silent from some tick to the end splits nothing, but the fit leaves those
    ticks out: the note said nothing of them."""
    import shutil

    import h5py

    cut = tmp_path / "to_the_end.h5"
    shutil.copy(outage, cut)
    with h5py.File(cut, "r+") as f:
        n = f["time"].shape[0]
        for name in ("voltage_v", "current_a", "soc"):
            f[f"nodes/lab/battery/{name}"][n - 30:] = np.nan
        t = f["time"][:]
    assert main(["calibrate", str(cut), "--asset", "lab.battery",
                 "--out", str(tmp_path / "c.toml")]) == 0
    out = capsys.readouterr().out
    # with the outage of the recording's middle: 74 + 30 ticks, both named
    assert (f"104 ticks without a reading (5.2 to 20 s, {t[n - 30]:g} to {t[n - 1]:g} s) left "
            "out") in out, out
