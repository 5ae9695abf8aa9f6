"""The ``nvml`` back-end: one NVIDIA GPU's power, energy, temperature and clock, read only.

Signals (SI, see docs/developing.md; the names of a ``gpu_rack`` where they overlap):

| signal | NVML source | NVML unit |
| --- | --- | --- |
| ``p_w`` | ``nvmlDeviceGetPowerUsage`` (a one-second average on H100) | mW |
| ``p_inst_w`` | field ``NVML_FI_DEV_POWER_INSTANT`` (186), only where the driver has it | mW |
| ``energy_wh`` | ``nvmlDeviceGetTotalEnergyConsumption``, since the driver was loaded | mJ |
| ``temp_c`` | ``nvmlDeviceGetTemperature`` (GPU die) | degC |
| ``sm_clock_hz`` | ``nvmlDeviceGetClockInfo`` (SM clock) | MHz |
| ``power_cap_w`` | ``nvmlDeviceGetEnforcedPowerLimit`` | mW |

The back-end never changes a GPU's settings: it calls no NVML setter function, and
:meth:`NvmlDevice.write` refuses every setpoint.  NVML calls block, so each runs in a worker
thread under the device's deadline.  nvidia-ml-py is imported only at :meth:`open`: without
it, or without an NVIDIA driver, ``open`` raises
:class:`~firmware_bridge.errors.BackendUnavailable` and nothing else breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from firmware_bridge.backends.backoff import Backoff
from firmware_bridge.device import Device, Quality, Reading
from firmware_bridge.errors import (
    BackendUnavailable,
    BridgeError,
    ConfigError,
    DeviceDisconnected,
    DeviceError,
    DeviceTimeout,
)

T = TypeVar("T")

#: NVML field id of the instantaneous power, mW
FI_POWER_INSTANT = 186
SIGNALS = ("p_w", "p_inst_w", "energy_wh", "temp_c", "sm_clock_hz", "power_cap_w")

# nvmlValueType_t -> the member of the nvmlValue_t union that holds the value
_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal",
                 6: "usVal"}
_NVML_SUCCESS = 0
_MJ_PER_WH = 3.6e6


@dataclass(frozen=True, slots=True)
class NvmlSample:
    """One read of a GPU in NVML's own units."""

    power_mw: float
    energy_mj: float
    temp_c: float
    sm_clock_mhz: float
    power_limit_mw: float
    power_instant_mw: float | None = None


def to_signals(sample: NvmlSample) -> dict[str, float]:
    """Signals in SI units from a sample in NVML units (mW, mJ, MHz)."""
    out = {"p_w": sample.power_mw / 1e3,
           "energy_wh": sample.energy_mj / _MJ_PER_WH,
           "temp_c": float(sample.temp_c),
           "sm_clock_hz": sample.sm_clock_mhz * 1e6,
           "power_cap_w": sample.power_limit_mw / 1e3}
    if sample.power_instant_mw is not None:
        out["p_inst_w"] = sample.power_instant_mw / 1e3
    return dict(sorted(out.items(), key=lambda kv: SIGNALS.index(kv[0])))


def field_value(entry: Any, field: str) -> float:
    """The value of one ``nvmlFieldValue_t`` entry; raises DeviceError if NVML failed it."""
    if entry.nvmlReturn != _NVML_SUCCESS:
        raise DeviceError(f"NVML field {field} ({entry.fieldId}) failed with return code "
                          f"{entry.nvmlReturn}")
    member = _VALUE_MEMBER.get(entry.valueType)
    if member is None:
        raise DeviceError(f"NVML field {field} has unknown value type {entry.valueType}")
    return float(getattr(entry.value, member))


def _import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as exc:
        raise BackendUnavailable("nvml back-end: nvidia-ml-py is not installed "
                                 "(pip install 'gridloop[nvml]')") from exc
    return pynvml


class NvmlDevice(Device):
    """GPU ``index`` of this machine, read through NVML.

    Parameters
    ----------
    index : int
        NVML index of the GPU (the order of ``nvidia-smi``).
    timeout_s : float
        Deadline of one read (all its NVML calls). [s]
    backoff_s, backoff_max_s : float
        First and longest wait between attempts to open NVML after :meth:`open` failed (a
        driver still loading); it doubles after each failed attempt. [s]
    """

    backend = "nvml"

    def __init__(self, index: int = 0, timeout_s: float = 1.0, name: str = "", *,
                 backoff_s: float = 0.1, backoff_max_s: float = 5.0) -> None:
        super().__init__(name or f"nvml:{index}")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ConfigError(f"nvml device: index must be an integer >= 0, got {index!r}")
        if not timeout_s > 0:
            raise ConfigError(f"nvml device: timeout_s must be > 0, got {timeout_s}")
        self.index = index
        self.timeout_s = float(timeout_s)
        self.backoff = Backoff(backoff_s, backoff_max_s, f"nvml device {index}")
        self.gpu_name = ""
        self._nvml: ModuleType | None = None
        self._handle: Any = None
        self._has_instant = True
        #: open() was called and close() was not: reads open NVML if it is not open yet
        self._wanted = False

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(s for s in SIGNALS if s != "p_inst_w" or self._has_instant)

    async def open(self) -> None:
        """Initialise NVML and find the GPU; raises BackendUnavailable without a driver.

        After a failed open the device stays open: reads try again within the back-off.
        """
        if self._handle is not None:
            return
        self._wanted = True
        self.backoff.reset()
        try:
            await self._open()
        except BaseException:
            self.backoff.failed()
            raise

    async def _open(self) -> None:
        nvml = _import_pynvml()
        await self._call(nvml, "nvmlInit", nvml.nvmlInit)
        try:
            self._handle, self.gpu_name, self._has_instant = await self._call(
                nvml, "open", lambda: self._find(nvml))
        except BaseException:
            with contextlib.suppress(nvml.NVMLError):
                await asyncio.to_thread(nvml.nvmlShutdown)
            raise
        self._nvml = nvml

    def _find(self, nvml: ModuleType) -> tuple[Any, str, bool]:
        count = nvml.nvmlDeviceGetCount()
        if self.index >= count:
            raise ConfigError(f"{self.name}: no GPU with index {self.index}; this machine "
                              f"has {count}")
        handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
        name = nvml.nvmlDeviceGetName(handle)
        (probe,) = nvml.nvmlDeviceGetFieldValues(handle, [FI_POWER_INSTANT])
        return handle, str(name), probe.nvmlReturn == _NVML_SUCCESS

    async def close(self) -> None:
        self._wanted = False
        nvml, self._nvml, self._handle = self._nvml, None, None
        if nvml is not None:
            await self._call(nvml, "nvmlShutdown", nvml.nvmlShutdown)

    async def read(self) -> Reading:
        t0 = time.perf_counter()
        if self._nvml is None:
            await self._reopen()
        nvml = self._nvml
        assert nvml is not None
        try:
            sample = await self._call(nvml, "read", lambda: self._sample(nvml, self._handle))
        except DeviceDisconnected:
            # a lost GPU's handle stays lost: after a reset only a fresh nvmlInit finds it
            self._nvml = self._handle = None
            self.backoff.failed()
            with contextlib.suppress(nvml.NVMLError, DeviceError):
                await self._call(nvml, "nvmlShutdown", nvml.nvmlShutdown)
            raise
        return Reading(to_signals(sample), time.time(), Quality.OK, time.perf_counter() - t0,
                       extra={"gpu": self.gpu_name})

    async def _reopen(self) -> None:
        """Open NVML for a read after :meth:`open` failed, no more often than the back-off
        allows; every failure is a DeviceError, so a read never stops a run."""
        if not self._wanted:
            raise DeviceDisconnected(f"{self.name}: device is not open")
        self.backoff.check(f"{self.name}: NVML not open")
        try:
            await self._open()
        except BaseException as exc:
            self.backoff.failed()
            if isinstance(exc, BridgeError) and not isinstance(exc, DeviceError):
                raise DeviceDisconnected(str(exc)) from exc  # no driver (yet), no such GPU
            raise
        self.backoff.reset()

    def _sample(self, nvml: ModuleType, handle: Any) -> NvmlSample:
        instant = None
        if self._has_instant:
            (entry,) = nvml.nvmlDeviceGetFieldValues(handle, [FI_POWER_INSTANT])
            instant = field_value(entry, "NVML_FI_DEV_POWER_INSTANT")
        return NvmlSample(
            power_mw=nvml.nvmlDeviceGetPowerUsage(handle),
            energy_mj=nvml.nvmlDeviceGetTotalEnergyConsumption(handle),
            temp_c=nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            sm_clock_mhz=nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            power_limit_mw=nvml.nvmlDeviceGetEnforcedPowerLimit(handle),
            power_instant_mw=instant)

    async def _call(self, nvml: ModuleType, what: str, fn: Callable[[], T]) -> T:
        """Run blocking NVML calls in a thread, with NVML errors turned into ours."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn), self.timeout_s)
        except TimeoutError:
            raise DeviceTimeout(f"{self.name}: NVML {what} took longer than "
                                f"{self.timeout_s:g} s") from None
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in (nvml.NVML_ERROR_LIBRARY_NOT_FOUND, nvml.NVML_ERROR_DRIVER_NOT_LOADED):
                raise BackendUnavailable(f"{self.name}: no NVIDIA driver on this machine "
                                         f"(NVML: {exc})") from exc
            if code == nvml.NVML_ERROR_GPU_IS_LOST:
                raise DeviceDisconnected(f"{self.name}: GPU is lost (NVML {what})") from exc
            if code == nvml.NVML_ERROR_TIMEOUT:
                raise DeviceTimeout(f"{self.name}: NVML {what} timed out") from exc
            raise DeviceError(f"{self.name}: NVML {what} failed: {exc}") from exc
