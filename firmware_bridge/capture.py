"""Capture every Modbus transaction a back-end makes, store it in HDF5, serve it again.

A :class:`Capture` given to a Modbus back-end (``capture=``) records each transaction: wall
time, function code, first register, register count, the registers written, the registers
answered or the exception code, and the latency.  :meth:`Capture.flush_to` appends what is
new to the run's HDF5 file; :func:`read_capture` loads it back; :class:`ReplaySource` serves
one device's capture again through a
:class:`~firmware_bridge.emulators.modbus_server.ModbusEmulator`, so a lab session can be
replayed against a new controller build in CI.  A bench run captures into its recording
with ``[run] capture = true``, and serves a capture with an asset's ``replay_capture``.

HDF5 layout (``format = "gridloop-capture"``, ``format_version = 1``), one group per device::

    /capture/<device>/transactions   compound [n]: t_s f8, function_code u1, address u2,
                                     count u2, status u1, exception_code u1, latency_s f8,
                                     request_start u8, request_len u2,
                                     response_start u8, response_len u2, t_run_s f8
    /capture/<device>/registers      u2 [m]: request and response registers, back to back

Registers live in one flat dataset addressed by ``*_start``/``*_len`` rather than in
variable-length fields, so both datasets can grow under single-writer/multiple-reader mode.

Time: ``t_s`` is when the request was sent, in Unix seconds (the wall clock of the machine
that ran the client).  ``t_run_s`` is the same instant on the run's clock, seconds since the
clock zero of the recording's ``/wall``: ``t_s - origin_s``, where ``origin_s`` is the Unix
time the run's clock started (:meth:`Capture.set_origin`, called when the first tick
starts).  It aligns a transaction with the ticks: the device I/O of tick ``k`` happens after
``wall[k - 1]`` and before ``wall[k]``, so its tick is the first whose ``wall`` is at or
after ``t_run_s`` (:meth:`bench.recording.Run.capture` adds that ``tick`` column); a negative
``t_run_s`` is before the first tick (a device's opening read).  ``t_run_s`` is NaN in the
file where the capture had no origin (a capture outside a run), and a file written before
the column existed reads the same; :func:`read_capture` gives such a transaction
``t_run_s = None``.
"""

from __future__ import annotations

import enum
import math
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from firmware_bridge.errors import ConfigError

FORMAT = "gridloop-capture"
FORMAT_VERSION = 1


class Status(enum.IntEnum):
    """Outcome of one transaction."""

    OK = 0
    EXCEPTION = 1      # the device answered a Modbus exception (``exception_code``)
    TIMEOUT = 2        # no answer within the deadline
    FRAME_ERROR = 3    # an answer arrived corrupted (bad CRC, wrong length)
    DISCONNECTED = 4   # the connection was lost during the transaction


@dataclass(frozen=True, slots=True)
class Transaction:
    """One request and its outcome, as the client saw it."""

    t_s: float                      # wall clock when the request was sent, Unix s
    device: str
    function_code: int
    address: int
    count: int
    request: tuple[int, ...] = ()   # registers written (FC 6/16)
    response: tuple[int, ...] = ()  # registers answered (FC 3/4)
    status: Status = Status.OK
    exception_code: int = 0
    latency_s: float = 0.0
    #: when the request was sent on the run's clock (``/wall``), s; None where not known (a
    #: capture being made: its :attr:`Capture.origin_s` gives it when the rows are written)
    t_run_s: float | None = None


TRANSACTION_DTYPE = np.dtype([
    ("t_s", "<f8"), ("function_code", "u1"), ("address", "<u2"), ("count", "<u2"),
    ("status", "u1"), ("exception_code", "u1"), ("latency_s", "<f8"),
    ("request_start", "<u8"), ("request_len", "<u2"),
    ("response_start", "<u8"), ("response_len", "<u2"),
    ("t_run_s", "<f8"),
])


class Capture:
    """An in-memory log of transactions of one or more devices.

    Parameters
    ----------
    origin_s : float or None
        Unix time at which the run's clock (``/wall``) reads 0, from which each
        transaction's ``t_run_s`` is measured; None until :meth:`set_origin` says. [s]
    """

    def __init__(self, origin_s: float | None = None) -> None:
        self.origin_s = origin_s
        self._log: dict[str, list[Transaction]] = defaultdict(list)
        self._flushed: dict[str, int] = defaultdict(int)
        #: registers already taken per device (where the next ``registers`` rows start)
        self._registers: dict[str, int] = defaultdict(int)

    def set_origin(self, origin_s: float | None = None) -> float:
        """Start the run's clock: now, or at Unix time ``origin_s``.  Every transaction's
        ``t_run_s`` is measured from it, those captured before included (negative: before
        the first tick).  A bench run calls it when its first tick starts, the instant its
        ``/wall`` is 0.  Returns the origin. [s]"""
        self.origin_s = time.time() if origin_s is None else float(origin_s)
        return self.origin_s

    def add_device(self, device: str) -> None:
        """Declare ``device`` so its datasets exist from the first flush, even if empty."""
        self._log.setdefault(device, [])

    def record(self, tx: Transaction) -> None:
        self._log[tx.device].append(tx)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self._log)

    def transactions(self, device: str) -> list[Transaction]:
        """Transactions of ``device``, in the order they were made."""
        if device not in self._log:
            raise ConfigError(f"capture has no device '{device}' (has "
                              f"{', '.join(self._log) or 'none'})")
        return list(self._log[device])

    def __len__(self) -> int:
        return sum(len(v) for v in self._log.values())

    def to_arrays(self, device: str) -> tuple[np.ndarray, np.ndarray]:
        """``(transactions, registers)`` of ``device`` as in the HDF5 layout."""
        return _to_arrays(self.transactions(device), 0, self.origin_s)

    def take(self, device: str) -> tuple[np.ndarray, np.ndarray]:
        """Transactions of ``device`` not taken yet, as ``(transactions, registers)`` rows to
        append to its two datasets (register offsets continue where the last take ended)."""
        log = self._log.get(device, [])
        new = log[self._flushed[device]:]
        rows, flat = _to_arrays(new, self._registers[device], self.origin_s)
        self._flushed[device] = len(log)
        self._registers[device] += len(flat)
        return rows, flat

    def flush_to(self, parent: object) -> int:
        """Append transactions not yet written under ``parent`` (an h5py group or file).

        Creates ``capture/<device>`` datasets on first use; returns how many were written.
        """
        import h5py

        assert isinstance(parent, h5py.Group)
        root = parent.require_group("capture")
        root.attrs["format"] = FORMAT
        root.attrs["format_version"] = FORMAT_VERSION
        written = 0
        for device in self._log:
            group = root.require_group(device)
            if "transactions" not in group:
                group.create_dataset("transactions", shape=(0,), maxshape=(None,),
                                     dtype=TRANSACTION_DTYPE, chunks=(1024,))
                group.create_dataset("registers", shape=(0,), maxshape=(None,),
                                     dtype="<u2", chunks=(8192,))
            txs, regs = group["transactions"], group["registers"]
            self._registers[device] = regs.shape[0]
            rows, flat = self.take(device)
            if not len(rows):
                continue
            if txs.dtype != rows.dtype:  # a table written before t_run_s: its columns
                from numpy.lib.recfunctions import repack_fields

                rows = repack_fields(rows[[n for n in rows.dtype.names
                                           if n in txs.dtype.names]])
            txs.resize((txs.shape[0] + len(rows),))
            txs[-len(rows):] = rows
            if len(flat):
                regs.resize((regs.shape[0] + len(flat),))
                regs[-len(flat):] = flat
            written += len(rows)
        return written


def _to_arrays(txs: list[Transaction], first_register: int,
               origin_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the transactions table and the flat registers; ``t_run_s`` from ``origin_s``
    where given, else the transaction's own (a capture read back from a file)."""
    rows = np.zeros(len(txs), dtype=TRANSACTION_DTYPE)
    flat: list[int] = []
    at = first_register
    for i, tx in enumerate(txs):
        t_run = (tx.t_s - origin_s if origin_s is not None
                 else math.nan if tx.t_run_s is None else tx.t_run_s)
        rows[i] = (tx.t_s, tx.function_code, tx.address, tx.count, int(tx.status),
                   tx.exception_code, tx.latency_s, at, len(tx.request),
                   at + len(tx.request), len(tx.response), t_run)
        flat.extend(tx.request)
        flat.extend(tx.response)
        at += len(tx.request) + len(tx.response)
    return rows, np.asarray(flat, dtype="<u2")


def read_capture(parent: object) -> Capture:
    """Load every device's capture under ``parent`` (an h5py group or file)."""
    import h5py

    assert isinstance(parent, h5py.Group)
    if "capture" not in parent:
        raise ConfigError(f"{parent.file.filename}: no /capture group in this file")
    root = parent["capture"]
    if root.attrs.get("format") != FORMAT or root.attrs.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{parent.file.filename}: /capture is not a {FORMAT} version "
                          f"{FORMAT_VERSION} capture")
    capture = Capture()
    for device in root:
        group = root.get(device)
        if not isinstance(group, h5py.Group):  # a damaged object header reads as None
            raise ConfigError(f"{parent.file.filename}: /capture/{device} cannot be read "
                              "(damaged)")
        for name in ("transactions", "registers"):
            if name not in group:
                raise ConfigError(f"{parent.file.filename}: /capture/{device}: missing "
                                  f"'{name}'")
        try:
            rows, flat = group["transactions"][()], group["registers"][()]
        except (OSError, RuntimeError, KeyError, ValueError) as exc:  # damaged bytes
            reason = " ".join(str(exc).strip("'\"").split())
            raise ConfigError(f"{parent.file.filename}: /capture/{device} cannot be read "
                              f"(damaged: {reason})") from None
        capture.add_device(device)
        # t_run_s: a column added to format version 1 (None for files written before it)
        t_run = (rows["t_run_s"] if rows.dtype.names is not None
                 and "t_run_s" in rows.dtype.names else np.full(len(rows), math.nan))
        for row, t_r in zip(rows, t_run, strict=True):
            req = slice(int(row["request_start"]), int(row["request_start"])
                        + int(row["request_len"]))
            resp = slice(int(row["response_start"]), int(row["response_start"])
                         + int(row["response_len"]))
            if resp.stop > len(flat) or req.stop > len(flat):
                raise ConfigError(f"{parent.file.filename}: /capture/{device}: a transaction "
                                  f"points past the end of its registers")
            capture.record(Transaction(
                float(row["t_s"]), device, int(row["function_code"]), int(row["address"]),
                int(row["count"]), tuple(int(v) for v in flat[req]),
                tuple(int(v) for v in flat[resp]), Status(int(row["status"])),
                int(row["exception_code"]), float(row["latency_s"]),
                None if math.isnan(t_r) else float(t_r)))
        capture._flushed[device] = len(rows)
        capture._registers[device] = len(flat)
    return capture


class ReplaySource:
    """Serve one device's capture again (a register source for ``ModbusEmulator``).

    A read is answered with the next recorded answer to the same request (function code,
    address, count), in recorded order; once they are used up the last one repeats (the
    recording ended there).  Recorded exceptions are answered as exceptions, recorded
    timeouts and frame errors as silence.  A read never recorded answers exception 02.
    Writes are acknowledged, or answered as recorded.
    """

    def __init__(self, transactions: Iterable[Transaction]) -> None:
        self._answers: dict[tuple[int, int, int], deque[Transaction]] = defaultdict(deque)
        txs = list(transactions)
        if not txs:
            raise ConfigError("replay: the capture holds no transactions")
        lo = min(tx.address for tx in txs)
        hi = max(tx.address + tx.count for tx in txs)
        for tx in txs:
            self._answers[(tx.function_code, tx.address, tx.count)].append(tx)
        self.base_address = lo
        self._size = hi - lo
        self._started = time.monotonic()

    def image(self) -> list[int]:
        return [0] * self._size

    def now(self) -> float:
        """Replay time, for fault schedules: seconds since the source was made. [s]"""
        return time.monotonic() - self._started

    def _next(self, function_code: int, address: int, count: int) -> Transaction | None:
        queue = self._answers.get((function_code, address, count))
        if not queue:
            return None
        return queue.popleft() if len(queue) > 1 else queue[0]

    def on_read(self, function_code: int, address: int, count: int,
                image: list[int]) -> int | None:
        tx = self._next(function_code, address, count)
        if tx is None:
            return 0x02
        answer = _answer(tx)
        if answer is None:
            at = address - self.base_address
            image[at:at + count] = tx.response
        return answer

    def writable(self, address: int, count: int) -> bool:
        return True  # what the recorded device said to a write is replayed by on_write

    def on_write(self, function_code: int, address: int, values: list[int],
                 image: list[int]) -> int | None:
        tx = self._next(function_code, address, len(values))
        return None if tx is None else _answer(tx)


def _answer(tx: Transaction) -> int | None:
    from firmware_bridge.emulators.modbus_server import NO_ANSWER

    if tx.status == Status.EXCEPTION:
        return tx.exception_code
    if tx.status in (Status.TIMEOUT, Status.FRAME_ERROR, Status.DISCONNECTED):
        return NO_ANSWER
    return None
