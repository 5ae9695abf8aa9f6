"""When a back-end may next try to reach a device it lost: an exponential back-off.

Both wire back-ends (Modbus and serial) reconnect on a later call rather than in a loop of
their own, and refuse at once inside the back-off, so one dead device never holds up the
others and a flapping one is not hammered.

The waits run on the wall clock (``time.monotonic``) unless :attr:`Backoff.clock` says
otherwise: a bench run that is not real time sets it to its simulated clock, so when an
emulated device is tried again depends on the run alone, not on how fast the machine is.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from firmware_bridge.errors import ConfigError, DeviceDisconnected


class Backoff:
    """Waits of ``first_s``, doubling after each failure up to ``max_s``; a success resets.

    Parameters
    ----------
    first_s : float
        Wait after the first failure. [s]
    max_s : float
        Longest wait. [s]
    where : str
        The device, for the error on bad settings.
    clock : callable
        The clock the waits are measured on. [s]
    """

    def __init__(self, first_s: float, max_s: float, where: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < first_s <= max_s:
            raise ConfigError(f"{where}: need 0 < backoff_s <= backoff_max_s, got "
                              f"{first_s} and {max_s}")
        self.first_s = float(first_s)
        self.max_s = float(max_s)
        #: the clock of the waits; may be replaced (before the next failure) [s]
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget the failures: the next attempt may come at once."""
        self._wait_s = self.first_s
        self._next_at = 0.0

    def check(self, lost: str) -> None:
        """Raise DeviceDisconnected (``lost``, and when to come back) inside the back-off."""
        wait_s = self._next_at - self.clock()
        if wait_s > 0:
            raise DeviceDisconnected(f"{lost}; next attempt in {wait_s:.3f} s")

    def failed(self) -> None:
        """An attempt failed (or the link was lost): wait, then wait twice as long."""
        self._next_at = self.clock() + self._wait_s
        self._wait_s = min(2 * self._wait_s, self.max_s)
