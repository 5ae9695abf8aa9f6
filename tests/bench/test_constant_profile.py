"""A ``constant`` profile needs its value: without one it was a silent 0 (no PV at all)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.errors import ScenarioError
from bench.profiles import build_profile
from bench.scenario import parse

SCENARIO = """
[run]
name = "sun"
dt_s = 0.5
duration_s = 2
mode = "twin"
[profiles.sun]
kind = "irradiance"
generator = "constant"
{options}
[nodes.lab.pv]
kind = "pv"
profile = "sun"
[nodes.lab.inverter]
kind = "inverter"
source = "pv"
"""


def test_a_constant_profile_without_a_value_is_an_error(tmp_path: Path, capsys) -> None:
    s = parse(SCENARIO.format(options=""), "sun.toml")
    with pytest.raises(ScenarioError, match=r"^sun\.toml:\d+: profiles\.sun: the constant "
                                            r"generator needs its value: "
                                            r"options = \{ value = \.\.\. \}"):
        build_profile(s, "sun")
    path = tmp_path / "sun.toml"
    path.write_text(SCENARIO.format(options=""))
    assert main(["run", str(path), "--out", str(tmp_path / "x.h5"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"gridloop: error: {path}:") and \
        ": profiles.sun: the constant generator needs" in err


def test_a_constant_profile_holds_its_value() -> None:
    s = parse(SCENARIO.format(options="options = { value = 800.0 }"), "sun.toml")
    series = build_profile(s, "sun")
    values = np.asarray(series.values)
    assert values.size and (values == 800.0).all()
