"""A hardware run against an RS-485 device asked for the wrong unit id: the device is
silent (as a real slave is), and the run's warning says to check the unit id, with the
back-end's words (not only that nothing answered in time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main

from .kit import emulated_kit
from .test_emulated_transports import LAB


@pytest.mark.slow
def test_a_silent_rtu_device_is_said_to_need_its_unit_id_checked(tmp_path: Path) -> None:
    kit_toml = tmp_path / "kit.toml"
    kit_toml.write_text(LAB.format(extra=""))
    with emulated_kit(kit_toml, 3) as (_, devices):
        d = {x["asset"]: x for x in devices}
        port = d["inverter"]["serial_port"]
        scenario = tmp_path / "hw.toml"
        scenario.write_text(LAB.format(extra="")
                            .replace('port = "/dev/ttyUSB0"', f'port = "{port}"')
                            .replace('parity = "E", unit = 3', 'unit = 4'))
        with pytest.warns(Warning) as caught:
            main(["run", str(scenario), "--out", str(tmp_path / "hw.h5"), "--quiet",
                  "--set", "run.duration_s=0.5", "--set", "lab.battery.mode=twin",
                  "--set", "lab.meter.mode=twin"])
    said = [str(w.message) for w in caught if "lab.inverter" in str(w.message)]
    assert said and said[0].startswith(f"lab.inverter: no answer from {port} (9600 8N1)"), said
    assert "nothing answers unit 4 there: check the unit id and the line settings" in said[0]
