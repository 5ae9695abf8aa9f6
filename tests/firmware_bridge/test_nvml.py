"""The ``nvml`` back-end.

Without a GPU: the conversions, the error paths (no nvidia-ml-py, no driver) for real, and
the read path with NVML's C calls replaced at the GPU boundary (the only part that cannot
exist here).  With a GPU (marker ``gpu``, skipped when ``nvmlInit`` fails): plausible values, a growing
energy counter and no setting changed, on the real GPU, run as ``pytest -m gpu
tests/firmware_bridge``; the device contract on it is ``TestNvml`` in test_contract.py.
"""

from __future__ import annotations

import ast
import asyncio
import ctypes
import inspect
import re
import sys
import time

import pytest

from firmware_bridge.backends import nvml as nvml_backend
from firmware_bridge.backends.nvml import (
    FI_POWER_INSTANT,
    SIGNALS,
    NvmlDevice,
    NvmlSample,
    field_value,
    to_signals,
)
from firmware_bridge.device import Quality, poll
from firmware_bridge.errors import (
    BackendUnavailable,
    ConfigError,
    DeviceDisconnected,
    DeviceError,
    DeviceTimeout,
)
from firmware_bridge.registry import open_device

from .aio import run

pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")


# -- pure conversions -------------------------------------------------------------------------

def test_signals_are_si() -> None:
    s = to_signals(NvmlSample(power_mw=350_123, energy_mj=7_200_000_000, temp_c=61,
                              sm_clock_mhz=1980, power_limit_mw=700_000,
                              power_instant_mw=412_345))
    assert s == {"p_w": 350.123, "p_inst_w": 412.345, "energy_wh": 2000.0, "temp_c": 61.0,
                 "sm_clock_hz": 1.98e9, "power_cap_w": 700.0}
    assert tuple(s) == SIGNALS
    no_instant = to_signals(NvmlSample(1, 1, 1, 1, 1))
    assert "p_inst_w" not in no_instant and len(no_instant) == 5


def _entry(value_type: int, member: str, value: float, ret: int = 0) -> object:
    entry = pynvml.c_nvmlFieldValue_t()
    entry.fieldId = FI_POWER_INSTANT
    entry.valueType = value_type
    entry.nvmlReturn = ret
    setattr(entry.value, member, value)
    return entry


@pytest.mark.parametrize(("value_type", "member", "value"), [
    (pynvml.NVML_VALUE_TYPE_DOUBLE, "dVal", 412.5),
    (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, "uiVal", 412_345),
    (pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG, "ulVal", 412_345),
    (pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, "ullVal", 2**40),
    (pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG, "sllVal", -5),
    (pynvml.NVML_VALUE_TYPE_SIGNED_INT, "siVal", -7),
    (pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT, "usVal", 65535),
])
def test_field_value_reads_the_member_its_type_names(value_type: int, member: str,
                                                     value: float) -> None:
    assert field_value(_entry(value_type, member, value), "X") == value


def test_field_value_refuses_a_failed_entry_by_name() -> None:
    entry = _entry(1, "uiVal", 1, ret=pynvml.NVML_ERROR_NOT_SUPPORTED)
    with pytest.raises(DeviceError, match="NVML field NVML_FI_DEV_POWER_INSTANT \\(186\\) "
                                          "failed with return code 3"):
        field_value(entry, "NVML_FI_DEV_POWER_INSTANT")
    with pytest.raises(DeviceError, match="unknown value type 42"):
        field_value(_entry(42, "uiVal", 1), "X")


# -- never a setting ----------------------------------------------------------------------------

def test_module_never_calls_an_nvml_setter() -> None:
    source = inspect.getsource(nvml_backend)
    assert not re.search(r"nvml\w*Set", source)
    used = {node.attr for node in ast.walk(ast.parse(source))  # every nvml.<name> in the code
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "nvml"}
    allowed = re.compile(r"nvmlInit|nvmlShutdown|nvmlDeviceGet\w+|NVML_\w+|NVMLError")
    assert used and all(allowed.fullmatch(name) for name in used), sorted(used)


def test_write_is_refused_read_only() -> None:
    async def main() -> None:
        with pytest.raises(DeviceError, match="read-only; cannot write power_cap_w"):
            await NvmlDevice().write({"power_cap_w": 300.0})
    run(main())


# -- errors at open, for real on this machine ---------------------------------------------------

def _nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_nvml_works(), reason="this machine has an NVIDIA driver")
def test_open_without_a_driver_is_backend_unavailable() -> None:
    async def main() -> None:
        dev = open_device("nvml", index=0)
        with pytest.raises(BackendUnavailable, match="nvml:0: no NVIDIA driver on this machine"):
            await dev.open()
        with pytest.raises(DeviceDisconnected, match="not open"):
            await dev.read()
    run(main())


def test_open_without_nvidia_ml_py_is_backend_unavailable(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError

    async def main() -> None:
        with pytest.raises(BackendUnavailable, match="nvidia-ml-py is not installed"):
            await NvmlDevice().open()
    run(main())


@pytest.mark.parametrize(("options", "message"), [
    ({"index": -1}, "index must be an integer >= 0"),
    ({"index": "0"}, "index must be an integer >= 0"),
    ({"timeout_s": 0}, "timeout_s must be > 0"),
])
def test_options_are_validated(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NvmlDevice(**options)


# -- the read path, with NVML's C calls replaced at the GPU boundary ----------------------------

class FakeGpu:
    """Stands in for libnvidia-ml's answers; records every NVML function called."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.inits = 0
        self.instant_ret = pynvml.NVML_SUCCESS
        self.delay_s = 0.0
        self.error: int | None = None
        self.energy_mj = 3_600_000
        self.handles = 0  # handles given out; each nvmlInit after a loss gets a new one
        self.lost: set[int] = set()

    def lose(self) -> None:
        """The GPU falls off the bus: its handle answers GPU_IS_LOST from now on."""
        self.lost.add(0x1000 + self.handles)

    def install(self, mp: pytest.MonkeyPatch) -> None:
        def rec(name: str, result):
            def fn(*args):
                self.calls.append(name)
                if self.delay_s:
                    time.sleep(self.delay_s)
                if self.error is not None and name != "nvmlShutdown":
                    raise pynvml.NVMLError(self.error)
                if args and isinstance(args[0], ctypes.c_void_p) and args[0].value in self.lost:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
                return result(*args)
            mp.setattr(pynvml, name, fn)

        def init() -> None:
            self.inits += 1

        def shutdown() -> None:
            self.inits -= 1

        def fields(handle, ids):
            out = (pynvml.c_nvmlFieldValue_t * len(ids))()
            for entry, fid in zip(out, ids, strict=True):
                entry.fieldId = fid
                entry.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                entry.nvmlReturn = self.instant_ret
                entry.value.uiVal = 412_345
            return out

        def energy(handle):
            self.energy_mj += 1000
            return self.energy_mj

        rec("nvmlInit", init)
        rec("nvmlShutdown", shutdown)
        rec("nvmlDeviceGetCount", lambda: 1)
        def handle(index: int) -> ctypes.c_void_p:
            if 0x1000 + self.handles in self.lost:  # reset since: a new handle
                self.handles += 1
            return ctypes.c_void_p(0x1000 + self.handles)

        rec("nvmlDeviceGetHandleByIndex", handle)
        rec("nvmlDeviceGetName", lambda h: "NVIDIA H100 80GB HBM3")
        rec("nvmlDeviceGetFieldValues", fields)
        rec("nvmlDeviceGetPowerUsage", lambda h: 350_123)
        rec("nvmlDeviceGetTotalEnergyConsumption", energy)
        rec("nvmlDeviceGetTemperature", lambda h, sensor: 61)
        rec("nvmlDeviceGetClockInfo", lambda h, clock: 1980)
        rec("nvmlDeviceGetEnforcedPowerLimit", lambda h: 700_000)


@pytest.fixture
def gpu(monkeypatch) -> FakeGpu:
    fake = FakeGpu()
    fake.install(monkeypatch)
    return fake


def test_read_converts_every_signal(gpu: FakeGpu) -> None:
    async def main() -> None:
        async with NvmlDevice(0) as dev:
            r = await dev.read()
            assert r.quality == Quality.OK and r.rtt_s > 0
            assert r.values == {"p_w": 350.123, "p_inst_w": 412.345, "energy_wh": 1.0 + 1 / 3600,
                                "temp_c": 61.0, "sm_clock_hz": 1.98e9, "power_cap_w": 700.0}
            assert tuple(r.values) == dev.signals == SIGNALS
            assert r.extra["gpu"] == dev.gpu_name == "NVIDIA H100 80GB HBM3"
        assert gpu.inits == 0
        assert all(re.fullmatch(r"nvmlInit|nvmlShutdown|nvmlDeviceGet\w+", c) for c in gpu.calls)
    run(main())


def test_without_the_instant_field_the_signal_is_left_out(gpu: FakeGpu) -> None:
    gpu.instant_ret = pynvml.NVML_ERROR_NOT_SUPPORTED

    async def main() -> None:
        async with NvmlDevice(0) as dev:
            assert "p_inst_w" not in dev.signals
            assert set((await dev.read()).values) == set(dev.signals)
    run(main())


def test_a_field_failing_after_open_is_a_device_error(gpu: FakeGpu) -> None:
    async def main() -> None:
        async with NvmlDevice(0) as dev:
            gpu.instant_ret = pynvml.NVML_ERROR_UNKNOWN
            with pytest.raises(DeviceError, match="NVML_FI_DEV_POWER_INSTANT"):
                await dev.read()
    run(main())


def test_a_hung_nvml_call_is_a_timeout(gpu: FakeGpu) -> None:
    async def main() -> None:
        async with NvmlDevice(0, timeout_s=0.05) as dev:
            gpu.delay_s = 0.2
            r = await poll(dev)
            assert r.quality == Quality.TIMEOUT and "took longer than 0.05 s" in r.error
            gpu.delay_s = 0.0
    run(main())


@pytest.mark.parametrize(("code", "error", "message"), [
    (pynvml.NVML_ERROR_GPU_IS_LOST, DeviceDisconnected, "GPU is lost"),
    (pynvml.NVML_ERROR_TIMEOUT, DeviceTimeout, "timed out"),
    (pynvml.NVML_ERROR_NO_PERMISSION, DeviceError, "read failed: Insufficient Permissions"),
])
def test_nvml_errors_map_to_the_bridge_tree(gpu: FakeGpu, code: int, error: type,
                                            message: str) -> None:
    async def main() -> None:
        async with NvmlDevice(0) as dev:
            gpu.error = code
            with pytest.raises(error, match=message):
                await dev.read()
            gpu.error = None
    run(main())


def test_a_missing_index_names_it_and_shuts_nvml_down(gpu: FakeGpu) -> None:
    async def main() -> None:
        with pytest.raises(ConfigError, match="no GPU with index 3; this machine has 1"):
            await NvmlDevice(3).open()
        assert gpu.inits == 0
    run(main())


def test_no_driver_at_init_is_backend_unavailable(gpu: FakeGpu) -> None:
    gpu.error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED

    async def main() -> None:
        with pytest.raises(BackendUnavailable, match="no NVIDIA driver"):
            await NvmlDevice(0).open()
    run(main())


def test_close_is_idempotent_and_reopen_works(gpu: FakeGpu) -> None:
    async def main() -> None:
        dev = NvmlDevice(0)
        await dev.open()
        await dev.close()
        await dev.close()
        assert gpu.inits == 0
        with pytest.raises(DeviceDisconnected):
            await dev.read()
        async with dev:
            assert (await dev.read()).quality == Quality.OK
    run(main())


# -- on a real GPU ------------------------------------------------------------------------------

def _power_limit_mw() -> int:
    return pynvml.nvmlDeviceGetPowerManagementLimit(pynvml.nvmlDeviceGetHandleByIndex(0))


@pytest.mark.gpu
class TestNvmlOnAGpu:
    def test_read_returns_plausible_signals(self, real_gpu: int) -> None:
        async def main() -> None:
            async with NvmlDevice(real_gpu) as dev:
                r = await dev.read()
                assert r.rtt_s < 1 and dev.gpu_name
                assert 0 < r.values["p_w"] < 2 * r.values["power_cap_w"]
                assert 50 <= r.values["power_cap_w"] <= 2000
                assert 0 < r.values["temp_c"] < 120
                assert 1e8 < r.values["sm_clock_hz"] < 5e9
                assert r.values["energy_wh"] > 0
                if "p_inst_w" in r.values:
                    assert 0 < r.values["p_inst_w"] < 2 * r.values["power_cap_w"]
        run(main())

    def test_energy_counter_grows(self, real_gpu: int) -> None:
        async def main() -> None:
            async with NvmlDevice(real_gpu) as dev:
                first = (await dev.read()).values["energy_wh"]
                await asyncio.sleep(1.0)
                second = (await dev.read()).values["energy_wh"]
                assert second > first  # an idle H100 still draws tens of watts
                assert second - first < 2000 / 3600 * 1.5  # at most ~2 kW for about a second
        run(main())

    def test_reading_changes_no_setting(self, real_gpu: int) -> None:
        async def main() -> None:
            before = _power_limit_mw()
            async with NvmlDevice(real_gpu) as dev:
                for _ in range(5):
                    await dev.read()
                with pytest.raises(DeviceError, match="read-only"):
                    await dev.write({"power_cap_w": 100.0})
            assert _power_limit_mw() == before
        run(main())

    def test_a_missing_index_is_refused(self, real_gpu: int) -> None:
        async def main() -> None:
            with pytest.raises(ConfigError, match="no GPU with index 999"):
                await NvmlDevice(999).open()
        run(main())


def test_a_failed_open_is_retried_by_reads_within_the_back_off(gpu: FakeGpu) -> None:
    gpu.error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED  # a driver still loading at the start

    async def main() -> None:
        dev = NvmlDevice(0, backoff_s=0.05)
        with pytest.raises(BackendUnavailable, match="no NVIDIA driver"):
            await dev.open()
        r = await poll(dev)  # inside the back-off: refused at once, no NVML call
        assert r.quality == Quality.ERROR and "NVML not open; next attempt in" in r.error
        await asyncio.sleep(0.06)
        r = await poll(dev)  # still no driver: an error, never an exception out of poll
        assert r.quality == Quality.ERROR and "no NVIDIA driver" in r.error
        gpu.error = None
        await asyncio.sleep(0.11)  # the wait doubled
        r = await poll(dev)
        assert r.quality == Quality.OK and r.values["p_w"] == 350.123
        assert gpu.inits == 1
        await dev.close()
        assert gpu.inits == 0
        with pytest.raises(DeviceDisconnected, match="device is not open"):
            await dev.read()
    run(main())


def test_a_gpu_lost_mid_run_is_found_again_by_a_fresh_init(gpu: FakeGpu) -> None:
    """NVML_ERROR_GPU_IS_LOST leaves the handle dead: reads reopen NVML after the back-off."""
    async def main() -> None:
        async with NvmlDevice(0, backoff_s=0.05) as dev:
            assert (await poll(dev)).quality == Quality.OK
            gpu.lose()
            r = await poll(dev)
            assert r.quality == Quality.ERROR and "GPU is lost" in r.error
            assert gpu.inits == 0  # NVML shut down with the lost handle
            r = await poll(dev)  # inside the back-off: no NVML call
            assert r.quality == Quality.ERROR and "next attempt in" in r.error
            await asyncio.sleep(0.06)
            r = await poll(dev)  # reset: a fresh init, a new handle
            assert r.quality == Quality.OK and r.values["p_w"] == 350.123
            assert gpu.inits == 1 and gpu.handles == 1
        assert gpu.inits == 0
    run(main())
