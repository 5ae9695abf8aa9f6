"""What every emulated device offers its host: start, stop, a fault card at run time."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

from firmware_bridge.faults import FaultCard, FaultInjector


class Emulator(ABC):
    """A device served on a real transport; an async context manager (start, then stop)."""

    #: the fault card in force and its draws
    faults: FaultInjector

    @abstractmethod
    async def start(self) -> None:
        """Start serving."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop serving and release the transport; safe to call twice."""

    @abstractmethod
    def set_fault(self, card: FaultCard | None) -> None:
        """Replace the fault card (None clears it); raises ConfigError where the card does
        not apply to this transport."""

    def clock_advanced(self) -> None:
        """The device clock (the plant's time) moved; the host calls it after each step of
        its plants (:meth:`~firmware_bridge.emulators.host.EmulatorHost.advance`).

        A ``disconnect_s`` reboot lasts that long on the device clock; the device comes
        back here, in the step that ends it, so the next request of a run on the bench's
        clock finds it up, whatever the wall clock did meanwhile.  (Without a host, the
        Modbus emulators notice at their next request and the serial board polls its clock.)
        """
        self.faults.flush()
        self.faults.back()  # a Modbus server stays bound while down: it just answers again

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
