"""Parameter sweeps: one scenario over a grid of ``--set`` values, on Dask.

Every point of the grid (the cartesian product of the ``--set KEY=V1,V2,...`` lists) is a
whole run with its own recording.  Every point runs with the scenario's seed (common random
numbers: the same clouds and inference arrivals at every point, so what differs between
points is what was swept, not the weather); a seed given with ``--fix run.seed=N`` is every
point's, and replicates are a sweep over the seed (``--set run.seed=1,2,3``, crossed with
the other lists).  Points run in batches on a Dask cluster (a local one by default,
``--scheduler ADDRESS`` for an existing one); the results table (CSV) has one row per point
with its values, seed, status and the run's figures (:mod:`bench.summary`), the same
columns whatever finished (a figure of a point that did not is empty).  The table is
rewritten as each point finishes, so a crash keeps the finished rows; the others read
``pending``.

A sweep holds its output folder (a lock file beside it, as ``gridloop run`` holds its
recording, :func:`bench.paths.exclusive`), and each point its recording: a second sweep into
the folder, or a run to a point's recording, stops at once with one line naming the holder.

Ctrl-C (SIGINT) or SIGTERM stops the sweep as it stops a run: every point still running
stops at its next tick, its recording closed with a ``run_stopped`` event saying why
(``interrupted``, ``terminated``), points not started do not start, and the table keeps
every point that finished (its recording complete) with its figures; the others read
``interrupted`` or ``terminated`` (the command exits 130 or 143).

A point's ``status`` is ``ok``, ``checks failed`` (it ran to its end and broke one of the
scenario's ``[checks]``, named in ``checks_failed``), ``no reading from NODE.ASSET`` (a device
gave no valid reading in the whole run), both (``;``-separated), as ``gridloop run`` exits 1
for either, or ``error: ...``; the sweep fails (exit 1) unless every point is ``ok``.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError, ScenarioError, user_errors
from bench.paths import exclusive
from bench.runner import LEDGER_FILE_SUFFIXES
from bench.runner import default_ledger_path as ledger_path
from bench.scenario import SECTIONS, join_key, load, split_key, split_override
from bench.stopping import Terminated, deferred_stop, stop_reason, stop_requested

#: the status of a point that ran to its end and broke one of its ``[checks]``
CHECKS_FAILED = "checks failed"
#: the status of a point that ran to its end with a device that never gave a reading
NEVER_READ = "no reading from"
#: the status of a point a signal stopped, or kept from starting: Ctrl-C's, SIGTERM's
STOPPED = ("interrupted", "terminated")
#: seconds a stopped sweep waits for its running points to stop at their next tick (and
#: close their recordings) before it closes the cluster, which kills what is left: well
#: within the 10 s a CI runner or ``docker stop`` allows between SIGTERM and SIGKILL
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class Point:
    index: int
    overrides: tuple[str, ...]
    values: tuple[tuple[str, str], ...]
    seed: int
    #: the nodes of the point's scenario (its figure columns), and whether it has checks
    nodes: tuple[str, ...] = ()
    checks: bool = False


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


#: the sweeps told to stop, in this worker process: their token -> why (``STOPPED``)
_stops: dict[str, str] = {}


def _request_stop(token: str, why: str) -> None:
    """Tell this worker's points of the sweep ``token`` to stop (run on every worker by
    ``Client.run``): a running one at its next tick, the others before they start."""
    _stops[token] = why


def _stop_exception(why: str) -> KeyboardInterrupt:
    """The exception a run stops on for ``why``: what a signal raises in ``gridloop run``."""
    return Terminated() if why == "terminated" else KeyboardInterrupt()


def run_batch(scenario_path: str, batch: list[Point], out_dir: str,
              extra: tuple[str, ...], token: str = "") -> list[dict[str, Any]]:
    """Run a batch of points in one worker; failures become rows, not lost batches.  Once
    the sweep ``token`` is told to stop (:func:`_request_stop`), the running point stops at
    its next tick as a run stops on a signal (its recording closed, with a ``run_stopped``
    event saying why), and the points after it do not start."""
    from bench.build import build_plan
    from bench.engine import run_plan

    def stop_here(k: int = 0, t: float = 0.0) -> None:
        why = _stops.get(token)
        if why is not None:
            raise _stop_exception(why)

    rows = []
    for p in batch:
        out = recording_path(Path(out_dir), p.index)
        why = _stops.get(token)
        if why is not None:  # the sweep stopped before this point started
            rows.append(_unfinished(p, why))
            continue
        row: dict[str, Any] = {"point": p.index, "seed": p.seed, "path": str(out),
                               **dict(p.values)}
        t0 = time.perf_counter()
        held = False
        try:
            # a run (or another sweep's worker) writing this point's files is refused here
            with exclusive(out, "gridloop sweep"):
                held = True
                _clear(out)
                s = load(scenario_path, _fixed(extra) + list(p.overrides))  # as check_points
                plan = build_plan(s, ledger=str(ledger_path(out)))
                stop_here()  # told to stop while it built: no recording started
                summary = run_plan(plan, out, progress=False, on_tick=stop_here)
                _judge(row, out, s, summary.ticks)
        except KeyboardInterrupt as exc:  # the sweep stopped it: its recording says why
            row["status"] = stop_reason(exc)
            if not out.exists():
                row["path"] = ""
        except Exception as exc:  # one bad point must not sink the sweep
            row["status"] = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")
            if not held or not out.exists():  # the row names no recording it did not make
                row["path"] = ""
        row["wall_s"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
    return rows


def _judge(row: dict[str, Any], out: Path, s: Any, ticks: int | None = None) -> None:
    """Fill in ``row`` from the point's complete recording at ``out`` (of ``ticks`` ticks,
    where known: what the point's run said it recorded): the run's figures, its checks and
    its status, as ``gridloop run`` judges a run."""
    from bench.checks import evaluate
    from bench.recording import open_run
    from bench.summary import figures

    with open_run(out) as r:
        if not r.complete or (ticks is not None and len(r) != ticks):
            # never another run's figures as this point's
            raise BenchError(f"{out}: not the recording this point made ({len(r)} ticks, "
                             f"{'complete' if r.complete else 'incomplete'}); was it "
                             "replaced while the point ran?")
        fig = figures(r)
        row.update(fig.flat())
        outcomes = evaluate(r, s.checks)
    failed = [o.check.describe(o.unit) for o in outcomes if not o.passed]
    if outcomes:  # a grid point that breaks a check says which
        row["checks_failed"] = "; ".join(failed)
    # a point whose checks fail, or with a device that never gave a reading, has failed, as
    # `gridloop run` exits 1 for it
    silent = fig.never_read()
    why = [CHECKS_FAILED] if failed else []
    why += [f"{NEVER_READ} {', '.join(silent)}"] if silent else []
    row["status"] = "; ".join(why) or "ok"


@dataclass(frozen=True)
class SweepResult:
    """Where the table is and how the points ended."""

    path: Path
    points: int
    failed: int
    #: points that did not finish (a signal stopped the sweep)
    interrupted: int
    #: the signal's exception (KeyboardInterrupt, :class:`bench.stopping.Terminated`) that
    #: stopped the sweep; None: it ran to its end
    stopped: KeyboardInterrupt | None = None


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
            # the twin's compiled (numba) code runs here: a signal is raised once it is built
            with deferred_stop():
                plan = build_plan(s, ledger=str(ledger_path(recording_path(out_dir,
                                                                           p.index))))
            controller_for(plan)
        except user_errors() as exc:
            raise ScenarioError(f"point {p.index} ({', '.join(p.overrides)}): {exc}") from None
        pts.append(replace(p, seed=s.run.seed, nodes=tuple(s.nodes), checks=bool(s.checks)))
    return pts


@contextlib.contextmanager
def holding(out_dir: Path) -> Iterator[None]:
    """Hold the sweep's output folder against other sweeps: a lock file beside it
    (``.NAME.lock``, as :func:`bench.paths.exclusive` holds a run's recording), so a second
    sweep into it stops at once, before it touches anything, naming the sweep that holds
    it.  The folder is held by its real path: another spelling of it is the same folder."""
    held = Path(os.path.realpath(out_dir))
    if not held.name:
        raise BenchError(f"--out {out_dir}: give the sweep a folder of its own")
    with exclusive(held, "gridloop sweep",
                   refusal=f"{out_dir} is in use by another sweep ({{holder}}); wait for it to "
                           "finish, or give --out another folder"):
        yield


def sweep(scenario_path: Path, items: Sequence[str], out_dir: Path, workers: int = 2,
          scheduler: str | None = None, batch_size: int = 1,
          extra: Sequence[str] = (), progress: bool = True) -> SweepResult:
    """Run the sweep, writing ``out_dir/results.csv`` as each point finishes; the folder is
    held (:func:`holding`) from the start.

    Ctrl-C or SIGTERM stops it: the running points stop at their next tick, the finished
    rows are kept and the others marked ``interrupted`` or ``terminated``
    (:attr:`SweepResult.stopped` says which).
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise BenchError("gridloop sweep needs Dask: pip install 'gridloop[sweep]'") from exc
    with holding(out_dir):
        return _sweep(Client, LocalCluster, as_completed, scenario_path, items, out_dir,
                      workers, scheduler, batch_size, extra, progress)


def _sweep(client_type: Any, cluster_type: Any, as_completed: Any, scenario_path: Path,
           items: Sequence[str], out_dir: Path, workers: int, scheduler: str | None,
           batch_size: int, extra: Sequence[str], progress: bool) -> SweepResult:
    """:func:`sweep` once its folder is held."""
    pts = check_points(scenario_path, items, out_dir, extra)
    keys = [k for k, _ in parse_grid(items)]
    columns = _columns(pts, keys)
    token = uuid.uuid4().hex  # this sweep's points, told to stop (on a shared scheduler too)
    client = cluster = None
    rows: dict[int, dict[str, Any]] = {}
    path = out_dir / "results.csv"
    futures: dict[Any, list[Point]] = {}
    stopped: KeyboardInterrupt | None = None
    t0 = time.monotonic()
    try:
        with deferred_stop():  # a signal stops the sweep once the cluster is there to close
            client, cluster = _connect(client_type, cluster_type, scheduler, workers)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"--out {out_dir}: {exc.strerror or exc}") from None
        for p in pts:  # a rerun replaces every point's files; none is held by a run
            with exclusive(recording_path(out_dir, p.index), "gridloop sweep"):
                _clear(recording_path(out_dir, p.index))
        _write_table(path, pts, columns, rows, "pending")
        batches = [pts[i:i + batch_size] for i in range(0, len(pts), max(1, batch_size))]
        futures = {client.submit(run_batch, str(scenario_path.resolve()), b, str(out_dir),
                                 tuple(extra), token, pure=False): b for b in batches}
        for fut in as_completed(futures):
            _collect(fut, futures[fut], rows)
            _write_table(path, pts, columns, rows, "pending")  # a crash keeps what finished
            if progress:
                print(f"sweep: {len(rows)}/{len(pts)} points "
                      f"({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM: the running points are stopped below
        stopped = exc
    finally:
        if client is not None:
            stopped = _wind_down(client, cluster, futures, token, rows, stopped)
    if stopped is not None:
        if not path.is_file():  # stopped before the table: nothing ran
            raise stopped
        why = stop_reason(stopped)
        for p in pts:
            if p.index not in rows or rows[p.index]["status"] in STOPPED:
                rows[p.index] = _recovered(p, scenario_path, out_dir, extra, why,
                                           rows.get(p.index))
        _write_table(path, pts, columns, rows, why)
    _release(out_dir, pts)  # the lock files of points whose worker was killed
    finished = [p for p in pts if p.index in rows and rows[p.index]["status"] not in STOPPED]
    failed = [p for p in finished if rows[p.index]["status"] != "ok"]
    for p in [] if stopped is not None else failed:  # a line per failed point; the caller counts
        row = rows[p.index]
        why = row["status"]
        if why.startswith(CHECKS_FAILED):
            why = why.replace(CHECKS_FAILED, f"{CHECKS_FAILED}: {row.get('checks_failed', '')}",
                              1)
        print(f"gridloop: point {p.index} ({', '.join(p.overrides)}): {why}",
              file=sys.stderr, flush=True)
    return SweepResult(path, len(pts), len(failed), len(pts) - len(finished), stopped)


def _connect(client_type: Any, cluster_type: Any, scheduler: str | None,
             workers: int) -> tuple[Any, Any]:
    """A client of the scheduler at ``scheduler``, or of a local cluster of ``workers``
    (returned too, to close)."""
    if scheduler:
        try:
            return client_type(scheduler), None
        except (OSError, ValueError, TypeError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BenchError(f"--scheduler {scheduler}: no Dask scheduler there ({why})") from None
    cluster = _local_cluster(cluster_type, workers)
    try:
        return client_type(cluster), cluster
    except BaseException:
        cluster.close()
        raise


def _collect(fut: Any, batch: list[Point], rows: dict[int, dict[str, Any]]) -> None:
    """The rows of a finished task into ``rows``."""
    try:
        done = fut.result()
    except Exception as exc:  # the worker died: its points failed, the rest go on
        why = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")
        done = [_unfinished(p, why) for p in batch]
    rows.update((r["point"], r) for r in done)


def _wind_down(client: Any, cluster: Any, futures: dict[Any, list[Point]], token: str,
               rows: dict[int, dict[str, Any]],
               stopped: KeyboardInterrupt | None) -> KeyboardInterrupt | None:
    """Stop the points still running, when a signal ``stopped`` the sweep (each at its next
    tick, for up to :data:`STOP_GRACE_S`; a second signal waits no longer), collect their
    rows, and close the cluster, which a signal does not interrupt.  Returns the signal that
    stopped the sweep (one that came while it closed included)."""
    try:
        with deferred_stop():
            if stopped is not None:
                _stop_points(client, futures, token, stop_reason(stopped), rows)
            _close(client, cluster, stopped is not None)
    except KeyboardInterrupt as exc:  # came while it closed: the sweep stops all the same
        stopped = stopped or exc
    return stopped


def _stop_points(client: Any, futures: dict[Any, list[Point]], token: str, why: str,
                 rows: dict[int, dict[str, Any]]) -> None:
    """Tell every worker to stop this sweep's points (:func:`_request_stop`), cancel the
    tasks no worker has started, and wait for the running ones to return their rows."""
    left = [f for f, batch in futures.items() if any(p.index not in rows for p in batch)]
    try:
        with _quiet():
            client.run(_request_stop, token, why)
            running = {k for keys in client.processing().values() for k in keys}
            client.cancel([f for f in left if f.key not in running and not f.done()])
    except Exception:  # the scheduler or a worker is gone: closing the cluster stops them
        return
    deadline = time.monotonic() + STOP_GRACE_S
    while (any(not f.done() for f in left) and time.monotonic() < deadline
           and stop_requested() is None):
        time.sleep(0.05)
    for f in left:
        if f.status == "finished":
            with contextlib.suppress(Exception):
                _collect(f, futures[f], rows)


def _recovered(p: Point, scenario_path: Path, out_dir: Path, extra: Sequence[str], why: str,
               row: dict[str, Any] | None) -> dict[str, Any]:
    """The row of a point a signal stopped or kept from starting (``row``: what its worker
    returned, if it did): one whose recording is complete finished before it stopped, and
    is judged from it here; another names its recording, if it started one."""
    out = recording_path(out_dir, p.index)
    if not out.is_file():
        return row or _unfinished(p, why)
    from bench.recording import open_run

    try:
        with open_run(out) as r:
            complete = r.complete
    except Exception:  # still being closed by a killed point's writer: not finished
        complete = False
    if complete:
        done: dict[str, Any] = {"point": p.index, "seed": p.seed, "path": str(out),
                                **dict(p.values)}
        try:
            _judge(done, out, load(scenario_path, _fixed(extra) + list(p.overrides)))
            return done
        except Exception:  # not judged: reported as stopped, as its worker said
            pass
    return row or _unfinished(p, why, str(out))


def _release(out_dir: Path, pts: list[Point]) -> None:
    """Remove the points' lock files a killed worker left (none is held any more; one that
    is, by a point still running on a shared scheduler, is left as it is)."""
    for p in pts:
        with contextlib.suppress(BenchError, OSError), \
                exclusive(recording_path(out_dir, p.index), "gridloop sweep"):
            pass


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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Dask's loggers quiet: workers stopped mid-point are expected here."""
    quiet = [logging.getLogger(n) for n in ("distributed", "tornado", "asyncio")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)


def _close(client: Any, cluster: Any, stopped: bool = False) -> None:
    """Close the client and cluster quietly: workers stopped mid-point are expected here.
    ``stopped``: the sweep was stopped, and a point still running (a controller stuck in its
    step) has had its time: each worker gets 1 s to close before it is killed, not Dask's
    4 s, so the sweep ends well within the 10 s a CI runner allows after SIGTERM."""
    with _quiet():
        client.close()
        if cluster is not None:
            if stopped:
                with contextlib.suppress(Exception):  # closed below all the same
                    cluster.sync(_close_workers, cluster, 1.0)
            cluster.close()


async def _close_workers(cluster: Any, timeout: float) -> None:
    """Close the local cluster's workers (their nannies), each within ``timeout`` s."""
    import asyncio

    await asyncio.gather(*(w.close(timeout=timeout) for w in list(cluster.workers.values())),
                         return_exceptions=True)


def _unfinished(p: Point, status: str, path: str = "") -> dict[str, Any]:
    return {"point": p.index, "seed": p.seed, "path": path, **dict(p.values), "status": status}


#: the table's first and last columns; between them the swept keys and the figures
HEAD, TAIL = ("point", "seed", "path"), ("checks_failed", "status", "wall_s")


def _columns(pts: list[Point], keys: list[str]) -> list[str]:
    """The table's columns, whatever finished: a pipeline reads the same schema from a
    sweep that stopped before any point did.  Every figure of every node
    (:meth:`bench.summary.Figures.flat`, the nodes in the recording's order), and
    ``checks_failed`` when a point has checks."""
    from bench.summary import Figures, NodeFigures

    columns = [*HEAD, *keys]
    for p in pts:
        fig = Figures(nodes={n: NodeFigures() for n in sorted(p.nodes)})
        columns += [k for k in fig.flat() if k not in columns]
    return columns + [k for k in TAIL if k != "checks_failed" or any(p.checks for p in pts)]


def _write_table(path: Path, pts: list[Point], schema: list[str],
                 rows: dict[int, dict[str, Any]], unfinished: str) -> None:
    """Every point's row, finished or ``unfinished``, in the ``schema`` columns (and any
    other a row has, before the last ones); replaced whole, so a reader (or a crash) never
    sees half a table."""
    table = [rows.get(p.index) or _unfinished(p, unfinished) for p in pts]
    tail = [k for k in schema if k in TAIL]
    columns = [k for k in schema if k not in TAIL]
    for r in table:
        columns += [k for k in r if k not in columns and k not in tail]
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
