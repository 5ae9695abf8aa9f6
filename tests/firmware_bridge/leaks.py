"""Leak checks for the serial, pty and NVML tests (python-can's and pymodbus's idea).

Import :func:`no_leaks` into a test module to make it autouse there: a test fails if it
leaves a file descriptor (a pty, a serial port) or a thread open.  Tasks live inside one
``asyncio.run``; :func:`run` fails a test whose coroutine leaves a task running.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

T = TypeVar("T")


def open_fds() -> dict[int, str]:
    """This process's open descriptors and what they point to (``/dev/pts/3``...)."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the directory descriptor listdir itself used
            continue
        out[int(name)] = target
    return out


def new_fds(before: dict[int, str]) -> dict[int, str]:
    """Descriptors open now that were not open (to the same target) in ``before``."""
    return {fd: target for fd, target in open_fds().items() if before.get(fd) != target}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    fds = open_fds()
    threads = set(threading.enumerate())
    yield
    leaked = new_fds(fds)
    assert not leaked, f"test left descriptors open: {leaked}"
    alive = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
    assert not alive, f"test left threads running: {alive}"


def run(main: Callable[[], Awaitable[T]], timeout_s: float = 30.0) -> T:
    """``asyncio.run(main())`` with a deadline, failing if ``main`` leaves tasks running."""
    async def checked() -> T:
        result = await asyncio.wait_for(main(), timeout_s)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"test left tasks running: {left}"
        return result
    return asyncio.run(checked())
