"""Emulated devices on real transports: Modbus servers on loopback TCP and pseudo-terminals,
serial MCU boards on pseudo-terminals, and the host that serves a scenario's devices."""
