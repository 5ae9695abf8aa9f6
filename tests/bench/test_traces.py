"""Reading traces and schedules: the shared recordings, and every way a file can be wrong."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from bench.csvio import write_columns
from bench.errors import RecordingError
from bench.traces import (
    beside,
    read_events,
    read_power_limit_w,
    read_trace,
    to_measured,
    write_events,
)
from twin.workload import COMPUTE, Schedule


def test_shared_recordings_read_by_column_name(shared_data):
    tr = read_trace(shared_data / "h100_power_calibration.csv.gz")
    assert tr.name == "h100_power_calibration"
    assert len(tr) == 17139
    assert tr["t_s"][0] == 0.0 and tr["power_w"].max() == pytest.approx(728.172)
    assert tr["energy_j"][-1] == pytest.approx(74697.008)
    assert tr["load"][0] == "idle" and tr["segment"][-1] == "cool_2"
    assert set(np.unique(tr["load"])) == {"idle", "compute", "memory", "light"}
    events = read_events(beside(tr.path, "events"))
    assert len(events) == 215 and events.load[1] == COMPUTE
    m = to_measured(tr, events)
    assert m.name == tr.name and m.clock_mhz is not None
    assert read_power_limit_w(tr.path) == 700.0
    assert read_power_limit_w(shared_data / "h100_power_fast.csv.gz") is None


def test_plain_and_gzip_read_the_same(shared_data, tmp_path):
    plain = tmp_path / "fast.csv"
    with gzip.open(shared_data / "h100_power_fast.csv.gz", "rb") as src, plain.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    a = read_trace(shared_data / "h100_power_fast.csv.gz")
    b = read_trace(plain)
    assert a.columns.keys() == b.columns.keys()
    for k in a.columns:
        np.testing.assert_array_equal(a[k], b[k])


HEADER = "t_s,segment,load,power_w,energy_j,temp_c\n"


@pytest.mark.parametrize(("text", "message"), [
    (HEADER + "0.0,a,idle,100,0,35\n0.01,a,idle,1O0,1,35\n",
     ":3: column 'power_w': '1O0' is not a finite number"),
    (HEADER + "0.0,a,idle,100,0,35\n0.01,a,idle,100,1\n", ":3: 5 fields, the header has 6"),
    (HEADER + "0.0,a,idle,100,0,35\n0.0,a,idle,100,1,35\n", ":3: column 't_s': 0 is not after"),
    (HEADER + "0.0,a,idle,nan,0,35\n", ":2: column 'power_w': 'nan' is not a finite number"),
    ("segment,load,power_w\na,idle,100\n", ":1: no column 't_s'"),
    ("t_s,power_w,power_w\n0,1,2\n", ":1: column 'power_w' appears twice"),
    (HEADER, "header only, no data rows"),
    ("", "empty file"),
])
def test_malformed_traces_name_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(RecordingError) as exc:
        read_trace(path)
    assert str(exc.value).startswith(str(path))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_corrupt_gzip_and_missing_files(tmp_path, shared_data):
    data = (shared_data / "h100_power_fast.csv.gz").read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordingError, match="cut.csv.gz: corrupt gzip stream"):
        read_trace(cut)
    with pytest.raises(RecordingError, match="no such trace file"):
        read_trace(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RecordingError, match="not a text CSV file"):
        read_trace(binary)


@pytest.mark.parametrize(("text", "message"), [
    ('[{"t_s": 0, "load": "compute", "seconds": 1}', ":1: not valid JSON"),
    ('{"t_s": 0}', "expected a JSON list of events, got dict"),
    ('[{"t_s": 0, "load": "comput", "seconds": 1}]',
     "entry 0: unknown load 'comput' (did you mean 'compute'?)"),
    ('[{"t_s": 0, "load": "idle", "seconds": -2}]', "entry 0: seconds must be >= 0"),
])
def test_malformed_events_are_named(tmp_path, text, message):
    path = tmp_path / "x.events.json"
    path.write_text(text)
    with pytest.raises(RecordingError) as exc:
        read_events(path)
    assert str(exc.value).startswith(str(path)) and message in str(exc.value)
    with pytest.raises(RecordingError, match="no such events file"):
        read_events(tmp_path / "none.events.json")


def test_meta_limit_is_validated(tmp_path):
    (tmp_path / "x.meta.json").write_text('{"enforced_power_limit_mw": "lots"}')
    with pytest.raises(RecordingError, match="enforced_power_limit_mw: expected a positive"):
        read_power_limit_w(tmp_path / "x.csv.gz")


def test_written_columns_and_events_read_back(tmp_path):
    t = np.arange(0, 1, 0.01)
    path = write_columns(tmp_path / "pred.csv", {"t_s": t, "power_w": 100 + t})
    tr = read_trace(path)
    np.testing.assert_allclose(tr["power_w"], 100 + t, rtol=1e-6)
    s = Schedule.from_entries([{"t_s": 0.5, "load": "compute", "seconds": 0.25, "mfu": 0.3}])
    back = read_events(write_events(s, tmp_path / "s.events.json"))
    assert back.to_entries() == s.to_entries()


def test_fit_columns_are_required(tmp_path):
    path = tmp_path / "nofit.csv"
    path.write_text("t_s,power_w\n0,1\n0.1,2\n")
    with pytest.raises(RecordingError, match="no column 'energy_j', which fitting"):
        to_measured(read_trace(path), Schedule.from_entries([]))
