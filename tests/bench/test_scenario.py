"""Scenario loading: valid files parse; each kind of error names file, line and field."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from bench.errors import ScenarioError, ScenarioWarning
from bench.scenario import load, parse

GOOD = """\
[run]
dt_s = 0.02
duration_s = 10
seed = 3

[controller]
name = "peak_shaving"
options = { import_limit_w = 40000 }

[profiles.sun]
kind = "irradiance"
generator = "clear_sky_clouds"

[profiles.train]
kind = "workload"
generator = "training"

[nodes.north.pv]
kind = "pv"
profile = "sun"

[nodes.north.inverter]
kind = "inverter"
source = "pv"

[nodes.north.rack]
kind = "gpu_rack"
profile = "train"

[nodes.north.battery]
kind = "battery"
mode = "hardware"
device = { backend = "modbus_tcp", host = "10.0.0.5", port = 502 }

[nodes.north.grid]
kind = "grid"
"""


def test_good_scenario_parses() -> None:
    s = parse(GOOD, "good.toml")
    assert s.run.dt_s == 0.02 and s.run.n_ticks == 500
    assert [a for _, a, _ in s.assets()] == ["pv", "inverter", "rack", "battery", "grid"]
    assert s.controller.options == {"import_limit_w": 40000}
    assert s.nodes["north"]["battery"].device["port"] == 502


def test_run_mode_lowers_asset_modes() -> None:
    s = parse(GOOD.replace("seed = 3", 'seed = 3\nmode = "emulated"'), "x.toml")
    bat = s.nodes["north"]["battery"]
    assert s.effective_mode(bat) == "emulated"
    s2 = parse(GOOD.replace("seed = 3", 'seed = 3\nmode = "twin"'), "x.toml")
    assert s2.effective_mode(bat) == "twin"
    s3 = parse(GOOD.replace("seed = 3", 'seed = 3\nmode = "hardware"'), "x.toml")
    assert s3.effective_mode(bat) == "hardware"
    assert s3.effective_mode(s3.nodes["north"]["pv"]) == "emulated"


def test_a_device_address_without_a_mode_is_a_warning() -> None:
    """The address of a kit on an asset left in the default (emulated) mode would be
    silently unused: the run would pass against an emulator."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse(GOOD, "good.toml")  # mode = "hardware" given: no warning
        parse(GOOD.replace('mode = "hardware"', 'mode = "emulated"'), "x.toml")  # chosen
    with pytest.warns(ScenarioWarning) as record:
        s = parse(GOOD.replace('mode = "hardware"\n', ""), "x.toml")
    assert [str(w.message) for w in record] == [
        "x.toml:32: nodes.north.battery.device: the asset is emulated (the default mode): "
        "its emulator takes this table's transport and settings, the device is not opened; "
        'set mode = "hardware" to run against the device']
    assert s.effective_mode(s.nodes["north"]["battery"]) == "emulated"


@pytest.mark.parametrize("old,new,expected", [
    # misspelt key, with the line it is on and a suggestion
    ("dt_s = 0.02", "dt = 0.02", r"bad\.toml:2: run\.dt: unknown parameter \(did you mean 'dt_s'\?\)"),
    # wrong type
    ("seed = 3", 'seed = "three"', r"bad\.toml:4: run\.seed: expected an integer"),
    # bad enum value with a suggestion
    ('kind = "gpu_rack"', 'kind = "gpu_rak"', r"bad\.toml:27: nodes\.north\.rack\.kind: 'gpu_rak' is not one of .*did you mean 'gpu_rack'"),
    # a reference to a profile that does not exist
    ('profile = "train"', 'profile = "trian"', r"bad\.toml:28: nodes\.north\.rack\.profile: no profile named 'trian' \(did you mean 'train'\?\)"),
    # impossible value
    ("dt_s = 0.02", "dt_s = -1", r"bad\.toml:2: run\.dt_s: must be a positive"),
    # unknown section
    ("[controller]", "[controler]", r"bad\.toml:6: controler: unknown section \(did you mean 'controller'\?\)"),
    # hardware without an address
    ('device = { backend = "modbus_tcp", host = "10.0.0.5", port = 502 }', "",
     r"bad\.toml:30: nodes\.north\.battery\.device: a hardware asset needs a device address"),
    # inverter fed by something that is not a pv
    ('source = "pv"', 'source = "rack"', r"bad\.toml:24: nodes\.north\.inverter\.source: 'rack' is a gpu_rack, not a pv"),
    # TOML syntax error carries the line
    ("seed = 3", "seed = = 3", r"bad\.toml:4: not valid TOML"),
])
def test_errors_name_file_line_and_field(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ScenarioError, match=expected) as info:
        parse(GOOD.replace(old, new, 1), "bad.toml")
    assert "\n" not in str(info.value)


def test_overrides_set_fields_and_parameters() -> None:
    s = parse(GOOD, "x.toml", overrides=["run.dt_s=0.01", "north.battery.capacity_ah=300",
                                         "north.battery.mode=twin",
                                         "controller.options.import_limit_w=5e4",
                                         "north.battery.initial.soc=0.9",
                                         "north.grid.governor.rating_w=0"])
    assert s.run.dt_s == 0.01
    assert s.nodes["north"]["battery"].override == {"capacity_ah": 300}
    assert s.nodes["north"]["battery"].mode == "twin"
    assert s.nodes["north"]["battery"].initial == {"soc": 0.9}  # a field's own table
    assert s.nodes["north"]["grid"].override == {"governor.rating_w": 0}  # dotted, as in TOML
    assert s.controller.options["import_limit_w"] == 5e4


@pytest.mark.parametrize("item,expected", [
    ("nort.battery.x=1", r"no node 'nort' \(did you mean 'north'\?\)"),
    ("north.batery.x=1", r"node 'north' has no asset 'batery' \(did you mean 'battery'\?\)"),
    ("novalue", r"expected KEY=VALUE"),
    ("north.battery=1", r"--set north\.battery=1: expected SECTION\.KEY \(run, controller, "
                        r"market, profiles, nodes, checks\) or NODE\.ASSET\.KEY"),
])
def test_bad_overrides(item: str, expected: str) -> None:
    with pytest.raises(ScenarioError, match=expected):
        parse(GOOD, "x.toml", overrides=[item])


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load(tmp_path / "nope.toml")


def test_no_nodes() -> None:
    with pytest.raises(ScenarioError, match="at least one node"):
        parse("[run]\ndt_s = 0.1\n", "empty.toml")


SECOND_INVERTER = '\n[nodes.north.inverter2]\nkind = "inverter"\nsource = "pv"\n'


@pytest.mark.parametrize("old,new,expected", [
    # two inverters on one array would count its energy twice: at the second's source
    ('[nodes.north.grid]', SECOND_INVERTER + '[nodes.north.grid]',
     r"bad\.toml:38: nodes\.north\.inverter2\.source: pv 'pv' already feeds inverter "
     r"'inverter'; inverters 'inverter' and 'inverter2' would count its energy twice"),
    # an inverter without a source produces nothing
    ('source = "pv"\n', "", r"bad\.toml:22: nodes\.north\.inverter: an inverter needs a "
                            r"source: the pv that feeds it"),
    # a duration shorter than a step runs no tick
    ("duration_s = 10", "duration_s = 0.01", r"bad\.toml:3: run\.duration_s: must be at "
                                             r"least one step of dt_s = 0\.02 s"),
    # nor one that is not a whole number of steps (the last tick would run past it)
    ("dt_s = 0.02\nduration_s = 10", "dt_s = 0.3\nduration_s = 20",
     r"bad\.toml:3: run\.duration_s: must be a whole number of steps of dt_s = 0\.3 s: "
     r"20 s is 66\.67 steps; use 19\.8 s or 20\.1 s"),
    ("seed = 3", "seed = 3\ndeadline_s = -1",
     r"bad\.toml:5: run\.deadline_s: must be a non-negative number of seconds"),
    ("seed = 3", "seed = 3\nlate_after_s = -0.005",
     r"bad\.toml:5: run\.late_after_s: must be a non-negative number of seconds"),
    # a seed the recording cannot store as a 64-bit integer (was an HDF5 type error, late)
    ("seed = 3", "seed = 99999999999999999999",
     r"bad\.toml:4: run\.seed: must be a whole number from 0 to 9223372036854775807"),
    ("seed = 3", "seed = -5", r"bad\.toml:4: run\.seed: must be a whole number from 0"),
])
def test_impossible_runs_and_sources_are_refused(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ScenarioError, match=expected) as info:
        parse(GOOD.replace(old, new, 1), "bad.toml")
    assert "\n" not in str(info.value)


def test_whole_numbers_of_steps_in_floating_point_are_accepted() -> None:
    for dt, duration, ticks in ((0.1, 0.3, 3), (0.3, 20.1, 67), (0.02, 10, 500),
                                (0.005, 30, 6000), (0.1, 0.1, 1)):
        s = parse(GOOD.replace("dt_s = 0.02\nduration_s = 10",
                               f"dt_s = {dt}\nduration_s = {duration}"), "x.toml")
        assert s.run.n_ticks == ticks


def test_a_pv_no_inverter_takes_is_a_warning() -> None:
    with pytest.warns(ScenarioWarning) as record:
        parse(GOOD.replace('source = "pv"\n', "").replace(
            '[nodes.north.inverter]\nkind = "inverter"\n', ""), "x.toml")
    assert [str(w.message) for w in record] == [
        'x.toml:18: nodes.north.pv: no inverter takes this pv (give one source = "pv"): '
        'its energy reaches nothing']


def test_a_run_shorter_than_a_step_is_refused_before_it_records(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main

    scenario = Path(__file__).with_name("scenarios") / "two_nodes.toml"
    out = tmp_path / "short.h5"
    assert main(["run", str(scenario), "--mode", "twin", "--out", str(out), "--quiet",
                 "--set", "run.duration_s=0.04", "--set", "run.dt_s=0.1"]) == 2
    assert "run.duration_s: must be at least one step of dt_s = 0.1 s" in \
        capsys.readouterr().err
    assert not out.exists()


METER = '[nodes.north.meter]\nkind = "meter"\n{}\n\n[nodes.north.grid]'


@pytest.mark.parametrize("old,new,expected", [
    # a field the asset's kind ignores is refused at its line, naming what the kind takes
    ('kind = "battery"\n', 'kind = "battery"\nprofile = "sun"\n',
     r"bad\.toml:32: nodes\.north\.battery\.profile: a battery takes no profile, only a pv "
     r"or a gpu_rack does; a battery takes mode, params, .*converter"),
    ('kind = "battery"\n', 'kind = "battery"\nsource = "pv"\n',
     r"bad\.toml:32: nodes\.north\.battery\.source: a battery takes no source, only an "
     r"inverter does"),
    ('kind = "pv"\n', 'kind = "pv"\nconverter = "converter_battery_100kw"\n',
     r"bad\.toml:20: nodes\.north\.pv\.converter: a pv takes no converter, only a battery "
     r"does; a pv takes mode, params, emulator_params, emulator_scale, override, initial, "
     r"profile, tolerance$"),
    ('kind = "pv"\n', 'kind = "pv"\ntransport = "rtu"\n',
     r"bad\.toml:20: nodes\.north\.pv\.transport: a pv takes no transport \(it has no "
     r"device\)"),
    ("[nodes.north.grid]", METER.format('params = "nothere"'),
     r"bad\.toml:37: nodes\.north\.meter\.params: a meter takes no params \(a meter has no "
     r"parameters\)"),
    ("[nodes.north.grid]", METER.format("override = { foo = 1 }"),
     r"bad\.toml:37: nodes\.north\.meter\.override: a meter takes no override"),
    # nvml reads a GPU
    ('backend = "modbus_tcp", host = "10.0.0.5", port = 502', 'backend = "nvml", index = 0',
     r"bad\.toml:33: nodes\.north\.battery\.device\.backend: a battery cannot use the nvml "
     r"back-end, only a gpu_rack can; a battery uses modbus_rtu, modbus_tcp or serial"),
    # a tolerance is a distance
    ('kind = "battery"\n', 'kind = "battery"\ntolerance = { voltage_v = -0.3 }\n',
     r"bad\.toml:32: nodes\.north\.battery\.tolerance\.voltage_v: a tolerance is a "
     r"non-negative number in the signal's unit, not -0\.3"),
])
def test_fields_an_asset_kind_ignores_are_refused(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ScenarioError, match=expected) as info:
        parse(GOOD.replace(old, new, 1), "bad.toml")
    assert "\n" not in str(info.value)


def test_fields_each_kind_takes_are_accepted() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = parse(GOOD.replace('kind = "battery"\n', 'kind = "battery"\nconverter = '
                               '"converter_battery_100kw"\ntolerance = { voltage_v = 0 }\n')
                  .replace("[nodes.north.grid]", METER.format('transport = "rtu"')), "x.toml")
    assert s.nodes["north"]["battery"].tolerance == {"voltage_v": 0}


def test_faults_on_a_twin_asset_are_a_warning() -> None:
    card = 'faults = [{ timeout = true, start_s = 1, stop_s = 2 }]\n'
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse(GOOD.replace('kind = "battery"\n', 'kind = "battery"\n' + card), "x.toml")
        # --mode twin lowers modes at run time: the same file runs its faults emulated
        parse(GOOD.replace("seed = 3", 'seed = 3\nmode = "twin"').replace(
            'kind = "battery"\n', 'kind = "battery"\n' + card), "x.toml")
    with pytest.warns(ScenarioWarning) as record:
        parse(GOOD.replace('mode = "hardware"', 'mode = "twin"').replace(
            'kind = "battery"\n', 'kind = "battery"\n' + card), "x.toml")
    assert [str(w.message) for w in record] == [
        'x.toml:32: nodes.north.battery.faults: not used: the asset\'s mode is "twin" (no '
        'emulator to inject the faults into); set mode = "emulated" to inject them']


def test_an_unused_profile_is_a_warning(tmp_path: Path) -> None:
    extra = ('[profiles.spare]\nkind = "irradiance"\ngenerator = "no_such_generator"\n\n'
             '[profiles.tariff]\nkind = "price"\ngenerator = "constant"\n\n[nodes.north.pv]')
    with pytest.warns(ScenarioWarning) as record:
        parse(GOOD.replace("[nodes.north.pv]", extra), "x.toml")
    assert [str(w.message) for w in record] == [
        "x.toml:18: profiles.spare: not used, so never built or checked: no asset names it "
        "in its profile field",
        "x.toml:22: profiles.tariff: not used, so never built or checked: no asset reads a "
        "price profile (only a pv's irradiance and a gpu_rack's workload or power drive the "
        "twin)"]


def test_a_profile_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace('generator = "clear_sky_clouds"', 'file = "nothere.csv"'))
    with pytest.raises(ScenarioError, match=r"bad\.toml:12: profiles\.sun\.file: no such "
                                            r"file: .*nothere\.csv$"):
        load(path)
    (tmp_path / "nothere.csv").write_text("t_s,irradiance_w_m2\n0,0\n")
    load(path)
