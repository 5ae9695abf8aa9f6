"""Parameter sweeps: one scenario over a grid of ``--set`` values, on Dask.

Every point of the grid (the cartesian product of the ``--set KEY=V1,V2,...`` lists) is a
whole run with its own recording and its own seed, derived from the scenario's seed and the
point's index so a sweep is reproducible and no two points share a random stream.  Points
run in batches on a Dask cluster (a local one by default, ``--scheduler ADDRESS`` for an
existing one); the results table (CSV) has one row per point with its values, seed, status
and the run's figures (:mod:`bench.summary`).
"""

from __future__ import annotations

import csv
import itertools
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError, ScenarioError
from bench.scenario import load


@dataclass(frozen=True)
class Point:
    index: int
    overrides: tuple[str, ...]
    values: tuple[tuple[str, str], ...]
    seed: int


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``KEY=V1,V2`` strings into ``[(KEY, [V1, V2])]``; values keep their TOML text."""
    grid = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise ScenarioError(f"--set {item}: expected KEY=V1,V2,...")
        values = _split_values(raw)
        if not values:
            raise ScenarioError(f"--set {item}: no values")
        grid.append((key.strip(), values))
    return grid


def _split_values(raw: str) -> list[str]:
    """Split on commas outside brackets and quotes (so arrays and strings survive)."""
    out, buf, depth, quote = [], [], 0, ""
    for c in raw:
        if quote:
            buf.append(c)
            if c == quote:
                quote = ""
            continue
        if c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            out.append("".join(buf).strip())
            buf = []
            continue
        buf.append(c)
    if "".join(buf).strip():
        out.append("".join(buf).strip())
    return out


def points(grid: list[tuple[str, list[str]]], base_seed: int) -> list[Point]:
    """The cartesian product, with a distinct seed per point."""
    keys = [k for k, _ in grid]
    out = []
    for i, combo in enumerate(itertools.product(*(v for _, v in grid))):
        seed = (base_seed * 1_000_003 + i * 7919 + 1) % (2**31 - 1)
        out.append(Point(i, tuple(f"{k}={v}" for k, v in zip(keys, combo)),
                         tuple(zip(keys, combo)), seed))
    return out


def run_batch(scenario_path: str, batch: list[Point], out_dir: str,
              extra: tuple[str, ...]) -> list[dict[str, Any]]:
    """Run a batch of points in one worker; failures become rows, not lost batches."""
    from bench.build import build_plan
    from bench.checks import evaluate
    from bench.engine import run_plan
    from bench.recording import open_run
    from bench.summary import figures

    rows = []
    for p in batch:
        out = Path(out_dir) / f"point_{p.index:04d}.h5"
        row: dict[str, Any] = {"point": p.index, "seed": p.seed, "path": str(out),
                               **dict(p.values)}
        t0 = time.perf_counter()
        try:
            s = load(scenario_path, list(extra) + list(p.overrides) + [f"run.seed={p.seed}"])
            plan = build_plan(s, ledger=str(out.with_name(out.stem + ".ledger.db")))
            run_plan(plan, out, progress=False)
            with open_run(out) as r:
                row.update(figures(r).flat())
                outcomes = evaluate(r, s.checks)
            failed = [o.check.describe(o.unit) for o in outcomes if not o.passed]
            if outcomes:  # a grid point that breaks a check says which
                row["checks_failed"] = "; ".join(failed)
            row["status"] = "ok"
        except Exception as exc:  # one bad point must not sink the sweep
            row["status"] = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")
        row["wall_s"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
    return rows


def sweep(scenario_path: Path, items: Sequence[str], out_dir: Path, workers: int = 2,
          scheduler: str | None = None, batch_size: int = 1,
          extra: Sequence[str] = (), progress: bool = True) -> Path:
    """Run the sweep and write ``out_dir/results.csv``; returns its path."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise BenchError("gridloop sweep needs Dask: pip install 'gridloop[sweep]'") from exc
    base = load(scenario_path, list(extra))  # validate before starting any worker
    grid = parse_grid(items)
    for key, values in grid:  # every value must give a valid scenario
        for v in values:
            load(scenario_path, list(extra) + [f"{key}={v}"])
    pts = points(grid, base.run.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    batches = [pts[i:i + batch_size] for i in range(0, len(pts), max(1, batch_size))]
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    try:
        futures = [client.submit(run_batch, str(scenario_path.resolve()), b, str(out_dir),
                                 tuple(extra), pure=False) for b in batches]
        for fut in as_completed(futures):
            rows.extend(fut.result())
            if progress:
                print(f"sweep: {len(rows)}/{len(pts)} points "
                      f"({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    rows.sort(key=lambda r: r["point"])
    path = out_dir / "results.csv"
    columns: list[str] = []
    for r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k, "")) for k in columns})
    return path


def _fmt(v: Any) -> Any:
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.6g}"
    return v
