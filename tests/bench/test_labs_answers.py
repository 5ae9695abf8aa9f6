"""Answers files as students save them: encodings, values in TOML terms, run names.

Each bad file is one line naming what is wrong in the student's own terms (what they wrote,
the encoding to save in, the run they meant); no lab run is needed, so these stay fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.labs import LabError
from bench.labs.grading import Question, read_answers

QUESTIONS = {"saving_total": Question("saving", "currency units"),
             "broken": Question("faults", names=True)}
RUNS = ("meter_timeout", "meter_frozen", "battery_drop_writes", "battery_error",
        "rack_timeout")


def _refused(path: Path, data: bytes, runs: tuple[str, ...] = ()) -> str:
    path.write_bytes(data)
    with pytest.raises(LabError) as info:
        read_answers(path, QUESTIONS, runs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_a_byte_order_mark_is_read_and_other_encodings_are_named(tmp_path: Path) -> None:
    """Notepad's "UTF-8" starts with a BOM: read.  Its "Unicode" (UTF-16) and Latin-1 are
    refused with the encoding to save in, not a codec's or TOML's message."""
    path = tmp_path / "answers.toml"
    path.write_bytes(b"\xef\xbb\xbfsaving_total = 2.36\r\nbroken = []\r\n")
    assert read_answers(path, QUESTIONS) == {"saving_total": 2.36, "broken": []}
    utf16 = "saving_total = 2.36\n".encode("utf-16")  # with its BOM, as Notepad saves it
    assert _refused(path, utf16) == ("not UTF-8 text (it looks like UTF-16, Notepad's "
                                     "'Unicode'); save it as UTF-8")
    assert "UTF-16" in _refused(path, "saving_total = 2.36\n".encode("utf-16-le"))
    assert _refused(path, "saving_total = 2.36\n# Résumé\n".encode("latin-1")) == \
        "not UTF-8 text (byte 0xe9 on line 2); save it as UTF-8"


@pytest.mark.parametrize(("written", "quoted"), [
    ("true", "true"),
    ("1e400", "1e400"),
    ("-1e400  # a big loss", "-1e400"),
    ("nan", "nan"),
    ('"2.36 EUR"', '"2.36 EUR"'),
    ("{ x = true }", "{ x = true }"),
    ("[2.36]", "[2.36]"),
    ("1979-05-27", "1979-05-27"),
])
def test_a_wrong_type_quotes_what_the_student_wrote(tmp_path: Path, written: str,
                                                    quoted: str) -> None:
    message = _refused(tmp_path / "a.toml", f"saving_total = {written}\n".encode())
    assert message == f"saving_total: expected a number in currency units, got {quoted}"


def test_a_value_not_written_on_its_key_line_is_put_in_toml_terms(tmp_path: Path) -> None:
    """A table, or a list spread over lines, is not on its key's line: said in TOML
    terms."""
    message = _refused(tmp_path / "a.toml", b"[saving_total]\nx = 1\n")
    assert message == "saving_total: expected a number in currency units, got a table"
    message = _refused(tmp_path / "a.toml", b"broken = [\n  true,\n]\n")
    assert message == "broken: expected a list of names, got [true]"


@pytest.mark.parametrize(("name", "hint"), [
    ("meter_frozn", " (did you mean 'meter_frozen'?)"),
    ("faults.meter_frozen", " (did you mean 'meter_frozen'?)"),
    ("Battery_Drop_Writes", " (did you mean 'battery_drop_writes'?)"),
    ("clean", ""),
])
def test_a_name_that_is_not_a_run_of_the_lab_is_refused(tmp_path: Path, name: str,
                                                       hint: str) -> None:
    """As a misspelt key is: one line, a suggestion and the runs (it scored 0 silently)."""
    data = f'broken = ["battery_error", "{name}"]\n'.encode()
    assert _refused(tmp_path / "a.toml", data, RUNS) == (
        f"broken: '{name}' is not a run of this lab{hint}; runs: {', '.join(RUNS)}")
    path = tmp_path / "a.toml"
    path.write_text('broken = ["battery_error", "meter_frozen"]\n')
    assert read_answers(path, QUESTIONS, RUNS)["broken"] == ["battery_error", "meter_frozen"]
