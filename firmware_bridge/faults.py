"""Fault cards: what an emulated device does wrong, set in the scenario or at run time.

A :class:`FaultCard` is one device's faults, with when and how often they strike.  The
emulator asks a :class:`FaultInjector` for every transaction it serves which faults apply
(:meth:`FaultInjector.draw`), injects them, and each injected fault is reported through
``on_event(kind, message)`` so the bench records it in ``/events``.

What the client sees, fault by fault:

=================  ====================================================================
``delay_s``        the answer comes ``delay_s`` late (a timeout if later than the deadline)
``timeout``        no answer: :class:`~firmware_bridge.errors.DeviceTimeout`
``exception_code`` a Modbus exception response with that code:
                   :class:`~firmware_bridge.errors.ExceptionResponse`
``frozen``         answers carry the registers as they were when the fault began; readings
                   are flagged STALE when the client watches for it (``stale_after_s``)
``corrupt_crc``    RTU only: the answer's CRC is wrong: :class:`~firmware_bridge.errors.FrameError`
``drop_writes``    writes are acknowledged but never reach the plant
``disconnect_s``   the device reboots once: on TCP it closes every connection and refuses
                   new ones for ``disconnect_s`` (:class:`~firmware_bridge.errors.DeviceDisconnected`),
                   on RTU it is silent for as long (DeviceTimeout, as on a real RS-485 line);
                   then it answers again
=================  ====================================================================

When several faults of a card strike one transaction: a reboot wins, then ``timeout``, then
``exception_code``; ``delay_s`` delays whatever answer there is.  The card strikes while the
device clock is in ``[start_s, stop_s)`` and, there, each transaction with ``probability``,
drawn from a generator seeded with ``seed`` (reproducible runs).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from firmware_bridge.errors import ConfigError

#: Modbus exception codes a device may answer (pymodbus's ExcCodes)
EXCEPTION_CODES = frozenset({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x0A, 0x0B})

#: called with (kind, message) for every injected fault; kind is ``fault.<name>``
EventSink = Callable[[str, str], None]


@dataclass(frozen=True)
class FaultCard:
    """Faults of one device.

    Parameters
    ----------
    delay_s : float
        Extra delay before every answer. [s]
    timeout : bool
        Answer nothing.
    exception_code : int or None
        Answer with this Modbus exception code (1-8, 10, 11).
    frozen : bool
        Stop refreshing registers from the plant (stale values).
    corrupt_crc : bool
        Send RTU answers with a wrong CRC.
    drop_writes : bool
        Acknowledge writes without applying them.
    disconnect_s : float
        Reboot once, staying down this long (0: no reboot). [s]
    probability : float
        Chance that a transaction inside the schedule is struck (0..1).
    start_s, stop_s : float or None
        Schedule on the device clock (the plant's time); None: unbounded. [s]
    seed : int
        Seed of the random draws.
    """

    delay_s: float = 0.0
    timeout: bool = False
    exception_code: int | None = None
    frozen: bool = False
    corrupt_crc: bool = False
    drop_writes: bool = False
    disconnect_s: float = 0.0
    probability: float = 1.0
    start_s: float | None = None
    stop_s: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("delay_s", "disconnect_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"fault card: {name} must be a number >= 0, got {value!r}")
        if self.exception_code is not None and self.exception_code not in EXCEPTION_CODES:
            raise ConfigError(f"fault card: exception_code {self.exception_code!r} is not a "
                              f"Modbus exception code (one of "
                              f"{', '.join(str(c) for c in sorted(EXCEPTION_CODES))})")
        if not (isinstance(self.probability, (int, float)) and 0 <= self.probability <= 1):
            raise ConfigError(f"fault card: probability must be in [0, 1], got "
                              f"{self.probability!r}")
        if (self.start_s is not None and self.stop_s is not None
                and self.stop_s <= self.start_s):
            raise ConfigError(f"fault card: stop_s ({self.stop_s}) must be after start_s "
                              f"({self.start_s})")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], where: str = "fault") -> FaultCard:
        """A card from a scenario table; unknown keys are refused with a suggestion."""
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                from difflib import get_close_matches

                close = get_close_matches(str(key), known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"{where}: unknown fault '{key}'{hint}; known: "
                                  f"{', '.join(known)}")
        try:
            return cls(**data)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def scheduled(self, t: float) -> bool:
        """Whether device time ``t`` [s] is inside the card's schedule."""
        return ((self.start_s is None or t >= self.start_s)
                and (self.stop_s is None or t < self.stop_s))


@dataclass(frozen=True, slots=True)
class Injection:
    """The faults that strike one transaction."""

    delay_s: float = 0.0
    reboot_s: float = 0.0
    timeout: bool = False
    exception_code: int | None = None
    frozen: bool = False
    corrupt_crc: bool = False
    drop_write: bool = False


NO_FAULT = Injection()


class FaultInjector:
    """Decides, transaction by transaction, which faults of ``card`` strike, and reports them.

    Parameters
    ----------
    card : FaultCard
    device : str
        Name used in event messages (``node/asset``).
    clock : callable
        The device clock the schedule refers to (the plant's time). [s]
    on_event : callable or None
        ``on_event(kind, message)`` for every injected fault.
    """

    def __init__(self, card: FaultCard, device: str, clock: Callable[[], float],
                 on_event: EventSink | None = None) -> None:
        self.card = card
        self.device = device
        self.clock = clock
        self.on_event = on_event
        self._rng = random.Random(card.seed)
        self._rebooted = False

    def draw(self, function_code: int, address: int, count: int, write: bool) -> Injection:
        """The faults for one request (function code, first register, register count)."""
        card = self.card
        if not card.scheduled(self.clock()):
            return NO_FAULT
        if card.probability < 1 and self._rng.random() >= card.probability:
            return NO_FAULT
        what = f"FC{function_code} {address}+{count}"
        reboot_s = 0.0
        if card.disconnect_s and not self._rebooted:
            self._rebooted = True
            reboot_s = card.disconnect_s
            self._report("disconnect", f"reboots on {what}, down for {reboot_s:g} s")
        timeout = card.timeout and not reboot_s
        exception = (card.exception_code
                     if card.exception_code is not None and not (timeout or reboot_s) else None)
        answered = not (reboot_s or timeout or exception is not None)
        frozen = card.frozen and not write and answered
        corrupt = card.corrupt_crc and answered
        drop = card.drop_writes and write and answered
        if card.delay_s:
            self._report("delay", f"answer to {what} delayed {card.delay_s:g} s")
        if timeout:
            self._report("timeout", f"no answer to {what}")
        if exception is not None:
            self._report("exception", f"exception {exception:#04x} to {what}")
        if frozen:
            self._report("frozen", f"stale registers for {what}")
        if corrupt:
            self._report("corrupt_crc", f"bad CRC on the answer to {what}")
        if drop:
            self._report("drop_writes", f"write {what} acknowledged, not applied")
        return Injection(card.delay_s, reboot_s, timeout, exception, frozen, corrupt, drop)

    def _report(self, kind: str, message: str) -> None:
        if self.on_event is not None:
            self.on_event(f"fault.{kind}", f"{self.device}: {message}")
