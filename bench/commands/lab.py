"""``gridloop lab list | run NAME | grade RUN.h5``: the microgrid labs of ``experiments/``."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="list, run and grade the microgrid labs",
                       description="Labs with lab sheets and automatic grading: each is a "
                       "scenario, a sheet (experiments/NAME/sheet.md) and a grader. "
                       "See docs/labs.md.")
    labsub = p.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)

    ls = labsub.add_parser("list", help="the labs, what each teaches, and its sheet")
    ls.set_defaults(func=list_labs)

    run = labsub.add_parser("run", help="run a lab: its main recording and its variants",
                            description="Write the lab's recordings: RUN.h5 and one "
                            "RUN.VARIANT.h5 per comparison the lab makes.")
    run.add_argument("name", metavar="NAME")
    run.add_argument("--quick", action="store_true",
                     help="the short variant, what CI runs and grades: the lab's [quick] "
                          "overrides (lab.toml), mostly a shorter simulated duration; every "
                          "recording the lab compares is still written (wall times per lab: "
                          "docs/labs.md)")
    run.add_argument("--out", metavar="RUN.h5", help="main recording (default runs/NAME.h5)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=run_lab)

    gr = labsub.add_parser("grade", help="grade a lab run: score table, exit 1 below the "
                           "pass mark", description="Compute the lab's figures from its "
                           "recordings, score them (and your answers) and print the table; "
                           "exit status 0 at or above the pass mark, 1 below, 2 on bad input.")
    gr.add_argument("recording", metavar="RUN.h5")
    gr.add_argument("--answers", metavar="ANSWERS.toml",
                    help="your answers to the sheet's questions, one 'key = value' a line")
    gr.set_defaults(func=grade_run)


def list_labs(args: argparse.Namespace) -> int:
    from bench.labs import labs

    found = labs()
    width = max((len(n) for n in found), default=4)
    for name, lab in found.items():
        print(f"{name:<{width}}  {lab.info.title}")
        print(f"{'':<{width}}  {lab.info.summary}")
        print(f"{'':<{width}}  sheet: {lab.sheet}")
    return 0


def run_lab(args: argparse.Namespace) -> int:
    from bench.labs import get_lab
    from bench.labs.runner import run_lab as run

    lab = get_lab(args.name)
    out = Path(args.out) if args.out else Path("runs") / f"{lab.name}.h5"
    paths = run(lab, out, quick=args.quick, quiet=args.quiet)
    print(f"\nlab {lab.name}: wrote {', '.join(str(p) for p in paths)}")
    for v in lab.variants:
        print(f"  {lab.variant_path(out, v.name).name}: {v.about}")
    q = shlex.quote(str(out))  # a path with spaces, copied from here, still works
    print(f"next: read {shlex.quote(str(lab.sheet))}, then\n"
          f"  gridloop report {q}            # figures (PNG)\n"
          f"  gridloop lab grade {q} [--answers answers.toml]")
    return 0


def grade_run(args: argparse.Namespace) -> int:
    from bench.labs.grading import grade

    g = grade(args.recording, args.answers)
    print(g.format())
    return 0 if g.passed else 1
