"""The lockstep engine: observe, control, actuate, advance, record, pace.

Simulated time is ``t_k = k dt``.  One tick:

1. observe: read every device concurrently, each within its deadline; a reading carries a
   quality flag and its round-trip time (twin-only assets are observed from the twin);
2. control: the controller maps the observation to setpoints (and, at market-interval
   boundaries, to orders);
3. actuate: write changed setpoints to the devices;
4. advance: the twin integrates ``[t_k, t_k + dt]`` with the setpoints held; emulators
   advance their own plants on the same clock;
5. record: one row into the recorder's buffer (the writer process does the HDF5 work);
6. pace: in real time, sleep to the next deadline, measure lateness, and apply the
   catch-up policy when late (``hold``, ``skip``, ``fail``), recording that it fired.

Both the measured values and the twin's predictions of tick ``k`` are taken *before* the
setpoints of tick ``k`` land: what a meter sampling just before the write sees.  So measured
minus twin compares like with like.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from bench.controllers import (
    ControllerCalls,
    ControllerContext,
    Observation,
    SignalError,
    check_setpoint_values,
    load_controller,
    where_raised,
)
from bench.errors import BenchError, ControllerError, DeviceWarning, LateTickError
from bench.plan import Plan
from bench.recorder import Recorder
from bench.stopping import deferred_stop, interruptible, stop_reason, stop_requested


@dataclass
class RunSummary:
    """What a run did, for the CLI's summary and for tests."""

    path: Path
    ticks: int
    simulated_s: float
    wall_s: float
    lateness_p50_s: float = math.nan
    lateness_p99_s: float = math.nan
    lateness_max_s: float = math.nan
    #: ticks that started a whole period late: the tick before overran its deadline
    missed_deadlines: int = 0
    #: ticks that started later than the run's ``late_after_s`` (catch-up acted)
    late_ticks: int = 0
    catch_ups: int = 0
    device_errors: dict[str, int] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def realtime_factor(self) -> float:
        return self.simulated_s / self.wall_s if self.wall_s > 0 else math.inf


class Progress:
    """A progress bar on stderr: a redrawn bar on a terminal, a line per 10 % otherwise."""

    def __init__(self, total: int, label: str = "run", enabled: bool = True,
                 stream: Any = None) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._next = 0.0
        self._decile = -1
        self._t0 = time.monotonic()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        frac = done / self.total
        if self.tty:
            if now < self._next and done < self.total:
                return
            self._next = now + 0.2
            width = 30
            bar = "#" * int(frac * width)
            self.stream.write(f"\r{self.label} [{bar:<{width}}] {frac:6.1%} "
                              f"{now - self._t0:6.1f} s")
            self.stream.flush()
        else:
            decile = int(frac * 10)
            if decile > self._decile:
                self._decile = decile
                self.stream.write(f"{self.label}: {frac:.0%} ({now - self._t0:.1f} s)\n")
                self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class Engine:
    """Runs a :class:`~bench.plan.Plan` (a scenario made concrete) and records it.

    Parameters
    ----------
    plan : Plan
        Twin, devices, controller configuration and recording layout.
    out : path-like
        The HDF5 recording to write.
    progress : bool
        Show a progress bar on stderr.
    on_tick : callable, optional
        Called after every recorded tick with ``(k, t)`` (the live view uses it).
    """

    def __init__(self, plan: Plan, out: str | Path, progress: bool = True,
                 on_tick: Callable[[int, float], None] | None = None,
                 controller: Any = None) -> None:
        self.plan = plan
        self.out = Path(out)
        self.progress = progress
        self.on_tick = on_tick
        self._controller_override = controller

    # -- set-up ---------------------------------------------------------------------------

    def _controller(self) -> Any:
        if self._controller_override is not None:
            return self._controller_override
        return controller_for(self.plan)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Run to the scenario's duration; the recording is closed properly on any error.

        SIGINT (Ctrl-C) and SIGTERM raise nothing inside the event loop or the twin's
        compiled code (:func:`bench.stopping.deferred_stop`): the run stops at the start of the
        next tick (a controller's call, plain Python, is interrupted at once) through its
        stop path, the ``run_stopped`` event, the recording closed and the market's interval
        settled; then KeyboardInterrupt or :class:`bench.stopping.Terminated` is raised here.
        """
        with deferred_stop():
            summary, stopped = asyncio.run(self._stoppable())
            if stopped is not None:
                raise stopped
        return summary

    async def _stoppable(self) -> tuple[RunSummary, KeyboardInterrupt | None]:
        """:meth:`_run`, a stop by a signal returned (out of ``asyncio.run`` as a value, not
        through the event loop) once the run's stop path is done."""
        try:
            return await self._run(), None
        except KeyboardInterrupt as exc:
            return RunSummary(self.out, 0, 0.0, 0.0), exc

    async def _run(self) -> RunSummary:
        asyncio.get_running_loop().set_exception_handler(_one_line_per_kind())
        plan = self.plan
        run = plan.scenario.run
        controller = self._controller()
        recorder = Recorder(self.out, plan.layout, plan.recording_attrs(),
                            flush_s=run.flush_s)
        summary = RunSummary(self.out, 0, 0.0, 0.0)
        finished = False
        try:
            await plan.start(recorder)
            try:
                try:
                    # every call into the controller: one line when it fails, exits or
                    # overruns
                    with ControllerCalls(plan.scenario.controller.name,
                                         run.controller_timeout_s) as calls:
                        await self._loop(controller, calls, recorder, summary)
                finally:  # however the loop ends, no device keeps the run's last setpoints
                    await plan.write_safe_state(summary.simulated_s)
                finished = True
            except BaseException as exc:  # the recording says why it ends where it does
                with contextlib.suppress(Exception):  # a failed recorder: say what failed
                    recorder.event(summary.simulated_s, "run_stopped", _why(exc))
                raise
            finally:
                await plan.stop()
        finally:
            recorder.close(complete=finished)
        return summary

    async def _loop(self, controller: Any, calls: ControllerCalls, rec: Recorder,
                    summary: RunSummary) -> None:
        plan = self.plan
        run = plan.scenario.run
        dt = run.dt_s
        n = run.n_ticks
        twin = plan.twin
        obs = Observation(plan.obs_index, plan.obs_values, plan.obs_twin, plan.quality_index,
                          plan.quality, dt, forecast=_deferring(plan.forecast))
        sp_index = plan.setpoint_index
        progress = Progress(n, plan.scenario.run.name, self.progress)
        realtime = run.realtime
        late_after = run.late_threshold_s
        lateness = np.zeros(n)
        wall0 = time.perf_counter()
        if plan.capture is not None:  # transactions on the run's clock, beside the ticks
            plan.capture.set_origin()
        k = 0
        late_ticks = 0
        catch_ups = 0
        has_devices = bool(plan.devices)
        market_view = _market_view(controller, calls)
        stopped_by: BaseException | None = None
        try:
            while k < n:
                stop = stop_requested()  # SIGINT or SIGTERM: stop here, between two ticks
                if stop is not None:
                    raise stop
                t = k * dt
                start = time.perf_counter()
                late = start - (wall0 + t) if realtime else 0.0
                if realtime and late > late_after:
                    late_ticks += 1
                    if run.catch_up == "fail":
                        rec.event(t, "catch_up", f"fail: tick {k} late by {late * 1e3:.2f} ms")
                        raise LateTickError(f"tick {k} (t = {t:.3f} s) was late by "
                                            f"{late * 1e3:.2f} ms and catch_up is 'fail'")
                    if run.catch_up == "skip":
                        skip = min(int(late // dt), n - k - 1)
                        if skip > 0:
                            catch_ups += 1
                            rec.event(t, "catch_up", f"skip: {skip} tick(s) from tick {k}, "
                                                     f"late by {late * 1e3:.2f} ms")
                            for _ in range(skip):
                                lateness[k] = late
                                await plan.advance_without_io(rec, k, wall0, late)
                                k += 1
                            continue
                    else:
                        catch_ups += 1
                        rec.event(t, "catch_up", f"hold: tick {k} late by {late * 1e3:.2f} ms")
                lateness[k] = late
                obs.t, obs.k = t, k
                # 1. observe
                if has_devices:
                    await plan.observe(k, t)
                else:
                    plan.observe_twin(k)
                # 2. control
                try:
                    with interruptible():  # a controller's busy loop stops on Ctrl-C
                        setpoints = calls.call("step", t, controller.step, obs)
                except SignalError as exc:  # a lookup the step made: its tick, as below
                    raise ControllerError(f"controller '{calls.name}' failed at "
                                          f"t = {t:.3f} s: {exc}"
                                          f"{where_raised(exc, controller.step)}") from exc
                except ControllerError:
                    raise
                except Exception as exc:  # where in its code: (at FILE:LINE in FUNC)
                    raise ControllerError(f"controller '{calls.name}' failed at "
                                          f"t = {t:.3f} s: {type(exc).__name__}: {exc}"
                                          f"{where_raised(exc, controller.step)}") from exc
                if setpoints:
                    if isinstance(setpoints, Mapping):
                        check_setpoint_values(calls.name, setpoints, t)
                    plan.set_setpoints(setpoints, sp_index, t)
                if plan.market is not None:
                    plan.market.tick(k, t, obs, market_view)
                # 3. actuate
                if has_devices:
                    await plan.actuate(t)
                # 5. record (the row of tick k: observations before this tick's setpoints)
                plan.record(rec, k, t, time.perf_counter() - wall0, late)
                # 4. advance
                twin.advance(dt)
                plan.advance_emulators(dt)
                k += 1
                if self.on_tick is not None:
                    self.on_tick(k, t)
                progress.update(k)
                # 6. pace
                if realtime:
                    wait = wall0 + k * dt - time.perf_counter()
                    while wait > 0.25 and stop_requested() is None:  # a long dt: stop soon
                        await asyncio.sleep(0.25)
                        wait = wall0 + k * dt - time.perf_counter()
                    if wait > 0 and stop_requested() is None:
                        await asyncio.sleep(wait)
                elif k % (64 if has_devices else 1024) == 0:
                    await asyncio.sleep(0)  # give way: device I/O
        except BaseException as exc:
            stopped_by = _signalled(exc)
            if stopped_by is not exc:  # the signal, not what it caused, stopped the run
                raise stopped_by from exc
            raise
        finally:
            progress.close()
            summary.ticks = k
            summary.simulated_s = k * dt
            summary.wall_s = time.perf_counter() - wall0
            summary.late_ticks = late_ticks
            summary.catch_ups = catch_ups
            summary.device_errors = dict(plan.device_errors)
            if realtime and k:
                lat = lateness[:k]
                summary.lateness_p50_s = float(np.percentile(lat, 50))
                summary.lateness_p99_s = float(np.percentile(lat, 99))
                summary.lateness_max_s = float(lat.max())
                summary.missed_deadlines = int((lat >= dt).sum())
            if plan.market is not None:
                plan.market.finish(rec, k * dt, stopped_by)


def _market_view(controller: Any, calls: ControllerCalls) -> Any:
    """The controller as the market sees it: its ``orders(obs, interval)``, if it has one,
    called like its step (a failure, an exit or an overrun is one line)."""
    orders = getattr(controller, "orders", None)
    if orders is None:
        return controller

    def guarded(obs: Observation, interval: int) -> Any:
        try:
            with interruptible():
                return calls.call("orders", obs.t, orders, obs, interval)
        except SignalError as exc:
            raise ControllerError(f"controller '{calls.name}' failed in orders at "
                                  f"t = {obs.t:.3f} s: {exc}{where_raised(exc, orders)}"
                                  ) from exc
        except ControllerError:
            raise
        except Exception as exc:
            raise ControllerError(f"controller '{calls.name}' failed in orders at "
                                  f"t = {obs.t:.3f} s: {type(exc).__name__}: {exc}"
                                  f"{where_raised(exc, orders)}") from exc

    return SimpleNamespace(orders=guarded)


def _deferring(fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """``fn`` (the twin's compiled code, which a controller's step calls) with SIGINT and
    SIGTERM deferred until it returns, though the step is :func:`bench.stopping.interruptible`."""
    if fn is None:
        return None

    def call(*args: Any, **kwargs: Any) -> Any:
        with deferred_stop():
            return fn(*args, **kwargs)

    return call


def _one_line_per_kind() -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event-loop exception handler that says what went wrong in one line, once per kind.

    A device's transport that chokes on a malformed frame fails inside the event loop
    (asyncio's default handler prints a traceback on every reconnect); the device's reads
    already fail and are recorded, so one warning line is enough.
    """
    seen: set[str] = set()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        what = f"{context.get('message', 'event loop error')}" + (
            f": {type(exc).__name__}: {exc}" if exc is not None else "")
        key = what.split(":")[0] + (type(exc).__name__ if exc is not None else "")
        if key not in seen:
            seen.add(key)
            warnings.warn(DeviceWarning(what.replace("\n", " ")), stacklevel=1)

    return handle


def _signalled(exc: BaseException) -> BaseException:
    """``exc``, or the SIGINT or SIGTERM noted before ``exc`` reached the stop path: Ctrl-C
    reaches the terminal's whole process group, so an emulator process it stopped can fail a
    tick before the run's own stop lands at the next one; the signal is why the run stops."""
    stop = stop_requested()
    return stop() if stop is not None and isinstance(exc, Exception) else exc


def _why(exc: BaseException) -> str:
    """One line on why a run stopped before its end, for the recording's events: as
    ``gridloop run --json`` says it (SIGTERM: ``terminated``, Ctrl-C: ``interrupted``)."""
    if isinstance(exc, KeyboardInterrupt):
        return stop_reason(exc)
    if isinstance(exc, asyncio.CancelledError):
        return "interrupted"
    if isinstance(exc, BenchError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def controller_for(plan: Plan) -> Any:
    """The scenario's controller, built for the plan's assets (its options checked).

    A ``module:Class`` controller is imported from the scenario's folder first, then from
    the installed packages: a ``mine.py`` beside ``lab.toml`` is found wherever
    ``gridloop`` runs from.
    """
    s = plan.scenario
    ctx = ControllerContext(dt_s=s.run.dt_s, assets=tuple(plan.asset_refs()),
                            islanded=plan.islanded())
    folder = str(s.path.resolve().parent) if s.path is not None else None
    limit = s.run.controller_timeout_s
    if folder is None or ":" not in s.controller.name or folder in sys.path:
        return load_controller(s.controller.name, ctx, s.controller.options, limit)
    sys.path.insert(0, folder)
    try:
        return load_controller(s.controller.name, ctx, s.controller.options, limit)
    finally:
        sys.path.remove(folder)


def run_plan(plan: Plan, out: str | Path, progress: bool = True,
             controller: Any = None, on_tick: Callable[[int, float], None] | None = None
             ) -> RunSummary:
    """Run a plan to completion and return its summary."""
    return Engine(plan, out, progress=progress, controller=controller, on_tick=on_tick).run()
