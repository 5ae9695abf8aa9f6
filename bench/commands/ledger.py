"""``gridloop ledger``: make node keys, verify, export and show a ledger.

``DB`` is a SQLite path or a ``postgresql://`` URL.  Exit status: 0 done; 1 (``verify`` only)
the ledger does not verify, named in one line: a bad block or record, or a ledger altered
outside gridloop (a table dropped, a key stored as text, malformed metadata); 2 bad input, as
every command: no such file, not a gridloop ledger, a damaged database file, bad arguments.
``show`` and ``export`` do not verify: they refuse a ledger altered so that they cannot read
it (exit 2) and say nothing printed until all of it has been read.  The three read-only commands
open a SQLite ledger read-only and leave no file beside it.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any


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
    from ledger.verify import verify_chain

    try:
        head = bytes.fromhex(args.head) if args.head else None
    except ValueError:
        head = b""
    if head is not None and len(head) != 32:
        raise LedgerError(f"--head {args.head!r} is not a block hash (64 hex digits)")
    with open_store(args.db, create=False, readonly=True) as store:
        try:
            report = verify_chain(store, known_head=head)
        except VerificationError as exc:
            store.check_unchanged()  # a fault seen in one state of the ledger, not two
            print(f"gridloop: error: {exc}", file=sys.stderr)
            return 1
        store.check_unchanged()
        head = report.head.hex() if report.head else "none"
        print(f"{store.location}: ok: {report.blocks} blocks, {report.records} records in "
              f"blocks, {report.pending} pending; head {head}")
    return 0


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _export(args: argparse.Namespace) -> int:
    from ledger import records
    from ledger.errors import LedgerError
    from ledger.store import open_store

    with open_store(args.db, create=False, readonly=True) as store:
        store.check_tables()
        store.meta()  # refuse malformed metadata before the first line
        names = {key: name for name, key, _ in store.accounts()}
        ledger_id = store.ledger_id.hex()
        out = sys.stdout
        for batch in store.all_rows():
            for row in batch:
                doc: dict[str, Any] = {
                    "kind": records.KINDS[row.kind].NAME if row.kind in records.KINDS
                    else row.kind,
                    "id": row.id.hex(), "body": _b64(row.body), "signature": _b64(row.signature),
                    "public_key": _b64(row.signer), "signer": names.get(row.signer),
                    "nonce": row.nonce, "interval": row.interval, "block": row.block,
                    "position": row.position, "ledger_id": ledger_id}
                try:
                    fields = records.decode(row.body).fields()
                    doc["fields"] = {k: v.hex() if isinstance(v, bytes) else v
                                     for k, v in fields.items()}
                except LedgerError as exc:
                    doc["fields"], doc["error"] = None, str(exc)
                out.write(json.dumps(doc) + "\n")
        store.check_unchanged()
    return 0


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                               for i, (c, w) in enumerate(zip(line, widths, strict=True)))
                     for line in lines)


def _show(args: argparse.Namespace) -> int:
    from ledger.session import balance_sheet
    from ledger.store import open_store

    with open_store(args.db, create=False, readonly=True) as store:
        # read everything first: a ledger that cannot be read prints nothing but the error
        store.check_tables()
        store.meta()
        store.cleared_intervals()
        roles = {name: role for name, _, role in store.accounts()}
        totals, left_out = balance_sheet(store)
        sealed, pending = store.count()
        blocks = store.last_blocks(args.blocks)
        store.check_unchanged()
    lines = [f"ledger {store.location}", "",
             _table(["account", "role", "money [micro]", "sold [Wh]", "bought [Wh]"],
                    [[name, roles.get(name, "?"), f"{b.money_micro:+d}", str(b.sold_wh),
                      str(b.bought_wh)] for name, b in sorted(totals.items())])]
    if left_out:
        lines.append(f"not counted: {left_out} settlement(s) or transfer(s) signed by a key "
                     "that is no account of this ledger, or by an account that does not sign "
                     "them (gridloop ledger verify names them)")
    lines += ["", f"{sealed} records in blocks, {pending} pending; last {len(blocks)} block(s):",
              _table(["height", "interval", "records", "hash"],
                     [[str(b.height), str(b.interval), str(b.header.records),
                       b.hash.hex()[:16]] for b in blocks])]
    print("\n".join(lines))
    return 0
