"""The live view's data layer: a recording read incrementally, finished or still growing.

A :class:`Follower` holds in memory the per-tick datasets the panels draw (as growing
:class:`Series`) and the compound tables (events, market) as growing :class:`Table`.  Each
:meth:`Follower.poll` looks at ``/time`` once; only when it grew does it refresh the tracked
datasets (one SWMR refresh per dataset per poll at most) and read just the new rows.

The writer resizes its datasets one after the other between flushes, so a reader may see
``/time`` longer than another dataset for a moment; the follower advances only to the
length every tracked dataset has reached and picks up the rest on the next poll.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.recording import Run

#: quality flag values of ``/quality/<node>/<asset>`` (firmware_bridge.device.Quality): the
#: read's (bits 0-1), then a setpoint write that failed on a tick whose read was ok (bit 2)
QUALITY_NAMES = ("ok", "stale", "timeout", "error", "write failed")


def health_code(q: np.ndarray) -> np.ndarray:
    """The device-health code of quality flags: the read's, or 4 (write failed) where the
    read was ok but a setpoint write of that tick failed."""
    q = np.nan_to_num(np.asarray(q, dtype=float)).astype(np.int64)
    read = q & 3
    return np.where((read == 0) & (q & 4 != 0), 4, read)


def quality_text(v: float) -> str:
    """A quality flag as the read-out says it: the read's state, and a failed write."""
    q = int(v)
    text = QUALITY_NAMES[q & 3]
    return text + ", write failed" if q & 4 else text
#: signal that identifies an asset's kind when the scenario does not say
_KIND_HINTS = (("soc", "battery"), ("p_ac_w", "inverter"), ("irradiance_w_m2", "pv"),
               ("power_cap_w", "gpu_rack"), ("e_import_wh", "meter"))


class Series:
    """A 1-D array that grows at its end without copying what it holds (amortised doubling).

    :attr:`values` is a view of the filled part; a view taken earlier stays valid (it keeps
    the old storage alive after a reallocation).
    """

    def __init__(self, dtype: Any = np.float64, capacity: int = 4096) -> None:
        self._a = np.empty(capacity, dtype=dtype)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def values(self) -> np.ndarray:
        return self._a[: self._n]

    def extend(self, rows: np.ndarray) -> None:
        k = len(rows)
        if self._n + k > len(self._a):
            grown = np.empty(max(2 * len(self._a), self._n + k), dtype=self._a.dtype)
            grown[: self._n] = self._a[: self._n]
            self._a = grown
        self._a[self._n: self._n + k] = rows
        self._n += k


class Table(Series):
    """A compound table (events, market orders...) as a growing structured array."""

    def __init__(self, dtype: np.dtype) -> None:
        super().__init__(dtype, capacity=64)


@dataclass(frozen=True)
class Asset:
    """One asset of a node as the view sees it: its kind and the signals it recorded."""

    node: str
    name: str
    kind: str
    #: measured signal name -> unit
    signals: dict[str, str]
    #: signal name -> unit, for signals that have a residual (measured minus twin)
    residuals: dict[str, str] = field(default_factory=dict)
    #: residual tolerance per signal from the scenario [signal units]
    tolerance: dict[str, float] = field(default_factory=dict)
    has_quality: bool = False
    #: signal name -> unit, for the twin's predictions of an asset with a device
    twins: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.node}.{self.name}"

    def path(self, signal: str, kind: str = "measured") -> str:
        mid = "" if kind == "measured" else f"{kind}/"
        return f"nodes/{self.node}/{self.name}/{mid}{signal}"


def assets(run: Run) -> dict[str, list[Asset]]:
    """Every node's assets, with kinds and tolerances from the scenario stored in the run."""
    configs = run.asset_configs()
    out: dict[str, list[Asset]] = {}
    refs = run.signals()
    for node, names in run.nodes().items():
        for name in names:
            cfg = configs.get((node, name), {})
            signals = {s.name: s.unit for s in refs
                       if s.node == node and s.asset == name and s.kind == "measured"}
            residuals = {s.name: s.unit for s in refs
                         if s.node == node and s.asset == name and s.kind == "residual"}
            twins = {s.name: s.unit for s in refs
                     if s.node == node and s.asset == name and s.kind == "twin"}
            kind = str(cfg.get("kind", "")) or _guess_kind(signals)
            tolerance = {str(k): float(v) for k, v in dict(cfg.get("tolerance", {})).items()}
            out.setdefault(node, []).append(Asset(
                node, name, kind, signals, residuals, tolerance,
                f"quality/{node}/{name}" in run.file, twins))
    return out


def _guess_kind(signals: dict[str, str]) -> str:
    for signal, kind in _KIND_HINTS:
        if signal in signals:
            return kind
    return ""


class Follower:
    """Incremental reader of one recording.

    Parameters
    ----------
    run : Run
        The open recording (``bench.recording.open_run``).

    Panels ask for what they draw with :meth:`series` and :meth:`table`; the window calls
    :meth:`poll` once per frame.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.time = Series()
        self._series: dict[str, Series] = {}
        #: asked for and not in the file (``/wall`` or ``/timing`` of an edited recording):
        #: NaN rows that keep up with ``/time``, so their panels stay empty
        self._absent: dict[str, Series] = {}
        self._tables: dict[str, Table] = {}
        #: h5py dataset objects by path (a lookup by name costs more than a small read)
        self._datasets: dict[str, Any] = {}
        self._per_tick: list[str] | None = None

    @property
    def n(self) -> int:
        """Ticks read so far."""
        return len(self.time)

    def series(self, path: str) -> Series:
        """The in-memory copy of the per-tick dataset ``path``, kept up to date by polls."""
        s = self._series.get(path, self._absent.get(path))
        if s is None and path not in self.run.file:
            s = self._absent[path] = Series(capacity=max(4096, self.n))
            s.extend(np.full(self.n, np.nan))
        elif s is None:
            d = self._dataset(path)
            s = Series(d.dtype, capacity=max(4096, self.n))
            if self.n:
                with self.run.reading(path):
                    d.refresh()
                    s.extend(d[: self.n])
            self._series[path] = s
        return s

    def table(self, path: str) -> Table | None:
        """The compound table ``path`` (``events``, ``market/trades``...), or None if absent."""
        t = self._tables.get(path)
        if t is None:
            if path not in self.run.file:
                return None
            t = Table(self._dataset(path).dtype)
            self._tables[path] = t
            self._poll_table(path, t)
        return t

    def poll(self) -> int:
        """Read the rows appended since the last poll; returns how many ticks arrived."""
        for path, t in self._tables.items():
            self._poll_table(path, t)
        d_time = self._dataset("time")
        with self.run.reading("time"):
            d_time.refresh()
        n_new = d_time.shape[0]
        if n_new <= self.n:
            return 0
        datasets = []
        for path, s in self._series.items():
            d = self._dataset(path)
            with self.run.reading(path):
                d.refresh()
            n_new = min(n_new, d.shape[0])
            datasets.append((path, d, s))
        n0 = self.n
        if n_new <= n0:
            return 0
        for path, d, s in datasets:
            with self.run.reading(path):
                s.extend(d[n0:n_new])
        for s in self._absent.values():
            s.extend(np.full(n_new - n0, np.nan))
        with self.run.reading("time"):
            self.time.extend(d_time[n0:n_new])
        return n_new - n0

    def _dataset(self, path: str) -> Any:
        d = self._datasets.get(path)
        if d is None:
            with self.run.reading(path):
                d = self._datasets[path] = self.run.file[path]
        return d

    def _poll_table(self, path: str, t: Table) -> None:
        d = self._dataset(path)
        with self.run.reading(path):
            d.refresh()
            if d.shape[0] > len(t):
                t.extend(d[len(t):])

    def per_tick_paths(self) -> list[str]:
        """Every per-tick dataset of the recording except ``/time`` (for the cursor read-out):
        ``/wall`` and those of ``/nodes``, ``/quality`` and ``/timing``; not the rows of
        ``/capture``, which are device transactions, not ticks
        (:meth:`bench.recording.Run.per_tick_paths`)."""
        if self._per_tick is None:
            self._per_tick = self.run.per_tick_paths()
        return self._per_tick

    def values_at(self, index: int) -> dict[str, float]:
        """Every per-tick dataset's value at tick ``index`` (NaN where not yet written)."""
        out = {}
        for path in self.per_tick_paths():
            s = self._series.get(path)
            if s is not None and index < len(s):
                out[path] = float(s.values[index])
                continue
            d = self._dataset(path)
            with self.run.reading(path):
                if index >= d.shape[0]:
                    d.refresh()
                out[path] = float(d[index]) if index < d.shape[0] else float("nan")
        return out

    def index_at(self, t: float) -> int:
        """The tick whose value holds at time ``t`` (zero-order hold: the last at or before)."""
        times = self.time.values
        if not len(times):
            return -1
        return int(max(0, np.searchsorted(times, t, side="right") - 1))
