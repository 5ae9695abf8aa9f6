"""CRC-16/CCITT-FALSE, the check value of every serial frame.

Width 16, polynomial 0x1021, initial value 0xFFFF, input and output not reflected, final
XOR 0x0000; the check value (the CRC of the ASCII bytes ``123456789``) is 0x29B1.  The
catalogue of parametrised CRC algorithms (R. Williams, "A painless guide to CRC error
detection algorithms", 1993; the reveng catalogue) also lists it as CRC-16/IBM-3740.
"""

from __future__ import annotations

import binascii

#: CRC of b"123456789"
CHECK = 0x29B1
INIT = 0xFFFF


def crc16(data: bytes, crc: int = INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``; pass a previous result as ``crc`` to continue it.

    ``binascii.crc_hqx`` is this polynomial, unreflected, with a caller-chosen initial value,
    computed in C.
    """
    return binascii.crc_hqx(data, crc)
