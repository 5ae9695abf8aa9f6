"""``poll``: whatever a device's answer does to its decoder, the run gets a flagged reading."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from bench.engine import _one_line_per_kind
from firmware_bridge.device import Device, Quality, Reading, poll


class _Answers(Device):
    """A device whose read fails the way a decoder meets an answer nobody expected."""

    backend = "test"

    def __init__(self, error: BaseException) -> None:
        super().__init__("odd")
        self.error = error

    @property
    def signals(self) -> tuple[str, ...]:
        return ("p_w",)

    async def open(self) -> None:
        pass

    async def read(self) -> Reading:
        raise self.error

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("error", [OverflowError(34, "Numerical result out of range"),
                                   ValueError("invalid literal"), ZeroDivisionError("x")])
def test_an_undecodable_answer_is_an_error_reading(error: BaseException) -> None:
    reading = asyncio.run(poll(_Answers(error)))
    assert reading.quality == Quality.ERROR and not reading.values
    assert reading.error.startswith(f"undecodable answer ({type(error).__name__}")


def test_a_bug_is_not_taken_for_a_device_fault() -> None:
    with pytest.raises(KeyError):
        asyncio.run(poll(_Answers(KeyError("p_w"))))


def test_event_loop_failures_are_one_line_once_per_kind() -> None:
    """A transport choking on malformed frames fails in the event loop on every reconnect;
    the run says so once."""
    handle = _one_line_per_kind()
    loop = asyncio.new_event_loop()
    context = {"message": "Fatal error: protocol.data_received() call failed.",
               "exception": OSError("Unable to decode\nrequest")}
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            for _ in range(5):
                handle(loop, context)
    finally:
        loop.close()
    assert len(said) == 1
    assert str(said[0].message) == ("Fatal error: protocol.data_received() call failed.: "
                                    "OSError: Unable to decode request")
