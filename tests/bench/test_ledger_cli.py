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


def test_export_requires_a_format() -> None:
    with pytest.raises(SystemExit) as info:
        main(["ledger", "export", "x.db"])
    assert info.value.code == 2


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
     ("verify", "export"), "record seq 5: body is stored as str, not bytes"),
    ("UPDATE blocks SET header = CAST('hello' AS TEXT) WHERE height = 1",
     ("verify", "show"), "header is stored as str, not bytes"),
    ("UPDATE meta SET value = 'zz' WHERE key = 'operator'",
     ("verify",), "meta: operator 'zz' is not a hex public key"),
    ("DROP TABLE records", ("verify", "export"), "no such table: records"),
])
def test_a_hand_edited_ledger_is_one_line(sqlite_ledger: str,
                                          capsys: pytest.CaptureFixture[str], sql: str,
                                          commands: tuple[str, ...], message: str) -> None:
    ledger = sqlite_ledger
    _tampered(ledger, sql)
    for command in commands:
        extra = ["--json"] if command == "export" else []
        assert main(["ledger", command, ledger, *extra]) in (1, 2)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


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


def test_a_directory_is_named_as_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "verify", str(tmp_path)]) == 2
    assert "is a directory, not a ledger file" in capsys.readouterr().err
