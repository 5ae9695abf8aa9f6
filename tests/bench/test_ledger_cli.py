"""``gridloop ledger keygen | verify | export --json | show``, in-process, on both stores."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import stat
from pathlib import Path

import nacl.signing
import pytest

from bench.cli import main
from ledger.pgserver import new_schema_url
from ledger.session import MarketSession


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ledger with two settled intervals and one pending order, on each store."""
    if request.param == "sqlite":
        target = str(tmp_path / "run.ledger.db")
    else:
        target = new_schema_url(request.getfixturevalue("postgres_server"))
    return _trade(target, tmp_path / "keys")


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> str:
    """The same ledger in a SQLite file, for tests that edit it by hand."""
    return _trade(str(tmp_path / "run.ledger.db"), tmp_path / "keys")


def _trade(target: str, keys: Path) -> str:
    with MarketSession(target, keys=keys, nodes=["pv", "rack", "battery"],
                       interval_s=300, import_price_micro_per_wh=300,
                       export_price_micro_per_wh=80) as s:
        for k in (1, 2):
            s.submit_order("pv", "sell", 200, 100, k)
            s.submit_order("rack", "buy", 150, 250, k)
            s.clear(k)
            s.submit_meter_reading("pv", k, 0, 180)
            s.submit_meter_reading("rack", k, 160, 0)
            s.submit_meter_reading("battery", k, 10, 20)
            s.settle(k)
        s.submit_order("battery", "buy", 5, 90, 3)
    return target


def test_keygen_writes_private_keys_0600_and_prints_only_public_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keydir = tmp_path / "keys"
    assert main(["ledger", "keygen", "--dir", str(keydir), "n1", "n2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out] == ["n1", "n2"]
    for line in out:
        name, public, pub_path = line.split("\t")
        key_file = keydir / f"{name}.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert len(base64.b64decode(public)) == 32 and Path(pub_path).is_file()
        pem = key_file.read_text()
        body = "".join(pem.strip().splitlines()[1:-1])
        assert body not in "\n".join(out) and "PRIVATE" not in "\n".join(out)


def test_keygen_refuses_to_overwrite_and_checks_all_names_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keydir = tmp_path / "keys"
    main(["ledger", "keygen", "--dir", str(keydir), "n1"])
    before = (keydir / "n1.key").read_bytes()
    assert main(["ledger", "keygen", "--dir", str(keydir), "n1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "n1.key already exists" in err
    assert (keydir / "n1.key").read_bytes() == before
    assert main(["ledger", "keygen", "--dir", str(keydir), "ok", "../bad"]) == 2
    assert "identity name '../bad'" in capsys.readouterr().err
    assert not (keydir / "ok.key").exists()


def test_verify_ok(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "verify", ledger]) == 0
    out = capsys.readouterr().out
    assert ": ok: 2 blocks, 32 records in blocks, 1 pending; head " in out
    head = out.split("head ")[1].strip()
    assert main(["ledger", "verify", ledger, "--head", head]) == 0


def test_verify_names_the_first_bad_record_and_exits_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = str(tmp_path / "l.db")
    with MarketSession(target, keys=tmp_path / "keys", nodes=["a", "b"], interval_s=60,
                       import_price_micro_per_wh=3, export_price_micro_per_wh=1) as s:
        order = s.submit_order("a", "sell", 10, 2, 1)
        s.submit_order("b", "buy", 10, 2, 1)
        s.settle(0)
    with sqlite3.connect(target) as conn:
        conn.execute("UPDATE records SET signature = ? WHERE id = ?", (bytes(64), order.id))
    capsys.readouterr()
    assert main(["ledger", "verify", target]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"block 0 position 0: order {order.id.hex()[:16]}: signature does not verify" in err


@pytest.mark.parametrize(("args", "message"), [
    (["verify", "missing.db"], "missing.db: no such ledger"),
    (["show", "missing.db"], "missing.db: no such ledger"),
    (["export", "missing.db", "--json"], "missing.db: no such ledger"),
    (["verify", "garbage.db"], "garbage.db: not a SQLite database"),
    (["verify", "l.db", "--head", "zz"], "--head"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, args: list[str],
                                          message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.db").write_bytes(b"\x00garbage" * 64)
    MarketSession("l.db", keys="keys", nodes=["a"], import_price_micro_per_wh=1,
                  export_price_micro_per_wh=1).close()
    assert main(["ledger", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_export_writes_json_lines_without_being_told(ledger: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """JSON lines are the only format: ``--json`` may be given, and is the default."""
    capsys.readouterr()
    assert main(["ledger", "export", ledger]) == 0
    plain = capsys.readouterr().out
    assert main(["ledger", "export", ledger, "--json"]) == 0
    assert capsys.readouterr().out == plain and len(plain.splitlines()) == 33
    json.loads(plain.splitlines()[0])


def test_show_refuses_a_negative_number_of_blocks(ledger: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ledger", "show", ledger, "--blocks", "-1"])
    assert info.value.code == 2
    assert "argument --blocks: '-1' is not a whole number >= 0" in capsys.readouterr().err
    assert main(["ledger", "show", ledger, "--blocks", "0"]) == 0
    assert "last 0 block(s)" in capsys.readouterr().out


def test_export_json_lines(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["ledger", "export", ledger, "--json"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(docs) == 33
    assert {d["kind"] for d in docs} == {"order", "trade", "meter_reading", "settlement",
                                         "transfer"}
    for d in docs:
        body = base64.b64decode(d["body"])
        public_key = base64.b64decode(d["public_key"])
        assert len(public_key) == 32
        assert hashlib.sha256(body).hexdigest() == d["id"]
        # the signature covers the body bound to this ledger (docs/ledger.md)
        signed = b"GLS\x01" + bytes.fromhex(d["ledger_id"]) + body
        assert len(d["ledger_id"]) == 32
        nacl.signing.VerifyKey(public_key).verify(signed, base64.b64decode(d["signature"]))
    assert [d["block"] for d in docs] == [0] * 16 + [1] * 16 + [None]
    assert docs[0]["signer"] == "pv" and docs[0]["fields"]["side"] == "sell"
    assert docs[-1]["fields"] == {"side": "buy", "energy_wh": 5, "price_micro_per_wh": 90,
                                  "expires_ms": 900_000}


def test_show_prints_balances_and_blocks(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["ledger", "show", ledger, "--blocks", "1"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    # pv sold 150 Wh per interval at 175 and 30 Wh to the grid at 80; rack bought 150 + 10.
    assert lines["pv"][1:] == ["node", f"+{2 * (150 * 175 + 30 * 80)}", "360", "0"]
    assert lines["rack"][1:] == ["node", f"-{2 * (150 * 175 + 10 * 300)}", "0", "320"]
    assert lines["grid"][1] == "grid"
    assert "32 records in blocks, 1 pending; last 1 block(s):" in out
    assert lines["1"][:3] == ["1", "2", "16"]  # height 1, interval 2, 16 records


def test_read_commands_leave_the_file_as_it_was(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """An auditor's copy in rollback-journal mode stays byte for byte what it was handed over
    as, and an empty file stays empty."""
    target = tmp_path / "l.db"
    with MarketSession(str(target), keys=tmp_path / "keys", nodes=["a"],
                       import_price_micro_per_wh=1, export_price_micro_per_wh=1):
        pass
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    before = target.read_bytes()
    for args in (["verify"], ["show"], ["export", "--json"]):
        assert main(["ledger", args[0], str(target), *args[1:]]) == 0
    assert target.read_bytes() == before
    assert not Path(f"{target}-wal").exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    assert main(["ledger", "verify", str(empty)]) == 2
    assert "not a gridloop ledger" in capsys.readouterr().err
    assert empty.stat().st_size == 0


def _tampered(ledger: str, sql: str) -> None:
    with sqlite3.connect(ledger) as conn:
        conn.execute(sql)


@pytest.mark.parametrize(("sql", "commands", "message"), [
    ("UPDATE records SET body = CAST('hello' AS TEXT) WHERE seq = 5",
     ("verify", "export"), "record seq 5 (block 0 position 4): body is stored as str, not bytes"),
    ("UPDATE blocks SET header = CAST('hello' AS TEXT) WHERE height = 1",
     ("verify", "show"), "header is stored as str, not bytes"),
    ("UPDATE meta SET value = 'zz' WHERE key = 'operator'",
     ("verify", "show", "export"), "meta: operator 'zz' is not a hex public key"),
    ("UPDATE meta SET value = 'abc' WHERE key = 'interval_ms'",
     ("verify", "show", "export"), "meta: interval_ms 'abc' is not a whole number of ms above 0"),
    ("DROP TABLE records", ("verify", "show", "export"), "no such table: records"),
    ("DROP TABLE intervals", ("verify", "show"), "no such table: intervals"),
    # a sealed row's id rewritten as text that is not UTF-8
    ("UPDATE records SET id = CAST(X'FF00FE' || id AS TEXT) WHERE seq = 7",
     ("verify", "export"), "record seq 7 (block 0 position 6): id is stored as str, not bytes"),
    # a pending row copied with its id as text: not the bytes of the text in the message
    ("INSERT INTO records (id, kind, signer, nonce, interval_no, body, signature) SELECT "
     "CAST(X'FF00FE' || id AS TEXT), kind, signer, nonce + 1000, interval_no, body, signature "
     "FROM records WHERE seq = 33",
     ("verify", "export"), "pending record seq 34: id is stored as str, not bytes"),
])
def test_a_hand_edited_ledger_is_one_line(sqlite_ledger: str,
                                          capsys: pytest.CaptureFixture[str], sql: str,
                                          commands: tuple[str, ...], message: str) -> None:
    """Tampering is a ledger that does not verify (exit 1, one line naming the place); to
    ``show`` and ``export``, which do not verify, it is input they cannot read (exit 2), and
    ``show`` prints nothing but the error."""
    ledger = sqlite_ledger
    _tampered(ledger, sql)
    for command in commands:
        code = main(["ledger", command, ledger])
        out, err = capsys.readouterr()
        assert code == (1 if command == "verify" else 2), (command, err)
        assert err.count("\n") == 1 and message in err, err
        assert err.isascii() and "decode" not in err and "Traceback" not in err
        if command == "show":
            assert out == ""


def test_swapped_account_names_fail_verification(sqlite_ledger: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``show`` credits accounts by name: the operator signs which name has which key."""
    ledger = sqlite_ledger
    for a, b in (("pv", "tmp"), ("rack", "pv"), ("tmp", "rack")):
        _tampered(ledger, f"UPDATE accounts SET name = '{b}' WHERE name = '{a}'")
    assert main(["ledger", "verify", ledger]) == 1
    assert "accounts: the table of names, keys and roles is not as the operator signed it" \
        in capsys.readouterr().err


def test_show_into_a_closed_pipe_is_not_an_error(ledger: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from bench.cli import main; sys.exit(main(['ledger', 'show', "
            f"{ledger!r}, '--blocks', '50']))")
    proc = subprocess.run(f"{sys.executable} -c \"{code}\" | head -c 1", shell=True,
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_keygen_refuses_before_writing_anything(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    keydir = tmp_path / "keys"
    assert main(["ledger", "keygen", "--dir", str(keydir), "dave", "dave"]) == 2
    assert "dave named more than once" in capsys.readouterr().err
    assert not keydir.exists()
    keydir.mkdir(mode=0o700)
    (keydir / "zed.pub").write_text("someone's published key\n")
    assert main(["ledger", "keygen", "--dir", str(keydir), "alice", "zed"]) == 2
    assert "zed.pub already exists" in capsys.readouterr().err
    assert sorted(p.name for p in keydir.iterdir()) == ["zed.pub"]
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert main(["ledger", "keygen", "--dir", str(shared), "a"]) == 2
    assert "writable by group or others (mode 0777)" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.touch()
    assert main(["ledger", "keygen", "--dir", str(afile), "a"]) == 2
    assert "afile: not a directory" in capsys.readouterr().err


def test_verify_names_a_stranger_and_show_does_not_count_it(
        sqlite_ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A pending transfer signed by a key that is no account of the ledger, with this ledger's
    id and a valid signature: refused by verify, left out of the balances."""
    from ledger.keys import Identity, fingerprint
    from ledger.records import Transfer, sign

    ledger = sqlite_ledger
    capsys.readouterr()
    assert main(["ledger", "show", ledger]) == 0
    before = capsys.readouterr().out
    with sqlite3.connect(ledger) as conn:
        lid = bytes.fromhex(conn.execute("SELECT value FROM meta WHERE key = 'ledger_id'")
                            .fetchone()[0])
        rack = conn.execute("SELECT public_key FROM accounts WHERE name = 'rack'").fetchone()[0]
        mallory = Identity.generate("mallory")
        forged = sign(Transfer(mallory.public_key, 1, 5, rack, 10, b""), mallory, lid)
        conn.execute("INSERT INTO records (id, kind, signer, nonce, interval_no, body, "
                     "signature) VALUES (?, 5, ?, 1, 5, ?, ?)",
                     (forged.id, mallory.public_key, forged.body, forged.signature))
    assert main(["ledger", "verify", ledger]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (f"pending: transfer {forged.id.hex()[:16]}: signer "
            f"{fingerprint(mallory.public_key)} is not an account of this ledger") in err
    assert main(["ledger", "show", ledger]) == 0
    after = capsys.readouterr().out
    assert fingerprint(mallory.public_key) not in after
    assert after.replace("33 records", "32 records").replace("2 pending", "1 pending") \
        .startswith(before.split("\n\n32 records")[0])
    assert "not counted: 1 settlement(s) or transfer(s) signed by a key that is no account" \
        in after


def _page_of(ledger: str, name: str) -> int:
    with sqlite3.connect(ledger) as conn:
        return conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                            (name,)).fetchone()[0]


def _overwrite_page(ledger: str, page: int) -> None:
    with sqlite3.connect(ledger) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(ledger, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xa5" * size)


def test_show_of_a_damaged_file_prints_only_the_error(
        sqlite_ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The blocks' pages overwritten: the balances can be read, the blocks cannot."""
    _overwrite_page(sqlite_ledger, _page_of(sqlite_ledger, "blocks"))
    capsys.readouterr()
    assert main(["ledger", "show", sqlite_ledger]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "a corrupt SQLite database" in err


def test_verify_of_a_damaged_file_is_unreadable_input(
        sqlite_ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An index page no query of verify reads, overwritten: the file is damaged all the
    same (exit 2, not a verdict on the chain)."""
    _overwrite_page(sqlite_ledger, _page_of(sqlite_ledger, "sqlite_autoindex_accounts_2"))
    capsys.readouterr()
    assert main(["ledger", "verify", sqlite_ledger]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a corrupt SQLite database" in err and "quick_check" in err


def test_read_commands_leave_no_file_beside_a_wal_ledger(
        sqlite_ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A ledger a run left (WAL mode, no process has it open): no -wal or -shm appears."""
    folder = Path(sqlite_ledger).parent
    with sqlite3.connect(sqlite_ledger) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    before = sorted(p.name for p in folder.iterdir())
    assert "run.ledger.db-wal" not in before
    data = Path(sqlite_ledger).read_bytes()
    for command in ("verify", "show", "export"):
        assert main(["ledger", command, sqlite_ledger]) == 0
    assert sorted(p.name for p in folder.iterdir()) == before
    assert Path(sqlite_ledger).read_bytes() == data


def test_show_while_a_session_has_the_ledger_open(sqlite_ledger: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A run writing to the ledger: read through its -wal, which sees its last commit."""
    with MarketSession(sqlite_ledger, keys=tmp_path / "keys", nodes=["pv", "rack", "battery"],
                       interval_s=300, import_price_micro_per_wh=300,
                       export_price_micro_per_wh=80) as s:
        s.submit_order("pv", "sell", 7, 100, 3)
        assert Path(f"{sqlite_ledger}-wal").exists()
        capsys.readouterr()
        assert main(["ledger", "show", sqlite_ledger]) == 0
        assert "32 records in blocks, 2 pending" in capsys.readouterr().out
        assert main(["ledger", "verify", sqlite_ledger]) == 0


def test_a_directory_is_named_as_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "verify", str(tmp_path)]) == 2
    assert "is a directory, not a ledger file" in capsys.readouterr().err
