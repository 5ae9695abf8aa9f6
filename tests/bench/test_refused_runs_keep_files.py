"""A run refused before it starts replaces nothing: the previous run's recording and its
default ledger (``RUN.ledger.db``, its keys) stay byte for byte, and a refused ``--out`` or
``--json`` leaves no stray ledger or keys beside it; a run that does replace them says so in
one line naming both."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bench.cli import main

TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"
# a twin run of 3 market intervals (2 s each) of the two-node scenario
RUN = ["--mode", "twin", "--quiet", "--set", "run.duration_s=6"]


def _files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256 of its bytes)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _verify(ledger: Path, capsys: pytest.CaptureFixture) -> str:
    assert main(["ledger", "verify", str(ledger)]) == 0
    return capsys.readouterr().out.strip()


@pytest.fixture
def previous(tmp_path: Path, capsys: pytest.CaptureFixture) -> tuple[Path, str]:
    """A finished run at ``tmp_path/keep.h5`` with its ledger (3 blocks), and what ``ledger
    verify`` says of it."""
    out = tmp_path / "keep.h5"
    assert main(["run", str(TWO_NODES), "--out", str(out), *RUN]) == 0
    capsys.readouterr()
    said = _verify(tmp_path / "keep.ledger.db", capsys)
    assert ": ok: 3 blocks, " in said, said
    return out, said


def test_a_run_refused_for_its_key_file_keeps_the_previous_recording_and_ledger(
        previous: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, said = previous
    key = tmp_path / "keep.ledger.keys" / "north.key"
    key.chmod(0o644)
    before = _files(tmp_path)
    status = main(["run", str(TWO_NODES), "--out", str(out), *RUN,
                   "--json", str(tmp_path / "keep.json")])
    err = capsys.readouterr().err.splitlines()
    assert status == 2
    assert err[-1] == (f"gridloop: error: {key} is readable by group or others (mode 0644); "
                       f"run: chmod 600 {key}")
    assert not any(line.startswith("gridloop: replacing") for line in err)
    after = _files(tmp_path)
    assert after.pop("keep.json")  # the refusal's own result, and nothing else new
    assert after == before  # the recording, the ledger and its keys byte for byte
    assert _verify(tmp_path / "keep.ledger.db", capsys) == said
    # with the key put right, the next run replaces both, and says so in one line
    key.chmod(0o600)
    assert main(["run", str(TWO_NODES), "--out", str(out), *RUN]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("gridloop: replacing")] == [
        f"gridloop: replacing {out} (a recording of two_nodes, 120 ticks) and its ledger "
        f"{tmp_path / 'keep.ledger.db'} (3 blocks, {said.split(' blocks, ')[1].split(' ')[0]}"
        " records in blocks)"]
    assert _verify(tmp_path / "keep.ledger.db", capsys).startswith(
        f"{tmp_path / 'keep.ledger.db'}: ok: 3 blocks, ")
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".previous")]


def test_a_json_path_whose_folder_cannot_be_made_is_refused_before_the_run(
        previous: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """(A folder that is not there is made, as --out's is: tests/bench/test_ci_json.py.)"""
    out, said = previous
    (tmp_path / "afile").write_text("a file, not a folder")
    before = _files(tmp_path)
    json_out = tmp_path / "afile" / "x.json"
    status = main(["run", str(TWO_NODES), "--out", str(out), *RUN, "--json", str(json_out)])
    captured = capsys.readouterr()
    assert status == 2
    # one line, before the run: no run line, no warning, no summary
    assert captured.err.splitlines() == [
        f"gridloop: error: --json {json_out}: cannot make its folder (file exists)"]
    assert captured.out == ""
    assert _files(tmp_path) == before
    assert _verify(tmp_path / "keep.ledger.db", capsys) == said


def test_out_naming_a_folder_is_refused_without_making_a_ledger_beside_it(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    status = main(["run", str(TWO_NODES), "--out", f"{folder}{os.sep}", *RUN])
    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        f"gridloop: error: {folder}: is a directory; name the recording's file (such as "
        f"{folder / 'run.h5'})"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert list(folder.iterdir()) == []
