"""The ``gridloop`` command line: a thin ``main(argv=None)`` over one module per command.

Each module in :mod:`bench.commands` exposes ``register(subparsers)``, which adds its parser
and sets ``func(args) -> int``.  Heavy imports happen inside ``func`` so ``gridloop --help``
stays quick.  The command-line contract is in ``../shared/DESIGN.md``: add, never rename.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from bench import __version__
from bench.errors import user_errors

COMMANDS = (
    "demo", "run", "emulate", "replay", "view", "report", "calibrate",
    "twin", "gpu", "ledger", "sweep", "lab",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridloop",
        description="Hardware-in-the-loop bench and digital twin for GPU-rack microgrids.",
    )
    parser.add_argument("--version", action="version", version=f"gridloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"bench.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, line: str | None = None) -> str:
    """A warning of a library the CLI calls, as one line (not Python's two with source)."""
    return f"gridloop: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input ends with exit status 2 and one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    # pymodbus logs each failed connection, and each answer it discards (with a hex dump),
    # without naming the device; the bench says which device it was, in one line, and
    # records it
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    previous = _stop_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader of stdout stopped early (| head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (KeyboardInterrupt, *user_errors()) as exc:  # Ctrl-C, SIGTERM, bad input
        status = exit_status(exc)
        said = f"error: {stop_reason(exc)}" if status == 2 else stop_reason(exc)
        print(f"gridloop: {said}", file=sys.stderr)
        return status
    finally:
        warnings.formatwarning = formatwarning
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a CI runner sends on cancel or timeout), stopping a command as Ctrl-C
    does: a run records why it stopped and closes its recording, a sweep keeps its finished
    points."""


def exit_status(exc: BaseException) -> int:
    """The exit status :func:`main` ends with when a command raises ``exc`` (what ``run
    --json`` writes as ``status`` for a run that stopped)."""
    if isinstance(exc, Terminated):
        return 143
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, BrokenPipeError):
        return 0
    if isinstance(exc, user_errors()):
        return 2
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 1  # not caught: Python's traceback, and status 1


def stop_reason(exc: BaseException) -> str:
    """One line on why ``exc`` stopped a command: the line :func:`main` prints, without its
    ``gridloop: error:``."""
    if isinstance(exc, Terminated):
        return "terminated"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, user_errors()):
        return str(exc)
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def _stop_on_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated` in the main thread; returns the handler it
    replaced (None where none could be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":
    sys.exit(main())
