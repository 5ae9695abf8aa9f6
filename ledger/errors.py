"""The exception tree of the ledger: every refusal and every failed check is one of these.

The command line prints any :class:`LedgerError` as one line, so each message names the file,
record or field that is wrong.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error the ledger raises."""


class EncodingError(LedgerError, ValueError):
    """Bytes are not a canonical encoding (truncated, unknown tag, unsorted keys, ...)."""


class RecordError(LedgerError, ValueError):
    """A record's fields are out of range or of the wrong kind for the operation."""


class KeyFileError(LedgerError):
    """A key file is missing, malformed, too widely readable, or would be overwritten."""


class SignatureError(LedgerError):
    """A signature does not verify under the record's public key."""


class ReplayError(LedgerError):
    """A record's nonce is not above the last nonce stored for its sender."""


class ExpiredOrderError(RecordError):
    """An order arrived after its expiry or after its interval's gate closed."""


class ConflictError(LedgerError):
    """A record contradicts one already stored (a second, different meter reading ...)."""


class SettlementError(LedgerError):
    """An interval cannot be settled yet (not cleared, meter readings missing, ...)."""


class StoreError(LedgerError):
    """A store cannot be opened or read, or is not a gridloop ledger."""


class AlteredStoreError(StoreError):
    """A ledger's tables, columns or metadata are not as gridloop writes them: it was edited
    outside gridloop (a table dropped, a key stored as text, ``meta.interval_ms`` not a
    number).  ``gridloop ledger verify`` reports it as a ledger that does not verify (exit 1);
    the commands that only read the ledger refuse it as unreadable input (exit 2)."""


class VerificationError(LedgerError):
    """A stored chain fails a check; the message names the first bad block or record.

    Attributes
    ----------
    block : int or None
        Height of the block in which the problem was found (None for pending records).
    position : int or None
        Position of the bad record within its block (None for a block-level problem).
    record_id : bytes or None
        Stored id of the bad record, when the problem is with one record.
    """

    def __init__(self, message: str, *, block: int | None = None,
                 position: int | None = None, record_id: bytes | None = None) -> None:
        super().__init__(message)
        self.block = block
        self.position = position
        self.record_id = record_id
