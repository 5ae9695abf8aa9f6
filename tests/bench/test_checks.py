"""Pass/fail checks declared in a scenario: parsed, judged tick by tick, reported by run, report
and sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.checks import Check, evaluate, format_outcomes, judge, parse_checks
from bench.cli import main
from bench.errors import ScenarioError
from bench.recording import open_run
from bench.scenario import parse
from bench.summary import figures

SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"


def _where(*path: str) -> str:
    return "x.toml: " + ".".join(path)


def test_a_key_with_two_bounds_is_two_checks() -> None:
    checks = parse_checks({"north.battery.soc": {"min": 0.1, "max": 0.9, "after_s": 5},
                           "north.battery.voltage_v": {"residual": 0.5}}, _where)
    assert checks == (Check("north.battery.soc", "min", 0.1, 5.0),
                      Check("north.battery.soc", "max", 0.9, 5.0),
                      Check("north.battery.voltage_v", "residual", 0.5, 0.0))
    assert checks[2].describe("V") == "|north.battery.voltage_v - twin| <= 0.5 V"
    assert checks[0].describe() == "north.battery.soc >= 0.1 from 5 s"


@pytest.mark.parametrize(("table", "message"), [
    ({"north.soc": {"max": 1}}, "a check names one signal as NODE.ASSET.SIGNAL"),
    ({"north.battery.soc": 3}, "expected { min = ..., max = ..."),
    ({"north.battery.soc": {"maximum": 1}}, "maximum: not a check (did you mean 'max'?)"),
    ({"north.battery.soc": {"max": "high"}}, "max: expected a finite number, got 'high'"),
    ({"north.battery.soc": {"max": True}}, "max: expected a finite number, got True"),
    ({"north.battery.soc": {"after_s": 3}}, "give min, max or residual"),
    ({"north.battery.soc": {"min": 2, "max": 1}}, "min 2 is above max 1"),
    ({"north.battery.soc": {"residual": -1}}, "cannot be negative"),
])
def test_malformed_checks_are_named(table: dict, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_checks(table, _where)
    assert str(info.value).startswith("x.toml: checks.") and message in str(info.value)


def test_judged_tick_by_tick_from_after_s_skipping_missing_readings() -> None:
    t = np.arange(10) * 0.5
    v = np.array([9.0, 1, 2, np.nan, 3, 7, 2, 1, np.nan, 2])
    over = judge(Check("n.a.s", "max", 5.0, after_s=1.0), t, v)  # 9 at t = 0 is not judged
    assert (over.worst, over.at_s, over.judged, over.failed) == (7.0, 2.5, 6, 1)
    assert not over.passed
    assert judge(Check("n.a.s", "max", 7.0, after_s=1.0), t, v).passed  # on the bound: ok
    under = judge(Check("n.a.s", "min", 1.5), t, v)
    assert (under.worst, under.at_s, under.failed) == (1.0, 0.5, 2)
    twin = v + np.array([0, 0.1, -0.3, 0, 0, 0, 0.2, 0, 0, 0])
    res = judge(Check("n.a.s", "residual", 0.25), t, v, twin)
    assert res.worst == pytest.approx(0.3) and res.at_s == 1.0 and res.failed == 1
    none = judge(Check("n.a.s", "max", 5.0), t, np.full(10, np.nan))
    assert none.judged == 0 and not none.passed and math.isnan(none.worst)
    text = format_outcomes([over, res, none])
    assert "n.a.s <= 5 from 1 s" in text and "FAIL (1 of 6 ticks)" in text
    assert "FAIL (no tick to judge" in text and text.endswith("checks: 0 of 3 passed")


def test_scenario_checks_name_their_asset_and_line() -> None:
    text = SCENARIO.read_text() + '\n[checks]\n"north.batery.soc" = { min = 0.1 }\n'
    with pytest.raises(ScenarioError, match=r"x\.toml:71: checks\.north\.batery\.soc: no asset "
                                            r"north\.batery"):
        parse(text, "x.toml")
    s = parse(text.replace("batery", "battery"), "x.toml",
              overrides=["checks.north.battery.soc.max=0.95"])
    assert {(c.bound, c.limit) for c in s.checks} == {("min", 0.1), ("max", 0.95)}


CHECKS = """
[checks]
"north.rack.p_w" = { max = 1e9 }
"south.battery.soc" = { min = 0.7, max = 0.9 }
"north.battery.voltage_v" = { residual = 5.0, after_s = 0.5 }
"""


@pytest.mark.slow
def test_run_exits_1_when_a_check_fails_and_report_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "ci.toml"
    scenario.write_text(SCENARIO.read_text() + CHECKS)
    out = tmp_path / "ci.h5"
    argv = ["run", str(scenario), "--out", str(out), "--quiet", "--set", "run.duration_s=2"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "checks: 4 of 4 passed" in said
    assert "|north.battery.voltage_v - twin| <= 5 V from 0.5 s" in said
    # a limit the training rack breaks: exit status 1, the table says where and when
    result = tmp_path / "result.json"
    assert main([*argv, "--set", "checks.north.rack.p_w.max=30000", "--json",
                 str(result)]) == 1
    said = capsys.readouterr().out
    with open_run(out) as run:
        p = run.signal("north", "rack", "p_w")
        (outcome,) = [o for o in evaluate(run, run.scenario().checks)
                      if o.check.key == "north.rack.p_w"]
        fig = figures(run)
    broken = int(np.sum(p[np.isfinite(p)] > 30000))
    assert broken > 0 and outcome.failed == broken and outcome.worst == np.nanmax(p)
    # the same verdicts and figures, machine-readable (CI)
    doc = json.loads(result.read_text())
    assert doc["status"] == 1 and doc["passed"] is False and doc["recording"] == str(out)
    rack = next(c for c in doc["checks"] if c["key"] == "north.rack.p_w")
    assert rack["passed"] is False and rack["failed"] == broken and rack["limit"] == 30000
    assert rack["worst"] == pytest.approx(outcome.worst) and rack["unit"] == "W"
    assert sum(c["passed"] for c in doc["checks"]) == 3 and len(doc["checks"]) == 4
    assert doc["ticks"] == fig.ticks
    assert doc["nodes"]["north"]["rack_kwh"] == pytest.approx(fig.nodes["north"].rack_kwh)
    assert doc["nodes"]["south"]["pv_kwh"] is None  # no PV there: NaN is null
    assert f"FAIL ({broken} of {outcome.judged} ticks)" in said
    assert "checks: 3 of 4 passed" in said
    # report re-judges the recorded scenario's checks
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    summary = (tmp_path / "rep" / "summary.txt").read_text()
    assert "north.rack.p_w <= 30000 W" in summary and "checks: 3 of 4 passed" in summary
    # the same scenario in the twin alone: the residual has nothing to compare, and says so
    assert main([*argv, "--mode", "twin"]) == 0
    said = capsys.readouterr().out
    assert "n/a (north.battery ran in the twin: no device to compare)" in said
    assert "checks: 3 of 3 passed, 1 not applicable" in said


def test_a_check_on_a_signal_the_run_will_not_record_stops_it_before_it_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "ci.toml"
    scenario.write_text(SCENARIO.read_text() + CHECKS.replace("rack.p_w", "rack.pw"))
    out = tmp_path / "ci.h5"
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"gridloop: error: {scenario}:71: checks.north.rack.pw: no such signal "
                   "(did you mean 'north.rack.p_w'?)")
    assert not out.exists()


def test_a_tolerance_on_a_signal_the_asset_does_not_record_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tolerance bands a residual: on a misspelt signal it would band nothing."""
    lines = SCENARIO.read_text().splitlines()
    line = lines.index("[nodes.north.battery]") + 2
    lines.insert(line - 1, "tolerance = { voltge_v = 0.3 }")
    scenario = tmp_path / "ci.toml"
    scenario.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ci.h5"
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"gridloop: error: {scenario}:{line}: nodes.north.battery.tolerance."
                   "voltge_v: no such signal (did you mean 'north.battery.voltage_v'?)")
    assert not out.exists()
