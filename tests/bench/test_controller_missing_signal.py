"""A controller that asks for a signal, asset or forecast the run does not have has failed at
that tick: the run stops with ``controller 'NAME' failed at t = ...``, as for any other exception of
the step, and keeps the did-you-mean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.build import build_plan
from bench.cli import main
from bench.engine import run_plan
from bench.errors import ControllerError
from bench.recording import open_run
from bench.scenario import load

SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"
HERE = "tests.bench.test_controller_missing_signal"


class Asks:
    """Asks for ``what`` (a lookup of ``obs``) from the tick at ``after_s`` on."""

    def __init__(self, context: object, what: str = "value", after_s: float = 0.5) -> None:
        self.what, self.after_s = what, after_s

    def step(self, obs: Any) -> dict[str, float]:
        if obs.t > self.after_s:
            if self.what == "value":
                obs["north.rack.p_ww"]
            elif self.what == "twin":
                obs.twin("north.rack.p_ww")
            elif self.what == "quality":
                obs.quality("north", "batery")
            elif self.what == "forecast":
                obs.forecast("north.rack.p_ww", 1.0)
        return {}


class OrdersAsk:
    """Steps quietly; its market orders ask for a signal the run does not have."""

    def __init__(self, context: object) -> None:
        pass

    def step(self, obs: Any) -> dict[str, float]:
        return {}

    def orders(self, obs: Any, interval: int) -> list:
        return [("north", "buy", int(obs["north.meter.p_ww"]), 300)]


def _stop(tmp_path: Path, overrides: list[str]) -> tuple[str, list[tuple[float, str, str]]]:
    """The run's error line and its recording's events."""
    s = load(SCENARIO, ["run.mode=twin", *overrides])
    out = tmp_path / "r.h5"
    with pytest.raises(ControllerError) as exc:
        run_plan(build_plan(s, ledger=str(tmp_path / "r.ledger.db")), out, progress=False)
    with open_run(out) as run:
        return str(exc.value), run.events()


@pytest.mark.parametrize(("what", "message"), [
    ("value", "no signal 'north.rack.p_ww' (did you mean 'north.rack.p_w'?)"),
    ("twin", "no signal 'north.rack.p_ww' (did you mean 'north.rack.p_w'?)"),
    ("quality", "no asset 'north.batery' (did you mean 'north.battery'?)"),
    ("forecast", "no twin signal 'north.rack.p_ww' to forecast"),
])
def test_a_missing_signal_stops_the_run_at_its_tick(what: str, message: str,
                                                     tmp_path: Path) -> None:
    line, events = _stop(tmp_path, [f"controller.name={HERE}:Asks",
                                    f"controller.options={{ what = '{what}' }}",
                                    "market.kind=none"])
    assert line.startswith(f"controller '{HERE}:Asks' failed at t = 0.550 s: "), line
    assert message in line, line
    assert [m for _, k, m in events if k == "run_stopped"] == [line]


def test_a_missing_signal_in_orders_names_orders_and_the_tick(tmp_path: Path) -> None:
    line, _ = _stop(tmp_path, [f"controller.name={HERE}:OrdersAsk", "controller.options={}"])
    asked = OrdersAsk.orders.__code__.co_firstlineno + 1  # the line that asked
    assert line == (f"controller '{HERE}:OrdersAsk' failed in orders at t = 0.000 s: "
                    "no signal 'north.meter.p_ww' "
                    f"(did you mean 'north.meter.p_w'?) (at {__file__}:{asked} in orders)")


def test_the_command_line_says_when_the_controller_failed(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(SCENARIO), "--mode", "twin", "--quiet",
                 "--out", str(tmp_path / "r.h5"), "--set", "market.kind=none",
                 "--set", f'controller.name="{HERE}:Asks"', "--set", "controller.options={}"]) == 2
    asked = Asks.step.__code__.co_firstlineno + 3  # the line that asked
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"gridloop: error: controller '{HERE}:Asks' failed at t = 0.550 s: no signal "
        "'north.rack.p_ww' "
        f"(did you mean 'north.rack.p_w'?) (at {__file__}:{asked} in step)")
