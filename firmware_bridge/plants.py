"""Plants backed by the twin: what emulated devices read is a twin model's output.

An emulator's plant is a :class:`twin.microgrid.Microgrid` of one node, built with the
emulator's own parameter set (which may differ from the bench twin's, so residuals and
calibration mean something in CI exactly as with a physical kit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from firmware_bridge.errors import ConfigError
from firmware_bridge.plant import Plant
from twin.microgrid import Microgrid


class TwinPlant(Plant):
    """The assets of ``microgrid`` as a :class:`~firmware_bridge.plant.Plant`."""

    def __init__(self, microgrid: Microgrid) -> None:
        self.mg = microgrid
        self._signals: dict[str, list[tuple[str, int]]] = {}
        for i, (_, asset, sig, _) in enumerate(microgrid.outputs):
            self._signals.setdefault(asset, []).append((sig, i))
        self._setpoints: dict[str, dict[str, int]] = {}
        for j, (_, asset, sp, _) in enumerate(microgrid.setpoints):
            self._setpoints.setdefault(asset, {})[sp] = j
        if len({n for n, *_ in microgrid.outputs}) > 1:
            raise ConfigError("a TwinPlant runs the assets of one node")

    @property
    def t(self) -> float:  # type: ignore[override]
        return self.mg.t

    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(self._signals)

    def read(self, asset: str) -> dict[str, float]:
        y = self.mg.y
        try:
            return {sig: float(y[i]) for sig, i in self._signals[asset]}
        except KeyError:
            raise ConfigError(f"plant has no asset '{asset}'") from None

    def write(self, asset: str, setpoints: Mapping[str, float]) -> None:
        known = self._setpoints.get(asset, {})
        for name, value in setpoints.items():
            j = known.get(name)
            if j is None:
                raise ConfigError(f"{asset}: no setpoint '{name}' "
                                  f"(has {', '.join(known) or 'none'})")
            v = float(value)
            self.mg.u[j] = v if math.isfinite(v) else math.nan

    def advance(self, dt: float) -> None:
        self.mg.advance(dt)

    def prepare(self, dt: float) -> None:
        """Precompute what depends on ``dt`` alone (see :meth:`Microgrid.prepare`)."""
        self.mg.prepare(dt)
