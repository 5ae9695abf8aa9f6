"""``gridloop report RUN.h5 [--out DIR]``: PNG figures, a short text summary, every event."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write PNG figures and a summary of a recording",
                       description="Power flows, SOC, frequency, GPU power and its spectrum, "
                       "residuals and the lateness histogram as PNG; events.csv, every event "
                       "of the run (t_s, kind, device, message); and summary.txt, the run's "
                       "figures, its checks and a timeline of its events. It renders: its exit "
                       "status is 0 whatever the checks say; a pipeline's verdict is the exit "
                       "status and --json of gridloop run or gridloop replay.")
    p.add_argument("recording", metavar="RUN.h5")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN-report/)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from bench.report import write_report

    summary, written = write_report(args.recording, args.out)
    print(summary.read_text(), end="")
    for p in written:
        print(f"wrote {p}")
    return 0
