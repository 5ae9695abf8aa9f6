"""``gridloop demo``: the three-node emulated microgrid of ``experiments/demo.toml``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands.run import add_run_options, option_overrides, refused_to_json

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo.toml"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo microgrid (experiments/demo.toml)",
                       description="Three nodes, each with a GPU training rack, a battery, a "
                       "PV inverter and a grid meter, emulated on loopback Modbus, trading "
                       "energy with each other; writes runs/demo.h5 and prints a summary.")
    add_run_options(p)
    p.set_defaults(func=main)


def bad_command_line(argv: list[str], message: str) -> None:
    """argparse refused ``gridloop demo``'s command line: its error to ``--json``."""
    refused_to_json(argv, message, DEMO)


def main(args: argparse.Namespace) -> int:
    from bench.runner import execute

    overrides = option_overrides(args)
    out = Path(args.out) if args.out else Path("runs") / "demo.h5"
    return execute(DEMO, out, overrides, view=args.view, quiet=args.quiet,
                   json_out=Path(args.json) if args.json else None)
