"""The writing side of the ledger, on both stores: the grid tariff is stored, signed and kept;
no interval is left unsettled behind a later block; keys are refused when their directory,
their files or their sharing is wrong, and the keys a session makes are said."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.errors import ConflictError, KeyFileError, SettlementError
from ledger.keys import KeyDirectory, verify_signature
from ledger.records import signing_message
from ledger.session import MarketSession
from ledger.settlement import tariff_body
from ledger.store import open_store
from ledger.verify import verify_chain

from .conftest import Raw

NODES = ["a", "b", "c"]
TARIFF_KEYS = ("import_price_micro_per_wh", "export_price_micro_per_wh", "tariff_signature")


def session(target: str, keys: KeyDirectory, imp: int = 300, exp: int = 80,
            **kw: object) -> MarketSession:
    args: dict = {"nodes": NODES, "market": "uniform", "interval_s": 60}
    args.update(kw)
    return MarketSession(target, keys=keys, import_price_micro_per_wh=imp,
                         export_price_micro_per_wh=exp, **args)


def trade(s: MarketSession, k: int) -> None:
    """a sells 100 Wh, b buys 60 and c 70: two trades at the gate of ``k``."""
    s.submit_order("a", "sell", 100, 120, k)
    s.submit_order("b", "buy", 60, 200, k)
    s.submit_order("c", "buy", 70, 150, k)
    s.clear(k)


def read_and_settle(s: MarketSession, k: int) -> None:
    s.submit_meter_reading("a", k, 0, 90)
    s.submit_meter_reading("b", k, 80, 0)
    s.submit_meter_reading("c", k, 30, 5)
    s.settle(k)


def meta(target: str, keys: tuple[str, ...] = TARIFF_KEYS) -> dict[str, str | None]:
    with open_store(target, create=False) as store:
        return {k: store.get_meta(k) for k in keys}


# -- the grid tariff ---------------------------------------------------------------------


def test_the_tariff_is_stored_and_signed_by_the_operator(ledger_target: str,
                                                          keys: KeyDirectory) -> None:
    with session(ledger_target, keys, imp=300, exp=80) as s:
        trade(s, 1)
        read_and_settle(s, 1)
        operator, lid = s.operator.public_key, s.store.ledger_id
        grid = s.public_key("grid")
        prices = {(x.seller == grid, x.price_micro_per_wh) for x in s.settlements(1)
                  if not x.trade}
    assert prices == {(True, 300), (False, 80)}  # the grid sold at 300 and bought at 80
    stored = meta(ledger_target)
    assert stored["import_price_micro_per_wh"] == "300"
    assert stored["export_price_micro_per_wh"] == "80"
    signature = bytes.fromhex(stored["tariff_signature"] or "")
    assert verify_signature(operator, signing_message(lid, tariff_body(300, 80)), signature)
    assert not verify_signature(operator, signing_message(lid, tariff_body(300, 81)),
                                signature)
    verify_chain(open_store(ledger_target, create=False))


def test_a_session_with_other_prices_is_refused_naming_both(ledger_target: str,
                                                            keys: KeyDirectory) -> None:
    with session(ledger_target, keys, imp=300, exp=80) as s:
        trade(s, 1)
        read_and_settle(s, 1)
    before = meta(ledger_target)
    with pytest.raises(ConflictError) as err:
        session(ledger_target, keys, imp=30000, exp=0)
    assert str(err.value) == (f"{ledger_target}: was made with grid prices import 300, "
                              "export 80 micro-units/Wh, this session has import 30000, "
                              "export 0 micro-units/Wh")
    assert meta(ledger_target) == before
    with session(ledger_target, keys, imp=300, exp=80) as s:  # the same prices go on
        trade(s, 2)
        read_and_settle(s, 2)
    assert meta(ledger_target) == before


def test_an_older_ledger_takes_the_tariff_its_settlements_were_made_at(
        ledger_target: str, keys: KeyDirectory, raw: Callable[[str], Raw]) -> None:
    """A ledger made before the tariff was stored (its meta rows deleted here): a session
    at other prices than its grid settlements is refused, one at theirs stores them."""
    with session(ledger_target, keys, imp=300, exp=80) as s:
        trade(s, 1)
        read_and_settle(s, 1)
        operator, lid = s.operator.public_key, s.store.ledger_id
    raw(ledger_target).execute("DELETE FROM meta WHERE key IN (?, ?, ?)", TARIFF_KEYS)
    with pytest.raises(ConflictError, match=re.escape(
            "was made with grid prices import 300, export 80 micro-units/Wh, this session "
            "has import 300, export 90 micro-units/Wh")):
        session(ledger_target, keys, imp=300, exp=90)
    assert meta(ledger_target) == dict.fromkeys(TARIFF_KEYS)
    # prices written without the operator's signature are no tariff: the settlements count
    db = raw(ledger_target)
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (TARIFF_KEYS[1], "90"))
    with pytest.raises(ConflictError, match="export 80 micro-units/Wh, this session has "):
        session(ledger_target, keys, imp=300, exp=90)
    db.execute("DELETE FROM meta WHERE key = ?", (TARIFF_KEYS[1],))
    session(ledger_target, keys, imp=300, exp=80).close()
    stored = meta(ledger_target)
    assert (stored["import_price_micro_per_wh"], stored["export_price_micro_per_wh"]) == \
        ("300", "80")
    assert verify_signature(operator, signing_message(lid, tariff_body(300, 80)),
                            bytes.fromhex(stored["tariff_signature"] or ""))


def test_an_older_ledger_settled_at_two_tariffs_is_refused(ledger_target: str,
                                                           keys: KeyDirectory,
                                                           raw: Callable[[str], Raw]) -> None:
    with session(ledger_target, keys, imp=300, exp=80) as s:
        trade(s, 1)
        read_and_settle(s, 1)
    with session(ledger_target, keys, imp=300, exp=80) as s:
        s.export_price_micro_per_wh = 50  # as an older gridloop, which kept no tariff, could
        trade(s, 2)
        read_and_settle(s, 2)
    raw(ledger_target).execute("DELETE FROM meta WHERE key IN (?, ?, ?)", TARIFF_KEYS)
    with pytest.raises(ConflictError, match=re.escape(
            "its grid settlements are at two export prices (80 and 50 micro-units/Wh); a "
            "ledger keeps one tariff")):
        session(ledger_target, keys, imp=300, exp=50)


# -- no interval left unsettled ------------------------------------------------------------


def test_a_later_interval_is_not_sealed_past_an_unsettled_one(ledger_target: str,
                                                              keys: KeyDirectory) -> None:
    with session(ledger_target, keys) as s:
        trade(s, 1)
        read_and_settle(s, 1)
        trade(s, 2)  # its trades made, its settlement never comes
        trade(s, 3)
        for node, imp, exp in (("a", 0, 90), ("b", 80, 0), ("c", 30, 5)):
            s.submit_meter_reading(node, 3, imp, exp)
        assert s.unsettled() == [2, 3]
        with pytest.raises(SettlementError, match=re.escape(
                "cannot settle interval 3: interval 2 before it has trades or meter readings "
                "and is not settled; settle it first")):
            s.settle(3)
        assert s.store.head().interval == 1
    verify_chain(open_store(ledger_target, create=False))  # pending, not yet wrong


def test_settle_unread_settles_against_the_readings_the_ledger_holds(
        ledger_target: str, keys: KeyDirectory) -> None:
    """A process stopped after interval 2's gate and a's reading: the next settles 2 with
    a's reading, and 0 Wh for b and c that end where their readings of 1 ended."""
    with session(ledger_target, keys) as s:
        trade(s, 1)
        read_and_settle(s, 1)
        trade(s, 2)
        s.submit_meter_reading("a", 2, 0, 40)
    with session(ledger_target, keys) as s:  # another process
        assert s.unsettled() == [2]
        settled = s.settle_unread(2)
        assert s.unsettled() == []
        readings = {s.names[r.signer]: (r.import_wh, r.export_wh, r.read_ms)
                    for r in s.meter_readings(2)}
        assert readings == {"a": (0, 40, None), "b": (0, 0, 120_000), "c": (0, 0, 120_000)}
        a, b, c = (s.public_key(n) for n in NODES)
        traded = [(x.seller, x.buyer, x.energy_wh) for x in settled if x.trade]
        assert traded == [(a, b, 0), (a, c, 0)]  # nothing was metered into b and c
        assert s.settle_unread(2) == settled  # retried: what the first call stored
        trade(s, 3)
        read_and_settle(s, 3)  # the ledger goes on
        assert [b.interval for b in s.store.last_blocks(10)] == [1, 2, 3]
    verify_chain(open_store(ledger_target, create=False))


def test_settle_unread_closes_the_gate_of_an_interval_never_cleared(
        ledger_target: str, keys: KeyDirectory) -> None:
    """A continuous market traded in interval 2 before its gate: settled at 0 Wh ending at
    the given times, its gate closed without clearing, and nothing more trades in it."""
    with session(ledger_target, keys, market="continuous") as s:
        s.submit_order("a", "sell", 50, 100, 2)
        s.submit_order("b", "buy", 30, 200, 2)
        assert len(s.trades(2)) == 1 and s.unsettled() == [2]
        settled = s.settle_unread(2, {"a": 61_000, "b": 62_000})
        assert [x.energy_wh for x in settled] == [0]
        at = {s.names[r.signer]: r.read_ms for r in s.meter_readings(2)}
        assert at == {"a": 61_000, "b": 62_000, "c": 120_000}
        assert s.store.is_cleared(2)
    verify_chain(open_store(ledger_target, create=False))


# -- keys ------------------------------------------------------------------------------------


def test_keys_made_are_said_and_used_again(ledger_target: str, keys: KeyDirectory) -> None:
    with session(ledger_target, keys) as s:
        assert s.created_keys == ["market", "grid", *NODES]
    with session(ledger_target, keys) as s:
        assert s.created_keys == []


def test_a_fixed_key_directory_must_hold_every_key(tmp_path: Path) -> None:
    keys = KeyDirectory(tmp_path / "keys")
    for name in ("market", "a", "b", "c"):
        keys.create(name)
    target = str(tmp_path / "l.db")
    with pytest.raises(KeyFileError) as err:
        session(target, keys, create_keys=False)
    assert str(err.value) == (f"{keys.path}: no key for grid (make it with: gridloop ledger "
                              f"keygen --dir {keys.path} grid)")
    assert not keys.exists("grid") and not Path(target).exists()
    keys.create("grid")
    with session(target, keys, create_keys=False) as s:
        assert s.created_keys == []
        assert s.public_key("grid") == keys.load("grid").public_key


def test_two_names_with_one_key_are_named_by_their_files(tmp_path: Path) -> None:
    keys = KeyDirectory(tmp_path / "keys")
    for name in ("a", "b"):
        keys.create(name)
    for suffix in (".key", ".pub"):
        (keys.path / f"b{suffix}").write_bytes((keys.path / f"a{suffix}").read_bytes())
    target = tmp_path / "l.db"
    with pytest.raises(KeyFileError) as err:
        session(str(target), keys)
    assert str(err.value) == f"{keys.path}/a.key and {keys.path}/b.key hold the same key"
    assert not target.exists()  # refused before the ledger is made
    assert not keys.exists("market") and not keys.exists("c")  # and before keys are made


def test_a_key_directory_others_may_write_to_is_refused_when_keys_are_read(
        tmp_path: Path) -> None:
    keys = KeyDirectory(tmp_path / "keys")
    keys.create("a")
    keys.path.chmod(0o777)
    with pytest.raises(KeyFileError, match=re.escape(
            f"{keys.path} is writable by group or others (mode 0777); run: chmod 700 "
            f"{keys.path}")):
        keys.load("a")
    keys.path.chmod(0o1777)  # the sticky bit: others cannot replace a file they do not own
    assert keys.load("a").name == "a"


@pytest.mark.parametrize("which", [".key", ".pub"])
def test_a_key_path_that_is_a_directory_is_named(tmp_path: Path, which: str) -> None:
    keys = KeyDirectory(tmp_path / "keys")
    keys.create("a")
    path = keys.path / f"a{which}"
    path.unlink()
    path.mkdir(mode=0o700)
    with pytest.raises(KeyFileError) as err:
        keys.load("a")
    assert str(err.value) == (f"{path}: not a key file (a directory)" if which == ".key"
                              else f"{path}: cannot read: Is a directory")
