"""The example in docs/ledger.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def test_docs_example_runs(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (repo / "docs" / "ledger.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/ledger.md", "exec"), {})
    assert (tmp_path / "run.ledger.db").is_file()
    assert (tmp_path / "run.keys" / "pv.key").stat().st_mode & 0o077 == 0
