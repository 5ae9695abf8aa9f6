"""Node identities: Ed25519 key pairs, their files, and signature checks.

A key directory holds ``NAME.key`` (the private key, PKCS#8 PEM, mode 0600, created that way
so it is never readable by others even for an instant) and ``NAME.pub`` (the public key,
SubjectPublicKeyInfo PEM).  Both read with OpenSSL (``openssl pkey -in NAME.key``).  A
private key file that group or others may read is refused, as ssh does.  Nothing here ever
prints, logs or reprs private key material.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ledger.errors import KeyFileError, RecordError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid identity name (it becomes a file name)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RecordError(f"identity name {name!r} is not 1-64 characters of [A-Za-z0-9_.-] "
                          "starting with a letter or digit")
    return name


def fingerprint(public_key: bytes) -> str:
    """Short printable form of a public key: base64 of the raw 32 bytes."""
    return base64.b64encode(public_key).decode("ascii")


def named(public_key: bytes, names: Mapping[bytes, str]) -> str:
    """A key as messages name it: ``east (nslyjoTC…)`` for an account's key (its name and the
    start of its base64), the whole base64 for a key that is no account."""
    name = names.get(public_key)
    if name is None:
        return fingerprint(public_key)
    return f"{name} ({fingerprint(public_key)[:8]}…)"


class Identity:
    """A named Ed25519 key pair that signs records.

    Parameters
    ----------
    name : str
        The node's name (``[A-Za-z0-9_.-]``, at most 64 characters).
    private_key : Ed25519PrivateKey
        The secret half; kept inside the object, never shown by ``repr``.
    """

    __slots__ = ("_private", "name", "public_key")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = check_name(name)
        self._private = private_key
        self.public_key: bytes = private_key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, name: str) -> Identity:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Identity:
        """Key pair from a 32-byte seed (RFC 8032 private key): for test vectors and benchmarks."""
        if len(seed) != 32:
            raise KeyFileError(f"an Ed25519 seed has 32 bytes, not {len(seed)}")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature of ``message`` (64 bytes; deterministic per RFC 8032)."""
        return self._private.sign(message)

    def private_pem(self) -> bytes:
        return self._private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def public_pem(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def __repr__(self) -> str:
        return f"Identity({self.name!r}, public_key={fingerprint(self.public_key)!r})"

    def __reduce__(self) -> tuple:  # refuse to pickle a secret by accident
        raise TypeError("an Identity holds a private key and is not picklable")


@functools.lru_cache(maxsize=4096)
def _public(public_key: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public_key)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        _public(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


_POOL: ThreadPoolExecutor | None = None


def submit_signatures(items: Sequence[tuple[bytes, bytes, bytes]],
                      workers: int | None = None) -> Callable[[], list[bool]]:
    """Start checking ``(public_key, message, signature)`` triples on ``workers`` threads
    (default: one per core); return a function that waits for the results, in input order.

    OpenSSL releases the GIL while it verifies, so threads scale with the cores and the caller
    can do other work meanwhile (Ed25519 has no batch verification in ``cryptography`` or
    libsodium).
    """
    global _POOL
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(items) < 64:
        results = [verify_signature(*item) for item in items]
        return lambda: results
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                   thread_name_prefix="ledger-verify")
    step = -(-len(items) // workers)
    futures = [_POOL.submit(lambda chunk: [verify_signature(*i) for i in chunk],
                            items[k:k + step]) for k in range(0, len(items), step)]
    return lambda: [ok for f in futures for ok in f.result()]


def verify_signatures(items: Sequence[tuple[bytes, bytes, bytes]],
                      workers: int | None = None) -> list[bool]:
    """:func:`verify_signature` over many triples, on all cores; results in input order."""
    return submit_signatures(items, workers)()


class KeyDirectory:
    """The key files of several identities in one directory (created mode 0700)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def files(self, name: str) -> tuple[Path, Path]:
        """Paths of ``NAME.key`` and ``NAME.pub``."""
        check_name(name)
        return self.path / f"{name}.key", self.path / f"{name}.pub"

    def exists(self, name: str) -> bool:
        return self.files(name)[0].exists()

    def check_new(self, names: list[str]) -> None:
        """Refuse, before anything is written, names given twice or with a key or public key
        file already there (a lone ``NAME.pub`` may be someone's published key)."""
        for name in names:
            check_name(name)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise KeyFileError(f"{', '.join(twice)} named more than once")
        for name in names:
            for path in self.files(name):
                if path.exists():
                    raise KeyFileError(f"{path} already exists; remove it to make a new key")

    def _make_dir(self) -> None:
        """The directory, mode 0700 when new; an existing one others may write to is
        refused (:meth:`_check_dir`)."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:
            raise KeyFileError(f"{self.path}: not a directory") from None
        except OSError as exc:
            raise KeyFileError(f"{self.path}: cannot create the key directory: "
                               f"{exc.strerror}") from None
        self._check_dir()

    def _check_dir(self) -> None:
        """Refuse a directory that group or others may write to (without the sticky bit):
        they could swap a key file, so it is refused when keys are read as when made."""
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o022 and not mode & stat.S_ISVTX:
            raise KeyFileError(f"{self.path} is writable by group or others (mode {mode:04o}); "
                               f"run: chmod 700 {self.path}")

    def create(self, name: str) -> Identity:
        """Generate and store a new key pair; refuse to overwrite an existing one."""
        key_path, pub_path = self.files(name)
        self._make_dir()
        if pub_path.exists():
            raise KeyFileError(f"{pub_path} already exists; remove it to make a new key")
        identity = Identity.generate(name)
        try:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(f"{key_path} already exists; remove it to make a new key") \
                from None
        except OSError as exc:
            raise KeyFileError(f"{key_path}: cannot write: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)  # the umask may only have narrowed it; be exact
            fh.write(identity.private_pem())
            fh.flush()
            os.fsync(fh.fileno())
        pub_path.write_bytes(identity.public_pem())
        return identity

    def load(self, name: str) -> Identity:
        """Read ``NAME.key``; refuse it if group or others may read it, or may write to the
        directory."""
        key_path, pub_path = self.files(name)
        try:
            st = key_path.stat()
        except FileNotFoundError:
            raise KeyFileError(f"{key_path}: no such key file "
                               f"(make one with: gridloop ledger keygen --dir {self.path} "
                               f"{name})") from None
        except OSError as exc:
            raise KeyFileError(f"{key_path}: cannot read: {exc.strerror}") from None
        self._check_dir()
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{key_path}: not a key file ({_file_kind(st.st_mode)})")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(f"{key_path} is readable by group or others (mode {mode:04o}); "
                               f"run: chmod 600 {key_path}")
        try:
            private = serialization.load_pem_private_key(_read(key_path), password=None)
        except (ValueError, TypeError):
            raise KeyFileError(f"{key_path}: not an unencrypted PKCS#8 PEM private key") \
                from None
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyFileError(f"{key_path}: holds a {type(private).__name__}, not Ed25519")
        identity = Identity(name, private)
        if pub_path.exists() and read_public_key(pub_path) != identity.public_key:
            raise KeyFileError(f"{pub_path} does not match {key_path}")
        return identity

    def get(self, name: str) -> Identity:
        """Load ``name``'s key pair, creating it first if it does not exist yet."""
        return self.load(name) if self.exists(name) else self.create(name)

    def load_all(self, names: Sequence[str], *,
                 create: bool = True) -> tuple[dict[str, Identity], list[str]]:
        """The key pairs of ``names`` by name, and the names whose keys were made now.

        Missing keys are made only with ``create`` (a run's own key directory), else
        refused in one line that names them all (a lab's directory, made with ``gridloop
        ledger keygen``: a key made silently would trade under a new identity).  Two names
        holding one key (a key file copied by mistake) are refused before anything is made.
        """
        missing = [n for n in names if not self.exists(n)]
        if missing and not create:
            raise KeyFileError(f"{self.path}: no key for {', '.join(missing)} (make "
                               f"{'it' if len(missing) == 1 else 'them'} with: gridloop "
                               f"ledger keygen --dir {self.path} {' '.join(missing)})")
        found = {n: self.load(n) for n in names if n not in missing}
        seen: dict[bytes, str] = {}
        for name, identity in found.items():
            other = seen.setdefault(identity.public_key, name)
            if other != name:
                raise KeyFileError(f"{self.files(other)[0]} and {self.files(name)[0]} hold "
                                   "the same key")
        made = {n: self.create(n) for n in dict.fromkeys(missing)}
        return {n: found[n] if n in found else made[n] for n in names}, list(made)


def _file_kind(mode: int) -> str:
    """What a path that is not a regular file is, for a message."""
    return "a directory" if stat.S_ISDIR(mode) else "not a regular file"


def _read(path: Path) -> bytes:
    """A key file's bytes; an OS error as one line naming the file."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None


def read_public_key(path: str | os.PathLike[str]) -> bytes:
    """Raw 32-byte public key from a ``NAME.pub`` PEM file."""
    try:
        public = serialization.load_pem_public_key(_read(Path(path)))
    except ValueError:
        raise KeyFileError(f"{path}: not a PEM public key") from None
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f"{path}: holds a {type(public).__name__}, not Ed25519")
    return public.public_bytes_raw()
