"""A hardware run whose RS-485 device is opened with line settings its port refuses: one
line naming the device, the port and the settings; no traceback; the run goes on with the
device flagged, and no other device is blamed.  `gridloop emulate` stands in for the kit
(Modbus RTU and the serial board on real ptys, which refuse parity as Linux does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.recording import open_run

from .kit import REPO, emulated_kit
from .test_emulated_transports import LAB

pytestmark = pytest.mark.slow


def _pty_refuses_parity() -> bool:
    from tests.firmware_bridge.test_line_refused import _pty_refuses_parity as probe

    return probe()


@pytest.mark.skipif(not _pty_refuses_parity(), reason="this platform's ptys drop parity")
def test_a_refused_parity_is_one_line_and_the_run_goes_on(tmp_path: Path) -> None:
    kit_toml = tmp_path / "kit.toml"
    kit_toml.write_text(LAB.format(extra=""))
    with emulated_kit(kit_toml, 3) as (_, devices):
        d = {x["asset"]: x for x in devices}
        inv, bat, met = d["inverter"]["serial_port"], d["battery"]["port"], d["meter"][
            "serial_port"]
        text = (LAB.format(extra="")
                .replace('port = "/dev/ttyUSB0"', f'port = "{inv}"')
                .replace('host = "192.168.1.20", port = 502', f'host = "127.0.0.1", port = {bat}')
                .replace('port = "/dev/ttyACM0"', f'port = "{met}"'))
        scenario = tmp_path / "hw.toml"
        scenario.write_text(text)
        out = tmp_path / "hw.h5"
        proc = subprocess.run([sys.executable, "-m", "bench", "run", str(scenario), "--out",
                               str(out), "--quiet", "--set", "run.duration_s=3"],
                              capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    err = proc.stderr
    assert "Traceback" not in err and "termios" not in err, err
    assert proc.returncode in (0, 1), err  # the run ran (1: a device never answered)
    warned = [line for line in err.splitlines() if line.startswith("gridloop: warning:")]
    said = (f"lab.inverter: cannot open {inv} with line settings 9600 8E1: the port refuses "
            "them ([Errno 22] Invalid argument)")
    assert warned == [f"gridloop: warning: {said} (the run goes on; reads retry it)"], err
    assert "lab.meter" not in err and "lab.battery" not in err, err
    with open_run(out) as run:
        assert len(run) == 30
        assert np.all(run.quality("lab", "inverter") != 0)
        assert (0.0, "device_open_failed", said) in run.events()
        for asset in ("battery", "meter"):
            assert np.mean(run.quality("lab", asset) == 0) >= 0.9, asset
