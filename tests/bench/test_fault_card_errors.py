"""A fault card field of the wrong type is bad input: one line naming the file, the line, the
field and the value, exit status 2, before anything runs (never a card that does what it was
not told, or an emulator that fails every request)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "experiments" / "faults" / "scenario.toml"


@pytest.mark.parametrize("card, why", [
    ('{ timeout = "false" }', "timeout must be true or false, got 'false'"),
    ('{ start_s = "1" }', "start_s must be a number of seconds on the device clock, got '1'"),
    ('{ delay_s = "0.1" }', "delay_s must be a number >= 0, got '0.1'"),
    ("{ frozen = 1 }", "frozen must be true or false, got 1"),
    ("{ exception_code = true }", "exception_code must be a whole number (a Modbus exception "
                                  "code), got True"),
    ('{ probability = "0.5" }', "probability must be in [0, 1], got '0.5'"),
    ("{ seed = 2.5 }", "seed must be a whole number, got 2.5"),
])
def test_a_field_of_the_wrong_type_is_one_line_naming_file_line_and_field(
        card: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """In the file: its line; given with ``--set``: the override as typed (the file's
    line of the battery's table was named, a line that does not hold the card)."""
    out = tmp_path / "run.h5"
    lines = SCENARIO.read_text().splitlines()
    at = lines.index("[nodes.dc.battery]") + 1
    lines.insert(at, f"faults = [{card}]")
    in_file = tmp_path / "scenario.toml"
    in_file.write_text("\n".join(lines) + "\n")
    for path, extra, where in (
            (in_file, [], f"{in_file}:{at + 1}"),
            (SCENARIO, ["--set", f"dc.battery.faults=[{card}]"],
             f"--set dc.battery.faults=[{card}]")):
        assert main(["run", str(path), "--out", str(out), "--quiet", "--duration", "0.1",
                     *extra]) == 2
        err = capsys.readouterr().err
        assert err == (f"gridloop: error: {where}: nodes.dc.battery.faults.0: fault card: "
                       f"{why}\n")
        assert not out.exists()
