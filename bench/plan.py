"""A scenario made concrete: parameter sets loaded, twin built, devices opened, layout fixed.

The :class:`Plan` owns everything the engine touches each tick, laid out in flat arrays so a
tick costs a few array copies: ``obs_values`` (what the controller sees: measured where an
asset has a device, the twin where it has none), ``obs_twin`` (the twin's prediction of the
same signals), ``quality`` (per asset) and the setpoints held in the twin's ``u``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench import __version__
from bench.controllers import AssetRef
from bench.errors import ControllerError, DeviceWarning, ScenarioWarning
from bench.recorder import Column, Layout, Recorder, Residual
from bench.scenario import DEVICE_KINDS, MODE_ORDER, Scenario

#: the bits of a tick's quality flag that are its reading's (firmware_bridge.device)
READ_QUALITY = 0b011
#: what the values of ``/quality/<node>/<asset>`` mean (the group's ``codes`` attribute)
QUALITY_CODES = ("0 ok, 1 stale, 2 timeout, 3 error (the reading); plus 4 when a setpoint "
                 "write to the device failed that tick (4 ok, 5 stale, 6 timeout, 7 error); "
                 "flag & 3: the reading, flag & 4: the write")

#: register map each asset kind exposes when emulated or read from hardware
DEVICE_MAPS = {"battery": "sunspec_battery", "inverter": "sunspec_inverter",
               "meter": "sunspec_meter", "gpu_rack": "gpu_rack"}

#: the longest the bench spends writing the safe state when a run ends, all devices at once
#: (each write is bounded by its back-end's own time-out first): a dead device never holds
#: up the exit [s]
SAFE_STATE_S = 2.0

#: in a run that is not real time, the longest the bench waits on the wall clock for a read
#: or write of an emulated device (its deadline is judged on the device's clock): only a
#: device that hangs costs it, as each back-end's own time-out for one request (0.5 s on
#: Modbus) ends the wait for an answer that does not come first [s]
LOCKSTEP_WAIT_S = 2.0


@dataclass
class DeviceSlot:
    """One device of the run and where its values go."""

    node: str
    asset: str
    device: Any
    #: signal name -> index into obs_values
    signals: dict[str, int]
    #: setpoint name -> index into the twin's u
    setpoints: dict[str, int]
    qidx: int
    rtt_col: int
    deadline_s: float
    last_written: dict[str, float] = field(default_factory=dict)
    #: setpoints the run wrote to the device, or may have (a write to a device that has
    #: answered, left unanswered; not one it refused or never received): the ones the safe
    #: state puts back when the run ends
    wrote: set[str] = field(default_factory=set)
    #: an emulated device in a run that is not real time: its deadline is judged on the
    #: device's clock (see :meth:`Plan.wait_s`)
    lockstep: bool = False
    rtt_s: float = math.nan
    errors: int = 0
    #: consecutive ticks whose read failed; the first of a streak becomes an event and a
    #: warning
    streak: int = 0
    #: consecutive failed setpoint writes (each one is an event; the first of a streak is a
    #: warning unless the device's reads are failing too)
    write_streak: int = 0
    #: the device failed to open and was said so: the reads failing on from there are the
    #: same failure, not a new warning (cleared by the first reading that is ok)
    open_failed: bool = False
    #: a point the device has and the run cannot use, or the reverse, said once:
    #: ``("signal", name)`` or ``("setpoint", name)``
    unplaced: set[tuple[str, str]] = field(default_factory=set)
    #: its events (t, kind, message) and warning lines (or None) held while the devices'
    #: I/O runs concurrently, recorded in device order once it is over
    said: list[tuple[float, str, str, str | None]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.node}.{self.asset}"


class Plan:
    """Everything a run needs, built from a scenario.  See :func:`bench.build.build_plan`."""

    def __init__(self, scenario: Scenario, twin: Any, asset_kinds: dict[tuple[str, str], str],
                 asset_params: dict[tuple[str, str], Mapping[str, Any]]) -> None:
        self.scenario = scenario
        self.twin = twin
        self.asset_kinds = asset_kinds
        self.asset_params = asset_params
        self.devices: list[DeviceSlot] = []
        self.device_errors: dict[str, int] = {}
        self.emulators: Any = None
        self.market: Any = None
        #: replay: recorded measured values, one row per tick, a column per observation
        #: (NaN where the recording has none), and the assets they belong to
        self.replay_values: np.ndarray | None = None
        self.replay_assets: set[str] = set()
        #: replay: the reading's quality code recorded for each asset (a column per
        #: ``quality_index``), one row per tick: what the recorded controller was given
        self.replay_quality: np.ndarray | None = None
        #: every Modbus transaction of the run's devices, recorded under /capture
        self.capture: Any = None
        self.capture_devices: list[str] = []
        #: root attributes a caller adds to the recording's (a replay's ``replay_of``...),
        #: written with the file when the recorder creates it
        self.extra_attrs: dict[str, Any] = {}
        self._rec: Recorder | None = None
        #: simulated time of the tick being read or written: the clock of the emulated
        #: devices' reconnect back-offs in a run that is not real time [s]
        self._clock_t = 0.0
        self._build_indices()

    # -- indices and layout ---------------------------------------------------------------

    def _build_indices(self) -> None:
        twin = self.twin
        # observable signals: the twin's outputs (devices add their own names in add_device)
        self.obs_keys: list[str] = [f"{n}.{a}.{s}" for n, a, s, _ in twin.outputs]
        self._twin_index = {k: i for i, k in enumerate(self.obs_keys)}
        self.obs_units: dict[str, str] = {f"{n}.{a}.{s}": u for n, a, s, u in twin.outputs}
        self.obs_index: dict[str, int] = {k: i for i, k in enumerate(self.obs_keys)}
        self.setpoint_index: dict[str, int] = {f"{n}.{a}.{s}": i
                                              for i, (n, a, s, _) in enumerate(twin.setpoints)}
        self.setpoint_units: dict[str, str] = {f"{n}.{a}.{s}": u
                                               for n, a, s, u in twin.setpoints}
        #: NODE.ASSET.NAME -> its register map's control: range and safe state, by the
        #: asset's kind, so every mode refuses the same values
        self.setpoint_controls = self._setpoint_controls()
        #: NODE.ASSET.NAME -> the devices (slot, setpoint name) the run writes it to
        self._setpoint_slots: dict[str, list[tuple[DeviceSlot, str]]] = {}
        self._bounds: tuple[list[float], list[float], set[int]] | None = None
        assets = list(self.asset_kinds)
        self.quality_index = {f"{n}.{a}": i for i, (n, a) in enumerate(assets)}
        self.quality = np.zeros(len(assets), dtype=np.uint8)
        self._finalise_arrays()

    def _setpoint_controls(self) -> dict[str, Any]:
        """The control (:class:`firmware_bridge.maps.Control`) of each setpoint of an asset
        kind that has a register map (:data:`DEVICE_MAPS`)."""
        kinds = {self.asset_kinds.get((n, a)) for n, a, _, _ in self.twin.setpoints}
        kinds &= set(DEVICE_MAPS)
        if not kinds:
            return {}
        from firmware_bridge.maps import get_map

        controls = {k: {c.setpoint: c for c in get_map(DEVICE_MAPS[k]).controls}
                    for k in kinds}
        out = {}
        for n, a, name, _ in self.twin.setpoints:
            control = controls.get(self.asset_kinds.get((n, a)), {}).get(name)
            if control is not None:
                out[f"{n}.{a}.{name}"] = control
        return out

    def _finalise_arrays(self) -> None:
        n = len(self.obs_keys)
        self.obs_values = np.full(n, np.nan)
        self.obs_twin = np.full(n, np.nan)
        # twin output i feeds observation j
        self._twin_to_obs = np.array([self.obs_index[f"{n_}.{a}.{s}"]
                                      for n_, a, s, _ in self.twin.outputs], dtype=int)
        self._measured_mask = np.zeros(n, dtype=bool)

    def add_device(self, node: str, asset: str, device: Any, deadline_s: float,
                   signals_: Sequence[str] | None = None,
                   setpoints_: Sequence[str] | None = None) -> DeviceSlot:
        """Attach an opened-later device to an asset; its signals become measured values.

        ``signals_`` and ``setpoints_`` (default: the device's own) name what the recording
        gets columns for and what the run writes: a device that learns its points only
        when it opens (a serial board's HELLO) cannot tell them before the layout is fixed.
        """
        signals = {}
        for name in device.signals if signals_ is None else signals_:
            key = f"{node}.{asset}.{name}"
            if key not in self.obs_index:
                self.obs_index[key] = len(self.obs_keys)
                self.obs_keys.append(key)
                # a signal the device has and the twin does not predict: its unit by name
                self.obs_units[key] = self.twin.UNITS.get(name, "")
            signals[name] = self.obs_index[key]
        setpoints = {}
        for name in device.setpoints if setpoints_ is None else setpoints_:
            key = f"{node}.{asset}.{name}"
            if key in self.setpoint_index:
                setpoints[name] = self.setpoint_index[key]
        slot = DeviceSlot(node, asset, device, signals, setpoints,
                          self.quality_index[f"{node}.{asset}"], -1, deadline_s)
        self.devices.append(slot)
        for name in setpoints:
            self._setpoint_slots.setdefault(f"{node}.{asset}.{name}", []).append((slot, name))
        self._bounds = None
        self._finalise_arrays()
        for s in self.devices:
            for idx in s.signals.values():
                self._measured_mask[idx] = True
        return slot

    def asset_refs(self) -> list[AssetRef]:
        refs = []
        for (node, asset), kind in self.asset_kinds.items():
            sps = tuple(s for (n, a, s, _) in self.twin.setpoints if n == node and a == asset)
            refs.append(AssetRef(node, asset, kind, sps, self.asset_params.get((node, asset), {})))
        return refs

    def islanded(self) -> dict[str, bool]:
        return {n: bool(v) for n, v in getattr(self.twin, "islanded", {}).items()}

    @property
    def layout(self) -> Layout:
        if not hasattr(self, "_layout"):
            self._layout = self._make_layout()
        return self._layout

    def _make_layout(self) -> Layout:
        floats = [Column("time", "s"), Column("wall", "s"), Column("timing/lateness", "s"),
                  Column("timing/skipped", "")]
        twin_out = {f"{n}.{a}.{s}": i for i, (n, a, s, _) in enumerate(self.twin.outputs)}
        device_assets = {s.key for s in self.devices} | self.replay_assets
        self._obs_cols = []   # (column, obs index)
        self._twin_cols = []  # (column, twin output index)
        residuals = []
        for key in self.obs_keys:
            node, asset, sig = key.split(".", 2)
            unit = self.obs_units.get(key, "")
            idx = self.obs_index[key]
            has_device = f"{node}.{asset}" in device_assets
            measured = self._measured_mask[idx]
            col = -1
            # an asset with a device records what the device measured; the rest of its
            # signals only as the twin's (never a twin value under the measured name)
            if measured or not has_device:
                col = len(floats)
                floats.append(Column(f"nodes/{node}/{asset}/{sig}", unit))
                self._obs_cols.append((col, idx))
            if has_device and key in twin_out:
                tcol = len(floats)
                floats.append(Column(f"nodes/{node}/{asset}/twin/{sig}", unit))
                self._twin_cols.append((tcol, twin_out[key]))
                if measured:
                    residuals.append(Residual(f"nodes/{node}/{asset}/residual/{sig}", col,
                                              tcol, unit))
        self._sp_cols = []
        for i, (node, asset, sp, unit) in enumerate(self.twin.setpoints):
            self._sp_cols.append((len(floats), i))
            floats.append(Column(f"nodes/{node}/{asset}/setpoint/{sp}", unit))
        for slot in self.devices:
            slot.rtt_col = len(floats)
            floats.append(Column(f"timing/rtt/{slot.node}/{slot.asset}", "s"))
        flags = [Column(f"quality/{n}/{a}") for (n, a) in self.asset_kinds]
        tables = {}
        group_attrs: dict[str, dict[str, Any]] = {"quality": {"codes": QUALITY_CODES}}
        if self.market is not None:
            tables.update(self.market.tables())
        if self.capture is not None:
            from firmware_bridge.capture import FORMAT, FORMAT_VERSION, TRANSACTION_DTYPE

            group_attrs["capture"] = {"format": FORMAT, "format_version": FORMAT_VERSION}
            for name in self.capture_devices:
                tables[f"capture/{name}/transactions"] = TRANSACTION_DTYPE
                tables[f"capture/{name}/registers"] = np.dtype("<u2")
        self._obs_cols_a = np.array([c for c, _ in self._obs_cols], dtype=int)
        self._obs_idx_a = np.array([i for _, i in self._obs_cols], dtype=int)
        self._twin_cols_a = np.array([c for c, _ in self._twin_cols], dtype=int)
        self._twin_idx_a = np.array([i for _, i in self._twin_cols], dtype=int)
        self._sp_cols_a = np.array([c for c, _ in self._sp_cols], dtype=int)
        self._sp_idx_a = np.array([i for _, i in self._sp_cols], dtype=int)
        return Layout(floats, flags, residuals, tables, group_attrs)

    def recording_attrs(self) -> dict[str, Any]:
        """The recording's root attributes.  ``mode`` is what ran: the highest mode an asset
        ran in (``hardware``, ``emulated``, else ``twin``, as in ``gridloop replay``), so a
        run asked for in hardware mode that reached no hardware is not stamped ``hardware``;
        ``mode_requested`` is the run's mode as asked, ``asset_modes`` each asset's (JSON)."""
        import json

        s = self.scenario
        assets = self.asset_modes()
        ran = s.run.mode if s.run.mode == "replay" else max(
            (m for m in assets.values() if m in MODE_ORDER), key=MODE_ORDER.__getitem__,
            default="twin")
        return {"gridloop_version": __version__, "scenario": s.text,
                "scenario_overrides": "\n".join(s.overrides),
                "scenario_path": str(s.path or ""), "mode": ran,
                "mode_requested": s.run.mode, "asset_modes": json.dumps(assets),
                "dt": s.run.dt_s,
                "seed": s.run.seed, "method": s.run.method, "realtime": s.run.realtime,
                "catch_up": s.run.catch_up, "late_after_s": s.run.late_threshold_s,
                "name": s.run.name, **self.extra_attrs}

    def asset_modes(self) -> dict[str, str]:
        """``NODE.ASSET`` -> the mode it runs in: ``hardware`` or ``emulated`` where it has
        a device of that kind, ``replay`` where a replay feeds it recorded values, ``twin``
        where it has none (its mode, the run's, or its kind: a pv and a grid are twin only)."""
        s = self.scenario
        with_device = {slot.key for slot in self.devices}
        out = {}
        for node, asset, cfg in s.assets():
            key = f"{node}.{asset}"
            out[key] = (s.effective_mode(cfg) if key in with_device
                        else "replay" if key in self.replay_assets else "twin")
        return out

    def _warn_no_hardware(self) -> None:
        """A run asked for in hardware mode in which no asset runs on hardware (none has
        ``mode = "hardware"`` and a device address) touches no device and is not paced to
        the wall clock: say so, and which assets run emulated or in the twin, and why."""
        s = self.scenario
        if s.run.mode != "hardware":
            return
        modes = self.asset_modes()
        if "hardware" in modes.values():
            return
        emulated, twin_mode, twin_kind = [], [], []
        for node, asset, cfg in s.assets():
            key = f"{node}.{asset}"
            if modes.get(key) == "emulated":
                emulated.append(key)
            elif cfg.kind not in DEVICE_KINDS:
                twin_kind.append(key)
            else:
                twin_mode.append(key)
        parts = []
        if emulated:
            parts.append(f"{', '.join(emulated)} run emulated (mode \"emulated\", the "
                         "default)")
        if twin_mode:
            parts.append(f"{', '.join(twin_mode)} in the twin (mode \"twin\")")
        if twin_kind:
            parts.append(f"{', '.join(twin_kind)} in the twin (a pv or grid has no device)")
        paced = "" if s.run.realtime else " and the run is not paced to the wall clock"
        warnings.warn(ScenarioWarning(
            f"{_where_run_mode(s)}: run.mode: hardware, but no asset has mode = \"hardware\" "
            f"(and a device address), so no device is touched{paced}: "
            f"{'; '.join(parts)}; set mode = \"hardware\" and device = {{ ... }} on the "
            "assets to run against them"), stacklevel=1)

    # -- per tick -------------------------------------------------------------------------

    def observe_twin(self, k: int) -> None:
        """No devices: the observation is the twin's output, or in a replay the recording's
        measured values where it has them."""
        y = self.twin.y
        self.obs_twin[self._twin_to_obs] = y
        self.obs_values[self._twin_to_obs] = y
        if self.replay_values is not None:
            i = min(k, len(self.replay_values) - 1)
            row = self.replay_values[i]
            self.obs_values[self._measured_mask] = row[self._measured_mask]
            if self.replay_quality is not None:
                # in place: the controller's Observation and the recorder read this array
                self.quality[:] = self.replay_quality[i]

    def set_replay(self, values: np.ndarray, assets: set[str],
                   quality: np.ndarray | None = None,
                   measured: np.ndarray | None = None) -> None:
        """Observe recorded values (``values[k, j]`` for observation ``j`` at tick ``k``)
        and, with ``quality`` (``quality[k, i]`` for the asset ``quality_index`` gives ``i``),
        the recorded reading codes: a controller that checks ``obs.quality`` before using a
        value sees a failed reading as failed, as the recorded one did, and the replay's
        ``/quality`` keeps saying which readings failed.  ``measured`` (per observation;
        default: those with a finite value) says which the recording measured: a device that
        never answered measured NaN, which the controller is given, not the twin's value."""
        if quality is not None and quality.shape != (len(values), len(self.quality)):
            raise ValueError(f"replay quality of shape {quality.shape}; expected "
                             f"{(len(values), len(self.quality))}")
        self.replay_values = values
        self.replay_assets = set(assets)
        self.replay_quality = None if quality is None else quality.astype(np.uint8)
        self._measured_mask[:] = (np.isfinite(values).any(axis=0) if measured is None
                                  else measured)

    async def observe(self, k: int, t: float) -> None:
        """Read every device concurrently within its deadline."""
        self._clock_t = t
        self.observe_twin(k)
        self.obs_values[self._measured_mask] = np.nan
        if self.devices:
            try:
                await asyncio.gather(*(self._read(slot, t) for slot in self.devices))
            finally:
                self._said()

    async def _read(self, slot: DeviceSlot, t: float) -> None:
        from firmware_bridge.device import Quality, poll

        t0 = time.perf_counter()
        try:
            reading = await asyncio.wait_for(poll(slot.device), self.wait_s(slot, t))
        except TimeoutError:
            self.quality[slot.qidx] = Quality.TIMEOUT
            slot.rtt_s = time.perf_counter() - t0
            self._count_error(slot, t, "timeout", f"{slot.key}: no answer within "
                              f"{slot.deadline_s * 1e3:.0f} ms")
            return
        slot.rtt_s = reading.rtt_s
        self.quality[slot.qidx] = int(reading.quality)
        if reading.quality in (Quality.TIMEOUT, Quality.ERROR):
            self._count_error(slot, t, reading.quality.name.lower(),
                              _named(slot.key, reading.error))
        unplaced = []
        for name, value in reading.values.items():
            idx = slot.signals.get(name)
            if idx is not None:
                self.obs_values[idx] = value
            elif ("signal", name) not in slot.unplaced:
                unplaced.append(name)
        if unplaced:
            self._unplaced(slot, t, [("signal", n) for n in unplaced],
                           f"{slot.key}: device has signal(s) {', '.join(unplaced)} the "
                           "recording has no column for (not recorded)")

    def wait_s(self, slot: DeviceSlot, t: float) -> float:
        """How long to wait on the wall clock for ``slot``'s device at tick time ``t``. [s]

        In real time, and for hardware, the deadline itself.  In a run that is not real time
        an emulated device lives on the bench's clock, which stands still while the bench
        reads: its deadline is judged on that clock by its client back-end, which draws its
        fault card as its emulator does (:class:`firmware_bridge.faults.LockstepFaults`) and
        gives up at the deadline only on the requests the card leaves unanswered in time.
        The bench then waits for the rest as long as a loaded machine may need
        (:data:`LOCKSTEP_WAIT_S`): the wall clock decides no outcome.
        """
        if not slot.lockstep:
            return slot.deadline_s
        return max(slot.deadline_s, LOCKSTEP_WAIT_S)

    def _unplaced(self, slot: DeviceSlot, t: float, points: list[tuple[str, str]],
                  message: str) -> None:
        """Say once that points of ``slot`` are on one side only (device or run)."""
        slot.unplaced.update(points)
        self._say(slot, t, "device_unplaced", message, message)

    def _say(self, slot: DeviceSlot, t: float, kind: str, message: str,
             warning: str | None) -> None:
        """An event of ``slot``'s (and its warning line, or None), held until the
        concurrent I/O of the step is over (:meth:`_said`)."""
        slot.said.append((t, kind, message, warning))

    def _said(self) -> None:
        """Record the events the devices' I/O held, device by device in the scenario's
        order (each device's in the order they came), and say their warnings: concurrent
        reads and writes complete in any order, and two runs of one scenario must record
        the same ``/events``."""
        for slot in self.devices:
            said, slot.said = slot.said, []
            for t, kind, message, warning in said:
                if kind and self._rec is not None:
                    self._rec.event(t, kind, message)
                if warning is not None:
                    warnings.warn(DeviceWarning(warning), stacklevel=1)

    def _count_error(self, slot: DeviceSlot, t: float, kind: str, message: str) -> None:
        """A failed read: the first of a streak is an event and a warning (at t = 0 too: a
        device slow or silent from the start is said at once), unless the device failed to
        open and was said so; the quality column has every tick."""
        slot.errors += 1
        self.device_errors[slot.key] = slot.errors
        if slot.streak == 0:
            self._say(slot, t, f"device_{kind}", message,
                      None if slot.open_failed else
                      f"at t = {t:.3f} s: {message} (the run goes on; reads retry it)")
        slot.streak += 1

    def _write_failed(self, slot: DeviceSlot, t: float, values: Mapping[str, float],
                      why: str) -> None:
        """A failed setpoint write: every one is an event (the device, each setpoint and
        value, the error) and flags its tick's quality ``WRITE_FAILED``, so the recording
        tells a setpoint applied from one that was not; on stderr, the first of a streak of
        failed writes, unless the device's reads are failing already (said once)."""
        from firmware_bridge.device import Quality

        slot.errors += 1
        self.device_errors[slot.key] = slot.errors
        self.quality[slot.qidx] |= Quality.WRITE_FAILED
        message = (f"{slot.key}: write {self._values_said(slot, values)} failed: "
                   f"{_unnamed(slot.key, why)}")
        self._say(slot, t, "device_write_failed", message,
                  f"at t = {t:.3f} s: {message} (the run goes on; the next tick writes it "
                  "again)" if slot.write_streak == 0 and slot.streak == 0 else None)
        slot.write_streak += 1

    def _values_said(self, slot: DeviceSlot, values: Mapping[str, float]) -> str:
        """``p_set_w = 0 W, w_max_lim_pct = 100 %`` (NaN: ``p_set_w released``)."""
        units = self.setpoint_units
        return ", ".join(f"{name} released" if math.isnan(value) else
                         f"{name} = {value:g}" + (f" {units[f'{slot.key}.{name}']}"
                                                  if units.get(f"{slot.key}.{name}") else "")
                         for name, value in values.items())

    def set_setpoints(self, setpoints: Mapping[str, float], index: Mapping[str, int],
                      t: float) -> None:
        """Take the controller's setpoints at tick time ``t``: every one is checked first,
        so a refused one leaves the twin's ``u`` as it was and nothing goes to a device (the
        twin and the devices always see the same setpoints).

        Per tick and setpoint, a finite value inside its range costs two comparisons; the
        rest (a coded setpoint, one a device takes, a value outside) is :meth:`_checked`."""
        controller = self.scenario.controller.name
        if not isinstance(setpoints, Mapping):
            raise ControllerError(f"controller '{controller}' step returned a "
                                  f"{type(setpoints).__name__} at t = {t:.3f} s; expected a "
                                  "mapping of setpoint names to numbers")
        low, high, guarded = self._sp_bounds()
        taken = []
        for key, value in setpoints.items():
            i = index.get(key)
            if i is None:
                raise _unknown_setpoint(key, index, controller, t)
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise ControllerError(f"controller '{controller}' set '{key}' to {value!r} "
                                      f"at t = {t:.3f} s; expected a number") from None
            if i in guarded or not low[i] <= v <= high[i]:
                self._checked(key, v, controller, t)
            taken.append((i, v))
        u = self.twin.u
        for i, v in taken:
            u[i] = v

    def _sp_bounds(self) -> tuple[list[float], list[float], set[int]]:
        """Per position in ``u``: the range a value passes without :meth:`_checked`
        (finite, within its control's), and the positions that always take it (coded, or
        written to a device, whose range may change with its scale factor)."""
        if self._bounds is None:
            n = len(self.twin.setpoints)
            low, high = [-sys.float_info.max] * n, [sys.float_info.max] * n
            guarded = set()
            for key, i in self.setpoint_index.items():
                control = self.setpoint_controls.get(key)
                if (control is not None and control.codes) or key in self._setpoint_slots:
                    guarded.add(i)
                elif control is not None:
                    low[i], high[i] = max(low[i], control.low), min(high[i], control.high)
            self._bounds = (low, high, guarded)
        return self._bounds

    def _checked(self, key: str, v: float, controller: str, t: float) -> None:
        """A ControllerError naming the controller, the key, the value, the time and what
        was expected, unless ``v`` is finite and in the setpoint's range."""
        def refused(shown: str, why: str) -> ControllerError:
            return ControllerError(f"controller '{controller}' set '{key}' to {shown} at "
                                   f"t = {t:.3f} s; {why}")

        if not math.isfinite(v):
            raise refused(f"{v:g}", "expected a finite number")
        why = self._out_of_range(key, v)
        if why:
            unit = self.setpoint_units.get(key, "")
            raise refused(f"{v:g} {unit}" if unit else f"{v:g}", why)

    def _out_of_range(self, key: str, v: float) -> str:
        """What is expected instead of ``v`` for setpoint ``key``, or ``""`` when it is in
        its physical range and every device the run writes it to can hold it."""
        unit = self.setpoint_units.get(key, "")
        control = self.setpoint_controls.get(key)
        if control is not None and not control.admits(v):
            return f"expected {control.expected(unit)}"
        for slot, name in self._setpoint_slots.get(key, ()):
            held = _device_range(slot, name)
            if held is not None and not held[0] <= v <= held[1]:
                from firmware_bridge.maps import describe_range

                return (f"expected {describe_range(*held, unit)}, what the device of "
                        f"{slot.key} can hold")
        return ""

    async def actuate(self, t: float) -> None:
        """Write setpoints that changed since the last successful write.

        Not to a device whose read timed out this tick: the write would wait out a second
        deadline in the same tick (a silent device then held every other device's control
        late, the run at 0.6x real time); it counts as failed, and the next tick writes it
        again."""
        from firmware_bridge.device import Quality

        self._clock_t = t
        u = self.twin.u
        writes = []
        for slot in self.devices:
            # only what the device has: a serial board announces its setpoints at HELLO
            writable = slot.device.setpoints
            changed = {}
            for name, i in slot.setpoints.items():
                if math.isnan(u[i]) or slot.last_written.get(name) == u[i]:
                    continue
                if name in writable:
                    changed[name] = float(u[i])
                elif writable and ("setpoint", name) not in slot.unplaced:
                    self._unplaced(slot, t, [("setpoint", name)], f"{slot.key}: device has no "
                                   f"setpoint {name}; the run does not write it")
            if changed and self.quality[slot.qidx] & READ_QUALITY == Quality.TIMEOUT:
                self._write_failed(slot, t, changed, f"{slot.key}: not sent: its read "
                                   "timed out this tick")
            elif changed:
                writes.append(self._write(slot, changed, t))
        try:
            if writes:
                await asyncio.gather(*writes)
        finally:
            self._said()

    async def _write(self, slot: DeviceSlot, values: dict[str, float], t: float) -> None:
        from firmware_bridge.errors import DeviceDisconnected, DeviceError, ExceptionResponse
        from firmware_bridge.maps import UnencodableSetpoint

        try:
            await asyncio.wait_for(slot.device.write(values), self.wait_s(slot, t))
        except UnencodableSetpoint as exc:  # its scale factor came with this write
            key = f"{slot.key}.{exc.setpoint}"
            unit = self.setpoint_units.get(key, "")
            from firmware_bridge.maps import describe_range

            raise ControllerError(
                f"controller '{self.scenario.controller.name}' set '{key}' to "
                f"{exc.value:g}{' ' + unit if unit else ''} at t = {t:.3f} s; expected "
                f"{describe_range(exc.low, exc.high, unit)}, what the device of {slot.key} "
                "can hold") from None
        except (TimeoutError, DeviceError) as exc:
            if not (slot.open_failed or isinstance(exc, DeviceDisconnected
                                                     | ExceptionResponse)):
                slot.wrote.update(values)  # unanswered or garbled: it may have landed
            why = str(exc) or f"no answer within {slot.deadline_s * 1e3:.0f} ms"
            self._write_failed(slot, t, values, why)
            return
        slot.wrote.update(values)
        slot.write_streak = 0
        slot.last_written.update(values)

    # -- safe state -----------------------------------------------------------------------

    async def write_safe_state(self, t: float) -> None:
        """Leave every device the run wrote setpoints to in its safe state: each setpoint it
        wrote at its map's ``safe`` value (a battery's power 0 W, an inverter's limit 100 %
        and its power setpoint released, a rack's cap none), all devices at once within
        :data:`SAFE_STATE_S`.  Each device's outcome is an event at ``t`` (``safe_state``,
        or ``safe_state_failed`` and a warning line); nothing here raises, so the run's own
        outcome is never hidden."""
        jobs = []
        for slot in self.devices:
            values, kept = self._safe_values(slot)
            if kept:  # said, not silently left: the device keeps the run's last value
                message = (f"{slot.key}: {', '.join(kept)} left at the run's last value (the "
                           "device cannot release it)")
                warnings.warn(DeviceWarning(message), stacklevel=1)
                if self._rec is not None:
                    with contextlib.suppress(Exception):
                        self._rec.event(t, "safe_state", message)
            if values:
                jobs.append((slot, values))
        if not jobs:
            return
        tasks = [asyncio.ensure_future(_write_safe(slot, values)) for slot, values in jobs]
        _, pending = await asyncio.wait(tasks, timeout=SAFE_STATE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for (slot, values), task in zip(jobs, tasks, strict=True):
            why = (f"no answer within {SAFE_STATE_S:g} s" if task in pending
                   else task.result())
            self._safe_said(slot, values, t, why)

    def _safe_values(self, slot: DeviceSlot) -> tuple[dict[str, float], list[str]]:
        """The safe value of each setpoint the run wrote to ``slot``'s device, and the
        setpoints whose safe state is a release the device cannot make (a serial board's
        inverter power setpoint): those keep the run's last value."""
        can_release = getattr(slot.device, "can_release", None)
        values: dict[str, float] = {}
        kept: list[str] = []
        for name in slot.setpoints:
            control = self.setpoint_controls.get(f"{slot.key}.{name}")
            if name not in slot.wrote or control is None or control.safe is None:
                continue
            if math.isnan(control.safe) and not (can_release and can_release(name)):
                kept.append(name)
            else:
                values[name] = control.safe
        return values, kept

    def _safe_said(self, slot: DeviceSlot, values: Mapping[str, float], t: float,
                   why: str) -> None:
        """The event of one device's safe state, and a warning line when it failed."""
        what = self._values_said(slot, values)
        if why:
            kind = "safe_state_failed"
            message = f"{slot.key}: safe state not written ({what}): {_unnamed(slot.key, why)}"
            warnings.warn(DeviceWarning(f"{message}; the device may still hold the run's "
                                        "last setpoints"), stacklevel=1)
        else:
            kind, message = "safe_state", f"{slot.key}: safe state written: {what}"
        if self._rec is not None:
            with contextlib.suppress(Exception):  # a failed recorder: its own error is said
                self._rec.event(t, kind, message)

    def record(self, rec: Recorder, k: int, t: float, wall: float, late: float) -> None:
        self._said()
        row, flags = rec.row()
        self.record_row_values(row, t, wall, late, skipped=False)
        for slot in self.devices:
            row[slot.rtt_col] = slot.rtt_s
            if self.quality[slot.qidx] & READ_QUALITY == 0:  # its read was ok
                if slot.streak:
                    rec.event(t, "device_recovered", f"{slot.key}: answers again after "
                                                     f"{slot.streak} failed tick(s)")
                    # a device that was lost may have rebooted to its own defaults: the next
                    # tick writes every setpoint again, changed or not
                    slot.last_written.clear()
                slot.streak = 0
                slot.open_failed = False
        flags[:] = self.quality
        if self.capture is not None and k % 25 == 0:
            self.flush_capture(rec)
        rec.commit()

    def flush_capture(self, rec: Recorder) -> None:
        """Hand the transactions captured since the last time to the recorder."""
        for name in self.capture_devices:
            rows, flat = self.capture.take(name)
            rec.table_rows(f"capture/{name}/transactions", rows)
            rec.table_rows(f"capture/{name}/registers", flat)

    async def advance_without_io(self, rec: Recorder, k: int, wall0: float,
                                 late: float) -> None:
        """A skipped real-time tick: setpoints held, no device I/O, the row marked skipped."""
        self.observe_twin(k)
        self.obs_values[self._measured_mask] = np.nan
        self.quality &= READ_QUALITY  # no write on a skipped tick, so none failed
        row, flags = rec.row()
        self.record_row_values(row, k * self.scenario.run.dt_s,
                               time.perf_counter() - wall0, late, skipped=True)
        flags[:] = self.quality
        rec.commit()
        self.twin.advance(self.scenario.run.dt_s)
        self.advance_emulators(self.scenario.run.dt_s)

    def record_row_values(self, row: np.ndarray, t: float, wall: float, late: float,
                          skipped: bool) -> None:
        row[0], row[1], row[2], row[3] = t, wall, late, 1.0 if skipped else 0.0
        row[self._obs_cols_a] = self.obs_values[self._obs_idx_a]
        if len(self._twin_cols_a):
            row[self._twin_cols_a] = self.twin.y[self._twin_idx_a]
        row[self._sp_cols_a] = self.twin.u[self._sp_idx_a]

    def advance_emulators(self, dt: float) -> None:
        if self.emulators is not None:
            self.emulators.advance(dt)

    def twin_keys(self) -> list[str]:
        """``NODE.ASSET.SIGNAL`` of every signal the twin predicts."""
        return list(self._twin_index)

    def forecast(self, key: str, horizon_s: float) -> np.ndarray:
        """The twin's forecast of ``key`` over ``horizon_s`` with setpoints held."""
        i = self._twin_index.get(key)
        if i is None:
            raise ControllerError(f"no twin signal '{key}' to forecast") from None
        dt = self.scenario.run.dt_s
        return self.twin.forecast(i, max(1, int(round(horizon_s / dt))), dt)

    # -- life cycle -----------------------------------------------------------------------

    async def start(self, rec: Recorder) -> None:
        """Start emulators and open devices (each failure is an event, not a stop)."""
        self._rec = rec
        self._clock_t = 0.0
        self._warn_no_hardware()
        dt = self.scenario.run.dt_s
        self.twin.prepare(dt)
        if self.emulators is not None:
            await self.emulators.start()
            self.emulators.prepare(dt)
        if not self.scenario.run.realtime:
            self._lockstep()
        async def open_and_read(slot: DeviceSlot) -> None:
            # one read before the clock starts: connections, model scans and first-use
            # costs are paid now, not by the first real-time ticks
            from firmware_bridge.device import poll
            from firmware_bridge.errors import DeviceError

            try:
                await asyncio.wait_for(slot.device.open(), max(2.0, slot.deadline_s))
                await asyncio.wait_for(poll(slot.device), max(2.0, slot.deadline_s))
            except Exception as exc:  # a device that fails to open is retried by reads
                limit = max(2.0, slot.deadline_s)
                # a back-end's own timeout (DeviceTimeout) says what it waited for and what
                # to check (the unit id of a silent RS-485 device): only the bench's bound
                # is said in the bench's words
                ours = isinstance(exc, TimeoutError) and not isinstance(exc, DeviceError)
                message = _named(slot.key, f"no answer within {limit:g} s to open and read"
                                 if ours else exc)
                slot.open_failed = True
                self._say(slot, 0.0, "device_open_failed", message,
                          f"{message} (the run goes on; reads retry it)")

        try:
            await asyncio.gather(*(open_and_read(slot) for slot in self.devices))
        finally:
            self._said()

    def _lockstep(self) -> None:
        """A run that is not real time: its emulated devices are judged on the bench's clock
        (their deadline, :meth:`wait_s`; their reconnect back-off), never on the wall clock,
        so a loaded machine cannot change the recording."""
        from firmware_bridge.backends.backoff import Backoff
        from firmware_bridge.faults import FaultCard, LockstepFaults

        s = self.scenario
        emulated = {f"{n}.{a}": c for n, a, c in s.assets()
                    if s.effective_mode(c) == "emulated"}
        for slot in self.devices:
            cfg = emulated.get(slot.key)
            if cfg is None:
                continue
            slot.lockstep = True
            device = slot.device
            if cfg.faults and hasattr(device, "lockstep"):
                # the card its emulator runs (checked when the scenario was built)
                device.lockstep = LockstepFaults(FaultCard.from_mapping(cfg.faults[0]),
                                                 slot.deadline_s, self._simulated_clock,
                                                 device.backend)
            backoff = getattr(device, "backoff", None)
            if isinstance(backoff, Backoff):
                backoff.clock = self._simulated_clock

    def _simulated_clock(self) -> float:
        return self._clock_t

    async def stop(self) -> None:
        self._said()
        if self.capture is not None and self._rec is not None:
            self.flush_capture(self._rec)
        for slot in self.devices:
            try:
                await slot.device.close()
            except Exception:  # closing never hides the run's own outcome
                pass
        if self.emulators is not None:
            await self.emulators.stop()


def _unknown_setpoint(key: str, index: Mapping[str, int], controller: str,
                      t: float) -> ControllerError:
    from twin.params import did_you_mean

    return ControllerError(f"controller '{controller}' set unknown setpoint '{key}' at "
                           f"t = {t:.3f} s{did_you_mean(key, index)}")


def _device_range(slot: DeviceSlot, name: str) -> tuple[float, float] | None:
    """What ``slot``'s device can hold for setpoint ``name`` (None: it cannot tell, or the
    run does not write it there)."""
    device = slot.device
    ask = getattr(device, "setpoint_range", None)
    if ask is None or name not in device.setpoints:
        return None
    return ask(name)


async def _write_safe(slot: DeviceSlot, values: dict[str, float]) -> str:
    """Write ``values`` to ``slot``'s device now (a back-off in progress is cut short: this
    is the last attempt); ``""``, or what went wrong."""
    from firmware_bridge.backends.backoff import Backoff

    backoff = getattr(slot.device, "backoff", None)
    if isinstance(backoff, Backoff):
        backoff.reset()
    try:
        await slot.device.write(values)
    except Exception as exc:  # any failure is said, never raised past the run's outcome
        return str(exc) or type(exc).__name__
    return ""


def _unnamed(key: str, message: str) -> str:
    """``message`` without a leading ``key: `` (the caller names the device itself)."""
    prefix = f"{key}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _named(key: str, message: object) -> str:
    """``key: message``, unless the device's message already starts with its name."""
    text = str(message)
    return text if text.startswith(f"{key}:") else f"{key}: {text}"


def _where_run_mode(s: Scenario) -> str:
    """Where the run's mode was set: ``--set run.mode=...`` (``--mode``), else the scenario
    file and line of ``[run] mode``, else the file."""
    for item in reversed(s.overrides):
        if item.partition("=")[0].strip() == "run.mode":
            return f"--set {item}"
    source = str(s.path) if s.path is not None else "scenario"
    from bench.tomlpos import key_lines, line_of

    line = line_of(dict(key_lines(s.text)), ("run", "mode")) if s.text else None
    return f"{source}:{line}" if isinstance(line, int) else source
