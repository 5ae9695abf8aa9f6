"""Recordings several test modules read (never write: tests that edit one copy it first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main

TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"


@pytest.fixture(scope="session", autouse=True)
def _twin_compiled(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The twin's kernels compiled (or loaded from numba's cache) before any test: a build
    on a cold cache says so on stderr (:func:`bench.runner.uncached_kernels`), which the
    tests that read a command's stderr line by line must not find in theirs."""
    out = tmp_path_factory.mktemp("compiled") / "twin.h5"
    assert main(["run", str(TWO_NODES), "--mode", "twin", "--out", str(out), "--quiet",
                 "--set", "run.duration_s=1", "--set", "market.kind=none"]) == 0


@pytest.fixture(scope="session")
def twin_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds of the two-node scenario in the twin alone: no device, so no measured
    (residual) signals, and no market."""
    out = tmp_path_factory.mktemp("twin_run") / "twin.h5"
    assert main(["run", str(TWO_NODES), "--mode", "twin", "--out", str(out), "--quiet",
                 "--set", "run.duration_s=2", "--set", "market.kind=none"]) == 0
    return out


@pytest.fixture(scope="session")
def islanded(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The quick run of lab islanded: a main recording and its variants."""
    out = tmp_path_factory.mktemp("lab") / "isl.h5"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDLOOP_SHARED_DATA", str(shared_data))
        assert main(["lab", "run", "islanded", "--quick", "--out", str(out), "--quiet"]) == 0
    return out
