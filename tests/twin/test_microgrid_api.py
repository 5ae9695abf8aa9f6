"""The microgrid's Python API at its edges: what a researcher gets wrong is one clear
TwinError naming it (a misspelt initial condition silently started from the parameter
file's state; forecast arguments gave numpy's errors), and lookups by name stay cheap at
1,000 nodes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.bench_twin import node_specs
from twin.errors import TwinError
from twin.microgrid import AssetSpec, Microgrid


def _with_battery_initial(initial: dict) -> list[AssetSpec]:
    return [replace(s, initial=initial) if s.kind == "battery" else s for s in node_specs(1)]


@pytest.mark.parametrize("initial, message", [
    ({"SOC": 0.1}, "n0.battery.initial: unknown initial condition 'SOC'; one of soc, "),
    ({"soc": "0.1"}, "n0.battery.initial.soc: must be a number, not '0.1'"),
    ({"soc": True}, "n0.battery.initial.soc: must be a number, not True"),
    ({"soc": 1.5}, "n0.battery.initial.soc: must be in [0, 1]"),
])
def test_an_initial_condition_it_cannot_take_is_named(initial: dict, message: str) -> None:
    with pytest.raises(TwinError) as caught:
        Microgrid(_with_battery_initial(initial))
    assert str(caught.value).startswith(message), caught.value


def test_a_good_initial_condition_is_taken() -> None:
    mg = Microgrid(_with_battery_initial({"soc": 0.1}))
    assert mg.y[mg.index("n0", "battery", "soc")] == pytest.approx(0.1)


def test_no_assets_and_a_node_without_bus_parameters_say_what_to_give() -> None:
    with pytest.raises(TwinError, match=r"^microgrid: no assets given"):
        Microgrid([])
    specs = [s for s in node_specs(1) if s.kind != "grid"]
    with pytest.raises(TwinError, match=r"^node n0: no bus parameters \(give it a grid asset "
                                        r"with params, or the microgrid a bus_default\)$"):
        Microgrid(specs)
    grid = next(s for s in node_specs(1) if s.kind == "grid")
    mg = Microgrid(specs, bus_default=grid.params)  # the documented way
    assert mg.index("n0", "grid", "p_w") >= 0


def test_forecast_arguments_are_checked_by_name() -> None:
    mg = Microgrid(node_specs(1))
    n = len(mg.outputs)
    for index in (-1, n, 2.0, True):
        with pytest.raises(TwinError, match=rf"^forecast: index {index!r} is not an output "
                                            rf"\(0 to {n - 1}; "):
            mg.forecast(index, 3, 0.01)
    for steps in (-1, 2.5):
        with pytest.raises(TwinError, match=rf"^forecast: steps must be a whole number >= 0, "
                                            rf"not {steps}$"):
            mg.forecast(0, steps, 0.01)
    soc = mg.index("n0", "battery", "soc")
    assert len(mg.forecast(soc, 0, 0.01)) == 0 and len(mg.forecast(soc, 2, 0.01)) == 2


def test_index_finds_every_output_and_names_an_unknown_one() -> None:
    mg = Microgrid(node_specs(3))
    for i, (node, asset, signal, _) in enumerate(mg.outputs):
        assert mg.index(node, asset, signal) == i
    with pytest.raises(TwinError, match=r"^no twin signal n0\.battery\.SOC$"):
        mg.index("n0", "battery", "SOC")
