"""The exception tree of the bench package, and the set of errors the CLI reports in one line."""

from __future__ import annotations


class BenchError(Exception):
    """Base class of every error the bench raises."""


class ScenarioError(BenchError, ValueError):
    """A scenario file is malformed; the message reads ``file:line: field: what is wrong``."""


class ScenarioWarning(UserWarning):
    """A scenario that runs, but likely not as its author meant (``file:line: field: why``)."""


class DeviceWarning(UserWarning):
    """A device the run goes on without (it failed to open; reads retry it)."""


class RecordingError(BenchError):
    """A recording is missing, corrupt or of an unknown format version."""


class ControllerError(BenchError):
    """A controller could not be loaded or returned something that is not a setpoint."""


class LateTickError(BenchError):
    """A real-time tick was late and the catch-up policy is ``fail``."""


class OutputBusy(BenchError):
    """An output (a recording, a sweep's folder) is held by another run (exit status 2,
    ``outcome`` ``busy``: try again once it is done, or give ``--out`` another one)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean bad input, reported by the CLI as one line.

    Collected from every package so a malformed parameter file, scenario, recording, device
    answer or ledger record all end the same way: ``gridloop: error: <what is wrong>``.
    """
    classes: list[type[BaseException]] = [BenchError, FileNotFoundError, PermissionError,
                                          IsADirectoryError]
    from twin.errors import TwinError

    classes.append(TwinError)
    try:
        from firmware_bridge.errors import BridgeError
        classes.append(BridgeError)
    except ImportError:
        pass
    try:
        from ledger.errors import LedgerError
        classes.append(LedgerError)
    except ImportError:
        pass
    return tuple(classes)
