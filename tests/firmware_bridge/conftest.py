"""One leak check for every firmware_bridge test (python-can's and pymodbus's habit).

:func:`no_leaks` is autouse: a test fails when, after it,

- a file descriptor is open that was not before (a socket, a listening server, a
  pseudo-terminal, a serial port, a file);
- a thread it started is still running;
- an asyncio task was still pending when the coroutine given to ``asyncio.run`` returned
  (``asyncio.run`` would cancel it without a word).

Exceptions, each where it is needed and nowhere else:

- NVML opens descriptors once per process at its first ``nvmlInit`` and keeps them: the
  GPU tests take the session-scoped :func:`real_gpu`, which initialises NVML before the
  per-test snapshot.
- A thread gets :data:`THREAD_GRACE_S` to end: asyncio's child-watcher thread (mbpoll runs
  as a subprocess) ends a moment after the process it waited for.
- Tasks are watched only in loops made by ``asyncio.run`` (through the event-loop policy),
  which is how every test here runs a coroutine.

A test may take the fixture by name to look at what it sees (``no_leaks.problems()``) or to
start over (``no_leaks.reset()``); that is how the check itself is tested.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

#: how long a thread the test started may take to finish after it [s]
THREAD_GRACE_S = 0.5


def open_fds() -> dict[int, str]:
    """This process's open descriptors and what they point to (``socket:[...]``...)."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the descriptor listdir itself used, closed by now
            continue
    return out


class _WatchedLoop(asyncio.SelectorEventLoop):
    """Notes the tasks still pending when the main coroutine of ``asyncio.run`` returns."""

    def __init__(self, pending: list[str]) -> None:
        super().__init__()
        self._pending = pending
        self._main_done = False

    def run_until_complete(self, future: Any) -> Any:
        if self._main_done:  # asyncio.run cancelling the rest, shutting down
            return super().run_until_complete(future)
        self._main_done = True
        result = super().run_until_complete(future)
        for _ in range(3):  # let closed transports and finished callbacks settle
            super().run_until_complete(asyncio.sleep(0))
        self._pending += [repr(t) for t in asyncio.all_tasks(self) if not t.done()]
        return result


class _WatchingPolicy(asyncio.DefaultEventLoopPolicy):
    def __init__(self, pending: list[str]) -> None:
        super().__init__()
        self._pending = pending

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _WatchedLoop(self._pending)


class LeakCheck:
    """What a test leaves behind: descriptors, threads and tasks."""

    def __init__(self) -> None:
        self.pending_tasks: list[str] = []
        self.reset()

    def _new_fds(self) -> dict[int, str]:
        return {fd: target for fd, target in open_fds().items() if self._fds.get(fd) != target}

    def _new_threads(self) -> list[threading.Thread]:
        """Threads started since the snapshot and still running after a short grace (asyncio's
        child watcher thread ends just after the process it waited for)."""
        deadline = time.monotonic() + THREAD_GRACE_S
        for t in threading.enumerate():
            if t not in self._threads:
                t.join(max(0.0, deadline - time.monotonic()))
        return [t for t in threading.enumerate() if t not in self._threads and t.is_alive()]

    def reset(self) -> None:
        """Take the snapshot again: what is open now is not a leak."""
        self._fds = open_fds()
        self._threads = set(threading.enumerate())
        self.pending_tasks.clear()

    def problems(self) -> list[str]:
        """One line per leak since the snapshot."""
        if self._new_fds():
            gc.collect()  # objects dropped without close() but closed when collected
        out = [f"descriptor {fd} -> {target}" for fd, target in self._new_fds().items()]
        out += [f"thread {t.name}" for t in self._new_threads()]
        out += [f"task {t}" for t in self.pending_tasks]
        return out


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[LeakCheck]:
    """Fail a test that leaves a descriptor, a thread or an asyncio task behind."""
    check = LeakCheck()
    saved = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_WatchingPolicy(check.pending_tasks))
    try:
        yield check
    finally:
        asyncio.set_event_loop_policy(saved)
    left = check.problems()
    assert not left, "test left behind: " + "; ".join(left)


@pytest.fixture(scope="session")
def real_gpu() -> Iterator[int]:
    """Index 0 of a machine where NVML initialises; skips with the reason elsewhere."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"no NVIDIA GPU: nvmlInit failed ({exc})")
    try:
        yield 0
    finally:
        pynvml.nvmlShutdown()
