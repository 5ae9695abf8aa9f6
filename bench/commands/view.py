"""``gridloop view RUN.h5``: watch a recording, finished or still being written."""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a positive number of seconds")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view", help="watch a recording live, or scrub through a finished one",
        description="Open a run's recording in a window: power flows per node, batteries, "
        "GPU racks and their spectrum, twin-vs-device residuals, bus frequency, timing, "
        "device health and the market.  With --follow, tail a run that another process is "
        "still writing.  With --screenshot, render offscreen, write the image and exit.")
    p.add_argument("recording", metavar="RUN.h5", type=Path)
    p.add_argument("--follow", action="store_true",
                   help="tail a run in progress (its recorder is still writing)")
    p.add_argument("--screenshot", metavar="OUT.png", type=Path,
                   help="render the window offscreen to this image and exit")
    p.add_argument("--at", metavar="SECONDS", type=float,
                   help="put the time cursor at this simulated time")
    p.add_argument("--window", metavar="SECONDS", type=_positive, default=120.0,
                   help="time span kept in view while following (default 120)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from bench.view.app import screenshot, show

    if args.screenshot is not None:
        out = screenshot(args.recording, args.screenshot, at=args.at, follow=args.follow)
        print(f"wrote {out}")
        return 0
    return show(args.recording, follow=args.follow, at=args.at, window_s=args.window)
