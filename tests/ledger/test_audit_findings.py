"""The reading side against an auditor's findings: ``verify``, ``show`` and ``export``.

- deleting ``meta`` rows of a session's ledger does not turn checks off (a fault instead);
- ``show`` counts only settlements and transfers whose signature verifies, signed by an
  account whose role signs them, whose stored columns agree with the body, and says why it
  left the others out;
- ``verify``, ``show`` and ``export`` read one state of a ledger that a real writer process
  seals blocks into meanwhile (SQLite WAL and PostgreSQL);
- the main file of a killed run's ledger, copied without its ``-wal``, is named as such;
- ``verify --keys DIR`` checks the accounts against a key directory and ``verify`` prints the
  ledger id and the operator's key; ``show`` states the sign and unit of its money column.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from ledger.errors import VerificationError
from ledger.keys import Identity, KeyDirectory, fingerprint
from ledger.records import Settlement, Trade, Transfer, decode, sign
from ledger.session import MarketSession
from ledger.settlement import Balance
from ledger.store import Store, open_store
from ledger.verify import counted_balances, verify_chain

from .conftest import Raw

WRITER = Path(__file__).with_name("live_writer.py")
REPO = Path(__file__).resolve().parents[2]
PER_BLOCK = 18  # records of one interval of live_writer (3 orders, trades, readings, ...)


def verify(target: str) -> Any:
    with open_store(target, create=False, readonly=True) as store:
        return verify_chain(store)


def fails(target: str, match: str) -> VerificationError:
    with pytest.raises(VerificationError, match=match) as info:
        verify(target)
    return info.value


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["ledger", *args])
    out, err = capsys.readouterr()
    return code, out, err


# -- 1. a session's ledger keeps its metadata -----------------------------------------------

@pytest.fixture
def expired(ledger_target: str, keys: KeyDirectory) -> str:
    """The operator trades south's bid, which expired at 1 ms, at the gate of interval 1."""
    with MarketSession(ledger_target, keys=keys, nodes=["north", "south"], interval_s=15,
                       import_price_micro_per_wh=300, export_price_micro_per_wh=50) as m:
        sell = m.submit_order("north", "sell", 100, 100, 1)
        buy = m.submit_order("south", "buy", 100, 900, 1, expires_ms=1)
        op = m.operator
        trade = Trade(op.public_key, m.store.last_nonce(op.public_key) + 1, 1, "uniform",
                      buy.id, sell.id, buy.signer, sell.signer, 100, 900)
        m.store.append([sign(trade, op, m.store.ledger_id)])
        m.clear(1)
        m.submit_meter_reading("north", 1, 0, 100)
        m.submit_meter_reading("south", 1, 100, 0)
        m.settle(1)
    return ledger_target


def delete_meta(db: Raw, *keys: str) -> None:
    for key in keys:
        db.execute("DELETE FROM meta WHERE key = ?", (key,))


def test_the_expired_trade_is_found(expired: str) -> None:
    fails(expired, r"block 0 position 2: trade .*: trades buy order .* of south .*, which "
                   r"expired at 1 ms, before the gate of interval 1 at 15000 ms")


@pytest.mark.parametrize(("deleted", "message"), [
    (("operator", "interval_ms", "gates_signature"),
     r"meta: operator and interval_ms missing on a ledger a MarketSession made \(it has an "
     r"operator account 'market', the operator's signature of its accounts\)"),
    (("operator",), r"meta: operator missing on a ledger a MarketSession made"),
    (("interval_ms", "gates_signature"), r"meta: the ledger has an operator but no interval_ms"),
])
def test_deleted_metadata_is_a_fault_not_a_ledger_with_fewer_checks(
        expired: str, raw: Callable[[str], Raw], deleted: tuple[str, ...],
        message: str) -> None:
    delete_meta(raw(expired), *deleted)
    fails(expired, message)


def test_a_trade_on_a_ledger_stripped_of_all_it_says_of_its_session(
        expired: str, raw: Callable[[str], Raw]) -> None:
    """Accounts and every operator signature deleted too: it looks like a store used without a
    session, but only a session makes trades, and a trade needs the interval length."""
    db = raw(expired)
    delete_meta(db, "operator", "interval_ms", "gates_signature", "accounts_signature")
    db.execute("DELETE FROM accounts")
    fails(expired, r"block 0 position 2: trade .*: a uniform trade on a ledger without "
                   r"meta.interval_ms, so its orders' expiry cannot be checked")


def test_stripped_metadata_on_the_command_line_is_one_line_and_exit_1(
        tmp_path: Path, keys: KeyDirectory, capsys: pytest.CaptureFixture[str]) -> None:
    target = str(tmp_path / "honest.ledger.db")
    run_intervals(target, keys, 2)
    db = Raw(target)
    delete_meta(db, "operator", "interval_ms", "gates_signature")
    db.close()
    code, out, err = cli(capsys, "verify", target)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "meta: operator and interval_ms missing on a ledger a MarketSession made" in err


# -- 2. show counts what verifies -----------------------------------------------------------

def run_intervals(target: str, keys: KeyDirectory, n: int) -> dict[str, Balance]:
    """``n`` settled intervals of three nodes, then pending orders; the session's balances."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import live_writer
    finally:
        sys.path.pop(0)
    with live_writer.open_session(target, str(keys.path)) as s:
        for k in range(1, n + 1):
            live_writer.orders(s, k)
            live_writer.settle(s, k)
        live_writer.orders(s, n + 1)
        return s.balances()


def pending_record(db: Raw, record: Any, signature: bytes, **stored: Any) -> None:
    """Insert ``record`` as pending, with ``signature`` and stored columns as given."""
    columns = {"kind": record.KIND, "signer": record.signer, "nonce": record.nonce,
               "interval_no": record.interval, **stored}
    db.execute("INSERT INTO records (id, kind, signer, nonce, interval_no, body, signature) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)",
               (record.id, columns["kind"], columns["signer"], columns["nonce"],
                columns["interval_no"], record.body, signature))


def lid(db: Raw) -> bytes:
    return bytes.fromhex(db.execute("SELECT value FROM meta WHERE key = 'ledger_id'")[0][0])


def next_nonce(db: Raw, key: bytes) -> int:
    return (db.execute("SELECT MAX(nonce) FROM records WHERE signer = ?", (key,))[0][0] or 0) + 1


def sheet(target: str) -> Any:
    with open_store(target, create=False, readonly=True) as store:
        return counted_balances(store)


@pytest.fixture
def traded(ledger_target: str, keys: KeyDirectory) -> tuple[str, dict[str, Balance]]:
    return ledger_target, run_intervals(ledger_target, keys, 2)


def test_an_honest_ledger_is_counted_in_full(traded: tuple[str, dict[str, Balance]]) -> None:
    target, honest = traded
    got = sheet(target)
    assert got.balances == honest and not got.left_out
    assert got.balances["a"].money_micro > 0 and got.balances["b"].money_micro < 0


def test_a_transfer_whose_signature_does_not_verify_moves_no_money(
        traded: tuple[str, dict[str, Balance]], raw: Callable[[str], Raw],
        keys: KeyDirectory) -> None:
    """It claims to come from the grid; its signature is 64 zero bytes."""
    target, honest = traded
    db = raw(target)
    grid, a = keys.load("grid").public_key, keys.load("a").public_key
    forged = Transfer(grid, next_nonce(db, grid), 9, a, 10**12, b"")
    pending_record(db, forged, bytes(64))
    got = sheet(target)
    assert got.balances == honest
    assert dict(got.left_out) == {"signature": 1}


def test_a_signed_payment_of_the_grid_is_counted(traded: tuple[str, dict[str, Balance]],
                                                 raw: Callable[[str], Raw],
                                                 keys: KeyDirectory) -> None:
    """The control: a plain payment the grid's key did sign moves the money (show does not
    audit; verify decides whether the ledger is right)."""
    target, honest = traded
    db = raw(target)
    grid, a = keys.load("grid"), keys.load("a").public_key
    paid = sign(Transfer(grid.public_key, next_nonce(db, grid.public_key), 9, a, 7, b""),
                grid, lid(db))
    pending_record(db, paid.record, paid.signature)
    got = sheet(target)
    assert got.balances["a"].money_micro == honest["a"].money_micro + 7
    assert got.balances["grid"].money_micro == honest["grid"].money_micro - 7
    assert not got.left_out


def first_transfer(db: Raw) -> tuple[int, Transfer]:
    seq, body = db.execute("SELECT seq, body FROM records WHERE kind = ? ORDER BY seq",
                           (Transfer.KIND,))[0]
    return seq, decode(body)


@pytest.mark.parametrize("column", ["kind", "signer", "nonce", "interval_no"])
def test_a_transfer_whose_stored_columns_disagree_with_its_body_is_left_out_and_said(
        traded: tuple[str, dict[str, Balance]], raw: Callable[[str], Raw], keys: KeyDirectory,
        column: str) -> None:
    """What the body says counts; a row that says otherwise is not quietly dropped or moved."""
    target, honest = traded
    db = raw(target)
    seq, paid = first_transfer(db)
    value = {"kind": 1, "signer": keys.load("c").public_key, "nonce": 10**6,
             "interval_no": paid.interval + 1}[column]
    fresh = ", nonce = 1000000" if column == "signer" else ""  # (signer, nonce) is unique
    db.execute(f"UPDATE records SET {column} = ?{fresh} WHERE seq = ?", (value, seq))
    got = sheet(target)
    assert dict(got.left_out) == {"columns": 1}
    names = {keys.load(n).public_key: n for n in ("a", "b", "c", "grid")}
    payer, payee = names[paid.signer], names[paid.payee]
    assert got.balances[payer].money_micro == honest[payer].money_micro + paid.amount_micro
    assert got.balances[payee].money_micro == honest[payee].money_micro - paid.amount_micro


def test_settlements_by_a_node_and_payments_by_a_stranger_are_left_out(
        traded: tuple[str, dict[str, Balance]], raw: Callable[[str], Raw],
        keys: KeyDirectory) -> None:
    """Both validly signed: a node does not settle, and a key that is no account pays no one
    on this ledger."""
    target, honest = traded
    db = raw(target)
    a, b = keys.load("a"), keys.load("b")
    by_node = sign(Settlement(a.public_key, next_nonce(db, a.public_key), 9, b"", a.public_key,
                              b.public_key, 50, 10, 500), a, lid(db))
    mallory = Identity.generate("mallory")
    stranger = sign(Transfer(mallory.public_key, 1, 9, a.public_key, 10**9, b""), mallory,
                    lid(db))
    for signed in (by_node, stranger):
        pending_record(db, signed.record, signed.signature)
    got = sheet(target)
    assert got.balances == honest
    assert dict(got.left_out) == {"role": 1, "stranger": 1}


def test_show_says_what_it_left_out_and_what_its_money_column_means(
        tmp_path: Path, keys: KeyDirectory, capsys: pytest.CaptureFixture[str]) -> None:
    target = str(tmp_path / "run.ledger.db")
    run_intervals(target, keys, 2)
    db = Raw(target)
    grid, a = keys.load("grid").public_key, keys.load("a").public_key
    pending_record(db, Transfer(grid, next_nonce(db, grid), 9, a, 10**12, b""), bytes(64))
    seq, _ = first_transfer(db)
    db.execute("UPDATE records SET kind = 1 WHERE seq = ?", (seq,))
    db.close()
    code, out, _ = cli(capsys, "show", target)
    assert code == 0
    assert ("not counted: 1 record(s) whose stored kind, signer, nonce, interval or id "
            "disagree with the signed body; 1 settlement(s) or transfer(s) whose signature "
            "does not verify (gridloop ledger verify names them)") in out
    assert "+ received, - paid" in out and "micro-units of the currency" in out
    assert "money [micro] +in -out" in out
    assert f"operator market {fingerprint(keys.load('market').public_key)}" in out
    assert "1000000" not in out  # the forged 10^12 moved nothing


def test_export_takes_kind_and_signer_from_the_body_and_says_where_the_row_disagrees(
        tmp_path: Path, keys: KeyDirectory, capsys: pytest.CaptureFixture[str]) -> None:
    target = str(tmp_path / "run.ledger.db")
    run_intervals(target, keys, 1)
    db = Raw(target)
    seq, paid = first_transfer(db)
    db.execute("UPDATE records SET kind = 1, nonce = nonce + 1000 WHERE seq = ?", (seq,))
    db.close()
    code, out, _ = cli(capsys, "export", target)
    assert code == 0
    docs = {d["id"]: d for d in map(json.loads, out.splitlines())}
    doc = docs[paid.id.hex()]
    assert (doc["kind"], doc["nonce"]) == ("transfer", paid.nonce)
    assert "stored kind, signer, nonce or interval disagrees with the body" in doc["error"]
    assert all("error" not in d for i, d in docs.items() if i != paid.id.hex())


# -- 4. and 5. reading while a run writes ---------------------------------------------------

class Writer:
    """A real trading process (:mod:`live_writer`) that commits on command."""

    def __init__(self, target: str, keys: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, str(WRITER), target, str(keys)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self._expect("ready")

    def _expect(self, word: str) -> None:
        line = self.proc.stdout.readline()
        if line != f"{word}\n":
            self.proc.kill()
            raise AssertionError(f"live_writer said {line!r}: {self.proc.stderr.read()}")

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def do(self, command: str) -> None:
        """Run ``command`` in the writer and wait until it has committed."""
        self.send(command)
        self._expect("ok")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
            assert self.proc.wait(timeout=120) == 0, self.proc.stderr.read()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


@pytest.fixture
def writer(ledger_target: str, tmp_path: Path) -> Iterator[tuple[str, Writer]]:
    """A run in progress: two settled intervals and the orders of the third, its writer
    process still holding the ledger open."""
    w = Writer(ledger_target, tmp_path / "keys")
    w.do("run 1 2")
    w.do("orders 3")
    try:
        yield ledger_target, w
    finally:
        w.close()


def seal_when(monkeypatch: pytest.MonkeyPatch, method: str, w: Writer, command: str) -> None:
    """The first time a reader calls ``Store.<method>``, the writer commits ``command`` (a
    seal) before the reader's query runs: the moment the auditor's reads went wrong."""
    original = getattr(Store, method)
    fired: list[bool] = []

    def wrapped(self: Store, *args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(True)
            w.do(command)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Store, method, wrapped)


@pytest.mark.parametrize("method", ["chain_rows", "pending_rows"])
def test_verify_reads_one_state_while_a_run_seals_a_block(
        writer: tuple[str, Writer], monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    target, w = writer
    seal_when(monkeypatch, method, w, "settle 3")
    report = verify(target)
    assert (report.blocks, report.records, report.pending) == (2, 2 * PER_BLOCK, 3)
    monkeypatch.undo()
    after = verify(target)  # the writer did seal meanwhile
    assert (after.blocks, after.records, after.pending) == (3, 3 * PER_BLOCK, 0)


def test_the_verify_command_while_a_run_seals_is_ok(
        writer: tuple[str, Writer], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    target, w = writer
    seal_when(monkeypatch, "pending_rows", w, "settle 3")
    code, out, err = cli(capsys, "verify", target)
    assert code == 0, err
    assert f": ok: 2 blocks, {2 * PER_BLOCK} records in blocks, 3 pending; head " in out


def test_export_while_a_run_seals_has_every_record_once(
        writer: tuple[str, Writer], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Sealed rows, then pending rows: a seal between the two reads must not hide the records
    it moved from one to the other."""
    target, w = writer
    code, before, _ = cli(capsys, "export", target)
    assert code == 0 and len(before.splitlines()) == 2 * PER_BLOCK + 3
    seal_when(monkeypatch, "pending_rows", w, "settle 3")
    code, during, _ = cli(capsys, "export", target)
    assert code == 0 and during == before
    monkeypatch.undo()
    code, after, _ = cli(capsys, "export", target)
    assert len(after.splitlines()) == 3 * PER_BLOCK


def test_show_while_a_run_seals_prints_one_state(
        writer: tuple[str, Writer], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    target, w = writer
    code, before, _ = cli(capsys, "show", target)
    assert code == 0 and f"{2 * PER_BLOCK} records in blocks, 3 pending" in before
    seal_when(monkeypatch, "count", w, "settle 3")  # balances read, then the counts
    code, during, _ = cli(capsys, "show", target)
    assert code == 0 and during == before
    monkeypatch.undo()
    code, after, _ = cli(capsys, "show", target)
    assert f"{3 * PER_BLOCK} records in blocks, 0 pending" in after


def test_verify_and_export_while_a_run_trades_freely(
        writer: tuple[str, Writer], capsys: pytest.CaptureFixture[str]) -> None:
    """No hooks: the writer settles interval after interval while the commands read; each
    reading is ok and each export is a whole prefix of the chain."""
    target, w = writer
    w.do("settle 3")
    w.send("run 4 40")
    exports = []
    for _ in range(4):
        code, _, err = cli(capsys, "verify", target)
        assert code == 0, err
        code, out, _ = cli(capsys, "export", target)
        assert code == 0
        exports.append([json.loads(line) for line in out.splitlines()])
    w._expect("ok")
    code, out, _ = cli(capsys, "export", target)
    final = [json.loads(line) for line in out.splitlines()]
    for docs in exports:
        sealed = [d for d in docs if d["block"] is not None]
        assert [d["id"] for d in sealed] == [d["id"] for d in final[:len(sealed)]]
        last = max(d["block"] for d in sealed)
        assert len(sealed) == sum(1 for d in final if d["block"] is not None
                                  and d["block"] <= last)
        assert all(d["block"] is None for d in docs[len(sealed):])


# -- 12. a killed run's ledger without its -wal ---------------------------------------------

def test_the_file_of_a_killed_run_copied_without_its_wal_is_named_as_such(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "run.ledger.db"
    w = Writer(str(target), tmp_path / "keys")
    w.do("run 1 2")
    w.kill()
    w.close()
    wal = Path(f"{target}-wal")
    assert wal.exists()
    alone, together = tmp_path / "alone", tmp_path / "together"
    alone.mkdir()
    together.mkdir()
    shutil.copy(target, alone)
    code, _, err = cli(capsys, "verify", str(alone / target.name))
    assert code == 2 and err.count("\n") == 1
    assert ("not a gridloop ledger on its own: the file is in WAL mode and run.ledger.db-wal, "
            "which holds what was not yet checkpointed into it, is missing") in err
    shutil.copy(target, together)
    shutil.copy(wal, together)
    code, out, err = cli(capsys, "verify", str(together / target.name))
    assert code == 0, err
    assert f": ok: 2 blocks, {2 * PER_BLOCK} records in blocks, 0 pending" in out


# -- 3. pinning keys ------------------------------------------------------------------------

@pytest.fixture
def pinned_run(tmp_path: Path, keys: KeyDirectory) -> str:
    target = str(tmp_path / "run.ledger.db")
    run_intervals(target, keys, 1)
    return target


def test_verify_prints_the_ledger_id_and_the_operator_key(
        pinned_run: str, keys: KeyDirectory, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "verify", pinned_run)
    assert code == 0 and out.startswith(f"{pinned_run}: ok: 1 blocks, ")
    db = Raw(pinned_run)
    ledger_id = lid(db).hex()
    db.close()
    operator = fingerprint(keys.load("market").public_key)
    assert f"ledger id {ledger_id}; operator market {operator}" in err


def test_verify_keys_accepts_the_run_s_own_keys(pinned_run: str, keys: KeyDirectory,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "verify", pinned_run, "--keys", str(keys.path))
    assert code == 0, err
    assert f"the 5 account(s) hold the keys in {keys.path}" in err


def test_verify_keys_reads_private_keys_where_no_public_key_file_is(
        pinned_run: str, keys: KeyDirectory, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    only = tmp_path / "private_only"
    shutil.copytree(keys.path, only)
    for pub in only.glob("*.pub"):
        pub.unlink()
    code, _, err = cli(capsys, "verify", pinned_run, "--keys", str(only))
    assert code == 0, err


def test_a_ledger_made_afresh_with_other_keys_fails_against_the_run_s_keys(
        pinned_run: str, keys: KeyDirectory, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Same names, same interval length, fresh keys: it verifies on its own, not pinned."""
    forged = str(tmp_path / "forged.ledger.db")
    run_intervals(forged, KeyDirectory(tmp_path / "other_keys"), 1)
    assert cli(capsys, "verify", forged)[0] == 0
    code, out, err = cli(capsys, "verify", forged, "--keys", str(keys.path))
    assert (code, out) == (1, "") and err.count("\n") == 1
    market = fingerprint(keys.load("market").public_key)
    assert "accounts: 'market' (operator) has key " in err
    assert f"{keys.path} holds {market} for it" in err


def test_verify_keys_names_an_account_the_directory_has_no_key_for(
        pinned_run: str, keys: KeyDirectory, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    partial = tmp_path / "partial"
    partial.mkdir(mode=0o700)
    for name in ("market", "grid", "a", "b"):
        shutil.copy(keys.path / f"{name}.pub", partial)
    code, _, err = cli(capsys, "verify", pinned_run, "--keys", str(partial))
    assert code == 1 and err.count("\n") == 1
    assert f"accounts: 'c' (node) has no key in {partial} to check it against" in err


def test_verify_keys_of_a_missing_directory_is_bad_input(
        pinned_run: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "verify", pinned_run, "--keys", str(tmp_path / "nowhere"))
    assert code == 2 and err.count("\n") == 1 and "nowhere: no such key directory" in err


def test_verify_keys_on_both_stores(ledger_target: str, keys: KeyDirectory,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    run_intervals(ledger_target, keys, 1)
    assert cli(capsys, "verify", ledger_target, "--keys", str(keys.path))[0] == 0
    other = KeyDirectory(keys.path.parent / "other")
    for name in ("market", "grid", "a", "b", "c"):
        other.create(name)
    assert cli(capsys, "verify", ledger_target, "--keys", str(other.path))[0] == 1


def test_the_report_of_verify_chain_names_the_ledger_and_its_accounts(
        pinned_run: str, keys: KeyDirectory) -> None:
    report = verify(pinned_run)
    assert report.operator == keys.load("market").public_key
    assert report.operator_name() == "market" and len(report.ledger_id) == 16
    assert dataclasses.asdict(report)["accounts"]
