"""A sweep's points share their random numbers (the scenario's seed), so they differ only in
the swept values; a seed that is fixed or swept is used as given (replicates)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.recording import open_run
from bench.sweep import check_points

SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"  # seed = 7
TWIN = ["run.mode=twin"]


def test_every_point_has_the_scenarios_seed(tmp_path: Path) -> None:
    pts = check_points(SCENARIO, ["north.battery.capacity_ah=100,140,200"], tmp_path, TWIN)
    assert [p.seed for p in pts] == [7, 7, 7]


def test_a_fixed_seed_is_every_points_and_a_swept_one_each_points_own(tmp_path: Path) -> None:
    fixed = check_points(SCENARIO, ["north.battery.capacity_ah=140,280"], tmp_path,
                         [*TWIN, "run.seed=3"])
    assert [p.seed for p in fixed] == [3, 3]
    replicates = check_points(SCENARIO, ["north.battery.capacity_ah=140,280", "run.seed=1,2"],
                              tmp_path, TWIN)
    assert [(p.values[0][1], p.seed) for p in replicates] == [("140", 1), ("140", 2),
                                                              ("280", 1), ("280", 2)]


@pytest.mark.slow
def test_points_see_the_same_clouds_and_arrivals(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    assert main(["sweep", str(SCENARIO), "--set", "north.battery.capacity_ah=140,280",
                 "--fix", "run.mode=twin", "--fix", "run.duration_s=1", "--workers", "1",
                 "--out", str(out), "--quiet"]) == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows] == ["7", "7"]
    runs = [open_run(out / f"point_{i:04d}.h5") for i in range(2)]
    try:
        for node, asset, name in (("north", "pv", "irradiance_w_m2"), ("south", "rack", "p_w")):
            a, b = (r.signal(node, asset, name) for r in runs)
            assert np.array_equal(a, b), (node, asset, name)
        # the swept value did change the point
        assert not np.array_equal(*(r.signal("north", "battery", "capacity_wh") for r in runs))
    finally:
        for r in runs:
            r.close()
