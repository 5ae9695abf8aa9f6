"""Read and write GPU power traces and their workload schedules.

The format is that of the shared H100 recordings (``../shared/data/README.md``): a CSV,
plain or gzip-compressed, one row per NVML sample with named columns (``t_s``, ``power_w``,
``power_inst_w``, ``energy_j``, ``temp_c``, ``sm_clock_mhz``, ``util_pct``, and the text
columns ``segment`` and ``load``), beside it ``NAME.events.json`` with the commanded
schedule and optionally ``NAME.meta.json`` with the device facts.  Columns are found by
name, so extra or reordered columns are fine.  Every error names the file, and for
malformed rows the line and the column.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import RecordingError
from twin.workload import Schedule, ScheduleError

if TYPE_CHECKING:
    from twin.gpu_fit import Measured

#: columns read as text; every other column must hold numbers
TEXT_COLUMNS = ("segment", "load")
#: columns a trace must have
REQUIRED_COLUMNS = ("t_s",)
_SUFFIXES = (".csv.gz", ".csv")


@dataclass(frozen=True)
class Trace:
    """One recording: numeric columns as float arrays, text columns as string arrays."""

    path: Path
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["t_s"])

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.columns[name]
        except KeyError:
            raise RecordingError(f"{self.path}: no column '{name}' (columns: "
                                 f"{', '.join(self.columns)})") from None

    def get(self, name: str) -> np.ndarray | None:
        return self.columns.get(name)

    @property
    def name(self) -> str:
        """File name without ``.csv`` / ``.csv.gz``."""
        return _stem(self.path)


def _stem(path: Path) -> str:
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def beside(trace_path: str | Path, kind: str) -> Path:
    """``NAME.<kind>.json`` next to ``NAME.csv.gz`` (kind: ``events`` or ``meta``)."""
    p = Path(trace_path)
    return p.with_name(f"{_stem(p)}.{kind}.json")


def _open_text(path: Path) -> io.TextIOBase:
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such trace file") from None
    except IsADirectoryError:
        raise RecordingError(f"{path}: is a directory, not a trace file") from None
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":  # gzip.open, not GzipFile(fileobj=): closing it closes the file
        raw.close()
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def read_trace(path: str | Path) -> Trace:
    """Read a trace CSV (plain or gzip); the errors name file, line and column."""
    path = Path(path)
    with _open_text(path) as f:
        try:
            rows = list(csv.reader(f))
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise RecordingError(f"{path}: corrupt gzip stream: {exc}") from None
        except UnicodeDecodeError as exc:
            raise RecordingError(f"{path}: not a text CSV file ({exc.reason})") from None
        except csv.Error as exc:
            raise RecordingError(f"{path}: not a valid CSV file: {exc}") from None
    if not rows or not any(h.strip() for h in rows[0]):
        raise RecordingError(f"{path}: empty file, expected a header line")
    header = [h.strip() for h in rows[0]]
    seen = set()
    for h in header:
        if h in seen:
            raise RecordingError(f"{path}:1: column '{h}' appears twice")
        seen.add(h)
    for name in REQUIRED_COLUMNS:
        if name not in header:
            raise RecordingError(f"{path}:1: no column '{name}' (columns: {', '.join(header)})")
    body = [(i + 2, r) for i, r in enumerate(rows[1:]) if r and any(c.strip() for c in r)]
    if not body:
        raise RecordingError(f"{path}: header only, no data rows")
    for line, r in body:
        if len(r) != len(header):
            raise RecordingError(f"{path}:{line}: {len(r)} fields, the header has "
                                 f"{len(header)}")
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        values = [r[j] for _, r in body]
        if name in TEXT_COLUMNS:
            columns[name] = np.array(values, dtype=str)
            continue
        try:
            arr = np.array(values, dtype=float)
        except ValueError:
            arr = None
        if arr is None or not np.all(np.isfinite(arr)):
            for line, r in body:
                v = r[j]
                try:
                    x = float(v)
                except ValueError:
                    x = math.nan
                if not math.isfinite(x):
                    raise RecordingError(f"{path}:{line}: column '{name}': {v!r} is not a "
                                         f"finite number")
        columns[name] = arr
    t = columns["t_s"]
    back = np.flatnonzero(np.diff(t) <= 0)
    if len(back):
        line = body[back[0] + 1][0]
        raise RecordingError(f"{path}:{line}: column 't_s': {float(t[back[0] + 1]):g} is not "
                             f"after the previous row's {float(t[back[0]]):g}")
    return Trace(path, columns)


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such {what} file") from None
    except UnicodeDecodeError:
        raise RecordingError(f"{path}: not a UTF-8 text file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordingError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} "
                             f"(column {exc.colno})") from None


def read_events(path: str | Path) -> Schedule:
    """Read a schedule (``*.events.json``); errors name the file, the entry and the field."""
    path = Path(path)
    doc = _read_json(path, "events")
    if not isinstance(doc, list):
        raise RecordingError(f"{path}: expected a JSON list of events, got "
                             f"{type(doc).__name__}")
    if not doc:
        raise RecordingError(f"{path}: no events (a schedule needs at least one entry)")
    try:
        return Schedule.from_entries(doc)
    except ScheduleError as exc:
        raise RecordingError(f"{path}: {exc}") from None


def write_events(schedule: Schedule, path: str | Path) -> Path:
    """Write a schedule as ``*.events.json``."""
    path = Path(path)
    path.write_text(json.dumps(schedule.to_entries(), indent=1) + "\n", encoding="utf-8")
    return path


def read_power_limit_w(trace_path: str | Path) -> float | None:
    """The enforced power limit from ``NAME.meta.json`` beside a trace, if it says. [W]"""
    path = beside(trace_path, "meta")
    if not path.is_file():
        return None
    doc = _read_json(path, "meta")
    mw = doc.get("enforced_power_limit_mw", doc.get("power_limit_mw")) if isinstance(
        doc, dict) else None
    if mw is None:
        return None
    if isinstance(mw, bool) or not isinstance(mw, (int, float)) or not mw > 0:
        raise RecordingError(f"{path}: enforced_power_limit_mw: expected a positive number, "
                             f"got {mw!r}")
    return float(mw) / 1000.0


def to_measured(trace: Trace, schedule: Schedule) -> Measured:
    """A trace and its schedule as the GPU fit and score read them."""
    from twin.gpu_fit import FitError, Measured

    for name in ("energy_j", "temp_c"):
        if name not in trace.columns:
            raise RecordingError(f"{trace.path}: no column '{name}', which fitting and "
                                 f"scoring need (columns: {', '.join(trace.columns)})")
    t = trace["t_s"]
    if len(t) and len(schedule) and (schedule.start_s >= t[-1] or schedule.end_s <= t[0]):
        raise RecordingError(f"{trace.path}: its schedule runs {schedule.start_s:.1f}-"
                             f"{schedule.end_s:.1f} s and its samples {t[0]:.1f}-{t[-1]:.1f} s: "
                             "they do not overlap (is the schedule on the trace's clock?)")
    try:
        return Measured(trace.name, schedule, trace["t_s"], trace["energy_j"],
                        trace["temp_c"], trace.get("power_inst_w"), trace.get("sm_clock_mhz"))
    except FitError as exc:
        raise RecordingError(f"{trace.path}: {exc}") from None
