"""The physics behind emulated devices, as emulators see it.

An emulator never computes physics of its own: it reads a :class:`Plant`, a node's assets
run by twin models with the emulator's own parameter set, and turns the plant's signals into
registers (and register writes into setpoints).  One plant per node, so a node meter sees the
balance of the very assets the other emulators of that node expose.

Clock: inside a bench run the bench calls :meth:`Plant.advance` every tick (deterministic);
standalone (``gridloop emulate``) a task advances plants on the wall clock, ``speed`` times
faster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping


class Plant(ABC):
    """Named assets of one node with signals (read) and setpoints (written)."""

    #: simulated time of the plant, s
    t: float = 0.0

    @property
    @abstractmethod
    def assets(self) -> tuple[str, ...]:
        """Names of the assets this plant runs."""

    @abstractmethod
    def read(self, asset: str) -> dict[str, float]:
        """Current signals of ``asset`` in SI units (see docs/developing.md, Signals)."""

    @abstractmethod
    def write(self, asset: str, setpoints: Mapping[str, float]) -> None:
        """Apply setpoints to ``asset``; they act from the next :meth:`advance` on."""

    @abstractmethod
    def advance(self, dt: float) -> None:
        """Advance the physics by ``dt`` seconds with the setpoints held."""
