"""``gridloop replay RUN.h5``: a (new) controller against a recording; where it diverges."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="re-run a controller against a recording",
                       description="Feed a recording's measured values to a controller "
                       "(default: the recorded one), run the twin under its setpoints, record "
                       "it, and report where setpoints and the twin's signals diverge from "
                       "the recording.")
    p.add_argument("recording", metavar="RUN.h5")
    p.add_argument("--controller", metavar="NAME",
                   help="built-in name or module:Class (default: the recorded controller)")
    p.add_argument("--option", dest="options", action="append", default=[],
                   metavar="KEY=VALUE", help="a controller option (repeatable)")
    p.add_argument("--out", metavar="RUN2.h5", help="recording of the replay (default "
                   "RUN.replay.CONTROLLER.h5 beside RUN.h5, CONTROLLER the controller's name "
                   "with : and other characters a file name should not have as _); one that "
                   "is there is replaced, and said so on stderr")
    p.add_argument("--scenario-dir", metavar="DIR", help="the folder the recorded "
                   "scenario's files (profiles, parameter sets, a module:Class controller) "
                   "are in now, when not where the scenario was when it ran")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from bench.errors import BenchError
    from bench.replay import replay
    from bench.scenario import parse_value

    options = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--option {item}: expected KEY=VALUE")
        options[key.strip()] = parse_value(value.strip())
    report = replay(args.recording, args.controller, args.out, options,
                    progress=not args.quiet, scenario_dir=args.scenario_dir)
    print(report.format())
    return 0
