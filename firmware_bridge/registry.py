"""Back-ends by name, imported lazily; extended through the ``gridloop.devices`` entry points.

A missing optional library (nvidia-ml-py, say) never breaks ``import firmware_bridge``: it
only makes :func:`open_device` for that back-end raise
:class:`~firmware_bridge.errors.BackendUnavailable` with the reason.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from firmware_bridge.device import Device
from firmware_bridge.errors import BackendUnavailable, ConfigError

ENTRY_POINT_GROUP = "gridloop.devices"

#: name -> "module:Class"
BACKENDS: dict[str, str] = {
    "virtual": "firmware_bridge.backends.virtual:VirtualDevice",
    "modbus_tcp": "firmware_bridge.backends.modbus:ModbusTcpDevice",
    "modbus_rtu": "firmware_bridge.backends.modbus:ModbusRtuDevice",
    "serial": "firmware_bridge.backends.serial:SerialDevice",
    "nvml": "firmware_bridge.backends.nvml:NvmlDevice",
}


def available() -> dict[str, str]:
    """Built-in back-ends plus those installed through the entry-point group."""
    found = dict(BACKENDS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def backend_class(name: str) -> type[Device]:
    """Import and return the class behind back-end ``name``."""
    table = available()
    if name not in table:
        from twin.params import did_you_mean

        raise ConfigError(f"unknown device back-end '{name}'{did_you_mean(name, table)}; "
                          f"known: {', '.join(sorted(table))}")
    module_name, _, class_name = table[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(f"back-end '{name}' is unavailable: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise BackendUnavailable(f"back-end '{name}': {module_name} has no {class_name}")
    return cls


def open_device(name: str, /, **config: Any) -> Device:
    """Build (not yet open) a device of back-end ``name`` from its configuration (which may
    hold a ``name`` of its own: the device's)."""
    return backend_class(name)(**config)
