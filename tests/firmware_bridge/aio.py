"""``run(main())``: ``asyncio.run`` with a deadline, so a hung test fails rather than waits.

What a test leaves behind (tasks, descriptors, threads) is checked for every test by the
autouse ``no_leaks`` fixture of conftest.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
    """Run ``main`` in a new event loop; fail with TimeoutError after ``timeout_s``. [s]"""
    return asyncio.run(asyncio.wait_for(main, timeout_s))
