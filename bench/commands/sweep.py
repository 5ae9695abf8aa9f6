"""``gridloop sweep SCENARIO.toml --set KEY=V1,V2,...``: a parameter grid on Dask."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a scenario over a grid of parameter values (Dask)",
                       description="Run a scenario for every combination of the --set value "
                       "lists, each point with its own recording, on a local Dask cluster or "
                       "an existing one; writes a results table (CSV). Every point uses the "
                       "scenario's seed (the same clouds and arrivals, so points differ only "
                       "in the swept values), or the one given with --fix run.seed=N; for "
                       "replicates, sweep the seed too: --set run.seed=1,2,3.")
    p.add_argument("scenario", metavar="SCENARIO.toml")
    p.add_argument("--set", dest="grid", action="append", required=True,
                   metavar="KEY=V1,V2,...", help="a parameter and its values (repeatable); "
                   "a name with dots is quoted as one key: "
                   "controller.options.\"north.battery.p_set_w\"=0,5000")
    p.add_argument("--fix", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="a value fixed for every point")
    p.add_argument("--workers", type=int, default=2, help="local cluster workers (default 2)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="use an existing Dask scheduler")
    p.add_argument("--batch", type=int, default=1, help="points per task (default 1)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/sweep-NAME); "
                   "held while the sweep runs: a second sweep into it stops at once")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Exit 0 when every point ran, 1 when one failed, 130 when interrupted (Ctrl-C), 143
    when terminated (SIGTERM), as ``gridloop run`` does (the finished rows are in the table
    either way); 2 when the output folder is held by another sweep."""
    from bench.errors import BenchError
    from bench.stopping import exit_status, stop_reason
    from bench.sweep import sweep

    if args.workers < 1 or args.batch < 1:
        raise BenchError("--workers and --batch must be at least 1")
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{Path(args.scenario).stem}"
    result = sweep(Path(args.scenario), args.grid, out, workers=args.workers,
                   scheduler=args.scheduler, batch_size=args.batch, extra=args.extra,
                   progress=not args.quiet)
    if result.stopped is not None:
        print(f"gridloop: {stop_reason(result.stopped)}: {result.points - result.interrupted} "
              f"of {result.points} points finished; results {result.path}", file=sys.stderr)
        return exit_status(result.stopped)
    print(result.path.read_text(), end="")
    print(f"results: {result.path}")
    if result.failed:
        print(f"gridloop: {result.failed} of {result.points} points failed (see status in "
              f"{result.path})", file=sys.stderr)
        return 1
    return 0
