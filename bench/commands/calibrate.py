"""``gridloop calibrate RUN.h5 --asset NODE.ASSET``: fit twin parameters to a recording."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit an asset's twin parameters to a recording",
                       description="Fit a battery's R0, R1, C1, R2, C2 and capacity, or an "
                       "inverter's efficiency curve, to what its device measured in a "
                       "recording, starting from the twin's parameters.")
    p.add_argument("recording", metavar="RUN.h5")
    p.add_argument("--asset", required=True, metavar="NODE.ASSET")
    p.add_argument("--out", metavar="PARAMS.toml",
                   help="write the calibrated parameter file (default: print only)")
    p.add_argument("--rc", type=int, choices=(1, 2), default=2,
                   help="RC pairs of the fitted battery model (default 2)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from bench.calibrate import calibrate
    from bench.paths import check_out
    from twin import params

    if args.out:
        check_out(args.out, [("the recording", args.recording)])
    result = calibrate(args.recording, args.asset, n_rc=args.rc)
    print(result.format())
    if args.out:
        params.save(result.pset, args.out)
        print(f"wrote {args.out}")
    return 0
