"""The exception tree of firmware_bridge: every wire problem is one of these."""

from __future__ import annotations


class BridgeError(Exception):
    """Base class of every error on a wire or in a device configuration."""


class ConfigError(BridgeError, ValueError):
    """A device address, back-end name, register map or fault card is malformed."""


class BackendUnavailable(BridgeError, ImportError):
    """A back-end's optional library is missing (for example nvidia-ml-py for ``nvml``)."""


class DeviceError(BridgeError):
    """A device answered, but not with what was asked for."""


class DeviceTimeout(DeviceError, TimeoutError):
    """No answer within the device's deadline."""


class DeviceDisconnected(DeviceError, ConnectionError):
    """The transport is closed or was reset by the peer."""


class ExceptionResponse(DeviceError):
    """The device answered with a protocol exception (for Modbus: the exception code)."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = int(code)
        super().__init__(message or f"device answered exception code {self.code:#04x}")


class FrameError(DeviceError):
    """A frame arrived corrupted: bad CRC, bad length, bad framing."""
