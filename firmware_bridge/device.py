"""The ``Device`` contract every back-end implements, and the reading it returns.

A device is one asset on a wire (an inverter, a battery BMS, a meter, a GPU rack, an MCU).
It reads named signals in SI units (``p_ac_w``, ``soc``, ``temp_c``...) and writes named
setpoints; the back-end owns the transport and the register map that turns names into
registers.  Failures raise the typed errors of :mod:`firmware_bridge.errors`; :func:`poll`
turns them into flagged readings for the bench, which never stops on one device's failure.
"""

from __future__ import annotations

import enum
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

from firmware_bridge.errors import DeviceError, DeviceTimeout


class Quality(enum.IntEnum):
    """Quality of one reading; stored as ``uint8`` in recordings.

    A reading is one of ``OK`` .. ``ERROR`` (the two low bits, :data:`READ_QUALITY`).  A
    recording's per-tick flag adds ``WRITE_FAILED`` to the reading's code on a tick where a
    setpoint write to the device failed: 4 (read ok, write failed), 5 (stale), 6 (timeout),
    7 (error).  ``flag & READ_QUALITY`` is the reading's, ``flag & WRITE_FAILED`` the write's.
    """

    OK = 0
    STALE = 1      # the device answered, but its values did not change when they should have
    TIMEOUT = 2    # no answer within the deadline
    ERROR = 3      # an exception response, a corrupt frame, a dropped connection
    WRITE_FAILED = 4  # a tick's flag only, never a reading's: a setpoint write failed


#: the bits of a per-tick quality flag that hold the reading's :class:`Quality`
READ_QUALITY = 0b011


@dataclass(frozen=True, slots=True)
class Reading:
    """One read of a device.

    ``timestamp_s`` is the wall clock (Unix seconds) when the answer arrived; ``rtt_s`` is the
    round-trip time of the whole read (all transactions it took).  On a failed read
    ``values`` is empty and ``error`` says what went wrong.
    """

    values: Mapping[str, float]
    timestamp_s: float
    quality: Quality = Quality.OK
    rtt_s: float = 0.0
    error: str | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


class Device(ABC):
    """An asset reached through a back-end.  Use as an async context manager::

        async with open_device("modbus_tcp", host="127.0.0.1", port=1502,
                               map="sunspec_inverter") as dev:
            reading = await dev.read()
            await dev.write({"w_max_lim_pct": 50.0})
    """

    #: registry name of the back-end (``modbus_tcp``, ``serial``...)
    backend: str = ""

    def __init__(self, name: str = "") -> None:
        self.name = name or self.backend

    @property
    @abstractmethod
    def signals(self) -> tuple[str, ...]:
        """Names :meth:`read` returns."""

    @property
    def setpoints(self) -> tuple[str, ...]:
        """Names :meth:`write` accepts (none for read-only devices)."""
        return ()

    @abstractmethod
    async def open(self) -> None:
        """Connect the transport; raises :class:`~firmware_bridge.errors.DeviceError`."""

    @abstractmethod
    async def read(self) -> Reading:
        """Read every signal once; raises on timeout, exception response or bad frame."""

    async def write(self, setpoints: Mapping[str, float]) -> None:
        """Write setpoints by name; read-only devices refuse.  NaN releases a setpoint
        :meth:`can_release` says it can release."""
        if setpoints:
            raise DeviceError(f"{self.name}: device is read-only; cannot write "
                              f"{', '.join(setpoints)}")

    def setpoint_range(self, name: str) -> tuple[float, float] | None:
        """The values (SI) the device can hold for setpoint ``name``, so that a caller
        refuses the others before writing; None when it cannot tell (yet)."""
        return None

    def can_release(self, name: str) -> bool:
        """Whether writing NaN to ``name`` hands the setpoint back to the device's own
        control (a SunSpec enable point cleared)."""
        return False

    @abstractmethod
    async def close(self) -> None:
        """Release the transport; safe to call twice."""

    async def __aenter__(self) -> Device:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


async def poll(device: Device) -> Reading:
    """Read ``device`` and turn a failure into a flagged reading instead of an exception."""
    t0 = time.perf_counter()
    try:
        return await device.read()
    except DeviceTimeout as exc:
        return Reading({}, time.time(), Quality.TIMEOUT, time.perf_counter() - t0, str(exc))
    except DeviceError as exc:
        return Reading({}, time.time(), Quality.ERROR, time.perf_counter() - t0, str(exc))
    except (ArithmeticError, ValueError, struct.error) as exc:
        # an answer no decoder expected (a register out of every sane range): this tick's
        # reading is an error, the run goes on
        return Reading({}, time.time(), Quality.ERROR, time.perf_counter() - t0,
                       f"undecodable answer ({type(exc).__name__}: {exc})")
