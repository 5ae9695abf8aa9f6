"""Parameter sweeps: one scenario over a grid of ``--set`` values, on Dask.

Every point of the grid (the cartesian product of the ``--set KEY=V1,V2,...`` lists) is a
whole run with its own recording.  Every point runs with the scenario's seed (common random
numbers: the same clouds and inference arrivals at every point, so what differs between
points is what was swept, not the weather); a seed given with ``--fix run.seed=N`` is every
point's, and replicates are a sweep over the seed (``--set run.seed=1,2,3``, crossed with
the other lists).  Points run in batches on a Dask cluster (a local one by default,
``--scheduler ADDRESS`` for an existing one); the results table (CSV) has one row per point
with its values, seed, status and the run's figures (:mod:`bench.summary`).  The table is
rewritten as each point finishes, so Ctrl-C or a crash keeps the finished rows; the others
read ``pending`` (or ``interrupted``).

A point's ``status`` is ``ok``, ``checks failed`` (it ran to its end and broke one of the
scenario's ``[checks]``, named in ``checks_failed``), ``no reading from NODE.ASSET`` (a device
gave no valid reading in the whole run), both (``;``-separated), as ``gridloop run`` exits 1
for either, or ``error: ...``; the sweep fails (exit 1) unless every point is ``ok``.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError, ScenarioError, user_errors
from bench.runner import LEDGER_FILE_SUFFIXES
from bench.runner import default_ledger_path as ledger_path
from bench.scenario import SECTIONS, join_key, load, split_key, split_override

#: the status of a point that ran to its end and broke one of its ``[checks]``
CHECKS_FAILED = "checks failed"
#: the status of a point that ran to its end with a device that never gave a reading
NEVER_READ = "no reading from"


@dataclass(frozen=True)
class Point:
    index: int
    overrides: tuple[str, ...]
    values: tuple[tuple[str, str], ...]
    seed: int


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``KEY=V1,V2`` strings into ``[(KEY, [V1, V2])]``; values keep their TOML text."""
    grid = []
    seen: set[str] = set()
    for item in items:
        try:
            key, raw = split_override(item)
        except ValueError:
            key, raw = "", ""
        if not key.strip() or not raw.strip():
            raise ScenarioError(f"--set {item}: expected KEY=V1,V2,...")
        values = _split_values(raw)
        if not values:
            raise ScenarioError(f"--set {item}: no values")
        if _canonical(key) in seen:  # a second list would silently replace the first
            raise ScenarioError(f"--set {item}: {key.strip()} is already swept; "
                                f"give all its values in one --set")
        seen.add(_canonical(key))
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


def points(grid: list[tuple[str, list[str]]], seed: int) -> list[Point]:
    """The cartesian product, every point with ``seed`` (the scenario's): points that share
    their random numbers differ only in the swept values (a swept ``run.seed`` is each
    point's own, set by :func:`check_points`)."""
    keys = [k for k, _ in grid]
    return [Point(i, tuple(f"{k}={v}" for k, v in zip(keys, combo)), tuple(zip(keys, combo)),
                  seed)
            for i, combo in enumerate(itertools.product(*(v for _, v in grid)))]


def _canonical(key: str) -> str:
    """One spelling per scenario field (``north.battery.x`` is ``nodes.north.battery.x``,
    ``controller.options.'a.b'`` is ``controller.options."a.b"``), so a field given twice is
    caught however it is written."""
    try:
        path = split_key(key)
    except ValueError:  # refused with its reason when the point's scenario is loaded
        return key.strip()
    return join_key(path if path[0] in SECTIONS else ["nodes", *path])


def recording_path(out_dir: Path, index: int) -> Path:
    """Where point ``index`` records."""
    return out_dir / f"point_{index:04d}.h5"


def _clear(recording: Path) -> None:
    """Remove a point's recording and ledger: a new sweep replaces both, not appends."""
    ledger = str(ledger_path(recording))
    for path in (recording, *(Path(ledger + s) for s in LEDGER_FILE_SUFFIXES)):
        path.unlink(missing_ok=True)


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
        out = recording_path(Path(out_dir), p.index)
        row: dict[str, Any] = {"point": p.index, "seed": p.seed, "path": str(out),
                               **dict(p.values)}
        t0 = time.perf_counter()
        try:
            _clear(out)
            s = load(scenario_path, _fixed(extra) + list(p.overrides))  # as check_points did
            plan = build_plan(s, ledger=str(ledger_path(out)))
            run_plan(plan, out, progress=False)
            with open_run(out) as r:
                fig = figures(r)
                row.update(fig.flat())
                outcomes = evaluate(r, s.checks)
            failed = [o.check.describe(o.unit) for o in outcomes if not o.passed]
            if outcomes:  # a grid point that breaks a check says which
                row["checks_failed"] = "; ".join(failed)
            # a point whose checks fail, or with a device that never gave a reading, has
            # failed, as `gridloop run` exits 1 for it
            silent = fig.never_read()
            why = [CHECKS_FAILED] if failed else []
            why += [f"{NEVER_READ} {', '.join(silent)}"] if silent else []
            row["status"] = "; ".join(why) or "ok"
        except Exception as exc:  # one bad point must not sink the sweep
            row["status"] = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")
            if not out.exists():  # the row names no recording it did not make
                row["path"] = ""
        row["wall_s"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class SweepResult:
    """Where the table is and how the points ended."""

    path: Path
    points: int
    failed: int
    interrupted: int


def _fixed(extra: Sequence[str]) -> list[str | tuple[str, str]]:
    """The ``--fix KEY=VALUE`` overrides, each named as typed in the errors it causes."""
    return [(f"--fix {x}", x) for x in extra]


def check_points(scenario_path: Path, items: Sequence[str], out_dir: Path,
                 extra: Sequence[str] = ()) -> list[Point]:
    """The grid's points, each scenario loaded and built as ``gridloop run`` would before
    running (its controller too), so a value that cannot run is refused before any point
    starts."""
    from bench.build import build_plan
    from bench.engine import controller_for

    base = load(scenario_path, _fixed(extra))
    grid = parse_grid(items)
    fixed = {_canonical(split_override(x)[0]) for x in extra}  # each checked by load above
    for key, _ in grid:
        if _canonical(key) in fixed:
            raise ScenarioError(f"--set {key}: also given by --fix; give it once")
    pts = []
    # every point runs with the scenario's seed, or the one given (swept or fixed)
    for p in points(grid, base.run.seed):
        try:
            s = load(scenario_path, _fixed(extra) + list(p.overrides))
            controller_for(build_plan(s, ledger=str(ledger_path(recording_path(out_dir,
                                                                            p.index)))))
        except user_errors() as exc:
            raise ScenarioError(f"point {p.index} ({', '.join(p.overrides)}): {exc}") from None
        pts.append(replace(p, seed=s.run.seed))
    return pts


def sweep(scenario_path: Path, items: Sequence[str], out_dir: Path, workers: int = 2,
          scheduler: str | None = None, batch_size: int = 1,
          extra: Sequence[str] = (), progress: bool = True) -> SweepResult:
    """Run the sweep, writing ``out_dir/results.csv`` as each point finishes.

    Ctrl-C stops it: the finished rows are kept and the others marked ``interrupted``.
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise BenchError("gridloop sweep needs Dask: pip install 'gridloop[sweep]'") from exc
    pts = check_points(scenario_path, items, out_dir, extra)
    keys = [k for k, _ in parse_grid(items)]
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler)
        except (OSError, ValueError, TypeError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BenchError(f"--scheduler {scheduler}: no Dask scheduler there ({why})") from None
    else:
        cluster = _local_cluster(LocalCluster, workers)
        client = Client(cluster)
    rows: dict[int, dict[str, Any]] = {}
    path = out_dir / "results.csv"
    futures: dict[Any, list[Point]] = {}
    interrupted = False
    t0 = time.monotonic()
    try:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"--out {out_dir}: {exc.strerror or exc}") from None
        for p in pts:
            _clear(recording_path(out_dir, p.index))
        _write_table(path, pts, keys, rows, "pending")
        batches = [pts[i:i + batch_size] for i in range(0, len(pts), max(1, batch_size))]
        futures = {client.submit(run_batch, str(scenario_path.resolve()), b, str(out_dir),
                                 tuple(extra), pure=False): b for b in batches}
        for fut in as_completed(futures):
            try:
                done = fut.result()
            except Exception as exc:  # the worker died: its points failed, the rest go on
                why = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")
                done = [_unfinished(p, keys, why) for p in futures[fut]]
            rows.update((r["point"], r) for r in done)
            _write_table(path, pts, keys, rows, "pending")  # a crash keeps what finished
            if progress:
                print(f"sweep: {len(rows)}/{len(pts)} points "
                      f"({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # closing the cluster below stops the points still running
        interrupted = True
    finally:
        _close(client, cluster)
    if interrupted:
        if not path.parent.is_dir():
            raise KeyboardInterrupt
        _write_table(path, pts, keys, rows, "interrupted")
    failed = [p for p in pts if p.index in rows and rows[p.index]["status"] != "ok"]
    for p in [] if interrupted else failed:  # a line per failed point; the caller counts
        row = rows[p.index]
        why = row["status"]
        if why.startswith(CHECKS_FAILED):
            why = why.replace(CHECKS_FAILED, f"{CHECKS_FAILED}: {row.get('checks_failed', '')}",
                              1)
        print(f"gridloop: point {p.index} ({', '.join(p.overrides)}): {why}",
              file=sys.stderr, flush=True)
    return SweepResult(path, len(pts), len(failed), len(pts) - len(rows))


def _local_cluster(factory: Any, workers: int) -> Any:
    """A local cluster whose workers ignore SIGINT: Ctrl-C in a terminal reaches the whole
    process group, and the sweep (not each worker, with a traceback) decides what stops.
    Workers log errors only: a point's failure is its row's status, and the tasks a Ctrl-C
    stops would each log a warning.  No dashboard; the HTTP endpoint Dask's scheduler starts
    anyway (health, metrics) takes a free loopback port, not 8787, which may be taken (Dask
    then warns in three lines that it moved)."""
    def start() -> Any:
        return factory(n_workers=workers, threads_per_worker=1, processes=True,
                       dashboard_address=None, silence_logs=logging.ERROR,
                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})

    if threading.current_thread() is not threading.main_thread():
        return start()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the workers
    try:
        return start()
    finally:
        if previous is not None:  # None: a handler Python did not install, left as it is
            signal.signal(signal.SIGINT, previous)


def _close(client: Any, cluster: Any) -> None:
    """Close the client and cluster quietly: workers stopped mid-point are expected here."""
    quiet = [logging.getLogger(n) for n in ("distributed", "tornado", "asyncio")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.CRITICAL)
    try:
        client.close()
        if cluster is not None:
            cluster.close()
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)


def _unfinished(p: Point, keys: list[str], status: str) -> dict[str, Any]:
    return {"point": p.index, "seed": p.seed, "path": "", **dict(p.values), "status": status}


def _write_table(path: Path, pts: list[Point], keys: list[str],
                 rows: dict[int, dict[str, Any]], unfinished: str) -> None:
    """Every point's row, finished or ``unfinished``; replaced whole, so a reader (or a
    crash) never sees half a table."""
    table = [rows.get(p.index) or _unfinished(p, keys, unfinished) for p in pts]
    head = ["point", "seed", "path", *keys]
    tail = [k for k in ("checks_failed", "status", "wall_s")
            if k in ("status", "wall_s") or any(k in r for r in table)]
    columns = list(head)
    for r in table:
        for k in r:
            if k not in columns and k not in tail:
                columns.append(k)
    columns += tail
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in table:
            w.writerow({k: _fmt(r.get(k, "")) for k in columns})
    os.replace(tmp, path)


def _fmt(v: Any) -> Any:
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.6g}"
    return v
