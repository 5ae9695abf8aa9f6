"""Blocks: one per market interval, hash-chained, each with the Merkle root of its records.

A block header's body is ``"GLB" 0x01`` followed by the canonical map
``{height, interval, merkle_root, prev, records, signer}``; the block hash is the SHA-256 of
that body and the market operator (``signer``) signs it.  The Merkle tree is over record ids
in block order: a leaf is ``SHA-256(0x00 || id)``, an inner node ``SHA-256(0x01 || left ||
right)``; a level with an odd count carries its last node up unchanged (no duplication, so
two different record lists never share a root), and an empty block's root is
``SHA-256("")``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from ledger import canonical
from ledger.errors import EncodingError, RecordError
from ledger.keys import PUBLIC_KEY_BYTES

BLOCK_MAGIC = b"GLB\x01"
GENESIS_PREV = bytes(32)
EMPTY_ROOT = hashlib.sha256(b"").digest()
_HEADER_KEYS = ("height", "interval", "merkle_root", "prev", "records", "signer")


def merkle_root(ids: Sequence[bytes]) -> bytes:
    """Merkle root of record ids (32 bytes each), in order."""
    if not ids:
        return EMPTY_ROOT
    sha = hashlib.sha256
    level = [sha(b"\x00" + i).digest() for i in ids]
    while len(level) > 1:
        paired = [sha(b"\x01" + level[k] + level[k + 1]).digest()
                  for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


@dataclass(frozen=True)
class BlockHeader:
    """What a block commits to.

    Parameters
    ----------
    height : int
        Position in the chain, 0 for the first block.
    interval : int
        The market interval whose settlement sealed the block.
    prev : bytes
        Hash of the previous block's header, 32 zero bytes for height 0.
    merkle_root : bytes
        Merkle root of the block's record ids.
    records : int
        Number of records in the block.
    signer : bytes
        Raw public key of the market operator who signs the header.
    """

    height: int
    interval: int
    prev: bytes
    merkle_root: bytes
    records: int
    signer: bytes

    def __post_init__(self) -> None:
        if len(self.prev) != 32 or len(self.merkle_root) != 32 or \
                len(self.signer) != PUBLIC_KEY_BYTES:
            raise RecordError("block header: prev, merkle_root and signer must be 32 bytes")
        if self.height < 0 or self.records < 0:
            raise RecordError("block header: height and records must be >= 0")

    @cached_property
    def body(self) -> bytes:
        return BLOCK_MAGIC + canonical.encode({k: getattr(self, k) for k in _HEADER_KEYS})

    @cached_property
    def hash(self) -> bytes:
        return hashlib.sha256(self.body).digest()


def decode_header(body: bytes) -> BlockHeader:
    """The block header whose canonical body is ``body``."""
    if body[:4] != BLOCK_MAGIC:
        raise EncodingError(f"block header starts with {bytes(body[:4])!r}, not {BLOCK_MAGIC!r}")
    fields = canonical.decode(body, 4)
    if not isinstance(fields, dict) or sorted(fields) != list(_HEADER_KEYS):
        raise EncodingError(f"block header fields are not {list(_HEADER_KEYS)}")
    types = {"height": int, "interval": int, "records": int}
    for key in _HEADER_KEYS:
        if type(fields[key]) is not types.get(key, bytes):
            raise EncodingError(f"block header field {key} has the wrong type")
    return BlockHeader(**fields)


@dataclass(frozen=True)
class Block:
    """A sealed block: its header and the operator's signature over the header body."""

    header: BlockHeader
    signature: bytes

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def interval(self) -> int:
        return self.header.interval
