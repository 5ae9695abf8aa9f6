"""Fault cards: what an emulated device does wrong, set in the scenario or at run time.

A :class:`FaultCard` is one device's faults, with when and how often they strike.  It is the
one card of every emulator: the Modbus emulator (TCP and RTU) and the serial MCU emulator
take the same card, and :meth:`FaultCard.from_mapping` reads it from a scenario table.  The
emulator asks its :class:`FaultInjector` for every frame it answers which faults apply
(:meth:`FaultInjector.draw`), injects them, and each injected fault is reported through
``on_event(kind, message)`` so the bench records it in ``/events``.

What the client sees, fault by fault:

=================  ====================================================================
``delay_s``        the answer comes ``delay_s`` late (a timeout if that is the client's
                   deadline or more; on the device clock in a bench run that is not real
                   time, see :class:`LockstepFaults`); a write reaches the plant as it
                   arrives, a read samples the plant when its answer goes out
``timeout``        no answer: :class:`~firmware_bridge.errors.DeviceTimeout`
``exception_code`` an exception answer with that code:
                   :class:`~firmware_bridge.errors.ExceptionResponse`; on Modbus the
                   exception response, on the serial line an ERROR reply (codes 1-7 of
                   :class:`~firmware_bridge.serialproto.messages.ErrorCode` only)
``frozen``         answers carry the values as they were when the fault began; Modbus
                   readings are flagged STALE when the client watches for it
                   (``stale_after_s``); serial telemetry freezes too
``corrupt_crc``    the frame's CRC is wrong: :class:`~firmware_bridge.errors.FrameError`;
                   RTU and serial only (TCP has no CRC); serial telemetry is corrupted too
``drop_writes``    writes are acknowledged but never reach the plant
``disconnect_s``   the device reboots once and stays down ``disconnect_s`` on the device
                   clock (like the schedule): on TCP it hangs up every connection, the
                   open ones and each new one at its first request
                   (:class:`~firmware_bridge.errors.DeviceDisconnected`),
                   on RTU it is silent for as long (DeviceTimeout, as on a real RS-485 line),
                   a serial board unplugs its port for as long (DeviceDisconnected, a USB
                   board re-enumerating) and comes back with a new boot id; then it
                   answers again
=================  ====================================================================

When several faults of a card strike one transaction: a reboot wins, then ``timeout``, then
``exception_code``; ``delay_s`` delays whatever answer there is.  A frame the device sends
unasked (serial telemetry) is struck by ``frozen`` and ``corrupt_crc`` only.  The card
strikes while the device clock is in ``[start_s, stop_s)`` and, there, each frame with
``probability``, drawn from a generator seeded with ``seed`` (reproducible runs).  The
device clock is the plant's time: in a bench run the bench's simulated clock, so the
schedule and a reboot's downtime are the same in every run, however fast the machine.
Every field is checked for its type when the card is made (``timeout = "false"`` is
refused, not taken as true).

Event kinds, everywhere in firmware_bridge (``on_event(kind, message)``; the message starts
with the device's name):

======================  ================================================================
``fault.set``           a fault card was set or cleared (at start too, for a scenario card)
``fault.delay``         an answer is delayed
``fault.timeout``       a request gets no answer
``fault.exception``     a request gets an exception answer
``fault.frozen``        an answer (or telemetry) carries frozen values
``fault.corrupt_crc``   a frame goes out with a bad CRC
``fault.drop_writes``   a write is acknowledged, not applied
``fault.disconnect``    the device reboots (drops its connections, or unplugs its port)
``fault.reconnect``     the device is back after that reboot (at the device time it is
                        back, or at its first request after that)
``emulator.reboot``     a serial board was rebooted by hand
                        (:meth:`~firmware_bridge.emulators.serial_server.SerialEmulator.reboot`)
``emulator.error``      an emulator cannot serve (a value its map cannot encode)
``emulator.unit``       a Modbus emulator got a request for a unit id it is not (once per
                        unit id): no answer on RTU, exception 0x0B on TCP
``device.disconnect``   a client back-end lost its port (serial)
``device.reconnect``    a client back-end reopened it and the device answers again
``device.reboot``       a client back-end saw the device reboot (a new boot id)
======================  ================================================================
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from firmware_bridge.errors import ConfigError

#: Modbus exception codes a device may answer (pymodbus's ExcCodes)
EXCEPTION_CODES = frozenset({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x0A, 0x0B})

#: called with (kind, message) for every event; the kinds are listed above
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
        Answer with this exception code (Modbus: 1-8, 10, 11; serial: 1-7).
    frozen : bool
        Stop refreshing values from the plant (stale values).
    corrupt_crc : bool
        Send frames with a wrong CRC (RTU and serial).
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
        # every field is checked for its type: a scenario's ``timeout = "false"`` is text,
        # which Python would take as true, and ``start_s = "1"`` would fail every request
        def refuse(name: str, what: str) -> ConfigError:
            return ConfigError(f"fault card: {name} must be {what}, got "
                               f"{getattr(self, name)!r}")

        for name in ("timeout", "frozen", "corrupt_crc", "drop_writes"):
            if not isinstance(getattr(self, name), bool):
                raise refuse(name, "true or false")
        for name in ("delay_s", "disconnect_s"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise refuse(name, "a number >= 0")
        for name in ("start_s", "stop_s"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and not math.isnan(value)):
                raise refuse(name, "a number of seconds on the device clock")
        if not _is_whole(self.seed):
            raise refuse("seed", "a whole number")
        if self.exception_code is not None and not _is_whole(self.exception_code):
            raise refuse("exception_code", "a whole number (a Modbus exception code)")
        if self.exception_code is not None and self.exception_code not in EXCEPTION_CODES:
            raise ConfigError(f"fault card: exception_code {self.exception_code!r} is not a "
                              f"Modbus exception code (one of "
                              f"{', '.join(str(c) for c in sorted(EXCEPTION_CODES))})")
        if not (_is_number(self.probability) and 0 <= self.probability <= 1):
            raise refuse("probability", "in [0, 1]")
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
                from twin.params import did_you_mean

                raise ConfigError(f"{where}: unknown fault '{key}'"
                                  f"{did_you_mean(str(key), known)}; known: "
                                  f"{', '.join(known)}")
        try:
            return cls(**data)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def describe(self) -> str:
        """The fields that differ from a blank card, e.g. ``timeout=True, probability=0.5``."""
        active = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                  if getattr(self, f.name) != f.default]
        return ", ".join(active) or "no faults"

    def scheduled(self, t: float) -> bool:
        """Whether device time ``t`` [s] is inside the card's schedule."""
        return ((self.start_s is None or t >= self.start_s)
                and (self.stop_s is None or t < self.stop_s))


def _is_number(value: object) -> bool:
    """A real number, not a boolean (``True`` is an ``int`` to Python, not to a card)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Injection:
    """The faults that strike one frame."""

    delay_s: float = 0.0
    reboot_s: float = 0.0
    timeout: bool = False
    exception_code: int | None = None
    frozen: bool = False
    corrupt_crc: bool = False
    drop_write: bool = False


NO_FAULT = Injection()


class FaultInjector:
    """Decides, frame by frame, which faults of the card in force strike, and reports them.

    Parameters
    ----------
    card : FaultCard or None
        The card at start (None: no faults); :meth:`set_card` replaces it.
    device : str
        Name used in event messages (``node/asset``).
    clock : callable
        The device clock the schedule refers to (the plant's time). [s]
    on_event : callable or None
        ``on_event(kind, message)`` for every injected fault and every card change.
    """

    def __init__(self, card: FaultCard | None, device: str, clock: Callable[[], float],
                 on_event: EventSink | None = None) -> None:
        self.device = device
        self.clock = clock
        self.on_event = on_event
        self.card: FaultCard | None = None
        self._rng = random.Random(0)
        self._rebooted = False
        #: a reboot in progress: device time it ends, and how long it lasts [s]
        self._down_until: float | None = None
        self._down_s = 0.0
        #: a reboot that ended and whose ``fault.reconnect`` is still to be reported
        self._back_unreported: float | None = None
        self.set_card(card)

    def set_card(self, card: FaultCard | None) -> None:
        """Replace the card (None clears it); a new card draws afresh and may reboot again."""
        had_card = self.card is not None
        self.card = card
        self._rng = random.Random(card.seed if card is not None else 0)
        self._rebooted = False
        if card is not None or had_card:
            self.report("set", card.describe() if card is not None else "cleared")

    def draw(self, what: str, *, reads: bool = False, writes: bool = False,
             reply: bool = True) -> Injection:
        """The faults for one frame.

        Parameters
        ----------
        what : str
            The request, for event messages (``FC3 40000+10``, ``READ seq 7``).
        reads, writes : bool
            Whether it reads values (``frozen`` applies) or writes them (``drop_writes``).
        reply : bool
            False for a frame the device sends unasked (telemetry): only ``frozen`` and
            ``corrupt_crc`` reach it.
        """
        card = self.card
        if card is None or not card.scheduled(self.clock()):
            return NO_FAULT
        if card.probability < 1 and self._rng.random() >= card.probability:
            return NO_FAULT
        reboot_s = 0.0
        if reply and card.disconnect_s and not self._rebooted:
            self._rebooted = True
            reboot_s = card.disconnect_s
            self._down_until = self.clock() + reboot_s
            self._down_s = reboot_s
            self.report("disconnect", f"reboots on {what}, down for {reboot_s:g} s")
        timeout = reply and card.timeout and not reboot_s
        exception = (card.exception_code if reply and card.exception_code is not None
                     and not (timeout or reboot_s) else None)
        answered = not (reboot_s or timeout or exception is not None)
        delay_s = card.delay_s if reply and not (reboot_s or timeout) else 0.0
        frozen = card.frozen and reads and answered
        corrupt = card.corrupt_crc and answered
        drop = card.drop_writes and writes and answered
        target = f"the answer to {what}" if reply else what
        if delay_s:
            self.report("delay", f"{target} delayed {delay_s:g} s")
        if timeout:
            self.report("timeout", f"no answer to {what}")
        if exception is not None:
            self.report("exception", f"exception {exception:#04x} to {what}")
        if frozen:
            self.report("frozen", f"stale values in {target}")
        if corrupt:
            self.report("corrupt_crc", f"bad CRC on {target}")
        if drop:
            self.report("drop_writes", f"{what} acknowledged, not applied")
        return Injection(delay_s, reboot_s, timeout, exception, frozen, corrupt, drop)

    # -- a reboot's downtime, on the device clock ---------------------------------------------

    def down(self) -> bool:
        """Whether the device is down after a ``disconnect_s`` reboot: from the request that
        struck until ``disconnect_s`` later on the device clock (the plant's time, so a run
        on the bench's clock has the same outage every time, whatever the wall clock did)."""
        return self._down_until is not None and self.clock() < self._down_until

    def back(self) -> bool:
        """True once, when the downtime of a reboot has passed on the device clock: the
        emulator serves again from now on.  Its ``fault.reconnect`` is reported by
        :meth:`flush`, at the emulator's next request or clock step (when the bench's
        clock reads the time the device came back)."""
        if self._down_until is None or self.clock() < self._down_until:
            return False
        self._down_until = None
        self._back_unreported = self._down_s
        return True

    def flush(self) -> None:
        """Report a return from a reboot that :meth:`back` found."""
        if self._back_unreported is not None:
            down_s, self._back_unreported = self._back_unreported, None
            self.report("reconnect", f"back after {down_s:g} s")

    def report(self, kind: str, message: str) -> None:
        """Send event ``fault.<kind>`` about this device."""
        if self.on_event is not None:
            self.on_event(f"fault.{kind}", f"{self.device}: {message}")


class LockstepFaults:
    """A client's copy of the fault card its emulated device runs, for a run on the bench's
    clock (a bench run that is not real time).

    There the deadline of a request is judged on the device's clock, which stands still while
    the bench waits: an answer the card withholds (``timeout``), or delays by the deadline or
    more, is a timeout; any other answer is on time, however long a loaded machine takes to
    deliver it.  The client cannot see what the emulator drew, but it can draw the same: the
    same card, the same seed, the same clock (the bench's) and the same requests in the same
    order give the same draws (the emulators draw as each request arrives; a serial board
    streaming telemetry would draw for its frames too, on the wall clock: the bench's boards
    stream none).  :meth:`unanswered` is called for every request the client sends, and says
    whether to wait for its answer (up to the back-end's own time-out) or only
    ``deadline_s``: no answer can come in time, so how long the wall clock runs changes
    nothing but the cost.

    Parameters
    ----------
    card : FaultCard
        The card the emulator runs.
    deadline_s : float
        The client's deadline. [s]
    clock : callable
        The device clock (the bench's simulated time). [s]
    backend : str
        The client's back-end: a ``modbus_rtu`` device is silent while it reboots (a TCP
        device hangs up, a serial board unplugs its port: an answer of sorts, at once).
    """

    def __init__(self, card: FaultCard, deadline_s: float, clock: Callable[[], float],
                 backend: str) -> None:
        self.card = card
        self.deadline_s = float(deadline_s)
        self.silent_reboot = backend == "modbus_rtu"
        self._draws = FaultInjector(card, "", clock)
        #: the last request drawn gets no answer at all (dropped, or the device rebooting),
        #: not a late one: nothing can arrive after its deadline
        self.never_answered = False

    def unanswered(self) -> bool:
        """Draw the next request as the emulator will; True when it gets no answer within
        the deadline on the device clock (:attr:`never_answered`: nor after it)."""
        draws = self._draws
        draws.back()
        self.never_answered = False
        if draws.down():  # the emulator draws nothing while it is down
            self.never_answered = self.silent_reboot
            return self.silent_reboot
        hit = draws.draw("")
        if hit.reboot_s:
            self.never_answered = self.silent_reboot
            return self.silent_reboot
        self.never_answered = hit.timeout
        return hit.timeout or hit.delay_s >= self.deadline_s
