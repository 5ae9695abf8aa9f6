"""Key files: private keys are 0600 from the first byte, refused when readable by others, and
never shown."""

from __future__ import annotations

import base64
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ledger.errors import KeyFileError, RecordError
from ledger.keys import Identity, KeyDirectory, read_public_key, verify_signatures


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_writes_0600_private_and_readable_public(keys: KeyDirectory) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        ident = keys.create("node-a")
    finally:
        os.umask(old)
    key_path, pub_path = keys.files("node-a")
    assert mode(key_path) == 0o600
    assert mode(keys.path) == 0o700
    assert read_public_key(pub_path) == ident.public_key
    # The files are standard PEM that OpenSSL-based tools read.
    private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert private.public_key().public_bytes_raw() == ident.public_key
    again = keys.load("node-a")
    assert again.public_key == ident.public_key
    assert again.sign(b"m") == ident.sign(b"m")


def test_existing_keys_are_never_overwritten(keys: KeyDirectory) -> None:
    first = keys.create("a")
    with pytest.raises(KeyFileError, match="already exists"):
        keys.create("a")
    assert keys.load("a").public_key == first.public_key
    assert keys.get("a").public_key == first.public_key


def test_get_creates_on_demand(keys: KeyDirectory) -> None:
    assert not keys.exists("b")
    made = keys.get("b")
    assert keys.exists("b") and keys.get("b").public_key == made.public_key


def test_group_readable_private_key_is_refused(keys: KeyDirectory) -> None:
    keys.create("a")
    key_path = keys.files("a")[0]
    key_path.chmod(0o640)
    with pytest.raises(KeyFileError, match=r"a\.key is readable by group or others "
                                           r"\(mode 0640\); run: chmod 600"):
        keys.load("a")


@pytest.mark.parametrize(("content", "message"), [
    (b"not a key", "not an unencrypted PKCS#8 PEM private key"),
    (None, "holds a"),
])
def test_malformed_key_files_are_refused(keys: KeyDirectory, content: bytes | None,
                                         message: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    keys.path.mkdir(mode=0o700)
    if content is None:  # a valid PEM key of the wrong algorithm
        content = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
    key_path = keys.files("x")[0]
    key_path.write_bytes(content)
    key_path.chmod(0o600)
    with pytest.raises(KeyFileError, match=message):
        keys.load("x")


def test_public_file_that_does_not_match_is_refused(keys: KeyDirectory) -> None:
    keys.create("a")
    other = Identity.generate("b")
    keys.files("a")[1].write_bytes(other.public_pem())
    with pytest.raises(KeyFileError, match="does not match"):
        keys.load("a")


def test_missing_key_names_the_file_and_the_fix(keys: KeyDirectory) -> None:
    with pytest.raises(KeyFileError, match=r"ghost\.key: no such key file .*keygen"):
        keys.load("ghost")


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_names_that_are_not_file_names_are_refused(keys: KeyDirectory, name: str) -> None:
    with pytest.raises(RecordError, match="identity name"):
        keys.create(name)


def test_private_material_is_never_shown() -> None:
    seed = os.urandom(32)
    ident = Identity.from_seed("a", seed)
    secret_forms = [seed.hex(), base64.b64encode(seed).decode(), ident.private_pem().decode()]
    shown = repr(ident) + str(ident) + f"{ident!r}"
    assert not any(s in shown for s in secret_forms)
    assert base64.b64encode(ident.public_key).decode() in repr(ident)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(ident)


def test_parallel_verification_keeps_order_and_finds_each_bad_signature() -> None:
    ident = Identity.generate("a")
    items = [(ident.public_key, bytes([i % 256]) * 40, ident.sign(bytes([i % 256]) * 40))
             for i in range(300)]
    bad = {3, 150, 299}
    items = [(k, m, bytes(64) if i in bad else s) for i, (k, m, s) in enumerate(items)]
    assert [i for i, ok in enumerate(verify_signatures(items)) if not ok] == sorted(bad)
    assert verify_signatures(items, workers=1) == verify_signatures(items)
