"""Run every benchmark module and write one JSON document.

Usage: ``python -m benchmarks [--out FILE] [--only NAME ...] [--quick]``.  Each module
``benchmarks/bench_<name>.py`` defines ``run(quick: bool) -> dict``; results are reported as
measured figures and as ratios against a baseline measured in the same run, never as
pass/fail timings.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    parser.add_argument("--quick", action="store_true", help="shorter runs, for smoke tests")
    args = parser.parse_args(argv)
    names = args.only or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        print(f"benchmarks: unknown benchmark(s) {unknown}; have {discover()}", file=sys.stderr)
        return 2
    doc: dict = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "results": {},
    }
    failed = False
    for name in names:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        t0 = time.perf_counter()
        try:
            result = module.run(quick=args.quick)
        except Exception:  # a failing benchmark is reported, the others still run
            traceback.print_exc()
            result = {"error": traceback.format_exc(limit=3)}
            failed = True
        result["wall_s"] = round(time.perf_counter() - t0, 3)
        doc["results"][name] = result
        print(json.dumps(result, indent=2), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
