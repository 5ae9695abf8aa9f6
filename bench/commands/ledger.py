"""``gridloop ledger``: make node keys, verify, export and show a ledger.

``DB`` is a SQLite path or a ``postgresql://`` URL.  Exit status: 0 done; 1 (``verify`` only)
the ledger does not verify, named in one line: a bad block or record, or a ledger altered
outside gridloop (a table dropped, a key stored as text, malformed metadata); 2 bad input, as
every command: no such file, not a gridloop ledger, a damaged database file, bad arguments.
``show`` and ``export`` do not verify: they refuse a ledger altered so that they cannot read
it (exit 2) and say nothing printed until all of it has been read.  The three read-only commands
open a SQLite ledger read-only, leave no file beside it, and read one snapshot of it
(:meth:`ledger.store.Store.snapshot`), so a run writing meanwhile changes nothing they report.
``verify --keys DIR`` pins the accounts to a key directory and says which grid tariff it held
the grid settlements to (none on a ledger of an older gridloop); ``show`` prints the tariff and
counts only what verifies under an account whose role signs it
(:func:`ledger.verify.counted_balances`).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.store import Meta
    from ledger.verify import ChainReport


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ledger", help="node keys, verification, export and balances of a trading ledger",
        description="Make node keys; verify, export and show a ledger. DB is a SQLite path "
                    "or a postgresql:// URL. verify exits 1 naming the first fault of a ledger "
                    "that does not verify (a bad block or record, or a ledger altered outside "
                    "gridloop); bad input (no such ledger, a damaged file) exits 2.")
    sub = parser.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)

    keygen = sub.add_parser("keygen", help="make an Ed25519 key pair per node",
                            description="Write DIR/NODE.key (private, mode 0600) and "
                                        "DIR/NODE.pub; print each node's public key.")
    keygen.add_argument("nodes", nargs="+", metavar="NODE", help="node names")
    keygen.add_argument("--dir", default="keys", help="key directory (default: ./keys)")
    keygen.set_defaults(func=_keygen)

    verify = sub.add_parser("verify", help="re-check every signature, id, nonce, Merkle root "
                                           "and chain link",
                            description="Re-check the whole ledger. Exit 0: it verifies; 1: it "
                                        "does not (one line names the first fault); 2: it "
                                        "cannot be read.")
    verify.add_argument("db", metavar="DB", help="SQLite path or postgresql:// URL")
    verify.add_argument("--head", metavar="HASH",
                        help="hash of a block the chain must still hold (as printed by an "
                             "earlier verify): finds a chain cut short")
    verify.add_argument("--keys", metavar="DIR",
                        help="key directory whose NAME.pub (or NAME.key) files the ledger's "
                             "accounts must hold, e.g. RUN.ledger.keys: finds a ledger made "
                             "with other keys under the same names")
    verify.set_defaults(func=_verify)

    export = sub.add_parser("export", help="print every record, one JSON object per line")
    export.add_argument("db", metavar="DB", help="SQLite path or postgresql:// URL")
    export.add_argument("--json", action="store_true",
                        help="JSON lines: the only format, and the default")
    export.set_defaults(func=_export)

    show = sub.add_parser("show", help="balances per account and the last blocks")
    show.add_argument("db", metavar="DB", help="SQLite path or postgresql:// URL")
    show.add_argument("--blocks", type=_count, default=10, metavar="N",
                      help="how many of the last blocks to list (default 10)")
    show.set_defaults(func=_show)


def _count(text: str) -> int:
    """A whole number >= 0 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _keygen(args: argparse.Namespace) -> int:
    from ledger.keys import KeyDirectory, fingerprint

    keys = KeyDirectory(args.dir)
    keys.check_new(args.nodes)  # every name before any file is written
    for name in args.nodes:
        identity = keys.create(name)
        print(f"{name}\t{fingerprint(identity.public_key)}\t{keys.files(name)[1]}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ledger.errors import LedgerError, VerificationError
    from ledger.store import open_store
    from ledger.verify import read_key_directory, verify_chain

    try:
        head = bytes.fromhex(args.head) if args.head else None
    except ValueError:
        head = b""
    if head is not None and len(head) != 32:
        raise LedgerError(f"--head {args.head!r} is not a block hash (64 hex digits)")
    pinned = read_key_directory(args.keys) if args.keys else None
    with open_store(args.db, create=False, readonly=True) as store:
        try:
            report = verify_chain(store, known_head=head, pinned=pinned)
        except VerificationError as exc:
            store.check_unchanged()  # a fault seen in one state of the ledger, not two
            print(f"gridloop: error: {exc}", file=sys.stderr)
            return 1
        store.check_unchanged()
        head = report.head.hex() if report.head else "none"
        print(f"{store.location}: ok: {report.blocks} blocks, {report.records} records in "
              f"blocks, {report.pending} pending; head {head}")
    # the ok line stays the last line of stdout (scripts take the head hash from its end);
    # what a person compares with the run's keys goes to stderr
    print(f"gridloop: {_identity(report)}", file=sys.stderr)
    print(f"gridloop: {_tariff_line(report)}", file=sys.stderr)
    if pinned is not None:
        print(f"gridloop: keys: the {len(report.accounts)} account(s) hold the keys in "
              f"{pinned.source}", file=sys.stderr)
    return 0


def _identity(report: ChainReport) -> str:
    """``ledger id ...; operator market KEY``: what ties a ledger to its run and its keys."""
    from ledger.keys import fingerprint

    lid = report.ledger_id.hex() if report.ledger_id else "none (a ledger made before ids)"
    if report.operator is None:
        return f"ledger id {lid}; no operator (no block, no session)"
    name = report.operator_name()
    who = f"{name} " if name else ""
    return (f"ledger id {lid}; operator {who}{fingerprint(report.operator)} (compare with the "
            f"run's summary or {name or 'the operator'}.pub of its keys, or pass --keys DIR)")


def _tariff_line(report: ChainReport) -> str:
    """What ``verify`` held the grid settlements to: the signed tariff, or, on a ledger of
    an older gridloop, only one price per direction in each interval."""
    if report.tariff is None:
        return ("grid tariff: not on the ledger (made by an older gridloop), so grid prices "
                "are checked only to be one per direction in each interval")
    return (f"grid tariff: {report.tariff}, signed by the operator; every grid settlement is "
            "at it")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _export(args: argparse.Namespace) -> int:
    from ledger.store import open_store

    with open_store(args.db, create=False, readonly=True) as store:
        with store.snapshot():  # one state of the ledger, whatever a run commits meanwhile
            store.check_tables()
            store.meta()  # refuse malformed metadata before the first line
            names = {key: name for name, key, _ in store.accounts()}
            ledger_id = store.ledger_id.hex()
            out = sys.stdout
            for batch in store.all_rows():
                for row in batch:
                    out.write(json.dumps(_export_doc(row, names, ledger_id)) + "\n")
        store.check_unchanged()
    return 0


def _export_doc(row: Any, names: dict[bytes, str], ledger_id: str) -> dict[str, Any]:
    """One export line.  ``kind``, ``public_key``, ``signer``, ``nonce`` and ``interval`` are
    the signed body's; where the stored columns say otherwise (or the body does not decode)
    ``error`` says so, and the stored values stand in for what the body cannot give."""
    from ledger import records
    from ledger.errors import LedgerError

    doc: dict[str, Any] = {
        "kind": records.KINDS[row.kind].NAME if row.kind in records.KINDS else row.kind,
        "id": row.id.hex(), "body": _b64(row.body), "signature": _b64(row.signature),
        "public_key": _b64(row.signer), "signer": names.get(row.signer),
        "nonce": row.nonce, "interval": row.interval, "block": row.block,
        "position": row.position, "ledger_id": ledger_id}
    try:
        rec = records.decode(row.body)
    except LedgerError as exc:
        doc["fields"], doc["error"] = None, str(exc)
        return doc
    doc.update(kind=rec.NAME, public_key=_b64(rec.signer), signer=names.get(rec.signer),
               nonce=rec.nonce, interval=rec.interval)
    doc["fields"] = {k: v.hex() if isinstance(v, bytes) else v for k, v in rec.fields().items()}
    if (rec.KIND, rec.signer, rec.nonce, rec.interval) != \
            (row.kind, row.signer, row.nonce, row.interval):
        doc["error"] = ("the stored kind, signer, nonce or interval disagrees with the body "
                        f"(stored: kind {row.kind}, signer {_b64(row.signer)}, nonce "
                        f"{row.nonce}, interval {row.interval})")
    return doc


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                               for i, (c, w) in enumerate(zip(line, widths, strict=True)))
                     for line in lines)


MONEY_NOTE = ("money: net micro-units of the currency (1,000,000 = one unit; the ledger does "
              "not record which currency), + received, - paid; sold, bought: energy settled "
              "[Wh]; the grid's exchanges included")

COUNTED_NOTE = ("counted: settlements and transfers whose signature verifies, signed by an "
                "account whose role signs them; not audited (gridloop ledger verify is)")
COUNTED_NO_ACCOUNTS = ("counted: settlements and transfers whose signature verifies (the ledger "
                       "names no accounts, so no roles are checked); not audited (gridloop "
                       "ledger verify is)")


def _show(args: argparse.Namespace) -> int:
    from ledger.store import open_store
    from ledger.verify import LEFT_OUT, counted_balances

    with open_store(args.db, create=False, readonly=True) as store:
        # read everything first, in one snapshot: a ledger that cannot be read prints nothing
        # but the error, and a run writing meanwhile cannot mix two states into one table
        with store.snapshot():
            store.check_tables()
            meta = store.meta()
            store.cleared_intervals()
            accounts = store.accounts()
            sheet = counted_balances(store)
            sealed, pending = store.count()
            blocks = store.last_blocks(args.blocks)
            ledger_id = store.ledger_id
        store.check_unchanged()
    roles = {name: role for name, _, role in accounts}
    lines = [f"ledger {store.location}", _show_identity(ledger_id, meta.operator, accounts),
             *_show_tariff(meta), MONEY_NOTE,
             COUNTED_NOTE if accounts else COUNTED_NO_ACCOUNTS, "",
             _table(["account", "role", "money [micro] +in -out", "sold [Wh]", "bought [Wh]"],
                    [[name, roles.get(name, "?"), f"{b.money_micro:+d}", str(b.sold_wh),
                      str(b.bought_wh)] for name, b in sorted(sheet.balances.items())])]
    if sheet.left_out:
        parts = [f"{sheet.left_out[why]} {text}" for why, text in LEFT_OUT.items()
                 if sheet.left_out[why]]
        lines.append(f"not counted: {'; '.join(parts)} (gridloop ledger verify names them)")
    lines += ["", f"{sealed} records in blocks, {pending} pending; last {len(blocks)} block(s):",
              _table(["height", "interval", "records", "hash"],
                     [[str(b.height), str(b.interval), str(b.header.records),
                       b.hash.hex()[:16]] for b in blocks])]
    print("\n".join(lines))
    return 0


def _show_tariff(meta: Meta) -> list[str]:
    """The grid tariff's header line, as ``meta`` states it (its signature is ``verify``'s
    to check); none for a ledger of an older gridloop, which has no tariff."""
    missing = meta.tariff_missing()
    if missing:
        return [f"grid tariff: incomplete in meta ({' and '.join(missing)} missing; gridloop "
                "ledger verify refuses it)"]
    if meta.import_price_micro_per_wh is None:
        return []
    return [f"grid tariff: import {meta.import_price_micro_per_wh}, export "
            f"{meta.export_price_micro_per_wh} micro-units/Wh (as meta states it; gridloop "
            "ledger verify checks the operator's signature)"]


def _show_identity(ledger_id: bytes, operator: bytes | None,
                   accounts: list[tuple[str, bytes, str]]) -> str:
    """``ledger id ...; operator market KEY``, as meta states them (unverified here)."""
    from ledger.keys import fingerprint

    lid = ledger_id.hex() if ledger_id else "none"
    if operator is None:
        return f"ledger id {lid}; no operator in meta"
    name = next((n for n, k, _ in accounts if k == operator), None)
    return f"ledger id {lid}; operator {name + ' ' if name else ''}{fingerprint(operator)}"
