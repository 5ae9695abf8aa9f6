"""Reading a run's HDF5 recording, finished or still being written (SWMR).

>>> run = open_run("runs/demo.h5")                         # doctest: +SKIP
>>> t = run.time                                           # doctest: +SKIP
>>> p = run.signal("north", "rack", "p_w")                 # doctest: +SKIP
>>> run.signal("north", "battery", "voltage_v", "residual")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench.errors import RecordingError, ScenarioWarning
from bench.recorder import FORMAT, FORMAT_VERSION

Kind = Literal["measured", "twin", "setpoint", "residual"]
_SUB = ("twin", "setpoint", "residual")
#: the groups whose datasets hold one row per tick (with ``/time`` and ``/wall``);
#: ``/capture``, ``/market`` and ``/events`` hold rows of their own
PER_TICK_GROUPS = ("nodes", "quality", "timing")
#: a device named at the start of an event's message: ``node.asset: `` as the bench writes
#: it, ``node/asset: `` as the emulators write it
_DEVICE_PREFIX = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)[./]([A-Za-z_][A-Za-z0-9_-]*): ")
#: what h5py raises where a file's bytes are damaged: a failed metadata checksum
#: (RuntimeError from a visit, KeyError from opening an object, OSError from a read), a chunk
#: that does not decompress (OSError), a header it cannot make sense of (ValueError)
_DAMAGE = (OSError, RuntimeError, KeyError, ValueError)


class RecordingWarning(UserWarning):
    """A recording that reads, but not whole (datasets a stopped writer left uneven)."""


def split_device(message: str, devices: set[str] | frozenset[str] | None = None
                 ) -> tuple[str, str]:
    """The device an event's message names first, as ``node.asset``, and the rest of it.

    The bench names a device ``node.asset`` (``lab.battery: no answer within 40 ms``), the
    emulators ``node/asset`` (``lab/battery: no answer to FC3 40000+2``): both give
    ``("lab.battery", "no answer ...")``.  With ``devices`` (``node.asset`` names), only
    those count as devices; a message that names none gives ``("", message)``.
    """
    m = _DEVICE_PREFIX.match(message)
    if m is None:
        return "", message
    device = f"{m[1]}.{m[2]}"
    if devices is not None and device not in devices:
        return "", message
    return device, message[m.end():]


@dataclass(frozen=True)
class Event:
    """One row of ``/events``, its device named one way (``node.asset``)."""

    #: simulated time [s]
    t: float
    #: the kind as recorded (``device_timeout``, ``fault.exception``, ``catch_up``...)
    kind: str
    #: the device the event is about, ``node.asset``; "" for the run as a whole
    device: str
    #: the message, without the device's name in front
    message: str


@dataclass(frozen=True)
class SignalRef:
    node: str
    asset: str
    name: str
    kind: str
    unit: str

    @property
    def key(self) -> str:
        return f"{self.node}.{self.asset}.{self.name}"

    @property
    def path(self) -> str:
        mid = "" if self.kind == "measured" else f"{self.kind}/"
        return f"nodes/{self.node}/{self.asset}/{mid}{self.name}"


class Run:
    """An open recording.  Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path, follow: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise RecordingError(f"{self.path}: no such recording")
        if self.path.is_dir():
            raise RecordingError(f"{self.path}: a directory, not a recording")
        self._f = open_h5(self.path)
        try:
            self._check_objects()
        except RecordingError:
            self._f.close()
            raise
        attrs = self._f.attrs
        if attrs.get("format") != FORMAT:
            self._f.close()
            raise RecordingError(f"{self.path}: not a gridloop recording "
                                 f"(format attribute is {attrs.get('format')!r})")
        raw = attrs.get("format_version")
        try:
            version = int(raw)
        except (TypeError, ValueError):
            self._f.close()
            raise RecordingError(f"{self.path}: format_version {raw!r} is not a version number"
                                 if raw is not None else
                                 f"{self.path}: the recording has no format_version "
                                 "attribute") from None
        if version != FORMAT_VERSION:
            self._f.close()
            raise RecordingError(f"{self.path}: format_version {version} is not supported "
                                 f"(this gridloop reads {FORMAT_VERSION})")
        if "time" not in self._f:
            self._f.close()
            raise RecordingError(f"{self.path}: recording has no /time dataset")
        self.follow = follow
        self._signals: list[SignalRef] | None = None
        self._ticks: int | None = None

    # -- metadata --------------------------------------------------------------------------

    @property
    def attrs(self) -> dict[str, Any]:
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in self._f.attrs.items()}

    @property
    def dt(self) -> float:
        raw = self._f.attrs.get("dt")
        if raw is None:
            raise RecordingError(f"{self.path}: the recording has no 'dt' attribute "
                                 "(its tick length)")
        try:
            dt = float(raw)
        except (TypeError, ValueError):
            dt = math.nan
        if not (math.isfinite(dt) and dt > 0):
            raise RecordingError(f"{self.path}: attribute dt {raw!r} is not a positive "
                                 "number of seconds")
        return dt

    @property
    def scenario_text(self) -> str:
        return str(self._f.attrs.get("scenario", ""))

    @property
    def scenario_overrides(self) -> list[str]:
        """The ``--set`` overrides the run applied to its scenario text."""
        raw = str(self._f.attrs.get("scenario_overrides", ""))
        return [x for x in raw.split("\n") if x]

    @property
    def scenario_path(self) -> Path | None:
        """Where the run's scenario file was: the files it names are relative to its
        folder (None when the recording does not say)."""
        raw = str(self._f.attrs.get("scenario_path", "") or "")
        return Path(raw) if raw else None

    def scenario(self, extra: list[str] | tuple[str, ...] = (),
                 folder: str | Path | None = None) -> Any:
        """The run's scenario as it ran: its text with its overrides (and ``extra``).

        ``folder``: where the files the scenario names (profiles, parameter sets, a
        ``module:Class`` controller) are now, instead of beside its recorded path."""
        from bench.scenario import parse

        text = self.scenario_text
        if not text:
            raise RecordingError(f"{self.path}: the recording holds no scenario")
        path = Path(str(self._f.attrs.get("scenario_path") or self.path))
        if folder is not None:
            path = Path(folder) / path.name
        with warnings.catch_warnings():  # said when it ran; reading the recording is not
            warnings.simplefilter("ignore", ScenarioWarning)
            return parse(text, f"{self.path}:scenario", path,
                         [*self.scenario_overrides, *extra], check_files=False)

    def asset_configs(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Each asset's kind and tolerance as the run had them (``{"kind", "tolerance"}``)."""
        from bench.errors import BenchError

        try:
            s = self.scenario()
        except BenchError:
            return {}
        return {(n, a): {"kind": c.kind, "tolerance": dict(c.tolerance)}
                for n, a, c in s.assets()}

    def asset_kinds(self) -> dict[tuple[str, str], str]:
        """``(node, asset) -> kind`` from the recorded scenario."""
        return {k: str(c.get("kind", "")) for k, c in self.asset_configs().items()}

    @property
    def complete(self) -> bool:
        return bool(self._f.attrs.get("complete", False))

    def __len__(self) -> int:
        """Ticks every per-tick dataset holds: a live or crashed writer resizes its datasets
        one after the other, so ``/time`` may be ahead of some signals (or behind).

        The writer marks a recording ``complete`` only after its last batch, so a complete
        recording whose datasets differ in length was damaged afterwards (cut, edited): a
        one-line RecordingError naming the odd dataset.  An incomplete one is read to the
        length every dataset reached, and a RecordingWarning says so (not when following a
        live run, where a reader sees this between any two resizes)."""
        if self._ticks is None:
            lengths = {path: d.shape[0]
                       for path, d in zip(("time", *self.per_tick_paths()), self._per_tick(),
                                          strict=True)}
            self._ticks = min(lengths.values(), default=0)
            if len(set(lengths.values())) > 1 and not self.follow:
                self._uneven(lengths)
        return self._ticks

    def _uneven(self, lengths: dict[str, int]) -> None:
        """Refuse a complete recording whose per-tick datasets differ in length; say it of an
        incomplete one (its writer stopped between two resizes)."""
        counts = Counter(lengths.values())
        usual = max(counts, key=lambda k: (counts[k], k))  # most datasets' length
        odd = [p for p, k in lengths.items() if k != usual]
        lo, hi = min(lengths[p] for p in odd), max(lengths[p] for p in odd)
        ticks = f"{lo}" if lo == hi else f"{lo} to {hi}"
        what = (f"/{odd[0]} holds {ticks} ticks where the other per-tick datasets hold "
                f"{usual}" if len(odd) == 1 else
                f"/{odd[0]} and {len(odd) - 1} other per-tick datasets hold {ticks} ticks "
                f"where the rest hold {usual}")
        if self.complete:
            raise RecordingError(f"{self.path}: damaged: {what}, in a recording marked "
                                 "complete")
        n = min(lengths.values())
        warnings.warn(f"{self.path}: {what} (the writer stopped between two of them): "
                      f"reading the {n} ticks all hold",
                      RecordingWarning, stacklevel=3)

    def _per_tick(self) -> list[Any]:
        """``/time``, ``/wall`` and the datasets of ``/nodes``, ``/quality`` and ``/timing``:
        one row per tick (``/capture`` and ``/market`` hold rows of their own)."""
        return [self._f[path] for path in ("time", *self.per_tick_paths())]

    def per_tick_paths(self) -> list[str]:
        """Paths of every per-tick dataset but ``/time``: ``/wall`` and the datasets of
        ``/nodes``, ``/quality`` and ``/timing``, in file order.  Not ``/capture`` (rows of
        device transactions and their registers) nor ``/market`` or ``/events``."""
        out = ["wall"] if "wall" in self._f else []

        for group in PER_TICK_GROUPS:
            if group not in self._f:
                continue

            def visit(name: str, obj: Any, group: str = group) -> None:
                if hasattr(obj, "shape") and obj.dtype.names is None and len(obj.shape) == 1:
                    out.append(f"{group}/{name}")

            try:
                self._f[group].visititems(visit)
            except _DAMAGE as exc:  # checked at open; a live writer's file may go bad later
                raise self._damaged(*(self._find_damage(group) or (group, exc))) from None
        return out

    def refresh(self) -> int:
        """Pick up ticks a writer appended since the last look (SWMR); returns the count."""
        for path, d in zip(("time", *self.per_tick_paths()), self._per_tick(), strict=True):
            try:
                d.refresh()
            except _DAMAGE as exc:
                raise self._damaged(path, exc) from None
        self._ticks = None
        return len(self)

    # -- damage ----------------------------------------------------------------------------

    def _check_objects(self) -> None:
        """Visit every group and dataset (their headers, and the small attributes they hold)
        and read the root's attributes, once, at open: damaged metadata then ends in one
        line naming the file and the object, not in a traceback from whichever read meets
        it first (a visit of ``/nodes`` behind ``len(run)``).  A visit takes milliseconds;
        only a failed one walks the file to name the object.  Data is not read here: a
        damaged chunk is found by the read of it (:meth:`_read`)."""
        try:
            self._f.visit(lambda name: None)
            for key in self._f.attrs:
                self._f.attrs[key]
        except _DAMAGE as exc:
            raise self._damaged(*(self._find_damage("") or ("", exc))) from None

    def _find_damage(self, top: str) -> tuple[str, BaseException] | None:
        """The first object under ``top`` ("" for the root) whose links, header or
        attributes cannot be read, and h5py's error; None if every one reads."""
        import h5py

        stack = [top]
        while stack:
            name = stack.pop()
            try:
                obj = self._f[name] if name else self._f
                for key in obj.attrs:
                    obj.attrs[key]
                children = list(obj.keys()) if isinstance(obj, h5py.Group) else []
            except _DAMAGE as exc:
                return name or "/", exc
            stack.extend(reversed([f"{name}/{k}" if name else k for k in children]))
        return None

    def _damaged(self, part: str, exc: BaseException) -> RecordingError:
        """The one line for a damaged part of the file: the file, the object (``part``) and
        HDF5's reason (the text in its outermost brackets: "incorrect metadata checksum")."""
        text = " ".join(str(exc).strip("'\"").split())
        head, sep, reason = text.partition(" (")
        reason = reason.removesuffix(")") if sep else head
        if not part:  # the visit failed, and no one object did: HDF5 names none
            return RecordingError(f"{self.path}: damaged ({reason})")
        where = part if part.startswith("/") else f"/{part}"
        return RecordingError(f"{self.path}: damaged: {where} cannot be read ({reason})")

    @property
    def file(self) -> Any:
        """The underlying ``h5py.File`` (read-only)."""
        return self._f

    @contextmanager
    def reading(self, part: str) -> Iterator[None]:
        """Reads of ``part`` (a dataset's path) by code that holds its h5py objects (the
        view): damaged bytes end in the one line the run's own reads give."""
        try:
            yield
        except _DAMAGE as exc:
            raise self._damaged(part, exc) from None

    # -- data ------------------------------------------------------------------------------

    def _read(self, path: str, n: int | None = None) -> np.ndarray:
        if path not in self._f:
            raise RecordingError(f"{self.path}: no dataset /{path}")
        n = len(self) if n is None else n
        try:
            d = self._f[path]
            if self.follow:
                d.refresh()
            return d[: min(n, d.shape[0])]
        except _DAMAGE as exc:  # a chunk that does not decompress, its index damaged
            raise self._damaged(path, exc) from None

    @property
    def time(self) -> np.ndarray:
        return self._read("time")

    @property
    def wall(self) -> np.ndarray:
        return self._read("wall")

    def dataset(self, path: str) -> np.ndarray:
        """Any per-tick dataset by path, trimmed to the ticks every per-tick dataset holds."""
        return self._read(path)

    def signal(self, node: str, asset: str, name: str, kind: Kind = "measured") -> np.ndarray:
        mid = "" if kind == "measured" else f"{kind}/"
        return self._read(f"nodes/{node}/{asset}/{mid}{name}")

    def has(self, node: str, asset: str, name: str, kind: Kind = "measured") -> bool:
        mid = "" if kind == "measured" else f"{kind}/"
        return f"nodes/{node}/{asset}/{mid}{name}" in self._f

    def signals(self, kind: Kind | None = None) -> list[SignalRef]:
        """Every recorded signal (optionally of one kind), in file order."""
        if self._signals is None:
            out = []
            nodes = self._f.get("nodes")
            if nodes is not None:
                for node in nodes:
                    for asset in nodes[node]:
                        g = nodes[node][asset]
                        for name, obj in g.items():
                            if name in _SUB and not hasattr(obj, "shape"):
                                for sub, d in obj.items():
                                    out.append(SignalRef(node, asset, sub, name,
                                                         self._unit_of(d)))
                            elif hasattr(obj, "shape"):
                                out.append(SignalRef(node, asset, name, "measured",
                                                     self._unit_of(obj)))
            self._signals = out
        return [s for s in self._signals if kind is None or s.kind == kind]

    def nodes(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for s in self.signals():
            assets = out.setdefault(s.node, [])
            if s.asset not in assets:
                assets.append(s.asset)
        return out

    def unit(self, node: str, asset: str, name: str, kind: Kind = "measured") -> str:
        mid = "" if kind == "measured" else f"{kind}/"
        return self._unit_of(self._f[f"nodes/{node}/{asset}/{mid}{name}"])

    def _unit_of(self, d: Any) -> str:
        """A dataset's ``unit`` attribute: a string HDF5 keeps apart from the dataset's
        header (in the global heap), so the visit at open does not read it."""
        try:
            return str(d.attrs.get("unit", ""))
        except _DAMAGE as exc:
            raise self._damaged(f"{d.name}", exc) from None

    def quality(self, node: str, asset: str) -> np.ndarray:
        return self._read(f"quality/{node}/{asset}")

    def table(self, path: str) -> np.ndarray:
        """A compound table (``events``, ``market/trades``...) as a structured array."""
        if path not in self._f:
            return np.zeros(0)
        try:
            d = self._f[path]
            if self.follow:
                d.refresh()
            return d[:]
        except _DAMAGE as exc:
            raise self._damaged(path, exc) from None

    def events(self) -> list[tuple[float, str, str]]:
        """``/events`` as recorded: ``(t, kind, message)``."""
        ev = self.table("events")
        return [(float(e["t"]), e["kind"].decode(), e["message"].decode(errors="replace"))
                for e in ev]

    def devices(self) -> set[str]:
        """``node.asset`` of every asset the recording has signals or a quality flag of."""
        out = {f"{s.node}.{s.asset}" for s in self.signals()}
        if "quality" in self._f:
            for node, g in self._f["quality"].items():
                if not hasattr(g, "shape"):
                    out.update(f"{node}.{asset}" for asset in g)
        return out

    def timeline(self) -> list[Event]:
        """``/events`` in time order, each with the device it is about named ``node.asset``
        (the emulators' ``node/asset`` too) and its message without that name."""
        devices = self.devices()
        out = []
        for t, kind, message in self.events():
            device, rest = split_device(message, devices)
            out.append(Event(t, kind, device, rest))
        out.sort(key=lambda e: e.t)  # stable: events of one instant keep their order
        return out

    # -- captured device transactions (``[run] capture = true``) ---------------------------

    def capture_devices(self) -> list[str]:
        """Devices whose Modbus transactions the run captured (``node.asset``)."""
        root = self._f.get("capture")
        if root is None:
            return []
        return [name for name, g in root.items() if "transactions" in g]

    def capture(self, device: str) -> np.ndarray:
        """The transactions captured of ``device``, aligned with the ticks.

        The rows of ``/capture/<device>/transactions`` (:mod:`firmware_bridge.capture`) with
        ``t_run_s``, when each request was sent on the run's clock (the clock of ``/wall``),
        and ``tick``: the index of the tick whose device I/O it was, the first tick recorded
        at or after it (``run.time[tick]`` is its simulated time), or -1 for a transaction
        outside the ticks (the opening read before the first tick) or of a recording that
        does not say when its run's clock started (``t_run_s`` NaN).
        """
        path = f"capture/{device}/transactions"
        if path not in self._f:
            have = ", ".join(self.capture_devices()) or "none"
            raise RecordingError(f"{self.path}: no capture of device '{device}' "
                                 f"(captured: {have})")
        rows = self.table(path)
        names = [n for n in rows.dtype.names if n != "t_run_s"]
        dtype = np.dtype([(n, rows.dtype[n]) for n in names]
                         + [("t_run_s", "<f8"), ("tick", "<i8")])
        out = np.zeros(len(rows), dtype=dtype)
        for n in names:
            out[n] = rows[n]
        t_run = (rows["t_run_s"].astype(float) if "t_run_s" in rows.dtype.names
                 else np.full(len(rows), math.nan))
        out["t_run_s"] = t_run
        wall = self.wall if "wall" in self._f else np.zeros(0)
        with np.errstate(invalid="ignore"):
            tick = np.searchsorted(wall, np.nan_to_num(t_run, nan=-1.0), side="left")
            inside = np.isfinite(t_run) & (t_run >= 0.0) & (tick < len(wall))
        out["tick"] = np.where(inside, tick, -1)
        return out

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")


def open_h5(path: str | Path) -> Any:
    """``path`` as a read-only ``h5py.File``, finished, still being written, or left by a
    writer that crashed; a truncated or foreign file raises a one-line RecordingError.

    A plain open comes first: it checks the file's length against its superblock.  An SWMR
    open does not, and on a truncated file retries its metadata reads for minutes.  A file
    a writer holds in SWMR mode (a live run, or one whose writer died) refuses the plain
    open, and is then opened as an SWMR reader.
    """
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        m = _TRUNCATED.search(str(exc))
        if m:
            raise RecordingError(f"{path}: truncated: {int(m[1]):,} of {int(m[2]):,} bytes "
                                 "(an interrupted copy or download?)") from None
    try:
        return h5py.File(path, "r", libver="latest", swmr=True)
    except OSError as exc:
        detail = " ".join(str(exc).split())  # HDF5 says some errors on two lines
        raise RecordingError(f"{path}: not a readable HDF5 file ({detail})") from None


def open_run(path: str | Path, follow: bool = False) -> Run:
    """Open a recording; a missing, foreign or corrupt file raises one-line RecordingError."""
    return Run(path, follow=follow)
