"""Ledger records (order, trade, meter reading, settlement, transfer) and their signed form.

Every record has one canonical body::

    "GLR" 0x01          4 bytes   magic and format version
    kind                u8        1 order, 2 trade, 3 meter_reading, 4 settlement, 5 transfer
    signer              32 bytes  raw Ed25519 public key of the node that made the record
    nonce               i64       strictly increasing per signer, >= 1
    interval            i64       the market interval the record belongs to
    fields              a canonical map (see :mod:`ledger.canonical`) of the kind's fields

all integers big-endian.  A record's id is the SHA-256 of its body and its signature is the
signer's Ed25519 signature of the body bound to one ledger (:func:`signing_message`): the same
keys trading on two ledgers cannot have a record of one replayed into the other.

Quantities are integers: energy in Wh, prices in micro-units of the currency per Wh, money in
micro-units, times in ms, so that
``amount_micro = energy_wh * price_micro_per_wh`` exactly and nothing on the ledger rounds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from ledger import canonical
from ledger.errors import EncodingError, RecordError, SignatureError
from ledger.keys import PUBLIC_KEY_BYTES, Identity, verify_signature

MAGIC = b"GLR\x01"
SIGNING_MAGIC = b"GLS\x01"
LEDGER_ID_BYTES = 16
HEADER = struct.Struct(">4sB32sqq")
HEADER_BYTES = HEADER.size  # 53
SIDES = ("buy", "sell")
MARKETS = ("uniform", "continuous")

Row = dict[str, int | str | bytes]


def _require(ok: bool, record: str, message: str) -> None:
    if not ok:
        raise RecordError(f"{record}: {message}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_key(value: object) -> bool:
    return type(value) is bytes and len(value) == PUBLIC_KEY_BYTES


@dataclass(frozen=True)
class Record:
    """Header shared by every record: who made it, their nonce, and the market interval."""

    KIND: ClassVar[int] = 0
    NAME: ClassVar[str] = ""
    #: fields a body holds only when they are set (not None): a record without them encodes
    #: as it did before they existed, so its id and signature are unchanged
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    signer: bytes
    nonce: int
    interval: int

    def __post_init__(self) -> None:
        _require(_is_key(self.signer), self.NAME, "signer must be a raw 32-byte public key")
        _require(_is_int(self.nonce) and 1 <= self.nonce <= canonical.INT_MAX, self.NAME,
                 f"nonce must be an integer from 1 to 2**63-1, not {self.nonce!r}")
        _require(_is_int(self.interval) and canonical.INT_MIN <= self.interval
                 <= canonical.INT_MAX, self.NAME, f"interval {self.interval!r} is not an int64")
        for field in dataclasses.fields(self)[3:]:
            value = getattr(self, field.name)
            if field.name in self.OPTIONAL and value is None:
                continue
            if field.type in ("int", "int | None"):
                _require(_is_int(value) and canonical.INT_MIN <= value <= canonical.INT_MAX,
                         self.NAME, f"{field.name} must be an int64, not {value!r}")
            elif field.type == "bytes":
                _require(type(value) is bytes, self.NAME, f"{field.name} must be bytes")
            else:
                _require(type(value) is str, self.NAME, f"{field.name} must be text")
        self.check()

    def check(self) -> None:
        """Kind-specific range checks; raise :class:`RecordError`."""

    def fields(self) -> dict[str, int | str | bytes]:
        """The kind's own fields (everything after the header), by name; an optional field
        only when it is set."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)[3:]
                if not (f.name in self.OPTIONAL and getattr(self, f.name) is None)}

    @cached_property
    def body(self) -> bytes:
        """The canonical bytes that are hashed and signed."""
        return HEADER.pack(MAGIC, self.KIND, self.signer, self.nonce, self.interval) + \
            canonical.encode(self.fields())

    @cached_property
    def id(self) -> bytes:
        """SHA-256 of the body (32 bytes)."""
        return hashlib.sha256(self.body).digest()

    def row(self) -> Row:
        """Plain row of ints, strings and bytes (for HDF5 compound tables and JSON)."""
        return {"id": self.id, "kind": self.NAME, "signer": self.signer, "nonce": self.nonce,
                "interval": self.interval, **self.fields()}

    @classmethod
    def row_types(cls) -> dict[str, type]:
        """The keys of :meth:`row` and the type of each value (``int``, ``str`` or ``bytes``;
        bytes are at most 32 long), so tables can be created before the first record.  An
        optional field (:attr:`OPTIONAL`) is in a row only when it is set, and not here."""
        types = {"int": int, "str": str, "bytes": bytes}
        return {"id": bytes, "kind": str, "signer": bytes, "nonce": int, "interval": int,
                **{f.name: types[f.type] for f in dataclasses.fields(cls)[3:]
                   if f.name not in cls.OPTIONAL}}


@dataclass(frozen=True)
class Order(Record):
    """An offer to buy or sell energy in one interval, at a limit price, until an expiry."""

    KIND: ClassVar[int] = 1
    NAME: ClassVar[str] = "order"

    side: str
    energy_wh: int
    price_micro_per_wh: int
    expires_ms: int

    def check(self) -> None:
        _require(self.side in SIDES, self.NAME, f"side must be 'buy' or 'sell', not {self.side!r}")
        _require(self.energy_wh > 0, self.NAME, f"energy_wh must be > 0, not {self.energy_wh}")
        _require(self.price_micro_per_wh >= 0, self.NAME,
                 f"price_micro_per_wh must be >= 0, not {self.price_micro_per_wh}")
        _require(self.energy_wh * self.price_micro_per_wh <= canonical.INT_MAX, self.NAME,
                 "energy_wh * price_micro_per_wh overflows 64 bits")


@dataclass(frozen=True)
class Trade(Record):
    """A match of a buy and a sell order, made by the market operator."""

    KIND: ClassVar[int] = 2
    NAME: ClassVar[str] = "trade"

    market: str
    buy_order: bytes
    sell_order: bytes
    buyer: bytes
    seller: bytes
    energy_wh: int
    price_micro_per_wh: int

    def check(self) -> None:
        _require(self.market in MARKETS, self.NAME, f"unknown market {self.market!r}")
        for name in ("buy_order", "sell_order"):
            _require(len(getattr(self, name)) == 32, self.NAME, f"{name} must be a 32-byte id")
        _require(_is_key(self.buyer) and _is_key(self.seller), self.NAME,
                 "buyer and seller must be raw 32-byte public keys")
        _require(self.buyer != self.seller, self.NAME, "buyer and seller are the same node")
        _require(self.energy_wh > 0, self.NAME, f"energy_wh must be > 0, not {self.energy_wh}")
        _require(self.price_micro_per_wh >= 0, self.NAME, "price_micro_per_wh must be >= 0")


@dataclass(frozen=True)
class MeterReading(Record):
    """Energy metered at a node's connection over one interval, signed by the node.

    The energy is the rise of the meter's counters since the node's previous reading.  A
    reading ends at its interval's end (for the interval a run ends in, at the run's last
    tick); ``read_ms``, set only when the meter gave no valid reading there (a timeout, an
    error), is the session time of the last valid counters it ends at instead: the energy
    counted after ``read_ms`` is in the node's next reading.  ``read_ms`` may lie before the
    interval's start (a meter silent all interval: the reading is then 0 Wh).
    """

    KIND: ClassVar[int] = 3
    NAME: ClassVar[str] = "meter_reading"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("read_ms",)

    import_wh: int
    export_wh: int
    read_ms: int | None = None

    def check(self) -> None:
        _require(self.import_wh >= 0 and self.export_wh >= 0, self.NAME,
                 f"import_wh and export_wh must be >= 0, not {self.import_wh}, {self.export_wh}")
        _require(self.read_ms is None or self.read_ms >= 0, self.NAME,
                 f"read_ms must be >= 0, not {self.read_ms}")


@dataclass(frozen=True)
class Settlement(Record):
    """Energy delivered from seller to buyer in one interval and what it costs.

    ``trade`` is the settled trade's id, or empty for energy exchanged with the grid account
    (a node's imbalance).  ``amount_micro = energy_wh * price_micro_per_wh`` always.
    """

    KIND: ClassVar[int] = 4
    NAME: ClassVar[str] = "settlement"

    trade: bytes
    seller: bytes
    buyer: bytes
    energy_wh: int
    price_micro_per_wh: int
    amount_micro: int

    def check(self) -> None:
        _require(len(self.trade) in (0, 32), self.NAME, "trade must be a 32-byte id or empty")
        _require(_is_key(self.buyer) and _is_key(self.seller), self.NAME,
                 "buyer and seller must be raw 32-byte public keys")
        _require(self.energy_wh >= 0 and self.price_micro_per_wh >= 0, self.NAME,
                 "energy_wh and price_micro_per_wh must be >= 0")
        _require(self.amount_micro == self.energy_wh * self.price_micro_per_wh, self.NAME,
                 f"amount_micro {self.amount_micro} != energy_wh * price_micro_per_wh")


@dataclass(frozen=True)
class Transfer(Record):
    """Money paid by the signer to ``payee``; ``reference`` is what it pays for (or empty)."""

    KIND: ClassVar[int] = 5
    NAME: ClassVar[str] = "transfer"

    payee: bytes
    amount_micro: int
    reference: bytes

    def check(self) -> None:
        _require(_is_key(self.payee), self.NAME, "payee must be a raw 32-byte public key")
        _require(self.payee != self.signer, self.NAME, "payer and payee are the same account")
        _require(self.amount_micro > 0, self.NAME,
                 f"amount_micro must be > 0, not {self.amount_micro}")
        _require(len(self.reference) in (0, 32), self.NAME,
                 "reference must be a 32-byte record id or empty")


KINDS: dict[int, type[Record]] = {cls.KIND: cls for cls in
                                  (Order, Trade, MeterReading, Settlement, Transfer)}
BY_NAME: dict[str, type[Record]] = {cls.NAME: cls for cls in KINDS.values()}


def decode_header(body: bytes) -> tuple[int, bytes, int, int]:
    """``(kind, signer, nonce, interval)`` from a body, checking the magic and the kind."""
    if len(body) < HEADER_BYTES:
        raise EncodingError(f"record body has {len(body)} bytes, less than its "
                            f"{HEADER_BYTES}-byte header")
    magic, kind, signer, nonce, interval = HEADER.unpack_from(body)
    if magic != MAGIC:
        raise EncodingError(f"record body starts with {magic!r}, not {MAGIC!r}")
    if kind not in KINDS:
        raise EncodingError(f"unknown record kind {kind}")
    return kind, signer, nonce, interval


def decode(body: bytes) -> Record:
    """The record whose canonical body is ``body``; refuse any other bytes."""
    kind, signer, nonce, interval = decode_header(body)
    cls = KINDS[kind]
    fields = canonical.decode(body, HEADER_BYTES)
    if not isinstance(fields, dict):
        raise EncodingError(f"{cls.NAME} fields are not a map")
    expected = [f.name for f in dataclasses.fields(cls)[3:]
                if f.name not in cls.OPTIONAL or f.name in fields]
    if sorted(fields) != sorted(expected):
        missing = sorted(set(expected) - set(fields))
        extra = sorted(set(fields) - set(expected))
        raise EncodingError(f"{cls.NAME} fields: missing {missing}, unexpected {extra}")
    record = cls(signer, nonce, interval, **fields)
    record.__dict__["body"] = bytes(body)  # canonical decoding guarantees re-encoding is equal
    return record


@dataclass(frozen=True)
class SignedRecord:
    """A record with its signer's signature over the body."""

    record: Record
    signature: bytes

    @property
    def id(self) -> bytes:
        return self.record.id

    @property
    def body(self) -> bytes:
        return self.record.body

    def check_signature(self, ledger_id: bytes) -> None:
        """Raise :class:`SignatureError` unless the signature verifies under the signer's key
        for the ledger ``ledger_id``."""
        if not verify_signature(self.record.signer, signing_message(ledger_id, self.record.body),
                                self.signature):
            raise SignatureError(f"{self.record.NAME} {self.id.hex()}: signature does not "
                                 "verify under its signer's public key")

    @classmethod
    def from_bytes(cls, body: bytes, signature: bytes) -> SignedRecord:
        """Decode a stored or received record (the signature is not checked here)."""
        return cls(decode(body), bytes(signature))


def signing_message(ledger_id: bytes, body: bytes) -> bytes:
    """What a signature covers: ``"GLS" 0x01``, the ledger's id, then the body (a record's or
    a block header's).  A ledger made before ledger ids (``ledger_id`` empty) signs the body
    alone."""
    return SIGNING_MAGIC + ledger_id + body if ledger_id else body


def sign(record: Record, identity: Identity, ledger_id: bytes) -> SignedRecord:
    """Sign ``record`` as ``identity``, which must be its signer, for the ledger
    ``ledger_id`` (:attr:`ledger.store.Store.ledger_id`)."""
    if identity.public_key != record.signer:
        raise RecordError(f"{identity.name} cannot sign a {record.NAME} whose signer is "
                          "another key")
    return SignedRecord(record, identity.sign(signing_message(ledger_id, record.body)))
