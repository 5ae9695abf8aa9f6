"""An error an override causes names the override as the user typed it (``--set KEY=VALUE``,
``--duration 0.03``, ``--seed N``, ``--fix KEY=VALUE``), not a line of the scenario file; an
error in the file names the file's line, with the file as the user named it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import ScenarioError
from bench.scenario import load
from bench.sweep import check_points

TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The two-node scenario as ``two_nodes.toml`` in the current folder."""
    shutil.copy(TWO_NODES, tmp_path / "two_nodes.toml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _error(path: str | Path, overrides: list) -> str:
    with pytest.raises(ScenarioError) as exc:
        load(path, overrides)
    return str(exc.value)


@pytest.mark.parametrize(("item", "message"), [
    # a check of an asset that is not there, set from the command line
    ("checks.nort.battery.soc.max=1", "checks.nort.battery.soc: no asset nort.battery"),
    # a table's own check (both prices), broken by the key set
    ("market.import_price_micro_per_wh=-3", "market: prices must not be negative"),
    # a key under an asset's initial table (in the file on south) and its override table
    ("south.battery.initial.sco=0.5", "nodes.south.battery.initial: unknown initial "
     "condition 'sco'; one of soc, temp_cell_c, temp_jig_c, v_rc1_v, v_rc2_v, hysteresis"),
    ("north.battery.initial.sco=0.5", "nodes.north.battery.initial: unknown initial "
     "condition 'sco'; one of soc, temp_cell_c, temp_jig_c, v_rc1_v, v_rc2_v, hysteresis"),
    ("south.battery.initial.soc=2", "nodes.south.battery.initial.soc: must be in [0, 1]"),
    ("south.battery.initial={sco=1}", "nodes.south.battery.initial: unknown initial "
     "condition 'sco'; one of soc, temp_cell_c, temp_jig_c, v_rc1_v, v_rc2_v, hysteresis"),
])
def test_an_override_error_names_the_override(here: Path, item: str, message: str) -> None:
    assert _error("two_nodes.toml", [item]) == f"--set {item}: {message}"


def test_a_parameter_override_error_names_the_override(here: Path) -> None:
    error = _error("two_nodes.toml", ["north.battery.capacity_ahh=300"])
    assert error.startswith("--set north.battery.capacity_ahh=300: "
                            "nodes.north.battery.override: "), error
    assert error.endswith("params.capacity_ahh: unknown parameter (did you mean "
                          "'capacity_ah'?)"), error


def test_an_option_names_itself_not_a_set_never_typed(here: Path) -> None:
    assert _error("two_nodes.toml", [("--duration 0.07", "run.duration_s=0.07")]) == (
        "--duration 0.07: run.duration_s: must be a whole number of steps of dt_s = 0.05 s: "
        "0.07 s is 1.4 steps; use 0.05 s or 0.1 s")


def test_errors_in_the_file_name_its_line_as_the_user_named_it(here: Path) -> None:
    text = (here / "two_nodes.toml").read_text()
    bad = here / "bad.toml"
    bad.write_text(text.replace("initial = { soc = 0.8 }", "initial = { sco = 0.8 }")
                   .replace("interval_s = 2\n", "interval_s = 2\n"
                            "export_price_micro_per_wh = -50\n"))
    # the file's own bad initial condition, though an override set another key there
    assert _error("bad.toml", ["market.export_price_micro_per_wh=5",
                               "south.battery.initial.soc=0.5"]) == (
        "bad.toml:61: nodes.south.battery.initial: unknown initial condition 'sco'; one of "
        "soc, temp_cell_c, temp_jig_c, v_rc1_v, v_rc2_v, hysteresis")
    # a price the file gets wrong, whatever else of [market] an override sets
    assert _error("bad.toml", ["market.interval_s=4"]) == (
        "bad.toml:18: market: prices must not be negative")
    # the file's wrong price put right by one override, and another made wrong by the next
    assert _error("bad.toml", ["market.export_price_micro_per_wh=5",
                               "market.import_price_micro_per_wh=-1"]) == (
        "--set market.import_price_micro_per_wh=-1: market: prices must not be negative")
    # a file named by a relative path is named so in every error, the build's too
    assert _error(Path("bad.toml"), ["market.export_price_micro_per_wh=5"]).startswith(
        "bad.toml:61: ")


def test_run_options_are_named_as_typed(here: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["run", "two_nodes.toml", "--mode", "twin", "--quiet", "--out", "x.h5"]
    assert main([*common, "--duration", "0.07"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "gridloop: error: --duration 0.07: run.duration_s: must be a whole number of steps "
        "of dt_s = 0.05 s: 0.07 s is 1.4 steps; use 0.05 s or 0.1 s"]
    assert main([*common, "--seed", "-3"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "gridloop: error: --seed -3: run.seed: must be a whole number from 0 to "
        "9223372036854775807 (it is recorded as a 64-bit integer), got -3"]
    assert main([*common, "--set", "checks.nort.battery.soc.max=1"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "gridloop: error: --set checks.nort.battery.soc.max=1: checks.nort.battery.soc: "
        "no asset nort.battery"]
    assert not (here / "x.h5").exists()


def test_sweep_fix_is_named_as_typed(here: Path) -> None:
    with pytest.raises(ScenarioError) as exc:
        check_points(Path("two_nodes.toml"), ["run.seed=1,2"], here / "sweep",
                     extra=["market.import_price_micro_per_wh=-3"])
    assert str(exc.value) == ("--fix market.import_price_micro_per_wh=-3: market: prices "
                              "must not be negative")
