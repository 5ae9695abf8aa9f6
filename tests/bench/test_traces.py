"""Reading traces and schedules: the shared recordings, and every way a file can be wrong."""

from __future__ import annotations

import gzip
import shutil
import warnings

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
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about in the shared recordings
        tr = read_trace(shared_data / "h100_power_calibration.csv.gz")
        events = read_events(beside(tr.path, "events"))
        m = to_measured(tr, events)
    assert tr.name == "h100_power_calibration"
    assert len(tr) == 17139
    assert tr["t_s"][0] == 0.0 and tr["power_w"].max() == pytest.approx(728.172)
    assert tr["energy_j"][-1] == pytest.approx(74697.008)
    assert tr["load"][0] == "idle" and tr["segment"][-1] == "cool_2"
    assert set(np.unique(tr["load"])) == {"idle", "compute", "memory", "light"}
    assert len(events) == 215 and events.load[1] == COMPUTE
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
    (HEADER + "0.0,a,idle,100,0,35\n0.01,a,idle,100,1O0,35\n",
     ":3: column 'energy_j': '1O0' is not a finite number"),
    (HEADER + "0.0,a,idle,100,0,35\n0.01,a,idle,100,1\n0.02,a,idle,100,1,35\n",
     ":3: 5 fields, the header has 6"),
    (HEADER + "0.0,a,idle,100,0,35\n0.01,a,idle,100,1,35,7\n", ":3: 7 fields, the header has 6"),
    (HEADER + "0.0,a,idle,100,,35\n", ":2: column 'energy_j': '' is not a finite number"),
    (HEADER + "0.0,a,idle,100,0,\n", ":2: column 'temp_c': '' is not a finite number"),
    (HEADER + "0.0,a,idle,100,0,35\n0.0,a,idle,100,1,35\n", ":3: column 't_s': 0 is not after"),
    (HEADER + "0.0,a,idle,100,0,nan\n", ":2: column 'temp_c': 'nan' is not a finite number"),
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
    cut.write_bytes(data[:30])  # not one whole line before the cut
    with pytest.raises(RecordingError, match="cut.csv.gz: corrupt gzip stream: Compressed "
                       "file ended before the end-of-stream marker"):
        read_trace(cut)
    garbled = tmp_path / "garbled.csv.gz"
    garbled.write_bytes(data[:20] + bytes(b ^ 0x5A for b in data[20:2000]) + data[2000:])
    with pytest.raises(RecordingError, match="garbled.csv.gz: corrupt gzip stream"):
        read_trace(garbled)
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


# --- columns gridloop does not read, and optional columns with holes (finding 8) ---

def _trace_text(header: list[str], rows: list[list[object]]) -> str:
    return ",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)


def _nvml_rows(n: int = 60, dt: float = 0.01, every: int = 10) -> tuple[list[str], list[list]]:
    """A small NVML-like trace: the energy counter steps every ``every`` samples."""
    header = ["t_s", "load", "power_inst_w", "energy_j", "temp_c", "sm_clock_mhz"]
    rows = [[f"{i * dt:.2f}", "idle", 130.0, 13.0 * (i // every), 35, 1980] for i in range(n)]
    return header, rows


def _schedule(seconds: float = 0.6) -> Schedule:
    return Schedule.from_entries([{"t_s": 0.0, "load": "idle", "seconds": seconds}])


def test_columns_gridloop_does_not_read_are_not_checked(tmp_path):
    header = ["gpu_uuid", "t_s", "mem_clock_mhz", "energy_j", "temp_c", "util_pct", "power_w"]
    rows = [["GPU-3f2a", 0.0, 1593, 0, 35, 0, 120.5],
            ["GPU-3f2a", 0.01, "", 1, 35, "", 121.5],
            ["GPU-3f2a", 0.02, "", 2, 36, 7, 122.5]]
    path = tmp_path / "extra.csv"
    path.write_text(_trace_text(header, rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tr = read_trace(path)
    assert list(tr["gpu_uuid"]) == ["GPU-3f2a"] * 3  # kept, as text
    assert list(tr["util_pct"]) == ["0", "", "7"] and list(tr["mem_clock_mhz"])[1] == ""
    np.testing.assert_array_equal(tr["power_w"], [120.5, 121.5, 122.5])  # all numbers
    np.testing.assert_array_equal(tr["energy_j"], [0, 1, 2])


@pytest.mark.parametrize(("column", "cell"), [("power_inst_w", ""), ("power_inst_w", "nan"),
                                              ("sm_clock_mhz", "n/a")])
def test_a_hole_in_an_optional_column_leaves_the_column_out(tmp_path, column, cell):
    header, rows = _nvml_rows()
    rows[5][header.index(column)] = cell
    rows[9][header.index(column)] = ""
    path = tmp_path / "holes.csv"
    path.write_text(_trace_text(header, rows))
    with pytest.warns(UserWarning) as got:
        tr = read_trace(path)
    assert len(got) == 1
    message = str(got[0].message)
    assert message == (f"{path}:7: column '{column}': {cell!r} is not a finite number (nor are "
                       "1 more cells): the column is left out, as if the trace had none")
    assert tr.get(column) is None and len(tr) == 60
    m = to_measured(tr, _schedule())
    assert (m.power_inst_w is None) == (column == "power_inst_w")
    assert (m.clock_mhz is None) == (column == "sm_clock_mhz")


# --- a crashed logger: partial last line, gzip cut off (finding 9) ---

@pytest.mark.parametrize("gz", [False, True])
def test_a_partial_last_line_is_dropped_with_a_warning(tmp_path, gz):
    text = HEADER + "0.0,a,idle,100,0,35\n0.01,a,idle,100,1,35\n0.02,a,id"
    path = tmp_path / ("partial.csv.gz" if gz else "partial.csv")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    with pytest.warns(UserWarning) as got:
        tr = read_trace(path)
    assert [str(w.message) for w in got] == [
        f"{path}:4: the last line has 3 fields, the header has 6 (a logger cut off "
        "mid-line?): dropped"]
    np.testing.assert_array_equal(tr["t_s"], [0.0, 0.01])


def test_a_gzip_stream_cut_off_keeps_the_rows_before_the_cut(shared_data, tmp_path):
    src = shared_data / "h100_power_fast.csv.gz"
    data = src.read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning) as got:
        tr = read_trace(cut)
    full = read_trace(src)
    n = len(tr)
    assert 0.3 * len(full) < n < len(full)
    for k in full.columns:
        np.testing.assert_array_equal(tr[k], full[k][:n])
    assert [str(w.message) for w in got] == [
        f"{cut}: gzip stream cut off (Compressed file ended before the end-of-stream marker "
        f"was reached): kept the {n} rows before the cut, up to t_s = {tr['t_s'][-1]:.10g} "
        f"(line {n + 1})"]
    # concatenated members read as one stream, as gzip.open reads them
    two = tmp_path / "two.csv.gz"
    two.write_bytes(gzip.compress(HEADER.encode()) + gzip.compress(b"0,a,idle,1,0,35\n"))
    assert len(read_trace(two)) == 1


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "0.0,a,idle,100,0,35\n").encode())
    assert list(read_trace(path).columns) == HEADER.strip().split(",")
    gz = tmp_path / "bom.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_trace(gz)["t_s"][0] == 0.0


# --- the energy counter: stuck, reset (findings 4 and 10) ---

def test_an_energy_counter_that_never_advances_is_refused(tmp_path):
    header, rows = _nvml_rows()
    for r in rows:
        r[header.index("energy_j")] = 0
    path = tmp_path / "stuck.csv"
    path.write_text(_trace_text(header, rows))
    with pytest.raises(RecordingError) as exc:
        to_measured(read_trace(path), _schedule())
    assert str(exc.value).startswith(f"{path}: energy_j never advances over its 60 samples")
    assert "\n" not in str(exc.value)


def test_an_energy_counter_reset_names_line_time_and_drop(tmp_path):
    header, rows = _nvml_rows()
    e = header.index("energy_j")
    for r in rows[30:]:
        r[e] = r[e] - 40.0  # the counter reads 26 J at 0.29 s, -1 J at 0.30 s
    path = tmp_path / "reset.csv"
    path.write_text(_trace_text(header, rows))
    with pytest.raises(RecordingError) as exc:
        to_measured(read_trace(path), _schedule())
    assert str(exc.value) == (f"{path}:32: column 'energy_j' goes back by 27 J at t_s = 0.3 "
                              "(from 26 to -1 J): a counter reset (a driver reload?); split "
                              "the recording there")


# --- smaller items (finding 17) ---

def test_json_lines_events_get_a_hint(tmp_path):
    path = tmp_path / "lines.events.json"
    path.write_text('{"t_s": 0, "load": "idle", "seconds": 1}\n'
                    '{"t_s": 1, "load": "compute", "seconds": 1}\n')
    with pytest.raises(RecordingError) as exc:
        read_events(path)
    assert str(exc.value) == (f"{path}:2: not valid JSON: Extra data (column 1): this is JSON "
                              "lines (one object per line), but an events file holds one JSON "
                              'list of entries, [{"t_s": ..., "load": ..., "seconds": ...}, '
                              "...]")
    one = tmp_path / "one.events.json"
    one.write_text('{"t_s": 0, "load": "idle", "seconds": 1}\n')
    with pytest.raises(RecordingError, match=r"got dict \(an events file holds one JSON list"):
        read_events(one)


def test_t_s_in_milliseconds_is_refused_and_a_slow_logger_is_not(tmp_path):
    header, rows = _nvml_rows()
    for r in rows:
        r[0] = f"{float(r[0]) * 1000:g}"
    path = tmp_path / "ms.csv"
    path.write_text(_trace_text(header, rows))
    with pytest.raises(RecordingError) as exc:
        to_measured(read_trace(path), _schedule())
    assert str(exc.value) == (
        f"{path}: t_s spans 590 with samples 10 apart, where its schedule spans 0.6 s: t_s "
        "must be in seconds (is it in milliseconds?)")
    # one sample a second (and its jitter), or one every 2 s, is a log in seconds
    for dt, n in ((1.0, 30), (2.0, 30)):
        header, rows = _nvml_rows(n=n, dt=dt, every=1)
        rows[3][0] = f"{3 * dt + 0.02:.2f}"
        path.write_text(_trace_text(header, rows))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            to_measured(read_trace(path), _schedule(n * dt))
