"""The command line in-process (main(argv)), and as a real process where it must be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.recording import open_run

REPO = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run.h5"
    assert main(["run", str(SCENARIO), "--out", str(out), "--quiet"]) == 0
    return out


def test_run_prints_a_summary_and_writes_recording_and_ledger(recording: Path,
                                                              capsys: pytest.CaptureFixture
                                                              ) -> None:
    assert recording.is_file()
    assert recording.with_name("run.ledger.db").is_file()
    assert main(["ledger", "verify", str(recording.with_name("run.ledger.db"))]) == 0
    assert "ok" in capsys.readouterr().out


def test_twin_mode_needs_no_device(tmp_path: Path) -> None:
    out = tmp_path / "twin.h5"
    assert main(["run", str(SCENARIO), "--mode", "twin", "--out", str(out), "--quiet",
                 "--set", "run.duration_s=2"]) == 0
    with open_run(out) as run:
        assert run.signals("residual") == []
        assert run.attrs["mode"] == "twin"


def test_report_writes_figures_that_are_not_blank(recording: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    assert main(["report", str(recording), "--out", str(tmp_path)]) == 0
    for name in ("power_flows.png", "soc.png", "gpu_power.png", "gpu_spectrum.png",
                 "residuals.png"):
        img = imread(tmp_path / name)
        assert img.shape[0] > 200 and img.shape[1] > 300, name
        # more than a handful of colours: axes, text and curves were drawn
        assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 20, name
    assert "ticks" in (tmp_path / "summary.txt").read_text()


def test_replay_same_controller_does_not_diverge_another_does(recording: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture
                                                              ) -> None:
    assert main(["replay", str(recording), "--out", str(tmp_path / "same.h5"), "--quiet"]) == 0
    assert "no divergence" in capsys.readouterr().out
    assert main(["replay", str(recording), "--controller", "peak_shaving",
                 "--option", "import_limit_w=1000", "--out", str(tmp_path / "other.h5"),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "setpoint" in out and "p_set_w" in out
    with open_run(tmp_path / "other.h5") as run:
        # the replay observed the recorded meter, and its twin ran the new setpoints
        with open_run(recording) as old:
            np.testing.assert_array_equal(run.signal("north", "meter", "p_w"),
                                          old.signal("north", "meter", "p_w"))
            assert not np.array_equal(
                run.signal("north", "battery", "p_set_w", "setpoint"),
                old.signal("north", "battery", "p_set_w", "setpoint"))


@pytest.mark.parametrize("argv,expected", [
    (["run", "nope.toml"], "nope.toml: no such scenario file"),
    (["run", str(SCENARIO), "--set", "run.dt_s=-1"],
     "--set run.dt_s=-1: run.dt_s: must be a positive"),
    (["run", str(SCENARIO), "--duration", "0"], "--duration 0: run.duration_s: "
                                                "must be positive"),
    (["demo", "--duration", "0"], "gridloop: error: --duration 0: run.duration_s: must be "
                                  "positive"),  # was labelled --set run.duration_s=0.0
    (["run", str(SCENARIO), "--set", "north.batery.x=1"], "did you mean 'battery'"),
    (["run", str(SCENARIO), "--set", "north.battery.capacity_a=1"],
     "capacity_a: unknown parameter"),
    (["run", str(SCENARIO), "--set", "south.battery.initial.soc=1.5"],
     "--set south.battery.initial.soc=1.5: nodes.south.battery.initial.soc: must be in "
     "[0, 1]"),
    (["run", str(SCENARIO), "--set", "south.battery.initial.sco=0.2"],
     "nodes.south.battery.initial: unknown initial condition 'sco'; one of soc,"),
    (["run", str(SCENARIO), "--set", "south.battery.initial.soc=full"],
     "nodes.south.battery.initial.soc: must be a number, not 'full'"),
    (["run", str(SCENARIO), "--set", "north.rack.initial.temp_c=40"],
     "unknown initial condition 'temp_c'; a gpu_rack takes none"),
    (["run", str(SCENARIO.with_name("grid_limits.toml")), "--set",
      "lab.grid.initial.islanded=2"], "islanded: 1 (islanded) or 0 (connected), not 2"),
    (["replay", "missing.h5"], "missing.h5: no such recording"),
    (["report", str(SCENARIO)], "not a readable HDF5 file"),
    (["calibrate", "missing.h5", "--asset", "north.battery"], "no such recording"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], expected: str,
                                          capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err
    assert len(err.splitlines()) == 1, err


def test_emulate_serves_every_device_and_stops_on_sigterm() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "bench", "emulate", str(SCENARIO),
                             "--json", "--speed", "10"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        devices = [json.loads(proc.stdout.readline()) for _ in range(6)]
        devices.append(json.loads(proc.stdout.readline()))
        assert {(d["node"], d["asset"]) for d in devices} == {
            ("north", "inverter"), ("north", "battery"), ("north", "rack"),
            ("north", "meter"), ("south", "battery"), ("south", "rack"), ("south", "meter")}
        for d in devices:
            assert d["host"] == "127.0.0.1" and d["transport"] == "tcp" and d["port"] > 0
            assert d["models"][0] == 1
        # a real SunSpec read of the inverter through an independent client
        inv = next(d for d in devices if d["asset"] == "inverter")
        from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

        client = SunSpecModbusClientDeviceTCP(slave_id=inv["unit"], ipaddr="127.0.0.1",
                                              ipport=inv["port"])
        client.scan()
        assert 701 in client.models
        client.close()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_folder_scenario_toml_records_under_the_folder_name() -> None:
    from bench.commands.run import default_out

    experiments = Path(__file__).parents[2] / "experiments"
    assert default_out(experiments / "islanded" / "scenario.toml") == Path("runs/islanded.h5")
    assert default_out(experiments / "demo.toml") == Path("runs/demo.h5")


def test_a_hardware_asset_capped_by_the_default_run_mode_is_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """mode = "hardware" on an asset, no mode for the run: it runs emulated, and is said."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.read_text().replace('mode = "emulated"\n', "", 1))
    args = ["run", str(scenario), "--duration", "0.5", "--quiet", "--set", "market.kind=none",
            "--set", 'north.battery.mode="hardware"', "--set",
            'north.battery.device={ backend = "modbus_tcp", host = "127.0.0.1", port = 1 }']
    with pytest.warns(UserWarning, match=r"north\.battery: mode hardware, but the run's mode "
                      r"\(emulated by default\) caps every asset's: they run emulated"):
        assert main([*args, "--out", str(tmp_path / "a.h5")]) == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*args, "--mode", "twin", "--out", str(tmp_path / "b.h5")]) == 0
    assert not [w for w in caught if "caps every asset" in str(w.message)]
