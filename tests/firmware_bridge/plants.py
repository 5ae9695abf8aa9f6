"""A small deterministic plant for device tests: a battery whose power follows its setpoint.

Signals move in ways a test can predict, so a reading can be checked against the plant
exactly (to the resolution of the register encoding).
"""

from __future__ import annotations

from collections.abc import Mapping

from firmware_bridge.plant import Plant


class LagBattery(Plant):
    """One asset, ``battery``: ``p_w`` reaches ``p_set_w`` with a first-order lag."""

    def __init__(self, capacity_wh: float = 100_000.0, soc: float = 0.5,
                 tau_s: float = 0.5) -> None:
        self.t = 0.0
        self.capacity_wh = capacity_wh
        self.tau_s = tau_s
        self.state = {"p_w": 0.0, "soc": soc, "voltage_v": 800.0, "current_a": 0.0,
                      "temp_cell_c": 25.0, "connected": 1.0, "p_set_w": 0.0}

    @property
    def assets(self) -> tuple[str, ...]:
        return ("battery",)

    def read(self, asset: str) -> dict[str, float]:
        s = self.state
        return {"p_w": s["p_w"], "soc": s["soc"], "voltage_v": s["voltage_v"],
                "current_a": s["current_a"], "temp_cell_c": s["temp_cell_c"],
                "connected": s["connected"], "capacity_wh": self.capacity_wh}

    def write(self, asset: str, setpoints: Mapping[str, float]) -> None:
        if "p_set_w" in setpoints:
            self.state["p_set_w"] = float(setpoints["p_set_w"])
        if "connect" in setpoints:
            self.state["connected"] = 1.0 if setpoints["connect"] else 0.0

    def advance(self, dt: float) -> None:
        import math

        s = self.state
        target = s["p_set_w"] if s["connected"] else 0.0
        a = math.exp(-dt / self.tau_s)
        s["p_w"] = a * s["p_w"] + (1 - a) * target
        s["soc"] = min(1.0, max(0.0, s["soc"] - s["p_w"] * dt / 3600.0 / self.capacity_wh))
        s["current_a"] = s["p_w"] / s["voltage_v"]
        self.t += dt
