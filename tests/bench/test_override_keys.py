"""Override keys read as TOML reads a dotted key: a quoted part is one name, so the options of
``passthrough`` and ``schedule`` (setpoint names, dots and all) can be set one at a time from
the command line, and a key split at those dots says how to quote it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.build import build_plan
from bench.cli import main
from bench.engine import controller_for
from bench.errors import ControllerError, ScenarioError
from bench.recording import open_run
from bench.scenario import load, quote_key, split_key
from bench.sweep import check_points

SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"
PASSTHROUGH = ['controller.name="passthrough"', "controller.options={}", "run.mode=twin"]


@pytest.mark.parametrize("key", ['controller.options."north.battery.p_set_w"',
                                 "controller.options.'north.battery.p_set_w'",
                                 'controller . options . "north.battery.p_set_w"'])
def test_a_quoted_part_is_one_option_name(key: str) -> None:
    s = load(SCENARIO, [*PASSTHROUGH, f"{key}=5000"])
    assert s.controller.options == {"north.battery.p_set_w": 5000}
    assert controller_for(build_plan(s)).setpoints == {"north.battery.p_set_w": 5000.0}


@pytest.mark.parametrize(("controller", "value"), [("passthrough", "0"),
                                                   ("schedule", "[[0, 0], [1, 5000]]")])
def test_an_option_split_at_its_dots_names_the_quoted_key(controller: str, value: str) -> None:
    s = load(SCENARIO, [f'controller.name="{controller}"', "controller.options={}",
                        "run.mode=twin", f"controller.options.north.battery.p_set_w={value}"])
    with pytest.raises(ControllerError) as exc:
        controller_for(build_plan(s))
    message = str(exc.value)
    assert message.startswith(f"{controller}: no setpoint 'north': "), message
    assert f"--set 'controller.options.\"north.battery.p_set_w\"={value}'" in message, message
    assert "\n" not in message


def test_a_key_through_an_option_value_suggests_the_quoted_key() -> None:
    with pytest.raises(ScenarioError) as exc:
        load(SCENARIO, ["controller.options.ramp_limit_w_per_s.fast=1"])
    assert str(exc.value) == (
        "--set controller.options.ramp_limit_w_per_s.fast=1: 'ramp_limit_w_per_s' is not a "
        "table; for an option named ramp_limit_w_per_s.fast, quote it as one key: "
        'controller.options."ramp_limit_w_per_s.fast"=1')


@pytest.mark.parametrize(("item", "why"), [
    ('controller.options."north.battery=0', "unclosed quote in key"),
    ("run..dt_s=0.1", "empty part in key run..dt_s"),
    ('controller.options.north"x"=0', "a quote inside key part"),
])
def test_a_malformed_key_is_one_line_naming_it(item: str, why: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        load(SCENARIO, [item])
    assert str(exc.value).startswith(f"--set {item}: {why}"), str(exc.value)


@pytest.mark.parametrize("name", ["ramp_limit_w_per_s", "north.battery.p_set_w",
                                  'say "hi"\\now', "it's", "x=1"])
def test_quote_key_reads_back_as_the_same_name(name: str) -> None:
    assert split_key(f"controller.options.{quote_key(name)}") == ["controller", "options", name]
    assert (quote_key(name) == name) == (name == "ramp_limit_w_per_s")


def test_a_sweep_catches_one_option_given_twice_however_quoted(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="also given by --fix"):
        check_points(SCENARIO, ['controller.options."north.battery.p_set_w"=0,5000'],
                     tmp_path, [*PASSTHROUGH, "controller.options.'north.battery.p_set_w'=1"])


def test_a_sweep_over_a_quoted_option_checks_each_point(tmp_path: Path) -> None:
    pts = check_points(SCENARIO, ['controller.options."north.battery.p_set_w"=0,5000'],
                       tmp_path, PASSTHROUGH)
    assert [p.values for p in pts] == [(('controller.options."north.battery.p_set_w"', v),)
                                       for v in ("0", "5000")]


def test_replay_option_is_one_name_dots_and_all(tmp_path: Path) -> None:
    rec = tmp_path / "r.h5"
    assert main(["run", str(SCENARIO), "--mode", "twin", "--quiet", "--out", str(rec),
                 "--set", "run.duration_s=0.5", "--set", "market.kind=none"]) == 0
    out = tmp_path / "p.h5"
    assert main(["replay", str(rec), "--controller", "passthrough", "--quiet", "--out", str(out),
                 "--option", "north.battery.p_set_w=5000"]) == 0
    with open_run(out) as run:
        assert (run.signal("north", "battery", "p_set_w", "setpoint")[1:] == 5000).all()
        assert 'controller.options."north.battery.p_set_w"=5000' in run.scenario_overrides
