"""Pseudo-terminals that stand in for serial lines, and non-blocking tty I/O on the event loop.

No external tool (socat) is needed: :class:`Pty` is one pseudo-terminal whose master side
this process serves (an emulated device), and whose client side is a stable path that any
serial library opens like ``/dev/ttyUSB0``; :class:`PtyPair` joins two of them by a relay,
like a null-modem cable, for two programs that each want a port path (a pymodbus RTU server
and its client)::

    with Pty() as pty:                      # serve pty.fd, clients open pty.path
        ...
    async with PtyPair() as (path_a, path_b):
        ...                                 # bytes written to path_a are read from path_b

:class:`PtyBus` is a multi-drop line, as RS-485 is: one master port and several drops, each
served by a program of its own (the emulated Modbus RTU slaves of one line, each answering
its own unit id); every drop hears what the master writes, the master hears every drop.

A pty ignores baud rate, parity and stop bits: tests over it cannot catch a wrong line
setting.

Each pseudo-terminal keeps its own client-side descriptor open, in raw mode, for its whole
life, so the master never sees a hang-up when a client closes and reopens the port (Linux
would otherwise report EIO on the master for as long as no client is attached).
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
import tty
from collections.abc import Callable
from typing import Self

#: bytes a :class:`TtyStream` holds for a peer that does not read before it drops them
MAX_PENDING = 1 << 20


class TtyStream:
    """Non-blocking reads and writes of one tty descriptor on the running event loop.

    ``on_data(bytes)`` is called with every chunk read; ``on_lost(exc)`` once when the other
    side hangs up (``exc`` is the ``OSError``, or ``None`` at end of file).  The stream never
    closes ``fd``: its owner does, after :meth:`close`.

    Parameters
    ----------
    fd : int
        A tty or pty descriptor; it is switched to non-blocking mode.
    on_data : callable
        Receives each chunk read.
    on_lost : callable
        Called once when the line is gone.
    max_pending : int
        Written bytes held while the peer does not read; more are dropped and counted in
        :attr:`dropped`. [bytes]
    """

    def __init__(self, fd: int, on_data: Callable[[bytes], None],
                 on_lost: Callable[[OSError | None], None],
                 max_pending: int = MAX_PENDING) -> None:
        self.fd = fd
        self._on_data = on_data
        self._on_lost = on_lost
        self._max_pending = max_pending
        self._pending = bytearray()
        self._drained: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = False
        #: bytes dropped because the peer did not read
        self.dropped = 0
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._read_ready)

    def _read_ready(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        if not data:
            self._lose(None)
            return
        self._on_data(data)

    def _lose(self, exc: OSError | None) -> None:
        if self.closed:
            return
        self.close()
        self._on_lost(exc)

    def write(self, data: bytes) -> None:
        """Send ``data`` now, or hold it until the line accepts it."""
        if self.closed:
            raise ConnectionError(errno.EPIPE, "tty stream is closed")
        if not self._pending:
            try:
                n = os.write(self.fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._lose(exc)
                raise ConnectionError(exc.errno, f"tty write failed: {exc.strerror}") from exc
            data = data[n:]
            if not data:
                return
            self._loop.add_writer(self.fd, self._write_ready)
        room = self._max_pending - len(self._pending)
        if len(data) > room:
            self.dropped += len(data) - room
            data = data[:room]
        self._pending += data

    def _write_ready(self) -> None:
        try:
            n = os.write(self.fd, self._pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        del self._pending[:n]
        if not self._pending:
            self._loop.remove_writer(self.fd)
            self._wake()

    def _wake(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    async def drain(self) -> None:
        """Wait until every held byte is written (or the stream is closed)."""
        if self._pending and not self.closed:
            if self._drained is None:
                self._drained = self._loop.create_future()
            await asyncio.shield(self._drained)

    def close(self) -> None:
        """Stop reading and writing; held bytes are discarded.  Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.fd)
        if self._pending:
            self._loop.remove_writer(self.fd)
            self._pending.clear()
        self._wake()


class Pty:
    """A pseudo-terminal: this process serves :attr:`fd`; clients open :attr:`path`.

    :attr:`path` is a symbolic link in a private temporary directory, so it stays the same
    when :meth:`replug` replaces the terminal, as a USB serial adapter that re-enumerates
    under the same name.
    """

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="gridloop-pty-")
        #: the port clients open
        self.path = os.path.join(self._dir, "tty")
        self.fd = -1
        self._client_fd = -1
        try:
            self.plug()
        except OSError:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    @property
    def plugged(self) -> bool:
        return self.fd >= 0

    @property
    def tty_name(self) -> str:
        """The terminal :attr:`path` points to now (``/dev/pts/N``)."""
        return os.readlink(self.path)

    def plug(self) -> None:
        """Create a new terminal and point :attr:`path` at it."""
        if self.plugged:
            return
        master, client = os.openpty()
        tty.setraw(client)
        tmp = self.path + ".new"
        os.symlink(os.ttyname(client), tmp)
        os.replace(tmp, self.path)
        self.fd, self._client_fd = master, client

    def unplug(self) -> None:
        """Close the terminal: clients see a hang-up, and :attr:`path` leads nowhere."""
        if not self.plugged:
            return
        os.unlink(self.path)
        os.close(self.fd)
        os.close(self._client_fd)
        self.fd = self._client_fd = -1

    def replug(self) -> None:
        """Unplug, then plug a new terminal in under the same :attr:`path`."""
        self.unplug()
        self.plug()

    def close(self) -> None:
        """Unplug and remove the temporary directory.  Safe to call twice."""
        self.unplug()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PtyPair:
    """Two pseudo-terminals joined by a relay on the event loop, like a null-modem cable.

    ``async with PtyPair() as (path_a, path_b)``: what one program writes to ``path_a``
    another reads from ``path_b``, and back.  Bytes a side does not read are held (up to
    ``max_pending``) and then dropped, as on a line nobody listens to.
    """

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.max_pending = max_pending
        self._ptys: tuple[Pty, Pty] | None = None
        self._streams: tuple[TtyStream, TtyStream] | None = None

    @property
    def paths(self) -> tuple[str, str]:
        """``(path_a, path_b)``, the two ports."""
        if self._ptys is None:
            raise RuntimeError("PtyPair is not open")
        return self._ptys[0].path, self._ptys[1].path

    @property
    def dropped(self) -> int:
        """Bytes dropped because a side did not read. [bytes]"""
        return sum(s.dropped for s in self._streams or ())

    async def open(self) -> tuple[str, str]:
        """Create both terminals and start the relay; returns ``(path_a, path_b)``."""
        a = Pty()
        try:
            b = Pty()
        except OSError:
            a.close()
            raise
        self._ptys = (a, b)
        self._streams = (TtyStream(a.fd, self._from_a, self._lost, self.max_pending),
                         TtyStream(b.fd, self._from_b, self._lost, self.max_pending))
        return self.paths

    def _from_a(self, data: bytes) -> None:
        assert self._streams is not None
        self._streams[1].write(data)

    def _from_b(self, data: bytes) -> None:
        assert self._streams is not None
        self._streams[0].write(data)

    def _lost(self, exc: OSError | None) -> None:
        # both client sides are held open, so this only happens if a terminal is destroyed
        # under the relay: a cut cable, so cut both directions
        for stream in self._streams or ():
            stream.close()

    async def close(self) -> None:
        """Stop the relay and close both terminals.  Safe to call twice."""
        for stream in self._streams or ():
            stream.close()
        for pty in self._ptys or ():
            pty.close()
        self._ptys = self._streams = None

    async def __aenter__(self) -> tuple[str, str]:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class PtyBus:
    """A multi-drop line, as RS-485 is: a client opens :attr:`path` (the master's port) and
    each of ``drops`` servers opens one of :attr:`drops` (a slave's).

    What the master writes reaches every drop (each slave hears every request and answers
    only its own unit id); what a drop writes reaches the master.  The drops do not hear one
    another: the slaves of a real line hear the answers too, and ignore them.  A terminal
    destroyed under the relay cuts the whole line.  ``async with PtyBus(3) as path`` opens it.
    """

    def __init__(self, drops: int, max_pending: int = MAX_PENDING) -> None:
        if drops < 1:
            raise ValueError(f"a bus needs at least one drop, got {drops}")
        self.n_drops = drops
        self.max_pending = max_pending
        self._ptys: list[Pty] = []
        self._streams: list[TtyStream] = []

    @property
    def is_open(self) -> bool:
        return bool(self._ptys)

    @property
    def path(self) -> str:
        """The master's port (what a client opens)."""
        if not self._ptys:
            raise RuntimeError("PtyBus is not open")
        return self._ptys[0].path

    @property
    def drops(self) -> tuple[str, ...]:
        """The slaves' ports, one per drop (what each server opens)."""
        if not self._ptys:
            raise RuntimeError("PtyBus is not open")
        return tuple(p.path for p in self._ptys[1:])

    @property
    def dropped(self) -> int:
        """Bytes dropped because a side did not read. [bytes]"""
        return sum(s.dropped for s in self._streams)

    async def open(self) -> str:
        """Create the terminals and start the relay; returns :attr:`path` (once open, at
        once)."""
        if self._ptys:
            return self.path
        try:
            for _ in range(self.n_drops + 1):
                self._ptys.append(Pty())
        except OSError:
            await self.close()
            raise
        master, *drops = self._ptys
        self._streams = [TtyStream(master.fd, self._from_master, self._lost, self.max_pending)]
        self._streams += [TtyStream(d.fd, self._from_drop, self._lost, self.max_pending)
                          for d in drops]
        return self.path

    def unplug(self) -> None:
        """Pull the master's port (a USB adapter unplugged): its client sees a hang-up, and
        :attr:`path` leads nowhere until :meth:`plug`; the slaves stay up."""
        self._streams[0].close()
        self._ptys[0].unplug()

    def plug(self) -> None:
        """Plug a new terminal in as the master's port, under the same :attr:`path`."""
        master = self._ptys[0]
        if master.plugged:
            return
        master.plug()
        self._streams[0] = TtyStream(master.fd, self._from_master, self._lost, self.max_pending)

    def _from_master(self, data: bytes) -> None:
        for stream in self._streams[1:]:
            if not stream.closed:
                stream.write(data)

    def _from_drop(self, data: bytes) -> None:
        if not self._streams[0].closed:
            self._streams[0].write(data)

    def _lost(self, exc: OSError | None) -> None:
        for stream in self._streams:  # a cut cable: the whole line goes
            stream.close()

    async def close(self) -> None:
        """Stop the relay and close every terminal.  Safe to call twice."""
        for stream in self._streams:
            stream.close()
        for pty in self._ptys:
            pty.close()
        self._ptys, self._streams = [], []

    async def __aenter__(self) -> str:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
