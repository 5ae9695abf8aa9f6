"""``gridloop lab run --help`` says what ``--quick`` shortens, not a wall time that depends on
the machine and the load (it said "under a minute"; gpu_smoothing --quick took 201 s on a busy
2-core machine), and what it says holds for every lab: each one's ``[quick]`` runs fewer
simulated seconds than its scenario, and still writes every variant."""

from __future__ import annotations

import re
import tomllib

import pytest

from bench.cli import main
from bench.labs import labs


def test_quick_help_names_what_it_shortens_and_no_wall_time(
        capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["lab", "run", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    quick = text[text.index("--quick"):text.index("--out RUN.h5 main")]
    assert "shorter simulated duration" in quick and "[quick]" in quick
    assert "every recording the lab compares is still written" in quick
    assert not re.search(r"\bminute|\d+ ?s\b|seconds", quick), quick


@pytest.mark.parametrize("name", sorted(labs()))
def test_every_labs_quick_variant_runs_fewer_simulated_seconds(name: str) -> None:
    lab = labs()[name]
    full = tomllib.loads(lab.scenario.read_text())["run"]["duration_s"]
    quick = [float(s.partition("=")[2]) for s in lab.quick.set
             if s.partition("=")[0].strip() == "run.duration_s"]
    assert quick and quick[-1] < full, (name, lab.quick.set, full)
