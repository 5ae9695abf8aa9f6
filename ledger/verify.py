"""Full re-check of a stored chain: ids, encodings, signatures, nonces, Merkle roots, links.

:func:`verify_chain` walks the chain in order and raises :class:`VerificationError` naming
the first bad block or record, so an edited amount, a forged or swapped signature, a reordered,
deleted, inserted or replayed record, a record signed by a stranger, or a rewritten block
header is found and located; every grid settlement is held to the grid tariff the operator
signed (where the ledger has one); then the table of closed gates and the account table, and,
when given, the accounts' keys against a key directory (:func:`read_key_directory`).
Everything is read in one snapshot of the store (:meth:`Store.snapshot`), so a run writing
meanwhile cannot make an intact ledger look tampered with.  Signatures are checked in batches
on every core.

:func:`counted_balances` is what ``gridloop ledger show`` prints: balances from the
settlements and transfers whose signatures verify, signed by accounts whose role signs them.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ledger import records
from ledger.audit import Audit, AuditFault, Tariff
from ledger.chain import GENESIS_PREV, BlockHeader, decode_header, merkle_root
from ledger.errors import (
    AlteredStoreError,
    EncodingError,
    KeyFileError,
    LedgerError,
    RecordError,
    VerificationError,
)
from ledger.keys import (
    KeyDirectory,
    check_name,
    fingerprint,
    named,
    read_public_key,
    submit_signatures,
    verify_signature,
)
from ledger.settlement import Balance, tally, tariff_body
from ledger.store import SIGNED_BY, Meta, Store, StoredRow, accounts_body, gates_body

ROLE_WORDS = {"node": "a node", "grid": "the grid", "operator": "the operator"}


@dataclass(frozen=True)
class ChainReport:
    """What a successful verification saw."""

    blocks: int
    records: int
    pending: int
    head: bytes | None
    operator: bytes | None
    ledger_id: bytes = b""
    accounts: tuple[tuple[str, bytes, str], ...] = ()
    tariff: Tariff | None = None
    """The grid prices the operator signed, None on a ledger of an older gridloop."""

    def operator_name(self) -> str | None:
        """The account name of the operator's key, if the ledger names it."""
        return next((n for n, k, _ in self.accounts if k == self.operator), None)


@dataclass(frozen=True)
class PinnedKeys:
    """A key directory an auditor trusts (a run's ``RUN.ledger.keys``, a lab's keys):
    ``verify --keys DIR`` checks that each account of the ledger holds the key the directory
    holds for its name (:meth:`key`)."""

    directory: Path

    @property
    def source(self) -> str:
        return str(self.directory)

    def key(self, name: str) -> bytes | None:
        """The public key of ``NAME.pub``, else of ``NAME.key`` (read as a run reads it),
        else None; a name that cannot be a key file's has none."""
        try:
            check_name(name)
        except RecordError:
            return None
        pub = self.directory / f"{name}.pub"
        if pub.exists():
            return read_public_key(pub)
        if (self.directory / f"{name}.key").exists():
            return KeyDirectory(self.directory).load(name).public_key
        return None


def read_key_directory(path: str | os.PathLike[str]) -> PinnedKeys:
    """A key directory to pin a ledger's accounts to; :class:`~ledger.errors.KeyFileError`
    for one that does not exist or holds no key file, before any ledger is read."""
    folder = Path(path)
    if not folder.is_dir():
        raise KeyFileError(f"{folder}: no such key directory")
    if not any(folder.glob("*.pub")) and not any(folder.glob("*.key")):
        raise KeyFileError(f"{folder}: holds no NAME.pub or NAME.key file")
    return PinnedKeys(folder)


class _Walk:
    """State of one pass over the chain, in chain order."""

    def __init__(self, store: Store, blocks: list[tuple[int, int, bytes, bytes, bytes]],
                 meta: Meta, accounts: list[tuple[str, bytes, str]],
                 tariff: Tariff | None = None) -> None:
        self.store = store
        self.blocks = blocks
        self.operator = meta.operator
        # names and roles as the table holds them; the table itself is checked last
        self.names = {key: name for name, key, _ in accounts}
        self.roles = {key: role for _, key, role in accounts}
        self.last_nonce: dict[bytes, int] = {}
        self.records = 0
        self.prev = GENESIS_PREV
        self.last_interval: int | None = None
        self.header: BlockHeader | None = None
        self.leaves: list[bytes] = []
        self.audit = Audit(self.operator, meta.interval_ms, self.names, tariff)
        self.tariff_signature = meta.tariff_signature
        self.tariff_checked = tariff is None

    def check_tariff(self) -> None:
        """The tariff the audit holds grid settlements to is as the operator signed it:
        checked once the operator is known (after the first block's signature), before any
        settlement is held to it, so a fault in the chain's own signatures is named first."""
        tariff = self.audit.tariff
        if self.tariff_checked or tariff is None:
            return
        self.tariff_checked = True
        where = f"{self.store.location}: meta: the grid tariff ({tariff})"
        if self.operator is None:
            raise VerificationError(f"{where} has no operator to have signed it (no "
                                    "meta.operator and no block)")
        body = tariff_body(tariff.import_price_micro_per_wh, tariff.export_price_micro_per_wh)
        if not verify_signature(self.operator,
                                records.signing_message(self.store.ledger_id, body),
                                self.tariff_signature or b""):
            raise VerificationError(f"{where} is not as the operator {self.who(self.operator)} "
                                    "signed it (tariff_signature does not verify: a price or "
                                    "the signature changed outside gridloop)")

    def who(self, key: bytes) -> str:
        return named(key, self.names)

    def fail(self, message: str, *, block: int | None = None, position: int | None = None,
             row: StoredRow | None = None) -> VerificationError:
        where = "pending" if block is None and row is not None else \
            f"block {block}" if block is not None else ""
        if position is not None:
            where += f" position {position}"
        if row is not None:
            kind = records.KINDS[row.kind].NAME if row.kind in records.KINDS else \
                f"kind {row.kind}"
            where += f": {kind} {row.id.hex()[:16]}"
        return VerificationError(f"{self.store.location}: {where}: {message}", block=block,
                                 position=position, record_id=row.id if row else None)

    def open_block(self, index: int) -> None:
        """Check the header of the ``index``-th stored block; its records follow."""
        height, interval, stored_hash, body, signature = self.blocks[index]
        if height != index:
            raise self.fail(f"block heights jump from {index - 1} to {height} "
                            "(block deleted or inserted)", block=height)
        try:
            header = decode_header(body)
        except LedgerError as exc:
            raise self.fail(f"header is malformed: {exc}", block=height) from None
        if header.height != height or header.interval != interval:
            raise self.fail("stored height or interval disagrees with the header", block=height)
        if hashlib.sha256(body).digest() != stored_hash:
            raise self.fail("stored hash is not the SHA-256 of the header", block=height)
        if header.prev != self.prev:
            raise self.fail("does not link to the previous block's hash", block=height)
        if self.last_interval is not None and interval <= self.last_interval:
            raise self.fail(f"interval {interval} does not follow interval "
                            f"{self.last_interval}", block=height)
        self.operator = self.audit.operator = self.operator or header.signer
        if header.signer != self.operator:
            raise self.fail(f"signed by {self.who(header.signer)}, not the operator "
                            f"{self.who(self.operator)}", block=height)
        if not verify_signature(header.signer,
                                records.signing_message(self.store.ledger_id, body), signature):
            raise self.fail("block signature does not verify", block=height)
        self.prev, self.last_interval = stored_hash, interval
        self.header, self.leaves = header, []
        self.check_tariff()

    def close_block(self) -> None:
        """Check that the records seen make up the open block."""
        header = self.header
        if header is None:
            return
        if len(self.leaves) != header.records:
            raise self.fail(f"holds {len(self.leaves)} records, its header says "
                            f"{header.records} (record deleted or inserted)",
                            block=header.height)
        if merkle_root(self.leaves) != header.merkle_root:
            raise self.fail("Merkle root does not match its records (reordered, replaced, "
                            "deleted or inserted)", block=header.height)
        try:
            self.audit.close(header.interval)
        except AuditFault as exc:
            raise self.fail(str(exc), block=header.height) from None

    def sealed_record(self, row: StoredRow, signature_ok: bool) -> None:
        """Check a record of a block, opening the blocks before and up to its own."""
        while row.block > self.height and self.height + 1 < len(self.blocks):
            self.close_block()
            self.open_block(self.height + 1)
        if row.block != self.height:
            raise self.fail(f"belongs to block {row.block}, which is not in the chain",
                            block=row.block, position=row.position, row=row)
        if row.position != len(self.leaves):
            raise self.fail(f"expected position {len(self.leaves)} (record missing or "
                            "duplicated before it)", block=row.block, position=row.position,
                            row=row)
        self.leaves.append(self.check_record(row, signature_ok))

    @property
    def height(self) -> int:
        return self.header.height if self.header else -1

    def finish_blocks(self) -> None:
        """Close the open block and check the blocks that hold no records."""
        self.close_block()
        while self.height + 1 < len(self.blocks):
            self.open_block(self.height + 1)
            self.close_block()

    def check_record(self, row: StoredRow, signature_ok: bool) -> bytes:
        """Check one record; return its recomputed id (the Merkle leaf)."""
        block = row.block
        body = row.body
        record_id = hashlib.sha256(body).digest()
        if record_id != row.id:
            raise self.fail("id is not the SHA-256 of its body (body or id changed)",
                            block=block, position=row.position, row=row)
        try:
            rec = records.decode(body)
        except (EncodingError, RecordError) as exc:
            raise self.fail(f"body is not a canonical record: {exc}", block=block,
                            position=row.position, row=row) from None
        if (rec.KIND, rec.signer, rec.nonce, rec.interval) != \
                (row.kind, row.signer, row.nonce, row.interval):
            raise self.fail("stored kind, signer, nonce or interval disagrees with the body",
                            block=block, position=row.position, row=row)
        if not signature_ok:
            raise self.fail(f"signature does not verify under its signer "
                            f"{self.who(rec.signer)}", block=block, position=row.position,
                            row=row)
        if self.roles:  # a ledger that names its accounts: every signer is one of them
            role = self.roles.get(rec.signer)
            if role is None:
                raise self.fail(f"signer {fingerprint(rec.signer)} is not an account of this "
                                "ledger", block=block, position=row.position, row=row)
            if role not in SIGNED_BY[rec.NAME]:
                signers = " or ".join(ROLE_WORDS[r] for r in SIGNED_BY[rec.NAME])
                raise self.fail(f"signed by {self.who(rec.signer)}, an account of role "
                                f"{role!r}: {rec.NAME.replace('_', ' ')}s are signed by "
                                f"{signers}", block=block, position=row.position, row=row)
        last = self.last_nonce.get(rec.signer, 0)
        if rec.nonce <= last:
            raise self.fail(f"nonce {rec.nonce} of {self.who(rec.signer)} is not above its "
                            f"previous nonce {last} (replayed or reordered)", block=block,
                            position=row.position, row=row)
        self.last_nonce[rec.signer] = rec.nonce
        try:
            self.audit.record(rec)
        except AuditFault as exc:
            raise self.fail(str(exc), block=block, position=row.position, row=row) from None
        self.records += 1
        return record_id


def _signatures(batch: list[StoredRow], ledger_id: bytes,
                workers: int | None) -> Callable[[], list[bool]]:
    return submit_signatures([(r.signer, records.signing_message(ledger_id, r.body),
                               r.signature) for r in batch], workers)


def _ahead(batches: Iterable[list[StoredRow]], ledger_id: bytes,
           workers: int | None) -> Iterator[tuple[list[StoredRow], list[bool]]]:
    """Batches with their signature results, checking the next batch's signatures while the
    caller works on this one."""
    previous = None
    for batch in batches:
        started = (batch, _signatures(batch, ledger_id, workers))
        if previous is not None:
            yield previous[0], previous[1]()
        previous = started
    if previous is not None:
        yield previous[0], previous[1]()


def _check_gates(store: Store, walk: _Walk, meta: Meta) -> None:
    """The table of closed gates agrees with the chain: every sealed interval is in it, and
    every interval with uniform trades (made at its gate); the gates closed after the last
    block's interval, which the chain cannot show, and the interval length are as the operator
    signed them.  Rows at or before the last block's interval without a block of their own
    (an interval cleared, then skipped) change nothing: the chain has closed those gates."""
    where = f"{store.location}: intervals"
    cleared = set(store.cleared_intervals())
    disagrees = "the table of closed gates disagrees with the chain (a row deleted outside " \
                "gridloop?)"
    for height, interval, *_ in walk.blocks:
        if interval not in cleared:
            raise VerificationError(f"{where}: interval {interval} has block {height} but is "
                                    f"not among the closed gates: {disagrees}")
    ungated = sorted(walk.audit.gated - cleared)
    if ungated:
        raise VerificationError(f"{where}: interval {ungated[0]} has trades of the uniform "
                                "auction, made when its gate closed, but is not among the "
                                f"closed gates: {disagrees}")
    head = max((row[1] for row in walk.blocks), default=None)
    tail = sorted(k for k in cleared if head is None or k > head)
    after = f"after interval {head}, the last block's" if head is not None else "(no block yet)"
    if meta.gates_signature is None:
        if tail:
            raise VerificationError(f"{where}: the gate of interval {tail[0]} is marked closed "
                                    f"{after}, but the operator has not signed the gates "
                                    "closed after the last block (no meta.gates_signature: a "
                                    "row added outside gridloop, or a ledger of an older "
                                    "gridloop)")
        return
    ok = walk.operator is not None and meta.interval_ms is not None and verify_signature(
        walk.operator, records.signing_message(store.ledger_id,
                                               gates_body(meta.interval_ms, tail)),
        meta.gates_signature)
    if not ok:
        raise VerificationError(f"{where}: the interval length (meta.interval_ms "
                                f"{meta.interval_ms}) and the gates closed {after} "
                                f"({tail or 'none'}) are not as the operator signed them (a row "
                                "added or deleted, or interval_ms changed, outside gridloop)")


def _check_accounts(store: Store, operator: bytes | None, meta: Meta,
                    accounts: list[tuple[str, bytes, str]]) -> None:
    """The account table (who is ``north``, who is the grid) is as the operator signed it."""
    where = f"{store.location}: accounts"
    if not accounts and meta.accounts_signature is None:
        if meta.operator is not None:
            raise VerificationError(f"{where}: the table is empty on a ledger a MarketSession "
                                    "made (meta has an operator): its accounts were deleted "
                                    "outside gridloop")
        return  # a store used without a session: no names to check
    if operator is None:
        raise VerificationError(f"{where}: the table names accounts, but the ledger has no "
                                "operator to have signed it (meta.operator deleted?)")
    for name, key, role in accounts:
        if role == "operator" and key != operator:
            raise VerificationError(f"{where}: {name!r} is registered as the operator with key "
                                    f"{fingerprint(key)}, the chain's operator is "
                                    f"{fingerprint(operator)}")
    if meta.accounts_signature is None:
        raise VerificationError(f"{where}: the operator has not signed the table of names, "
                                "keys and roles (removed, or a ledger of an older gridloop), "
                                "so its names are unverified")
    try:
        message = records.signing_message(store.ledger_id, accounts_body(accounts))
        ok = verify_signature(operator, message, meta.accounts_signature)
    except (ValueError, LedgerError):  # a name canonical text cannot hold
        ok = False
    if not ok:
        raise VerificationError(f"{where}: the table of names, keys and roles is not as the "
                                "operator signed it (an account renamed, swapped, added or "
                                "removed outside gridloop)")


def _check_session_meta(store: Store, meta: Meta,
                        accounts: list[tuple[str, bytes, str]]) -> None:
    """A ledger that a session made keeps its operator and interval length: without them the
    walk would take the operator from the first block and skip the checks of orders' expiry,
    so deleting them is a fault, not a downgrade to a ledger used without a session."""
    missing = [key for key, value in (("operator", meta.operator),
                                      ("interval_ms", meta.interval_ms)) if value is None]
    if not missing:
        return
    operators = [name for name, _, role in accounts if role == "operator"]
    evidence = [f"an operator account {operators[0]!r}" if operators else
                f"{len(accounts)} account(s)" if accounts else "",
                "the operator's signature of its accounts" if meta.accounts_signature else "",
                "the operator's signature of its gates" if meta.gates_signature else ""]
    evidence = [e for e in evidence if e]
    if evidence:
        raise VerificationError(f"{store.location}: meta: {' and '.join(missing)} missing on a "
                                f"ledger a MarketSession made (it has {', '.join(evidence)}): "
                                "deleted outside gridloop, which turns off the checks that "
                                "need them")


def _tariff_of(store: Store, meta: Meta) -> Tariff | None:
    """The grid tariff ``meta`` states, whole (its signature is checked once the walk knows
    the operator, :meth:`_Walk.check_tariff`); None for a ledger of an older gridloop, which
    has none of it."""
    missing = meta.tariff_missing()
    if missing:
        raise VerificationError(f"{store.location}: meta: the grid tariff is incomplete: "
                                f"{' and '.join(missing)} missing (the prices and the "
                                "operator's signature come together; deleted outside "
                                "gridloop?)")
    if meta.import_price_micro_per_wh is None or meta.export_price_micro_per_wh is None:
        return None
    return Tariff(meta.import_price_micro_per_wh, meta.export_price_micro_per_wh)


def _check_pinned(store: Store, accounts: list[tuple[str, bytes, str]],
                  pinned: PinnedKeys) -> None:
    """Every account of the ledger holds the key an auditor trusts for its name: a ledger
    made afresh with other keys under the same names verifies on its own, not against these.
    The operator comes first, as it signs the chain and the account table."""
    where = f"{store.location}: accounts"
    if not accounts:
        raise VerificationError(f"{where}: the ledger names no accounts, so none can be "
                                f"checked against the keys in {pinned.source}")
    for name, key, role in sorted(accounts, key=lambda a: (a[2] != "operator", a[0])):
        want = pinned.key(name)
        if want is None:
            raise VerificationError(f"{where}: {name!r} ({role}) has no key in {pinned.source} "
                                    f"to check it against (no {name}.pub or {name}.key)")
        if want != key:
            raise VerificationError(f"{where}: {name!r} ({role}) has key {fingerprint(key)}, "
                                    f"{pinned.source} holds {fingerprint(want)} for it (a "
                                    "ledger made or altered with other keys)")


def verify_chain(store: Store, known_head: bytes | None = None,
                 workers: int | None = None, pinned: PinnedKeys | None = None) -> ChainReport:
    """Re-check everything in ``store``; raise :class:`VerificationError` at the first fault.

    Everything is read in one snapshot (:meth:`Store.snapshot`): a writer's commits meanwhile
    are not seen, so a ledger a run is writing verifies as it was when the check began.
    First the database's own structure (SQLite ``quick_check``: a damaged file raises
    :class:`~ledger.errors.StoreError`, it cannot be read), that every table is there and the
    metadata is well-formed, and kept (a ledger with accounts or the operator's signatures has
    ``meta.operator`` and ``meta.interval_ms``), and the grid tariff, where the ledger has
    one, is whole.  Then, in chain order: each block header decodes, has the expected height,
    links to the previous header's hash, is signed by the operator (after the first, the
    tariff must be signed by it too: checked after the walk on a ledger without blocks), and
    commits to the Merkle root and count of its records; each record's id is the
    SHA-256 of its canonical body, the stored columns agree with the body, the signature
    verifies, its signer is an account of the ledger whose role signs that kind (where the
    ledger has accounts), and its nonce is above its signer's previous one; the economics hold
    (:mod:`ledger.audit`; every grid settlement at the signed tariff).  Pending records
    (not yet in a block) get every record check too.
    Last, the table of closed gates must agree with the chain, the account table must be as
    the operator signed it and, with ``pinned``, hold the keys given for its names.  A ledger
    altered outside gridloop in a way the store itself refuses (a key stored as text, a table
    dropped) is a :class:`VerificationError` as well.

    A chain cut cleanly after some block is still a valid, shorter chain; pass the hash of a
    block you know of as ``known_head`` (``verify`` prints the head hash) to have the chain
    checked to still hold it.  ``workers`` threads check signatures (default: one per core).
    """
    try:
        with store.snapshot():
            return _verify(store, known_head, workers, pinned)
    except AlteredStoreError as exc:
        raise VerificationError(str(exc)) from None


def _verify(store: Store, known_head: bytes | None, workers: int | None,
            pinned: PinnedKeys | None) -> ChainReport:
    store.check_integrity()
    store.check_tables()
    meta = store.meta()
    accounts = store.accounts()
    _check_session_meta(store, meta, accounts)
    tariff = _tariff_of(store, meta)
    blocks = store.block_rows()
    walk = _Walk(store, blocks, meta, accounts, tariff)
    for batch, signatures in _ahead(store.chain_rows(), store.ledger_id, workers):
        for row, ok in zip(batch, signatures, strict=True):
            walk.sealed_record(row, ok)
    walk.finish_blocks()
    walk.check_tariff()  # a ledger without blocks: no block checked it before
    if known_head is not None and known_head not in {row[2] for row in blocks}:
        raise VerificationError(f"{store.location}: no block has the hash {known_head.hex()} "
                                "(chain truncated or rewritten)")
    sealed = walk.records
    pending = store.pending_rows()
    for row, ok in zip(pending, _signatures(pending, store.ledger_id, workers)(), strict=True):
        walk.check_record(row, ok)
    _check_gates(store, walk, meta)
    _check_accounts(store, walk.operator, meta, accounts)
    if pinned is not None:
        _check_pinned(store, accounts, pinned)
    return ChainReport(blocks=len(blocks), records=sealed, pending=len(pending),
                       head=walk.prev if blocks else None, operator=walk.operator,
                       ledger_id=store.ledger_id, accounts=tuple(accounts), tariff=tariff)


LEFT_OUT = {
    "columns": "record(s) whose stored kind, signer, nonce, interval or id disagree with the "
               "signed body",
    "malformed": "record(s) stored as settlements or transfers whose body is not a canonical "
                 "record",
    "stranger": "settlement(s) or transfer(s) signed by a key that is no account of this "
                "ledger",
    "role": "settlement(s) or transfer(s) signed by an account whose role does not sign them",
    "signature": "settlement(s) or transfer(s) whose signature does not verify",
    "duplicate": "settlement(s) or transfer(s) stored a second time (the same id)",
}
"""Why :func:`counted_balances` left a record out, in the words ``show`` prints."""

_MONEY_KINDS = ("settlement", "transfer")


@dataclass
class BalanceSheet:
    """Balances by account name (a key that is no account by its base64), and how many
    records were left out, by reason (:data:`LEFT_OUT`)."""

    balances: dict[str, Balance]
    left_out: Counter[str] = field(default_factory=Counter)


def _money_record(row: StoredRow, roles: Mapping[bytes, str]) -> tuple[records.Record | None,
                                                                       str | None]:
    """The settlement or transfer a row holds, or why it moves no money: ``(record, None)``,
    ``(None, reason)``, or ``(None, None)`` for a record of another kind.  What the stored
    columns say counts only where the signed body says the same."""
    stored_money = records.KINDS.get(row.kind) is not None and \
        records.KINDS[row.kind].NAME in _MONEY_KINDS
    try:
        rec = records.decode(row.body)
    except (EncodingError, RecordError):
        return None, "malformed" if stored_money else None
    if rec.NAME not in _MONEY_KINDS:
        return None, "columns" if stored_money else None
    if (hashlib.sha256(row.body).digest(), rec.KIND, rec.signer, rec.nonce, rec.interval) != \
            (row.id, row.kind, row.signer, row.nonce, row.interval):
        return None, "columns"
    if roles:
        role = roles.get(rec.signer)
        if role is None:
            return None, "stranger"
        if role not in SIGNED_BY[rec.NAME]:
            return None, "role"
    return rec, None


def counted_balances(store: Store, workers: int | None = None) -> BalanceSheet:
    """Balances from the settlements (energy) and transfers (money) that a reader can trust
    without the full audit: the signature verifies, the signer is an account whose role
    signs that kind (any signer on a store without accounts), the stored columns agree with
    the signed body, and each is counted once; the rest is counted in
    :attr:`BalanceSheet.left_out`.  The economics (is each settlement right, each paid once)
    are :func:`verify_chain`'s.  Read in one snapshot of the store."""
    totals: dict[bytes, Balance] = {}
    left_out: Counter[str] = Counter()
    seen: set[bytes] = set()
    with store.snapshot():
        accounts = store.accounts()
        roles = {key: role for _, key, role in accounts}
        ledger_id = store.ledger_id
        for batch in store.all_rows():
            candidates = []
            for row in batch:
                rec, reason = _money_record(row, roles)
                if reason:
                    left_out[reason] += 1
                elif rec is not None:
                    candidates.append((row, rec))
            checks = _signatures([row for row, _ in candidates], ledger_id, workers)()
            counted = []
            for (_, rec), ok in zip(candidates, checks, strict=True):
                why = "signature" if not ok else "duplicate" if rec.id in seen else None
                if why:
                    left_out[why] += 1
                else:
                    seen.add(rec.id)
                    counted.append(rec)
            _add(totals, tally(counted))
    names = {key: name for name, key, _ in accounts}
    result = {name: totals.get(key, Balance()) for key, name in names.items()}
    result.update({fingerprint(k): b for k, b in totals.items() if k not in names})
    return BalanceSheet(result, left_out)


def _add(totals: dict[bytes, Balance], more: Mapping[bytes, Balance]) -> None:
    """Add one batch's balances to the running totals (records are not kept past their batch)."""
    for key, b in more.items():
        have = totals.setdefault(key, Balance())
        have.money_micro += b.money_micro
        have.sold_wh += b.sold_wh
        have.bought_wh += b.bought_wh
