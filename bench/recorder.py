"""The HDF5 recorder: one file per run, written by a separate process in SWMR mode.

The lockstep loop only copies each tick into a row of a preallocated buffer
(:meth:`Recorder.append`, about a microsecond); once per ``flush_s`` of wall clock the filled
rows travel through a pipe to a writer process that appends them to chunked, compressed
datasets, computes residuals (measured minus twin), and flushes.  HDF5 writes hold the GIL
for tens of milliseconds per flush, so a writer thread would make real-time ticks late; a
process does not.

Crash safety: the file is in single-writer/multiple-reader mode, so a reader opening it
(also after the writer was killed) sees a consistent file holding every tick up to the last
flush.  If the bench process dies, the writer sees the pipe close, writes what it has and
closes the file properly.  Batches leave the bench from a thread, so a slow disk never blocks
the loop; when the bench runs ahead of the writer (hundreds of nodes as fast as possible),
the writer writes everything waiting at once, and what is still queued in the bench then is
older than ``flush_s``.

Layout (format version 1, see ``../shared/DESIGN.md``)::

    /                       attrs: format, format_version, gridloop_version, scenario,
                                   mode (what ran), mode_requested, asset_modes (JSON),
                                   dt, seed, started_at
    /time, /wall            float64 [n]
    /timing/...             lateness, per-device round-trip times
    /nodes/<node>/<asset>/<signal>            measured (or twin-only) value, attr unit
    /nodes/<node>/<asset>/twin/<signal>       twin prediction
    /nodes/<node>/<asset>/setpoint/<signal>   commanded value
    /nodes/<node>/<asset>/residual/<signal>   measured minus twin
    /quality/<node>/<asset>                   uint8 per tick: the reading's code (0 ok,
                                              1 stale, 2 timeout, 3 error), plus 4 when a
                                              setpoint write failed (group attr ``codes``)
    /market/orders, /market/trades, /market/settlements   compound tables
    /market                 attrs, written when the run ends: ledger_id (hex), ledger_operator
                            (the operator's public key, base64), ledger_head (the last
                            block's hash, hex; "" before the first block)
    /events                 compound: t, kind, message
"""

from __future__ import annotations

import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import RecordingError

FORMAT = "gridloop-run"
FORMAT_VERSION = 1
EVENT_DTYPE = np.dtype([("t", "f8"), ("kind", "S32"), ("message", "S256")])
#: event kinds that end a recording's events, after anything recorded later
FINAL_EVENTS = ("run_stopped",)
#: rows of HDF5 chunks; 4096 ticks is 80 s at 50 Hz
CHUNK = 4096
#: at close, a writer that makes no progress this long (no batch taken from the bench, the
#: file unchanged) is not answering: it is stopped, the recording kept as last flushed [s]
CLOSE_STALL_S = 30.0
#: at close, a wait this long is said in one line on stderr (a big backlog to write) [s]
CLOSE_NOTICE_S = 10.0


@dataclass(frozen=True)
class Column:
    """One per-tick dataset: its path in the file and its unit."""

    path: str
    unit: str = ""
    dtype: str = "f8"


@dataclass(frozen=True)
class Residual:
    """A residual dataset: ``float column measured - float column twin``."""

    path: str
    measured: int
    twin: int
    unit: str = ""


@dataclass
class Layout:
    """What a run records each tick, and the compound tables it may append to."""

    floats: list[Column]
    flags: list[Column] = field(default_factory=list)
    residuals: list[Residual] = field(default_factory=list)
    #: table path -> numpy structured dtype (market tables, captures)
    tables: dict[str, np.dtype] = field(default_factory=dict)
    #: attributes of groups (``capture`` gets its format)
    group_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def index(self, path: str) -> int:
        for i, c in enumerate(self.floats):
            if c.path == path:
                return i
        raise KeyError(path)


class _Pipe:
    """Length-prefixed pickles over a pair of pipe file descriptors (unbuffered, so
    :meth:`ready` can tell whether another message is already waiting)."""

    def __init__(self, rx: int, tx: int) -> None:
        self.rx, self.tx = rx, tx

    def send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(struct.pack("<Q", len(data)) + data)
        while view:
            view = view[os.write(self.tx, view):]

    def _read(self, n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = os.read(self.rx, min(left, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> Any:
        (n,) = struct.unpack("<Q", self._read(8))
        return pickle.loads(self._read(n))

    def ready(self) -> bool:
        """Whether a message (or the end of the stream) is waiting to be read."""
        return bool(select.select([self.rx], [], [], 0)[0])


def _set_group_attrs(f: Any, items: list[tuple[str, dict[str, Any]]]) -> None:
    """Attributes of existing groups (:meth:`Recorder.set_attrs`): SWMR mode writes
    attributes, but makes no group; one the layout lacks is skipped."""
    for gpath, values in items:
        group = f.get(gpath)
        if group is not None:
            for k, v in values.items():
                group.attrs[k] = v


def _writer_main(conn: Any, path: str, layout: Layout, attrs: dict[str, Any]) -> None:
    """The writer process: create the file, then append what arrives until told to stop."""
    import h5py

    # Created under a temporary name and renamed over ``path`` once readers may open it: a
    # recording of the same name that someone still has open (a viewer, a report) is left
    # whole for them, where HDF5's "w" would truncate it and then fail on its lock.
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        f = h5py.File(tmp, "w", libver="latest")
    except OSError as exc:  # HDF5's text names the temporary file: say what it means
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        conn.send(("error", f"{path}: cannot create recording: {why}"))
        return
    renamed = False
    try:
        for k, v in attrs.items():
            f.attrs[k] = v
        opts = dict(chunks=(CHUNK,), maxshape=(None,), compression="gzip",
                    compression_opts=1, shuffle=True)
        fl = []
        for c in layout.floats:
            d = f.create_dataset(c.path, shape=(0,), dtype=c.dtype, fillvalue=np.nan, **opts)
            d.attrs["unit"] = c.unit
            fl.append(d)
        fg = []
        for c in layout.flags:
            d = f.create_dataset(c.path, shape=(0,), dtype="u1", **opts)
            d.attrs["unit"] = c.unit
            fg.append(d)
        rs = []
        for r in layout.residuals:
            d = f.create_dataset(r.path, shape=(0,), dtype="f8", fillvalue=np.nan, **opts)
            d.attrs["unit"] = r.unit
            d.attrs["measured"] = layout.floats[r.measured].path
            d.attrs["twin"] = layout.floats[r.twin].path
            rs.append(d)
        tables = {}
        for tpath, dt in {"events": EVENT_DTYPE, **layout.tables}.items():
            chunk = 256 if np.dtype(dt).names else 8192
            tables[tpath] = f.create_dataset(tpath, shape=(0,), dtype=dt, maxshape=(None,),
                                             chunks=(chunk,))
        for gpath, gattrs in layout.group_attrs.items():
            g = f.require_group(gpath)
            for k, v in gattrs.items():
                g.attrs[k] = v
        f.attrs["complete"] = False
        f.swmr_mode = True
        f.flush()
        os.replace(tmp, final)
        renamed = True
        conn.send(("ready", None))
        n = 0
        m_idx = np.array([r.measured for r in layout.residuals], dtype=int)
        t_idx = np.array([r.twin for r in layout.residuals], dtype=int)
        closing = False
        complete = False
        while not closing:
            # everything waiting is written at once: when the bench runs ahead of the disk,
            # batches grow and each dataset's per-write cost is paid less often
            batches: list[tuple] = []
            attrs_now: list[tuple[str, dict[str, Any]]] = []
            while True:
                try:
                    kind, payload = conn.recv()
                except EOFError:  # the bench died: keep what arrived, close properly
                    closing = True
                    break
                if kind == "close":  # marked complete below, once every batch is written
                    complete = bool(payload)
                    closing = True
                    break
                (attrs_now if kind == "attrs" else batches).append(payload)
                if len(batches) >= 256 or not conn.ready():
                    break
            _set_group_attrs(f, attrs_now)
            if not batches:
                if attrs_now:
                    f.flush()
                continue
            floats = np.concatenate([b[0] for b in batches])
            flags = np.concatenate([b[1] for b in batches])
            extra: dict[str, list[np.ndarray]] = {}
            for b in batches:
                for tpath, rows in b[2].items():
                    extra.setdefault(tpath, []).append(rows)
            k = floats.shape[0]
            if k:
                for j, d in enumerate(fl):
                    d.resize((n + k,))
                    d[n:n + k] = floats[:, j]
                for j, d in enumerate(fg):
                    d.resize((n + k,))
                    d[n:n + k] = flags[:, j]
                if len(rs):
                    res = floats[:, m_idx] - floats[:, t_idx]
                    for j, d in enumerate(rs):
                        d.resize((n + k,))
                        d[n:n + k] = res[:, j]
                n += k
            for tpath, parts in extra.items():
                rows = np.concatenate(parts)
                d = tables[tpath]
                m = d.shape[0]
                d.resize((m + len(rows),))
                d[m:] = rows
            f.flush()
        if complete:
            # only now: a writer killed before this line leaves a file marked incomplete,
            # never one marked complete with some datasets short of the others
            f.attrs["complete"] = True
            f.flush()
    except Exception:  # the bench must hear why its recording stopped
        try:
            conn.send(("error", traceback.format_exc(limit=4)))
        except OSError:
            pass
    finally:
        f.close()
        if not renamed:
            tmp.unlink(missing_ok=True)


class Recorder:
    """Buffered, crash-safe recording of a run into one HDF5 file.

    Parameters
    ----------
    path : path-like
        The file to create (its parent directory is created).
    layout : Layout
        Columns recorded each tick and the tables.
    attrs : dict
        Root attributes (scenario text, mode, dt, seed...).
    flush_s : float
        Wall-clock period between flushes: at most this much is lost in a crash. [s]
    """

    def __init__(self, path: str | Path, layout: Layout, attrs: dict[str, Any],
                 flush_s: float = 1.0, capacity: int | None = None) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise RecordingError(f"{self.path}: is a directory; name the recording's file "
                                 f"(such as {self.path / 'run.h5'})")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.layout = layout
        self.flush_s = float(flush_s)
        nf, ng = len(layout.floats), len(layout.flags)
        if capacity is None:  # rows between sends: up to ~8 MB of buffer however wide a run
            capacity = int(min(1 << 14, max(64, (1 << 20) // max(nf, 1))))
        self._floats = np.full((capacity, nf), np.nan)
        self._flags = np.zeros((capacity, ng), dtype=np.uint8)
        self._n = 0
        self._tables: dict[str, list] = {}
        #: events recorded last whatever is recorded after them (``run_stopped``)
        self._final_events: list[tuple] = []
        self._last_send = time.monotonic()
        #: ticks recorded so far, and ticks already in the writer process's pipe
        self.ticks = 0
        self.sent_ticks = 0
        full = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **attrs}
        # A subprocess (not multiprocessing): it never re-imports the caller's __main__.  In
        # a session of its own: Ctrl-C in a terminal interrupts the bench, which closes the
        # recording (marked incomplete), not the writer in the middle of a write.
        self._proc = subprocess.Popen([sys.executable, "-m", "bench.recorder"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      bufsize=0, start_new_session=True)
        self._conn = _Pipe(self._proc.stdout.fileno(), self._proc.stdin.fileno())
        self._closed = False
        try:
            self._conn.send((str(self.path), layout, full))
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            self._proc.kill()
            raise RecordingError(f"{self.path}: the recorder process did not start") from None
        if kind != "ready":
            self._proc.wait(5)
            self._closed = True
            raise RecordingError(str(payload).strip().splitlines()[-1])
        self._errors = _ErrorWatch(self._conn)
        # batches go to the writer from a thread: a slow disk never blocks the loop
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name="gridloop-recorder-send",
                                        daemon=True)
        self._send_error = ""
        self._sender.start()

    def row(self) -> tuple[np.ndarray, np.ndarray]:
        """The next row to fill (floats, flags); commit it with :meth:`commit`."""
        if self._n == self._floats.shape[0]:
            self._send()
        return self._floats[self._n], self._flags[self._n]

    def commit(self) -> None:
        """Count the row just filled; hand a batch to the writer once per ``flush_s``."""
        self._n += 1
        self.ticks += 1
        now = time.monotonic()
        if now - self._last_send >= self.flush_s:
            self._send(now)

    def append(self, floats: Sequence[float] | np.ndarray,
               flags: Sequence[int] | np.ndarray = ()) -> None:
        """Record one tick from whole rows (convenience over :meth:`row`)."""
        fr, gr = self.row()
        fr[:] = floats
        if len(gr):
            gr[:] = flags
        self.commit()

    def event(self, t: float, kind: str, message: str) -> None:
        """Record an event (a fault, a catch-up, a reconnect) at simulated time ``t``.

        ``run_stopped`` (why a run ended early) is the recording's last event: what the
        devices and emulators still report while the run stops is recorded before it."""
        row = (t, kind.encode()[:32], _clip(message, 256))
        if kind in FINAL_EVENTS:
            self._final_events.append(row)
            return
        self.table_rows("events", [row])

    def set_attrs(self, group: str, attrs: dict[str, str]) -> None:
        """Set attributes of a group the layout made (``market``), once the run knows them
        (the ledger's head when it ends); written before the file is marked complete."""
        self._outbox.put(("attrs", (group, dict(attrs))))

    def table_rows(self, table: str, rows: list[tuple] | np.ndarray) -> None:
        """Append rows to a table (``events`` or one of the layout's tables)."""
        if table != "events" and table not in self.layout.tables:
            raise RecordingError(f"recording has no table '{table}'")
        if len(rows):
            self._tables.setdefault(table, []).append(rows)

    def _send(self, now: float | None = None) -> None:
        self._check_writer()
        n = self._n
        extra = {}
        for t, parts in self._tables.items():
            dt = EVENT_DTYPE if t == "events" else self.layout.tables[t]
            extra[t] = np.concatenate([p if isinstance(p, np.ndarray) else np.array(p, dtype=dt)
                                       for p in parts]).astype(dt, copy=False)
        self._tables = {}
        self._outbox.put(("rows", (self._floats[:n].copy(), self._flags[:n].copy(), extra)))
        self._floats[:n] = np.nan
        self._flags[:n] = 0
        self._n = 0
        self._last_send = time.monotonic() if now is None else now

    def _send_loop(self) -> None:
        while True:
            msg = self._outbox.get()
            try:
                self._conn.send(msg)
            except OSError as exc:
                self._send_error = str(exc)
                return
            if msg[0] == "close":
                return
            if msg[0] == "rows":
                self.sent_ticks += len(msg[1][0])

    def _check_writer(self) -> None:
        if self._send_error:
            raise RecordingError(f"{self.path}: the recorder process died: "
                                 f"{self._send_error}")
        if self._errors.message:
            raise RecordingError(f"{self.path}: recorder failed: {self._errors.message}")
        if self._proc.poll() is not None:
            raise RecordingError(f"{self.path}: the recorder process died "
                                 f"(exit status {self._proc.returncode})")

    def flush(self) -> None:
        """Hand everything buffered to the writer now."""
        self._send()

    @property
    def pid(self) -> int:
        """Process id of the writer (tests kill the bench and check the writer finishes)."""
        return self._proc.pid

    def close(self, complete: bool = True) -> None:
        """Write what is left, mark the file complete (or, ``complete=False``, a run that
        stopped early), wait for the writer.  A writer that stops answering (no progress for
        ``CLOSE_STALL_S``) is killed, the file kept as last flushed: a RecordingError, or for
        a run that stopped early (whose own reason is its outcome) a warning line."""
        if self._closed:
            return
        self._closed = True
        answered = True
        if self._final_events:
            self.table_rows("events", self._final_events)
            self._final_events = []
        try:
            self._send()
        finally:
            self._outbox.put(("close", complete))  # also after a failed send: the sender ends
            try:
                answered = self._wait_writer()
            finally:
                if not answered:
                    self._proc.kill()
                    self._proc.wait()
                    self._sender.join(5)
                self._errors.join()
                self._proc.stdin.close()
        if not answered:
            message = (f"{self.path}: the recorder process (pid {self._proc.pid}) stopped "
                       f"answering for {CLOSE_STALL_S:g} s while closing the recording; it "
                       "was killed, the recording keeps the ticks of its last flush")
            if complete:
                raise RecordingError(message)
            # a run that stopped for another reason: that reason is its outcome, this a line
            print(f"gridloop: warning: {message}", file=sys.stderr, flush=True)
            return
        if self._send_error:
            raise RecordingError(f"{self.path}: the recorder process died: "
                                 f"{self._send_error}")
        self._check_writer_result()

    def _wait_writer(self) -> bool:
        """Wait for the sender to hand everything to the writer and the writer to exit; False
        (without waiting more) once neither has made progress for ``CLOSE_STALL_S``.  A wait
        past ``CLOSE_NOTICE_S`` is said in one line (never ten silent minutes)."""
        start = last = time.monotonic()
        seen: tuple[Any, ...] = ()
        noticed = False
        while True:
            if self._sender.is_alive():
                self._sender.join(0.2)
            else:
                try:
                    self._proc.wait(0.2)
                    return True
                except subprocess.TimeoutExpired:
                    pass
            now = time.monotonic()
            progress = (self.sent_ticks, self._sender.is_alive(), _file_state(self.path))
            if progress != seen:
                seen, last = progress, now
            elif now - last >= CLOSE_STALL_S:
                return False
            if not noticed and now - start >= CLOSE_NOTICE_S:
                noticed = True
                print(f"gridloop: waiting for the recorder process (pid {self._proc.pid}) to "
                      f"finish writing {self.path}", file=sys.stderr, flush=True)

    def _check_writer_result(self) -> None:
        if self._errors.message:
            raise RecordingError(f"{self.path}: recorder failed: {self._errors.message}")
        if self._proc.returncode:
            raise RecordingError(f"{self.path}: the recorder process exited with status "
                                 f"{self._proc.returncode}")

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ErrorWatch:
    """Reads the writer's replies on a thread, so a failed flush is reported, never hung on."""

    def __init__(self, conn: _Pipe) -> None:
        self.message = ""
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="gridloop-recorder-watch",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                kind, payload = self._conn.recv()
            except (EOFError, OSError, ValueError):
                return
            if kind == "error":
                self.message = str(payload).strip().splitlines()[-1]

    def join(self) -> None:
        self._thread.join(10)


def _file_state(path: Path) -> tuple[int, int] | None:
    """What changes as the writer writes ``path`` (its size and modification time)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _clip(message: str, size: int) -> bytes:
    b = message.encode("utf-8", "replace")
    return b if len(b) <= size else b[: size - 3] + b"..."


def _serve() -> None:
    """Entry point of the writer process: ``python -m bench.recorder`` (stdin/stdout pipe)."""
    conn = _Pipe(sys.stdin.fileno(), os.dup(sys.stdout.fileno()))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nothing else may write into the pipe
    sys.stdout = sys.stderr
    try:
        path, layout, attrs = conn.recv()
    except EOFError:
        return
    _writer_main(conn, path, layout, attrs)


if __name__ == "__main__":
    _serve()
