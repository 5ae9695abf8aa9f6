"""The ``gridloop`` command line: a thin ``main(argv=None)`` over one module per command.

Each module in :mod:`bench.commands` exposes ``register(subparsers)``, which adds its parser
and sets ``func(args) -> int``.  Heavy imports happen inside ``func`` so ``gridloop --help``
stays quick.  A module whose command writes a result for a pipeline (``run --json``) may
also expose ``bad_command_line(argv, message)``: called when argparse refuses the command
line (``argv``: the words after the command's name), it writes that error there, so a
result an earlier run left is not read as this one's.  The command-line contract is in
``../shared/DESIGN.md``: add, never rename.
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
from typing import NoReturn

from bench import __version__
from bench.errors import user_errors
from bench.stopping import exit_status, stop_on_sigterm, stop_reason

COMMANDS = (
    "demo", "run", "emulate", "replay", "view", "report", "calibrate",
    "twin", "gpu", "ledger", "sweep", "lab",
)


class UsageError(SystemExit):
    """argparse refused the command line (exit status 2): the usage of the (sub)command
    and its one error line are printed; ``message`` is that line's, ``prog`` whose."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(2)
        self.prog = prog
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser (its subcommands' too) whose usage error is a :class:`UsageError`,
    printed as argparse prints it: :func:`main` writes it to ``--json`` too."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace
                    ) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` were parsed for: ``gridloop run``'s, ``gridloop
    lab run``'s (the top-level one where no command was given)."""
    current = parser
    while True:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return current
        chosen = getattr(args, subs[0].dest, None)
        if chosen not in subs[0].choices:
            return current
        current = subs[0].choices[chosen]


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed; words no parser took are refused by the parser of the command they
    were given to, with its usage (argparse's own refusal shows the top-level usage)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _report_usage_error(argv: list[str], exc: UsageError) -> None:
    """A command line argparse refused, written to the result file its command names
    (``run --json PATH``), through the command module's ``bad_command_line``."""
    name = next((w for w in argv if not w.startswith("-")), None)
    if name not in COMMANDS:
        return
    try:
        module = importlib.import_module(f"bench.commands.{name}")
    except ImportError:
        return
    report = getattr(module, "bad_command_line", None)
    if report is None:
        return
    try:
        report(argv[argv.index(name) + 1:], f"{exc.prog}: {exc.message}")
    except Exception as err:  # said; the usage error stays what the command ends with
        print(f"gridloop: warning: {stop_reason(err)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input ends with exit status 2 and one line on stderr."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(parser, words)
    except UsageError as exc:
        _report_usage_error(words, exc)
        raise SystemExit(2) from None
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
