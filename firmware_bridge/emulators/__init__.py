"""Emulated devices on real transports: Modbus servers on loopback and pseudo-terminals."""
