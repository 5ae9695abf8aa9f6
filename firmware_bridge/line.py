"""Serial line settings: how they are written in messages, and a port that refuses them.

A serial port may exist and still refuse the settings it is opened with: the operating
system's ``tcsetattr`` fails (``termios.error``, ``EINVAL``), which pyserial passes on as it
is.  Linux refuses parity, and a data size other than 8 bits, on a pseudo-terminal that
cannot carry them; a USB adapter may refuse a setting its chip lacks.  The back-ends turn
that into one line naming the device, the port and the settings (:func:`refused`), the
same at the first open and at every reconnect.

Which port a device names: :func:`port_key` tells two names of one adapter for one port, so
that the Modbus RTU devices on it share its line (an RS-485 bus has several slaves).
"""

from __future__ import annotations

import os

try:
    import termios
except ImportError:  # no termios (Windows): pyserial reports such failures as OSError
    REFUSALS: tuple[type[BaseException], ...] = ()
else:
    #: what opening a port raises when the port refuses its line settings
    REFUSALS = (termios.error,)


def release(exc: BaseException) -> None:
    """Close the port that a refusal ``exc`` left open and unreachable.

    pyserial applies settings again after opening a port (when a library sets its
    ``timeout``, as pymodbus does), and a refusal there escapes with the port open, flocked
    (``exclusive=True``) and lost to the library that was building it: every later attempt
    would then fail to lock the port.  The port is the ``self`` of the pyserial frame that
    raised; it is closed here, and the traceback dropped.
    """
    import serial

    tb = exc.__traceback__
    while tb is not None:
        port = tb.tb_frame.f_locals.get("self")
        if isinstance(port, serial.SerialBase) and port.is_open:
            port.close()
        tb = tb.tb_next
    exc.__traceback__ = None


def label(baudrate: int, bytesize: int, parity: str, stopbits: float) -> str:
    """``19200 8E1``: baud rate, then data bits, parity and stop bits, as manuals write it."""
    return f"{baudrate} {bytesize}{parity}{stopbits:g}"


def refused(name: str, port: str, line: str, exc: BaseException) -> str:
    """The one line for a port that refuses line settings ``line`` (``exc``: the error)."""
    args = getattr(exc, "args", ())
    reason = (f"[Errno {args[0]}] {args[1]}" if len(args) == 2 and isinstance(args[0], int)
              else str(exc) or type(exc).__name__)
    return (f"{name}: cannot open {port} with line settings {line}: the port refuses them "
            f"({reason})")


def port_key(port: str) -> str:
    """The port a device's ``port`` names, so that two names of one adapter
    (``/dev/serial/by-id/usb-...`` and the ``/dev/ttyUSB0`` it links to) are one port, one
    line; a pyserial URL (``socket://``, ``rfc2217://``) as it is written."""
    if "://" in port:
        return port
    return os.path.realpath(port)
