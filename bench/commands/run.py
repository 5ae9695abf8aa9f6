"""``gridloop run SCENARIO.toml``: run a scenario and record it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``demo``."""
    p.add_argument("--duration", type=float, metavar="S", help="simulated seconds to run")
    p.add_argument("--out", metavar="RUN.h5",
                   help="recording to write (default runs/NAME.h5: the scenario file's name, "
                        "or its folder's for a scenario.toml); one that is there is replaced")
    p.add_argument("--view", action="store_true", help="watch the run live in a window")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", metavar="RESULT.json",
                   help="also write the verdict (exit status, outcome, each check, the "
                   "summary's figures) as JSON, in every outcome (for CI); replaced at once "
                   "by one saying 'running'")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a scenario against twin, emulated or real devices",
                       description="Run a scenario: the controller under test against real, "
                       "emulated or twin devices, the twin in lockstep, everything recorded.")
    p.add_argument("scenario", metavar="SCENARIO.toml")
    p.add_argument("--mode", choices=("twin", "emulated", "hardware"),
                   help="lower every asset to this mode (hardware > emulated > twin)")
    p.add_argument("--realtime", action="store_true", help="pace ticks to the wall clock")
    p.add_argument("--ledger", metavar="LEDGER.db",
                   help="ledger store (SQLite path or postgresql:// URL); "
                        "default RUN.ledger.db beside the recording")
    p.add_argument("--ledger-keys", metavar="DIR",
                   help="the ledger's key directory (made with: gridloop ledger keygen --dir "
                        "DIR), used as it is; sets market.keys; default the scenario's, else "
                        "RUN.ledger.keys beside the ledger, where missing keys are made")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario value (run.dt_s=0.01, north.battery.capacity_ah=300)")
    add_run_options(p)
    p.set_defaults(func=main)


def bad_command_line(argv: list[str], message: str) -> None:
    """argparse refused ``gridloop run``'s command line: its error to ``--json`` where that
    can be read from ``argv`` (:func:`refused_to_json`)."""
    refused_to_json(argv, message, None)


def refused_to_json(argv: list[str], message: str, scenario: Path | None) -> None:
    """The error of a command line argparse refused (``message``), written to its ``--json
    PATH`` as a run that never started (status 2, ``outcome`` ``input_error``): see
    :func:`bench.runner.refused_json_target`."""
    from bench.runner import refused_json_target, stopped_document, write_json

    path = refused_json_target(argv)
    if path is not None:
        write_json(path, stopped_document(scenario, None, 2, message, 0,
                                          outcome="input_error"))


def main(args: argparse.Namespace) -> int:
    from bench.runner import execute

    overrides = option_overrides(args)
    out = Path(args.out) if args.out else default_out(Path(args.scenario))
    return execute(Path(args.scenario), out, overrides, ledger=args.ledger, view=args.view,
                   quiet=args.quiet, json_out=Path(args.json) if args.json else None,
                   say_replaced=True)


def option_overrides(args: argparse.Namespace) -> list[str | tuple[str, str]]:
    """The scenario overrides of ``run``'s and ``demo``'s options: each ``--set`` as typed,
    and ``--mode``, ``--seed``, ``--realtime``, ``--duration`` and ``--ledger-keys`` as
    ``(option as typed, KEY=VALUE)``, so an error names the option the user gave, not a
    ``--set`` they never typed."""
    overrides: list[str | tuple[str, str]] = list(getattr(args, "overrides", []))
    if getattr(args, "mode", None):
        overrides.append((f"--mode {args.mode}", f"run.mode={args.mode}"))
    if getattr(args, "seed", None) is not None:
        overrides.append((f"--seed {args.seed}", f"run.seed={args.seed}"))
    if getattr(args, "realtime", False):
        overrides.append(("--realtime", "run.realtime=true"))
    if args.duration is not None:
        overrides.append((f"--duration {_typed(args.duration)}",
                          f"run.duration_s={args.duration}"))
    keys = getattr(args, "ledger_keys", None)
    if keys is not None:  # relative to where the command runs, not to the scenario file
        path = json.dumps(str(Path(keys).expanduser().absolute()), ensure_ascii=False)
        overrides.append((f"--ledger-keys {keys}", f"market.keys={path}"))
    return overrides


def _typed(value: float) -> str:
    """A number as the user most likely typed it (``--duration 30``, not ``30.0``)."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def default_out(scenario: Path) -> Path:
    """``runs/NAME.h5``: the file's stem, or for a folder's ``scenario.toml`` (every lab's)
    the folder's name, so two experiments do not overwrite each other's recording."""
    stem = scenario.stem
    if stem == "scenario" and scenario.resolve().parent.name:
        stem = scenario.resolve().parent.name
    return Path("runs") / f"{stem}.h5"
