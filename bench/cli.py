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
import warnings
from collections.abc import Sequence

from bench import __version__
from bench.errors import user_errors
from bench.stopping import exit_status, stop_on_sigterm, stop_reason

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
    previous = stop_on_sigterm()
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


if __name__ == "__main__":
    sys.exit(main())
