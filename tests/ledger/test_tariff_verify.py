"""``verify`` holds a ledger to the grid tariff its operator signed, on both stores.

The ledgers are written by the real ``MarketSession`` with real Ed25519 keys, then altered
with plain SQL as an attacker with write access to the database would: a tariff key deleted,
a price changed or malformed, the tariff re-signed by another key or, by the operator, at other
prices, and a grid settlement rewritten at another price, re-signed by the operator, paid by a
transfer re-signed by its payer, the chain resealed.  ``gridloop ledger verify`` must exit 1
with one line naming the fault; a ledger of an older gridloop, with no tariff, verifies and
says so; ``show`` prints the tariff.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import pytest

from bench.cli import main
from ledger.audit import Tariff
from ledger.keys import Identity, KeyDirectory, named
from ledger.records import Settlement, Transfer, decode, sign, signing_message
from ledger.session import MarketSession
from ledger.settlement import TARIFF_KEYS, grid_price, tariff_body
from ledger.store import open_store
from ledger.verify import verify_chain

from .conftest import Raw
from .test_session import trade_one_interval
from .test_verify import reseal_as

ALL_KEYS = (*TARIFF_KEYS, "tariff_signature")
IMPORT, EXPORT = 300, 80


@pytest.fixture
def ledger(ledger_target: str, keys: KeyDirectory) -> str:
    """Two settled intervals of three nodes at import 300, export 80: in each, the grid sells
    26 Wh to b and buys 6 Wh from a and 5 Wh from c."""
    with MarketSession(ledger_target, keys=keys, nodes=["a", "b", "c"], interval_s=60,
                       import_price_micro_per_wh=IMPORT,
                       export_price_micro_per_wh=EXPORT) as s:
        for k in (1, 2):
            trade_one_interval(s, k)
            s.settle(k)
    return ledger_target


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["ledger", *args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys: pytest.CaptureFixture[str], target: str, message: str) -> str:
    """``verify`` exits 1 with one line on stderr holding ``message``; that line."""
    code, out, err = cli(capsys, "verify", target)
    assert (code, out) == (1, ""), err
    assert err.count("\n") == 1 and message in err, err
    return err


def ledger_id(db: Raw) -> bytes:
    return bytes.fromhex(db.execute("SELECT value FROM meta WHERE key = 'ledger_id'")[0][0])


def set_meta(db: Raw, key: str, value: str) -> None:
    db.execute("DELETE FROM meta WHERE key = ?", (key,))
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))


def sign_tariff(db: Raw, signer: Identity, imp: int, exp: int) -> None:
    """Store prices ``imp`` and ``exp`` with ``signer``'s signature of them."""
    set_meta(db, TARIFF_KEYS[0], str(imp))
    set_meta(db, TARIFF_KEYS[1], str(exp))
    message = signing_message(ledger_id(db), tariff_body(imp, exp))
    set_meta(db, "tariff_signature", signer.sign(message).hex())


def rewrite(db: Raw, seq: int, signer: Identity, record: Settlement | Transfer) -> bytes:
    """Replace record ``seq`` by ``record`` signed by ``signer``; its new id."""
    signed = sign(record, signer, ledger_id(db))
    db.execute("UPDATE records SET id = ?, body = ?, signature = ? WHERE seq = ?",
               (signed.id, signed.body, signed.signature, seq))
    return signed.id


def reprice_grid_sale(db: Raw, keys: KeyDirectory, price: int) -> Settlement:
    """The grid's sale to b in block 0 at ``price``, re-signed by the operator, its transfer
    re-signed by b to pay the new amount, the chain resealed: intact, signed, paid."""
    grid, b = keys.load("grid"), keys.load("b")
    rows = db.execute("SELECT seq, body FROM records WHERE block = 0 AND kind = ?",
                      (Settlement.KIND,))
    seq, body = next((q, x) for q, x in rows
                     if grid_price(decode(x), grid.public_key) == (TARIFF_KEYS[0], IMPORT))
    old = decode(body)
    assert isinstance(old, Settlement) and old.buyer == b.public_key
    new = dataclasses.replace(old, price_micro_per_wh=price,
                              amount_micro=old.energy_wh * price)
    new_id = rewrite(db, seq, keys.load("market"), new)
    for pseq, pbody in db.execute("SELECT seq, body FROM records WHERE kind = ?",
                                  (Transfer.KIND,)):
        paid = decode(pbody)
        if isinstance(paid, Transfer) and paid.reference == old.id:
            rewrite(db, pseq, b, dataclasses.replace(paid, reference=new_id,
                                                     amount_micro=new.amount_micro))
    reseal_as(db, keys.load("market"))
    return new


# -- what verifies ---------------------------------------------------------------------------


def test_a_ledger_at_its_signed_tariff_verifies_and_says_so(
        ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    with open_store(ledger, create=False, readonly=True) as store:
        assert verify_chain(store).tariff == Tariff(IMPORT, EXPORT)
    code, out, err = cli(capsys, "verify", ledger)
    assert code == 0 and out.count("\n") == 1 and ": ok: 2 blocks" in out
    assert ("gridloop: grid tariff: import 300, export 80 micro-units/Wh, signed by the "
            "operator; every grid settlement is at it\n") in err


def test_a_ledger_of_an_older_gridloop_verifies_and_says_it_has_no_tariff(
        ledger: str, raw: Callable[[str], Raw], capsys: pytest.CaptureFixture[str]) -> None:
    raw(ledger).execute("DELETE FROM meta WHERE key IN (?, ?, ?)", ALL_KEYS)
    with open_store(ledger, create=False, readonly=True) as store:
        assert verify_chain(store).tariff is None
    code, out, err = cli(capsys, "verify", ledger)
    assert code == 0 and ": ok: 2 blocks" in out
    assert "gridloop: grid tariff: not on the ledger (made by an older gridloop)" in err


# -- the tariff in meta ------------------------------------------------------------------------


@pytest.mark.parametrize("deleted", [
    ("tariff_signature",),
    ("import_price_micro_per_wh",),
    ("export_price_micro_per_wh", "tariff_signature"),
    ("import_price_micro_per_wh", "export_price_micro_per_wh"),
])
def test_part_of_the_tariff_deleted_is_named(
        ledger: str, raw: Callable[[str], Raw], capsys: pytest.CaptureFixture[str],
        deleted: tuple[str, ...]) -> None:
    db = raw(ledger)
    for key in deleted:
        db.execute("DELETE FROM meta WHERE key = ?", (key,))
    refused(capsys, ledger, f"{ledger}: meta: the grid tariff is incomplete: "
                            f"{' and '.join(deleted)} missing")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("import_price_micro_per_wh", "abc",
     "meta: import_price_micro_per_wh 'abc' is not a whole number of micro-units/Wh >= 0"),
    ("export_price_micro_per_wh", "-80",
     "meta: export_price_micro_per_wh '-80' is not a whole number"),
    ("export_price_micro_per_wh", "80.0",
     "meta: export_price_micro_per_wh '80.0' is not a whole number"),
    ("import_price_micro_per_wh", "0300",
     "meta: import_price_micro_per_wh '0300' is not a whole number"),
    ("import_price_micro_per_wh", "",
     "meta: import_price_micro_per_wh '' is not a whole number"),
    ("tariff_signature", "zz", "meta: tariff_signature 'zz' is not a signature"),
    ("tariff_signature", "00" * 63, "meta: tariff_signature '00000000000000000000' is not a "
                                    "signature (64 bytes in hex"),
])
def test_malformed_tariff_is_named(ledger: str, raw: Callable[[str], Raw],
                                   capsys: pytest.CaptureFixture[str], key: str, value: str,
                                   message: str) -> None:
    set_meta(raw(ledger), key, value)
    refused(capsys, ledger, f"{ledger}: {message}")


def test_a_changed_price_breaks_the_operators_signature(
        ledger: str, raw: Callable[[str], Raw], keys: KeyDirectory,
        capsys: pytest.CaptureFixture[str]) -> None:
    set_meta(raw(ledger), TARIFF_KEYS[0], "310")
    key = keys.load("market").public_key
    refused(capsys, ledger, f"{ledger}: meta: the grid tariff (import 310, export 80 "
                            f"micro-units/Wh) is not as the operator {named(key, {key: 'market'})} "
                            "signed it (tariff_signature does not verify")


def test_the_tariff_of_a_ledger_without_blocks_is_checked_too(
        ledger_target: str, keys: KeyDirectory, raw: Callable[[str], Raw],
        capsys: pytest.CaptureFixture[str]) -> None:
    """A session opened, one order placed, nothing sealed: no block shows the operator, whose
    key ``meta`` holds."""
    with MarketSession(ledger_target, keys=keys, nodes=["a"], import_price_micro_per_wh=IMPORT,
                       export_price_micro_per_wh=EXPORT) as s:
        s.submit_order("a", "sell", 10, 100, 1)
    code, out, err = cli(capsys, "verify", ledger_target)
    assert code == 0 and ": ok: 0 blocks" in out and "grid tariff: import 300, export 80" in err
    set_meta(raw(ledger_target), TARIFF_KEYS[1], "0")
    refused(capsys, ledger_target, "meta: the grid tariff (import 300, export 0 "
                                   "micro-units/Wh) is not as the operator market")


def test_the_tariff_is_checked_under_the_first_blocks_signer_without_meta_operator(
        ledger: str, raw: Callable[[str], Raw], keys: KeyDirectory,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``meta.operator`` and everything that shows a session deleted: the walk takes the
    operator from block 0, and the tariff must be signed by that key."""
    db = raw(ledger)
    db.execute("DELETE FROM meta WHERE key IN ('operator', 'interval_ms', 'gates_signature', "
               "'accounts_signature')")
    db.execute("DELETE FROM accounts")
    sign_tariff(db, keys.load("grid"), IMPORT, EXPORT)
    refused(capsys, ledger, "meta: the grid tariff (import 300, export 80 micro-units/Wh) is "
                            "not as the operator")


@pytest.mark.parametrize("signer", ["grid", "stranger"])
def test_a_tariff_re_signed_by_another_key_is_refused(
        ledger: str, raw: Callable[[str], Raw], keys: KeyDirectory,
        capsys: pytest.CaptureFixture[str], signer: str) -> None:
    """The grid's own key, and a key of no account, sign the prices the settlements hold."""
    other = keys.load("grid") if signer == "grid" else Identity.generate("stranger")
    sign_tariff(raw(ledger), other, IMPORT, EXPORT)
    refused(capsys, ledger, "meta: the grid tariff (import 300, export 80 micro-units/Wh) "
                            "is not as the operator market")


def test_a_tariff_the_operator_re_signed_at_other_prices_names_the_settlement(
        ledger: str, raw: Callable[[str], Raw], keys: KeyDirectory,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The signature verifies, but the grid bought at 80 where the tariff now says 90."""
    sign_tariff(raw(ledger), keys.load("market"), IMPORT, 90)
    err = refused(capsys, ledger, "micro-units/Wh, not the export price of the signed tariff "
                                  "(import 300, export 90 micro-units/Wh)")
    assert re.search(rf"{re.escape(ledger)}: block 0: interval 1: settlement [0-9a-f]{{16}}: "
                     r"the grid buys at 80 micro-units/Wh, not", err), err


# -- the grid settlements --------------------------------------------------------------------


def test_a_grid_sale_re_signed_at_another_price_is_named(
        ledger: str, raw: Callable[[str], Raw], keys: KeyDirectory,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Settlement, transfer and blocks all re-signed with the real keys: only the tariff
    shows the grid charged b 310 a Wh instead of 300."""
    forged = reprice_grid_sale(raw(ledger), keys, 310)
    refused(capsys, ledger, f"{ledger}: block 0: interval 1: settlement {forged.id.hex()[:16]}: "
                            "the grid sells at 310 micro-units/Wh, not the import price of "
                            "the signed tariff (import 300, export 80 micro-units/Wh)")


def test_without_a_tariff_only_one_price_per_direction_is_checked(
        ledger: str, raw: Callable[[str], Raw], keys: KeyDirectory,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The same forgery on a ledger with no tariff (an older gridloop's) is one import price
    in its interval, so it verifies: why the ok output says the tariff is not on the ledger."""
    db = raw(ledger)
    reprice_grid_sale(db, keys, 310)
    db.execute("DELETE FROM meta WHERE key IN (?, ?, ?)", ALL_KEYS)
    code, _, err = cli(capsys, "verify", ledger)
    assert code == 0 and "grid tariff: not on the ledger" in err


# -- show ------------------------------------------------------------------------------------


def test_show_prints_the_tariff_in_its_header(ledger: str, raw: Callable[[str], Raw],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "show", ledger)
    head = out.split("\n\n")[0].splitlines()
    assert code == 0 and head[2] == ("grid tariff: import 300, export 80 micro-units/Wh (as "
                                     "meta states it; gridloop ledger verify checks the "
                                     "operator's signature)")
    db = raw(ledger)
    db.execute("DELETE FROM meta WHERE key = ?", ("tariff_signature",))
    code, out, _ = cli(capsys, "show", ledger)
    assert code == 0 and ("grid tariff: incomplete in meta (tariff_signature missing; "
                          "gridloop ledger verify refuses it)") in out
    db.execute("DELETE FROM meta WHERE key IN (?, ?)", TARIFF_KEYS)
    code, out, _ = cli(capsys, "show", ledger)
    assert code == 0 and "grid tariff" not in out
