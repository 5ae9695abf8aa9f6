"""A null-modem cable made of two pseudo-terminal pairs, for RTU emulators.

Interim helper of the Modbus emulators until the shared ``firmware_bridge.pty`` lands: the
emulator opens :attr:`PtyLink.device_path`, a client opens :attr:`PtyLink.client_path`, and a
relay on the running event loop copies bytes between the two master ends.  A pty ignores
baud rate and parity, so line settings are not exercised here.
"""

from __future__ import annotations

import asyncio
import os
import tty


class PtyLink:
    """Two raw pseudo-terminals joined back to back (create inside a running event loop)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fds: list[int] = []
        masters: list[int] = []
        paths: list[str] = []
        try:
            for _ in range(2):
                master, slave = os.openpty()
                self._fds += [master, slave]
                tty.setraw(slave)  # no echo, no line discipline
                os.set_blocking(master, False)
                masters.append(master)
                paths.append(os.ttyname(slave))
        except OSError:
            self.close()
            raise
        self.device_path, self.client_path = paths
        self._masters = masters
        self._loop.add_reader(masters[0], self._relay, masters[0], masters[1])
        self._loop.add_reader(masters[1], self._relay, masters[1], masters[0])

    @staticmethod
    def _relay(src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, OSError):  # EIO while no one holds the far end open
            return
        try:
            os.write(dst, data)
        except (BlockingIOError, OSError):  # a full buffer drops bytes, as a real line
            pass

    def close(self) -> None:
        """Stop relaying and close every descriptor; safe to call twice."""
        for fd in getattr(self, "_masters", ()):
            self._loop.remove_reader(fd)
        self._masters = []
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
