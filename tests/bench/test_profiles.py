"""Profile options of a scenario: a value of the wrong type or out of range is named before
the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.build import build_plan
from bench.errors import ScenarioError
from bench.scenario import load

SCENARIO = """
[run]
name = "w"
dt_s = 0.1
duration_s = 2
mode = "twin"

[profiles.job]
kind = "workload"
generator = "inference"
options = { arrival_rate_hz = 2.0 }

[profiles.sun]
kind = "irradiance"
generator = "clear_sky"

[nodes.a.rack]
kind = "gpu_rack"
profile = "job"

[nodes.a.pv]
kind = "pv"
profile = "sun"

[nodes.a.inverter]
kind = "inverter"
source = "pv"

[nodes.a.grid]
kind = "grid"
"""


@pytest.mark.parametrize(("override", "message"), [
    ("profiles.job.options.max_batch=8.5",
     "profiles.job.options.max_batch: must be a whole number, got 8.5"),
    ("profiles.job.options.arrival_rate_hz='2'",
     "profiles.job.options.arrival_rate_hz: must be a number, got '2'"),
    ("profiles.job.options.spread_s='x'",
     "profiles.job.options.spread_s: must be a number, got 'x'"),
    ("profiles.sun.options.latitude_deg='48'",
     "profiles.sun.options.latitude_deg: must be a number, got '48'"),
    ("profiles.sun.options.day_of_year=true",
     "profiles.sun.options.day_of_year: must be a whole number, got True"),
    ("profiles.sun.options.latitude_deg=480", "latitude_deg must be in [-90, 90], got 480"),
    ("profiles.sun.options.day_of_year=400", "day_of_year must be in [1, 366], got 400"),
    ("profiles.sun.options.start_hour=30", "start_hour must be in [0, 24], got 30"),
    ("profiles.sun.options.scale=-1", "scale must be >= 0, got -1"),
])
def test_an_option_of_the_wrong_type_or_range_is_named(override: str, message: str,
                                              tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text(SCENARIO)
    build_plan(load(path))  # the scenario as written builds
    with pytest.raises(ScenarioError) as exc:
        build_plan(load(path, [override]))
    assert message in str(exc.value)


def test_a_run_shorter_than_its_jobs_start_idles_the_rack(tmp_path: Path) -> None:
    """A lab's scenario run for less than its training job's start_s: the job's stop is
    taken after its start, and the rack idles (it was 'stop_s is before start_s', an
    option the user never set)."""
    from bench.profiles import build_profile

    path = tmp_path / "w.toml"
    path.write_text(SCENARIO.replace('generator = "inference"\noptions = { arrival_rate_hz = 2.0 }',
                                     'generator = "training"\n'
                                     'options = { step_s = 1000.0, compute_fraction = 1.0, '
                                     'start_s = 5.0 }'))
    schedule = build_profile(load(path), "job")
    assert len(schedule.t_s) == 0
    longer = build_profile(load(path, ["run.duration_s=10"]), "job")
    assert longer.t_s[0] == 5.0
