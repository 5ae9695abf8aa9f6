"""The live view's data layer and spectrum: incremental SWMR reads, assets, the step rhythm."""

from __future__ import annotations

import csv
import gzip
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bench.recorder import Column, Layout, Recorder
from bench.recording import open_run
from bench.view.data import Follower, Series, assets
from bench.view.spectrum import rolling_psd, step_frequency
from tests.bench.view_sample import h100_training_trace, write_sample

REPO = Path(__file__).resolve().parents[2]


def test_series_grows_without_invalidating_earlier_views() -> None:
    s = Series(capacity=4)
    s.extend(np.arange(3.0))
    early = s.values
    s.extend(np.arange(3.0, 100.0))
    np.testing.assert_array_equal(s.values, np.arange(100.0))
    np.testing.assert_array_equal(early, [0.0, 1.0, 2.0])


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    path = tmp_path_factory.mktemp("view") / "sample.h5"
    return path, write_sample(path, h100_training_trace(shared_data), duration_s=45.0)


def test_assets_carry_kinds_tolerances_and_residuals(sample) -> None:
    path, _ = sample
    with open_run(path) as run:
        nodes = assets(run)
    north = {a.name: a for a in nodes["north"]}
    assert {a: north[a].kind for a in north} == {
        "battery": "battery", "inverter": "inverter", "meter": "meter", "pv": "pv",
        "rack": "gpu_rack"}
    assert north["battery"].tolerance == {"voltage_v": 0.5}
    assert set(north["battery"].residuals) == {"p_w", "soc", "temp_cell_c", "voltage_v",
                                               "current_a"}
    assert north["pv"].residuals == {} and north["pv"].has_quality
    assert north["battery"].signals["voltage_v"] == "V"


def test_kind_is_guessed_from_signals_without_a_scenario(tmp_path: Path) -> None:
    layout = Layout([Column("time", "s"), Column("nodes/n/b/soc"), Column("nodes/n/r/power_cap_w")])
    with Recorder(tmp_path / "r.h5", layout, {"dt": 1.0}) as rec:
        rec.append([0.0, 0.5, 700.0])
    with open_run(tmp_path / "r.h5") as run:
        kinds = {a.name: a.kind for a in assets(run)["n"]}
    assert kinds == {"b": "battery", "r": "gpu_rack"}


def test_follower_reads_tracked_series_tables_and_values_at(sample) -> None:
    path, s = sample
    with open_run(path, follow=True) as run:
        data = Follower(run)
        soc = data.series("nodes/north/battery/soc")
        events = data.table("events")
        assert data.table("market/nothing") is None
        assert data.poll() == s.n
        assert data.poll() == 0
        np.testing.assert_array_equal(soc.values, run.signal("north", "battery", "soc"))
        assert [e["kind"] for e in events.values] == [b"catch_up", b"device_timeout"]
        # a series asked for after rows were read starts with all of them
        late = data.series("nodes/south/grid/freq_hz")
        np.testing.assert_array_equal(late.values, run.signal("south", "grid", "freq_hz"))
        # zero-order hold: the value at t holds until the next tick
        k = data.index_at(12.345)
        assert data.time.values[k] <= 12.345 < data.time.values[k + 1]
        row = data.values_at(k)
        assert row["nodes/south/battery/voltage_v"] == run.signal(
            "south", "battery", "voltage_v")[k]
        assert row["quality/north/battery"] == 0
        assert "time" not in row and "events" not in row and "market/trades" not in row
        assert data.index_at(-1.0) == 0


LAGGING_WRITER = textwrap.dedent("""
    import sys, h5py, numpy as np
    f = h5py.File(sys.argv[1], "w", libver="latest")
    f.attrs["format"] = "gridloop-run"; f.attrs["format_version"] = 1; f.attrs["dt"] = 1.0
    kw = dict(shape=(0,), maxshape=(None,), chunks=(64,), dtype="f8")
    t = f.create_dataset("time", **kw)
    p = f.create_dataset("nodes/n/rack/p_w", **kw)
    f.swmr_mode = True
    # /time is ahead of the rack's power: what a reader sees between two resizes
    t.resize((20,)); t[:] = np.arange(20.0)
    p.resize((10,)); p[:] = 100 + np.arange(10.0)
    f.flush()
    print("half", flush=True)
    sys.stdin.readline()
    p.resize((20,)); p[:] = 100 + np.arange(20.0)
    f.flush()
    print("full", flush=True)
    sys.stdin.readline()
    f.close()
""")


def test_follower_advances_only_as_far_as_every_tracked_dataset(tmp_path: Path) -> None:
    path = tmp_path / "lag.h5"
    proc = subprocess.Popen([sys.executable, "-c", LAGGING_WRITER, str(path)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "half"
        with open_run(path, follow=True) as run:
            data = Follower(run)
            power = data.series("nodes/n/rack/p_w")
            assert data.poll() == 10
            np.testing.assert_array_equal(power.values, 100 + np.arange(10.0))
            assert data.poll() == 0
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "full"
            deadline = time.monotonic() + 5
            while data.n < 20 and time.monotonic() < deadline:
                data.poll()
            np.testing.assert_array_equal(power.values, 100 + np.arange(20.0))
            np.testing.assert_array_equal(data.time.values, np.arange(20.0))
        proc.stdin.write("end\n")
        proc.stdin.flush()
    finally:
        proc.wait(10)


def _calibration_trace(shared_data: Path, segment: str) -> np.ndarray:
    with gzip.open(shared_data / "h100_power_calibration.csv.gz", "rt") as fh:
        return np.array([float(r["power_inst_w"]) for r in csv.DictReader(fh)
                         if r["segment"] == segment])


@pytest.mark.parametrize("segment, period_s", [("train_a", 2.0), ("train_b", 0.5)])
def test_step_frequency_of_measured_h100_training_rhythms(shared_data: Path, segment: str,
                                                          period_s: float) -> None:
    # train_a: 1.4 s compute + 0.6 s memory; its 1 Hz harmonic is as tall as the 0.5 Hz
    # fundamental, so the highest peak alone would report half the step
    p = _calibration_trace(shared_data, segment)[1000:]  # past the warm-up
    window_s = 30.0
    f, psd = rolling_psd(p, 0.01, window_s)
    assert step_frequency(f, psd, window_s) == pytest.approx(1.0 / period_s, rel=0.03)


@pytest.mark.parametrize("period_s, duty", [(0.2, 0.5), (5.0, 0.3), (1.0, 0.5)])
def test_step_frequency_is_not_fooled_by_odd_or_even_harmonics(period_s: float,
                                                               duty: float) -> None:
    t = np.arange(0, 60, 0.02)
    p = np.where((t % period_s) < duty * period_s, 700.0, 150.0)
    p += np.random.default_rng(0).normal(0, 20, len(t))
    p[100:120] = np.nan  # missed readings
    f, psd = rolling_psd(p, 0.02, 40.0)
    assert step_frequency(f, psd, 40.0) == pytest.approx(1.0 / period_s, rel=0.03)


@pytest.mark.parametrize("seed", range(10))
def test_no_step_is_named_in_a_load_without_rhythm(seed: int) -> None:
    """Broadband (an inference rack's irregular load) and drifting power have no step: the
    label must not name the slowest candidate or a chance bump."""
    rng = np.random.default_rng(seed)
    for p in (600.0 + 50.0 * rng.normal(size=3000),
              600.0 + np.cumsum(rng.normal(size=3000))):
        f, psd = rolling_psd(p, 0.02, 40.0)
        assert np.isnan(step_frequency(f, psd, 40.0))


def test_a_rhythm_at_the_nyquist_frequency_is_not_named() -> None:
    """Sampled at 1 s, a 2 s training step sits at Nyquist, where it cannot be told from a
    faster one aliased."""
    t = np.arange(0, 600, 1.0)
    p = np.where((t % 2.0) < 1.0, 700.0, 150.0)
    f, psd = rolling_psd(p, 1.0, 300.0)
    assert np.isnan(step_frequency(f, psd, 300.0))


def test_spectrum_of_too_short_a_history_is_empty() -> None:
    f, psd = rolling_psd(np.ones(5), 0.02)
    assert len(f) == 0 and np.isnan(step_frequency(f, psd, 40.0))


def test_sample_module_runs_as_a_script(tmp_path: Path, shared_data: Path) -> None:
    """docs/view.md makes its screenshot from this script."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "tests.bench.view_sample", str(tmp_path / "s.h5"),
                    str(shared_data), "3"], check=True, env=env, cwd=REPO)
    with open_run(tmp_path / "s.h5") as run:
        assert len(run) == 150 and run.complete


def test_a_failed_write_shows_in_the_health_codes_and_the_readout() -> None:
    """Quality flags carry a failed setpoint write in bit 2 (firmware_bridge.device.Quality):
    the health image shows it where the read was fine, the read-out says both."""
    from bench.view.data import health_code, quality_text
    from firmware_bridge.device import Quality

    q = np.array([0, 1, 2, 3, 4, 5, 6, 7, np.nan])
    assert health_code(q).tolist() == [0, 1, 2, 3, 4, 1, 2, 3, 0]
    assert int(Quality.WRITE_FAILED) == 4
    assert quality_text(4.0) == "ok, write failed"
    assert quality_text(6.0) == "timeout, write failed"
    assert quality_text(2.0) == "timeout"
