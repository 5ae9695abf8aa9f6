"""Record bodies are pinned byte for byte, ids are SHA-256 of them, and the signatures the
ledger makes verify under libsodium (PyNaCl), an Ed25519 implementation independent of the
OpenSSL one the ledger signs with."""

from __future__ import annotations

import dataclasses
import hashlib

import nacl.exceptions
import nacl.signing
import pytest

from ledger.errors import EncodingError, RecordError, SignatureError
from ledger.keys import Identity, verify_signature
from ledger.records import (
    MeterReading,
    Order,
    Settlement,
    SignedRecord,
    Trade,
    Transfer,
    decode,
    sign,
    signing_message,
)

SEED = bytes(range(32))
NODE = Identity.from_seed("n", SEED)
PK = NODE.public_key
OTHER = bytes([0x11]) * 32


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def test_the_seed_key_is_the_rfc8032_key_of_libsodium() -> None:
    assert PK == bytes(nacl.signing.SigningKey(SEED).verify_key)


def test_rfc8032_test_vector_1() -> None:
    """RFC 8032 section 7.1, TEST 1: the empty message."""
    ident = Identity.from_seed("rfc", h(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert ident.public_key == h(
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert ident.sign(b"") == h(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
        "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


ORDER_BODY = h(f"""
    474c5201 01 {PK.hex()} 0000000000000001 0000000000000007
    04 00000004
    09 656e657267795f7768                     01 00000000000001f4
    0a 657870697265735f6d73                   01 00000000000668a0
    12 70726963655f6d6963726f5f7065725f7768   01 00000000000000fa
    04 73696465                               03 00000003 627579
""")
TRANSFER_BODY = h(f"""
    474c5201 05 {PK.hex()} 0000000000000002 0000000000000007
    04 00000003
    0c 616d6f756e745f6d6963726f  01 00000000000003e8
    05 7061796565                02 00000020 {OTHER.hex()}
    09 7265666572656e6365        02 00000000
""")


@pytest.mark.parametrize(("record", "body"), [
    (Order(PK, 1, 7, "buy", 500, 250, 420_000), ORDER_BODY),
    (Transfer(PK, 2, 7, OTHER, 1000, b""), TRANSFER_BODY),
])
def test_golden_bodies_ids_and_signatures(record: Order | Transfer, body: bytes) -> None:
    assert record.body == body
    assert record.id == hashlib.sha256(body).digest()
    assert decode(body) == record
    signed = sign(record, NODE, b"")
    # Ed25519 is deterministic: libsodium makes the same signature from the same seed ...
    assert signed.signature == nacl.signing.SigningKey(SEED).sign(body).signature
    # ... and verifies ours.
    nacl.signing.VerifyKey(PK).verify(body, signed.signature)


ALL = [
    Order(PK, 1, 0, "sell", 10, 0, 0),
    Trade(PK, 2, 0, "continuous", bytes(32), bytes([1]) * 32, OTHER, PK, 10, 120),
    MeterReading(PK, 3, 0, 5, 0),
    Settlement(PK, 4, 0, b"", OTHER, PK, 5, 300, 1500),
    Transfer(PK, 5, -3, OTHER, 1, bytes(32)),
]


@pytest.mark.parametrize("record", ALL, ids=lambda r: r.NAME)
def test_every_kind_round_trips_and_verifies_under_libsodium(record) -> None:
    signed = sign(record, NODE, b"")
    again = SignedRecord.from_bytes(signed.body, signed.signature)
    assert again.record == record and again.id == record.id
    again.check_signature(b"")
    nacl.signing.VerifyKey(PK).verify(signed.body, signed.signature)
    row = record.row()
    assert row["id"] == record.id and row["kind"] == record.NAME
    assert {k: type(v) for k, v in row.items()} == type(record).row_types()
    assert all(len(v) <= 32 for v in row.values() if isinstance(v, bytes))


def test_libsodium_signatures_verify_in_the_ledger() -> None:
    key = nacl.signing.SigningKey.generate()
    record = MeterReading(bytes(key.verify_key), 9, 4, 100, 0)
    signature = key.sign(record.body).signature
    SignedRecord(record, signature).check_signature(b"")
    assert verify_signature(bytes(key.verify_key), record.body, signature)


@pytest.mark.parametrize("change", ["body", "signature", "key"])
def test_a_changed_byte_breaks_the_signature_in_both_implementations(change: str) -> None:
    record = ALL[3]
    signed = sign(record, NODE, b"")
    body, signature, key = bytearray(signed.body), bytearray(signed.signature), bytearray(PK)
    {"body": body, "signature": signature, "key": key}[change][-1] ^= 0x01
    assert not verify_signature(bytes(key), bytes(body), bytes(signature))
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.signing.VerifyKey(bytes(key)).verify(bytes(body), bytes(signature))


def test_a_forged_signature_is_refused() -> None:
    forged = SignedRecord(ALL[0], bytes(64))
    with pytest.raises(SignatureError, match="order .* does not verify"):
        forged.check_signature(b"")


def test_a_signature_binds_the_record_to_one_ledger() -> None:
    """The same key, the same record: signed for one ledger, it does not verify for another
    (nor as a bare body)."""
    record = ALL[4]
    one, other = bytes(range(16)), bytes(range(1, 17))
    signed = sign(record, NODE, one)
    signed.check_signature(one)
    for wrong in (other, b""):
        with pytest.raises(SignatureError, match="does not verify"):
            signed.check_signature(wrong)
    assert signing_message(one, record.body) == b"GLS\x01" + one + record.body
    assert signing_message(b"", record.body) == record.body


def test_only_the_signer_signs() -> None:
    with pytest.raises(RecordError, match="cannot sign"):
        sign(Order(OTHER, 1, 0, "buy", 1, 1, 0), NODE, b"")


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Order(PK, 0, 0, "buy", 1, 1, 0), "nonce"),
    (lambda: Order(PK, 1, 0, "hold", 1, 1, 0), "side"),
    (lambda: Order(PK, 1, 0, "buy", 0, 1, 0), "energy_wh must be > 0"),
    (lambda: Order(PK, 1, 0, "buy", 1, -1, 0), "price_micro_per_wh"),
    (lambda: Order(PK, 1, 0, "buy", 2**40, 2**40, 0), "overflows"),
    (lambda: Order(PK, 1, 0, "buy", 1.5, 1, 0), "energy_wh must be an int64"),
    (lambda: Order(PK, 1, 0, "buy", True, 1, 0), "energy_wh must be an int64"),
    (lambda: Order(PK[:31], 1, 0, "buy", 1, 1, 0), "signer"),
    (lambda: Trade(PK, 1, 0, "uniform", bytes(32), bytes(32), PK, PK, 1, 1), "same node"),
    (lambda: Trade(PK, 1, 0, "dutch", bytes(32), bytes(32), OTHER, PK, 1, 1), "market"),
    (lambda: MeterReading(PK, 1, 0, -1, 0), "import_wh"),
    (lambda: Settlement(PK, 1, 0, b"", OTHER, PK, 5, 300, 1499), "amount_micro"),
    (lambda: Settlement(PK, 1, 0, b"x", OTHER, PK, 5, 300, 1500), "trade"),
    (lambda: Transfer(PK, 1, 0, PK, 1, b""), "same account"),
    (lambda: Transfer(PK, 1, 0, OTHER, 0, b""), "amount_micro must be > 0"),
    (lambda: Transfer(PK, 1, 0, OTHER, 1, b"invoice 7"), "reference"),
])
def test_out_of_range_fields_are_refused(make, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        make()


def _with_fields(body: bytes, fields: bytes) -> bytes:
    return body[:53] + fields


@pytest.mark.parametrize(("body", "message"), [
    (ORDER_BODY[:40], "less than its 53-byte header"),
    (b"GLX\x01" + ORDER_BODY[4:], "starts with"),
    (ORDER_BODY[:4] + b"\x09" + ORDER_BODY[5:], "unknown record kind 9"),
    (ORDER_BODY + b"\x00", "trailing"),
    (_with_fields(ORDER_BODY, h("04 00000000")), "missing"),
    (_with_fields(ORDER_BODY, h("01 0000000000000000")), "not a map"),
    (ORDER_BODY.replace(h("627579"), h("627574")), "side must be"),
    (TRANSFER_BODY.replace(h("01 00000000000003e8"), h("03 00000001 31")),
     "amount_micro must be an int64"),
])
def test_malformed_bodies_are_refused(body: bytes, message: str) -> None:
    with pytest.raises((EncodingError, RecordError), match=message):
        decode(body)


def test_records_are_immutable_values() -> None:
    record = ALL[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.energy_wh = 11  # type: ignore[misc]
    assert record == Order(PK, 1, 0, "sell", 10, 0, 0)
    assert len({record, Order(PK, 1, 0, "sell", 10, 0, 0)}) == 1
