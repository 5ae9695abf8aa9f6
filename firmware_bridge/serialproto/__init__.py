"""The gridloop serial protocol for microcontroller firmware (docs/serial-protocol.md).

Layers, each knowing only the one below: :mod:`.cobs` (byte stuffing), :mod:`.crc`
(the check value), :mod:`.frames` (header, CRC, framing, the streaming parser) and
:mod:`.messages` (message types and their payloads).
"""
