"""The autouse leak check of conftest.py sees what a test leaves behind, and only that."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import TYPE_CHECKING

from firmware_bridge.pty import Pty

from .aio import run

if TYPE_CHECKING:
    from .conftest import LeakCheck


def test_it_sees_an_open_pty_until_it_is_closed(no_leaks: LeakCheck) -> None:
    pty = Pty()
    try:
        left = no_leaks.problems()
        assert any(line.endswith("-> /dev/ptmx") for line in left), left
        assert any("-> /dev/pts/" in line for line in left), left
    finally:
        pty.close()
    assert no_leaks.problems() == []


def test_it_sees_a_listening_server(no_leaks: LeakCheck) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        assert any("-> socket:" in line for line in no_leaks.problems())
    finally:
        server.close()
    assert no_leaks.problems() == []


def test_it_sees_a_task_left_pending_by_asyncio_run(no_leaks: LeakCheck) -> None:
    async def main() -> None:
        asyncio.create_task(asyncio.sleep(10), name="forgotten")

    run(main())
    left = no_leaks.problems()
    assert len(left) == 1 and left[0].startswith("task ") and "forgotten" in left[0]
    no_leaks.reset()
    assert no_leaks.problems() == []


def test_it_sees_a_running_thread(no_leaks: LeakCheck) -> None:
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="straggler")
    worker.start()
    try:
        assert no_leaks.problems() == ["thread straggler"]
    finally:
        stop.set()
        worker.join()
    assert no_leaks.problems() == []
