"""A misspelt device option or a missing profile option is one line naming the field where it
was given (the file's line, or the ``--set`` as typed) and what the field takes: it was a
Python ``TypeError`` about ``ModbusDevice.__init__()`` or ``synchronous_training()``, at the
file's line even when an override caused it, or at no line at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.build import build_plan
from bench.cli import main
from bench.errors import ScenarioError
from bench.scenario import load

LAB = """\
[run]
name = "lab"
dt_s = 0.1
duration_s = 1
mode = "hardware"

[profiles.train]
kind = "workload"
generator = "training"
options = { step_s = 2.0, compute_fraction = 0.7 }

[nodes.lab.meter]
kind = "meter"
mode = "hardware"
device = { backend = "modbus_tcp", host = "127.0.0.1", port = 15022, unit = 1 }

[nodes.lab.rack]
kind = "gpu_rack"
profile = "train"
mode = "twin"
"""
DEVICE_LINE = LAB.splitlines().index('device = { backend = "modbus_tcp", host = "127.0.0.1", '
                                     'port = 15022, unit = 1 }') + 1
OPTIONS_LINE = LAB.splitlines().index("options = { step_s = 2.0, compute_fraction = 0.7 }") + 1
PROFILE_LINE = LAB.splitlines().index("[profiles.train]") + 1
MODBUS_OPTIONS = ("options of backend modbus_tcp are backend, host, port, unit, map, "
                  "timeout_s, base_address")


def _error(tmp_path: Path, text: str = LAB, overrides: tuple[str, ...] = ()) -> str:
    path = tmp_path / "lab.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as exc:
        build_plan(load(path, list(overrides)))
    return str(exc.value)


def test_a_misspelt_device_option_in_the_file_names_its_line(tmp_path: Path) -> None:
    err = _error(tmp_path, LAB.replace("port = 15022", "prot = 15022"))
    assert err.startswith(f"{tmp_path / 'lab.toml'}:{DEVICE_LINE}: nodes.lab.meter.device: "
                          "unknown device option 'prot' (did you mean 'port'?); "
                          f"{MODBUS_OPTIONS}"), err
    assert "__init__" not in err and "\n" not in err


def test_a_misspelt_device_option_from_set_names_the_override(tmp_path: Path) -> None:
    table = '{ backend = "modbus_tcp", host = "127.0.0.1", prot = 15022, unit = 1 }'
    err = _error(tmp_path, overrides=(f"lab.meter.device={table}",))
    assert err.startswith(f"--set lab.meter.device={table}: nodes.lab.meter.device: "
                          "unknown device option 'prot' (did you mean 'port'?)"), err
    err = _error(tmp_path, overrides=("lab.meter.device.unti=2",))
    assert err.startswith("--set lab.meter.device.unti=2: nodes.lab.meter.device: unknown "
                          "device option 'unti' (did you mean 'unit'?)"), err


def test_an_emulated_run_checks_the_device_table_too(tmp_path: Path) -> None:
    """CI runs the lab's file emulated: the typo is said there, not on the lab's day."""
    err = _error(tmp_path, LAB.replace("port = 15022", "prot = 15022"), ("run.mode=emulated",))
    assert err.startswith(f"{tmp_path / 'lab.toml'}:{DEVICE_LINE}: nodes.lab.meter.device: "
                          "unknown device option 'prot' (did you mean 'port'?)"), err


def test_a_device_without_a_required_option_names_it(tmp_path: Path) -> None:
    err = _error(tmp_path, LAB.replace('host = "127.0.0.1", ', ""))
    assert err.startswith(f"{tmp_path / 'lab.toml'}:{DEVICE_LINE}: nodes.lab.meter.device: "
                          f"backend modbus_tcp needs 'host'; {MODBUS_OPTIONS}"), err


def test_the_run_refuses_it_in_one_line(tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(LAB.replace("port = 15022", "prot = 15022"))
    out = tmp_path / "x.h5"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown device option 'prot'" in err, err
    assert not out.exists()


@pytest.mark.parametrize(("generator", "options", "needs"), [
    ("training", "{ step_s = 2.0 }", "the training generator needs compute_fraction "
                                     "(options: step_s, compute_fraction, comm_fraction"),
    ("inference", "{ max_batch = 8 }", "the inference generator needs arrival_rate_hz "
                                       "(options: duration_s, arrival_rate_hz"),
])
def test_a_profile_without_a_required_option_names_it(tmp_path: Path, generator: str,
                                                      options: str, needs: str) -> None:
    text = LAB.replace('generator = "training"', f'generator = "{generator}"').replace(
        "options = { step_s = 2.0, compute_fraction = 0.7 }", f"options = {options}")
    err = _error(tmp_path, text, ("run.mode=twin",))
    assert err.startswith(f"{tmp_path / 'lab.toml'}:{OPTIONS_LINE}: profiles.train.options: "
                          f"{needs}"), err
    assert "positional argument" not in err and "groups, spread_s)" in err


def test_a_profile_option_error_from_set_names_the_override(tmp_path: Path) -> None:
    err = _error(tmp_path, overrides=("run.mode=twin", "profiles.train.options={ step_s = 2 }"))
    assert err.startswith("--set profiles.train.options={ step_s = 2 }: "
                          "profiles.train.options: the training generator needs "
                          "compute_fraction"), err
    err = _error(tmp_path, overrides=("run.mode=twin", "profiles.train.options.stepp_s=1"))
    assert err.startswith("--set profiles.train.options.stepp_s=1: "
                          "profiles.train.options.stepp_s: unknown option (did you mean "
                          "'step_s'?)"), err


def test_a_generators_own_error_names_the_profile_and_the_generator(tmp_path: Path) -> None:
    err = _error(tmp_path, LAB.replace("step_s = 2.0", "step_s = -2.0"), ("run.mode=twin",))
    assert err.startswith(f"{tmp_path / 'lab.toml'}:{PROFILE_LINE}: profiles.train: the training "
                          "generator: step_s must be > 0, got -2.0"), err
    assert "synchronous_training" not in err


def test_a_serial_boards_options_include_its_signals(tmp_path: Path) -> None:
    """A serial board's table may declare its signals: the list of its options says so."""
    err = _error(tmp_path, LAB.replace(
        'device = { backend = "modbus_tcp", host = "127.0.0.1", port = 15022, unit = 1 }',
        'device = { backend = "serial", port = "/dev/ttyACM0", unit = 2 }'))
    assert "unknown device option 'unit'" in err, err
    assert err.endswith(", signals"), err
