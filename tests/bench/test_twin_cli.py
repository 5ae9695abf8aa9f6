"""``gridloop twin``: one model on a CSV profile, and parameter sets imported from PyBaMM and
the CEC library, as a user runs them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from bench.build import shipped
from bench.cli import main
from bench.csvio import read_columns
from twin import params
from twin.battery import params_from_set
from twin.battery import simulate_profile as battery_profile
from twin.inverter import InverterParams
from twin.inverter import simulate_profile as inverter_profile


def _csv(path: Path, columns: dict[str, np.ndarray]) -> Path:
    names = list(columns)
    rows = np.column_stack([columns[n] for n in names])
    path.write_text(",".join(names) + "\n"
                    + "\n".join(",".join(repr(float(v)) for v in r) for r in rows) + "\n")
    return path


def test_battery_on_a_current_profile_counts_its_charge(tmp_path: Path, capsys) -> None:
    t = np.arange(0.0, 600.0, 1.0)
    current = np.where((t // 60) % 2 == 0, 20.0, -5.0)  # A, positive = discharge
    src = _csv(tmp_path / "in.csv", {"t_s": t, "current_a": current})
    out = tmp_path / "out.csv"
    assert main(["twin", "simulate", "battery", "--params", "battery_ecm_example",
                 "--input", str(src), "--out", str(out)]) == 0
    assert f"wrote {out}: 600 rows" in capsys.readouterr().out
    got = read_columns(out)
    assert {"t_s", "voltage_v", "soc", "current_a", "temp_cell_c"} <= set(got)
    np.testing.assert_allclose(got["current_a"], current)
    # the SOC falls by the charge drawn (discharge counted whole, charge times eta)
    pset = params.load(shipped("battery_ecm_example"))
    pack, init = params_from_set(pset)
    eta = pack.cell.coulombic_efficiency
    drawn_as = np.sum(np.where(current > 0, current, eta * current)[:-1]) * 1.0
    assert got["soc"][-1] == pytest.approx(init.soc - drawn_as / (pack.capacity_ah * 3600),
                                           abs=1e-6)
    # the file is the model's own output, to the CSV's precision
    direct = battery_profile(pset, t, {"current_a": current})
    for name in ("voltage_v", "temp_cell_c"):
        np.testing.assert_allclose(got[name], direct[name], rtol=1e-9)


def test_battery_on_a_power_profile_delivers_it(tmp_path: Path) -> None:
    t = np.arange(0.0, 120.0, 0.5)
    power = np.full_like(t, 400.0)  # W drawn
    src = _csv(tmp_path / "in.csv", {"t_s": t, "power_w": power})
    out = tmp_path / "out.csv"
    assert main(["twin", "simulate", "battery", "--params", "battery_ecm_example",
                 "--input", str(src), "--out", str(out), "--dt", "0.05"]) == 0
    got = read_columns(out)
    assert len(got["t_s"]) == len(np.arange(0.0, t[-1] + 0.025, 0.05))
    np.testing.assert_allclose(got["voltage_v"] * got["current_a"], 400.0, rtol=1e-9)


def test_inverter_on_a_dc_profile_is_the_sandia_curve(tmp_path: Path) -> None:
    t = np.arange(0.0, 30.0, 0.1)
    p_dc = np.linspace(0.0, 70_000.0, t.size)
    v_dc = np.full_like(t, 700.0)
    src = _csv(tmp_path / "in.csv", {"t_s": t, "p_dc_w": p_dc, "v_dc_v": v_dc})
    out = tmp_path / "out.csv"
    assert main(["twin", "simulate", "inverter", "--params", "inverter_pv_abb_trio_60",
                 "--input", str(src), "--out", str(out)]) == 0
    got = read_columns(out)
    direct = inverter_profile(params.load(shipped("inverter_pv_abb_trio_60")), t,
                              {"p_dc_w": p_dc, "v_dc_v": v_dc})
    np.testing.assert_allclose(got["p_ac_w"], direct["p_ac_w"], rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(got["efficiency"], direct["efficiency"], rtol=1e-9, atol=1e-9)
    rated = InverterParams.from_params(params.load(shipped("inverter_pv_abb_trio_60")))
    assert got["p_ac_w"].max() <= rated.p_rated_w * (1 + 1e-9)  # clipped at the rating


@pytest.mark.parametrize(("kind", "columns", "message"), [
    ("inverter", {"p_dc_w": [1.0, 2.0]}, "in.csv: inverter profile: input column 'v_dc_v' "
                                         "is missing"),
    ("battery", {"current_a": [1.0, 1.0], "power_w": [1.0, 1.0]},
     "in.csv: profile: give exactly one of current_a or power_w"),
])
def test_a_profile_the_model_cannot_take_names_its_file(tmp_path: Path, capsys, kind: str,
                                                        columns: dict, message: str) -> None:
    src = _csv(tmp_path / "in.csv", {"t_s": np.array([0.0, 1.0]),
                                     **{k: np.array(v) for k, v in columns.items()}})
    params_name = {"battery": "battery_ecm_example", "inverter": "inverter_pv_abb_trio_60"}
    assert main(["twin", "simulate", kind, "--params", params_name[kind], "--input", str(src),
                 "--out", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gridloop: error: {src.parent / message}"
    assert not (tmp_path / "out.csv").exists()


def test_imported_parameter_sets_run(tmp_path: Path, monkeypatch) -> None:
    """PyBaMM's ECM_Example and a CEC inverter (both test extras), imported by the CLI, then
    run by it."""
    monkeypatch.setenv("PYBAMM_DISABLE_TELEMETRY", "true")
    battery = tmp_path / "ecm.toml"
    assert main(["twin", "params", "import-pybamm", "ECM_Example", "--out", str(battery)]) == 0
    inverter = tmp_path / "cec.toml"
    assert main(["twin", "params", "import-cec", "ABB: TRIO-60.0-TL-OUTD-US-480 [480V]",
                 "--out", str(inverter)]) == 0
    assert params.load(battery).kind == "battery" and params.load(inverter).kind == "inverter"
    t = np.arange(0.0, 10.0, 1.0)
    src = _csv(tmp_path / "in.csv", {"t_s": t, "current_a": np.full_like(t, 30.0)})
    assert main(["twin", "simulate", "battery", "--params", str(battery), "--input", str(src),
                 "--out", str(tmp_path / "out.csv")]) == 0
    got = read_columns(tmp_path / "out.csv")
    assert np.all(np.diff(got["soc"]) < 0) and 3.0 < got["voltage_v"][-1] < 4.3


def _text_csv(path: Path, header: str, rows: list[str], encoding: str = "utf-8") -> Path:
    """A CSV as a user's tool writes it: decimal text (0.9, not 0.8999999999999999)."""
    path.write_text("\n".join([header, *rows]) + "\n", encoding=encoding)
    return path


def _held(times: list[str], start: str, dt: str) -> tuple[list[float], list[int]]:
    """The grid ``start + k dt`` up to the last time and, per grid time, the index of the
    sample held there: in exact decimal arithmetic."""
    from fractions import Fraction

    t = [Fraction(x) for x in times]
    step = Fraction(dt)
    grid = [Fraction(start) + k * step for k in range(int((t[-1] - t[0]) / step) + 1)]
    held = [max(i for i, x in enumerate(t) if x <= g) for g in grid]
    return [float(g) for g in grid], held


# (first time, input step, samples, --dt): the reported 0.3 grid; non-zero starts with
# steps of 0.05, 0.2 and 0.7, on the input's step, coarser and finer; Unix time
RESAMPLINGS = [("0", "0.3", 6, "0.3"), ("2.5", "0.05", 40, "0.05"),
               ("1.1", "0.1", 30, "0.2"), ("1.1", "0.7", 20, "0.7"),
               ("10.1", "0.1", 50, "0.7"), ("0.3", "0.2", 10, "0.05"),
               ("1700000000", "0.1", 50, "0.1"), ("1700000000.3", "0.1", 30, "0.3")]


@pytest.mark.parametrize(("start", "step", "n", "dt"), RESAMPLINGS)
def test_dt_holds_every_sample_at_its_own_time(tmp_path: Path, start: str, step: str, n: int,
                                               dt: str) -> None:
    from decimal import Decimal

    times = [str(Decimal(start) + k * Decimal(step)) for k in range(n)]
    src = _text_csv(tmp_path / "in.csv", "t_s,current_a",
                    [f"{t},{k % 7 * 10}" for k, t in enumerate(times)])  # A: which sample
    out = tmp_path / "out.csv"
    assert main(["twin", "simulate", "battery", "--params", "battery_lfp_rack",
                 "--input", str(src), "--out", str(out), "--dt", dt]) == 0
    got = read_columns(out)
    grid, held = _held(times, start, dt)
    np.testing.assert_allclose(got["t_s"], grid, rtol=0, atol=1e-3 * float(dt))
    np.testing.assert_array_equal(got["current_a"], [k % 7 * 10.0 for k in held])
    if dt == "0.3" and start == "0":  # the report: the 100 A at 0.9 s vanished
        src = _text_csv(tmp_path / "dis.csv", "t_s,current_a",
                        ["0,0", "0.3,0", "0.6,0", "0.9,100", "1.2,0", "1.5,0"])
        assert main(["twin", "simulate", "battery", "--params", "battery_lfp_rack",
                     "--input", str(src), "--out", str(out), "--dt", "0.3"]) == 0
        got = read_columns(out)
        assert got["t_s"].tolist() == [0.0, 0.3, 0.6, 0.9, 1.2, 1.5]
        assert got["current_a"].tolist() == [0.0, 0.0, 0.0, 100.0, 0.0, 0.0]


@pytest.mark.parametrize(("start", "step", "n", "dt"), [RESAMPLINGS[0], RESAMPLINGS[4],
                                                        RESAMPLINGS[6]])
def test_dt_resamples_an_inverter_profile_alike(tmp_path: Path, start: str, step: str, n: int,
                                                dt: str) -> None:
    from decimal import Decimal

    times = [str(Decimal(start) + k * Decimal(step)) for k in range(n)]
    p_dc = [1000.0 * (k % 5) for k in range(n)]
    src = _text_csv(tmp_path / "in.csv", "t_s,p_dc_w,v_dc_v",
                    [f"{t},{p},700" for t, p in zip(times, p_dc)])
    out = tmp_path / "out.csv"
    assert main(["twin", "simulate", "inverter", "--params", "inverter_pv_abb_trio_60",
                 "--input", str(src), "--out", str(out), "--dt", dt]) == 0
    got = read_columns(out)
    grid, held = _held(times, start, dt)
    t = np.asarray(grid)
    direct = inverter_profile(params.load(shipped("inverter_pv_abb_trio_60")), t,
                              {"p_dc_w": np.array([p_dc[k] for k in held]),
                               "v_dc_v": np.full(len(held), 700.0)})
    np.testing.assert_allclose(got["p_avail_w"], direct["p_avail_w"], rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize(("dt", "message"), [
    ("nan", "--dt must be a positive number of seconds, not nan"),
    ("inf", "--dt must be a positive number of seconds, not inf"),
    ("0", "--dt must be a positive number of seconds, not 0.0"),
    ("-1", "--dt must be a positive number of seconds, not -1.0"),
    ("1e-6", "--dt 1e-06 makes 86,400,000,000 steps of the profile's 86400 s; at most "
             "100,000,000"),
])
def test_a_dt_that_is_no_step_is_one_line(tmp_path: Path, capsys, dt: str, message: str
                                          ) -> None:
    src = _text_csv(tmp_path / "day.csv", "t_s,current_a", ["0,10", "86400,10"])
    out = tmp_path / "out.csv"
    assert main(["twin", "simulate", "battery", "--params", "battery_lfp_rack",
                 "--input", str(src), "--out", str(out), "--dt", dt]) == 2
    assert capsys.readouterr().err == f"gridloop: error: {message}\n"
    assert not out.exists()


def _linked(tmp_path: Path, target: Path, how: str) -> str:
    """Another name for ``target``: the same path, another spelling, a symbolic or a hard
    link."""
    if how == "same":
        return str(target)
    if how == "spelling":
        (tmp_path / "sub").mkdir(exist_ok=True)
        return str(tmp_path / "sub" / ".." / "." / target.name)
    link = tmp_path / f"{how}-{target.name}"
    (link.symlink_to if how == "symlink" else link.hardlink_to)(target)
    return str(link)


@pytest.mark.parametrize("how", ["same", "spelling", "symlink", "hardlink"])
@pytest.mark.parametrize("which", ["input", "params"])
def test_out_that_is_an_input_is_refused(tmp_path: Path, capsys, how: str, which: str) -> None:
    src = _csv(tmp_path / "dis2.csv", {"t_s": np.arange(0.0, 10.0),
                                       "current_a": np.full(10, 20.0)})
    pfile = tmp_path / "rack.toml"
    pfile.write_bytes(shipped("battery_lfp_rack").read_bytes())
    target = src if which == "input" else pfile
    before = target.read_bytes()
    out = _linked(tmp_path, target, how)
    assert main(["twin", "simulate", "battery", "--params", str(pfile), "--input", str(src),
                 "--out", out]) == 2
    what = "the profile" if which == "input" else "the parameter file"
    assert capsys.readouterr().err == (f"gridloop: error: --out {out}: that is an input "
                                       f"({what} {target}); give another file\n")
    assert target.read_bytes() == before


def test_a_shipped_set_named_with_its_suffix_is_found(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no battery_lfp_rack.toml here
    src = _csv(tmp_path / "in.csv", {"t_s": np.arange(0.0, 5.0), "current_a": np.ones(5)})
    assert main(["twin", "simulate", "battery", "--params", "battery_lfp_rack.toml",
                 "--input", str(src), "--out", "out.csv"]) == 0
    assert len(read_columns(tmp_path / "out.csv")["t_s"]) == 5


def test_errors_of_the_parameter_file_name_it_and_the_field(tmp_path: Path, capsys) -> None:
    battery = tmp_path / "p.toml"
    battery.write_text(shipped("battery_lfp_rack").read_text().replace(
        "capacity_ah = 280.0", "capacity_ah = -1.0"))
    inverter = tmp_path / "inv.toml"
    inverter.write_text(shipped("inverter_pv_abb_trio_60").read_text().replace(
        "s_max_va = 60000.0", "s_max_va = 0.0"))
    sandia = tmp_path / "sandia.toml"
    sandia.write_text(re.sub(r"(?m)^paco_w = .*$", "paco_w = -1.0",
                             shipped("inverter_pv_abb_trio_60").read_text()))
    dis = _csv(tmp_path / "dis.csv", {"t_s": np.arange(3.0), "current_a": np.ones(3)})
    inv = _csv(tmp_path / "inv.csv", {"t_s": np.arange(3.0), "p_dc_w": np.ones(3),
                                      "v_dc_v": np.full(3, 700.0)})
    for kind, pfile, src, message in [
            ("battery", battery, dis, f"{battery}: params.capacity_ah: must be positive"),
            ("inverter", inverter, inv, f"{inverter}: params.s_max_va: must be positive"),
            ("inverter", sandia, inv, f"{sandia}: params.sandia.paco_w: must be positive")]:
        assert main(["twin", "simulate", kind, "--params", str(pfile), "--input", str(src),
                     "--out", str(tmp_path / "out.csv")]) == 2
        assert capsys.readouterr().err == f"gridloop: error: {message}\n"
    assert not (tmp_path / "out.csv").exists()


def test_out_csv_gz_is_gzip_and_reads_back(tmp_path: Path) -> None:
    import gzip

    src = _text_csv(tmp_path / "in.csv", "t_s,current_a", ["0,52.6", "1,0.1", "2,3"])
    out = tmp_path / "out.csv.gz"
    assert main(["twin", "simulate", "battery", "--params", "battery_lfp_rack",
                 "--input", str(src), "--out", str(out)]) == 0
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    assert read_columns(out)["current_a"].tolist() == [52.6, 0.1, 3.0]
    # every digit that reads back, and no more: 52.6, not 52.600000000000001
    lines = gzip.decompress(out.read_bytes()).decode().splitlines()
    current = lines[0].split(",").index("current_a")
    assert [line.split(",")[current] for line in lines[1:]] == ["52.6", "0.1", "3.0"]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_directory_as_out_is_one_line_and_leaves_no_temporary_file(tmp_path: Path,
                                                                     capsys) -> None:
    from bench.csvio import CsvError, write_columns

    folder = tmp_path / "somedir"
    folder.mkdir()
    # the commands look first: nothing is imported or computed for a file that cannot be
    for argv in (["twin", "params", "import-pybamm", "ECM_Example", "--out", str(folder)],
                 ["twin", "params", "import-cec", "ABB: TRIO-60.0-TL-OUTD-US-480 [480V]",
                  "--out", str(folder)]):
        assert main(argv) == 2
        assert capsys.readouterr().err == (f"gridloop: error: --out {folder}: that is a "
                                           "directory; give a file name\n")
    assert main(["twin", "params", "import-cec", "x", "--out",
                 str(tmp_path / "none" / "x.toml")]) == 2
    assert capsys.readouterr().err == (f"gridloop: error: --out {tmp_path / 'none' / 'x.toml'}"
                                       f": {tmp_path / 'none'} is not a directory\n")
    # and the writer itself, when the rename fails, names the file and removes its .tmp
    with pytest.raises(CsvError, match=f"^{folder}: cannot write "):
        write_columns(folder, {"t_s": np.arange(3.0)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somedir"]


def test_written_columns_are_the_same_bytes_in_chunks_of_any_size(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """The writer formats rows a chunk at a time (a day's prediction held as strings took
    5.7 GB): any chunking gives the bytes of one chunk, plain and gzipped, and reads back."""
    import gzip

    from bench import csvio
    from bench.csvio import CsvError, write_columns

    rng = np.random.default_rng(5)
    n = 1003
    columns = {"t_s": np.arange(n) * 0.01, "power_w": rng.normal(300.0, 80.0, n),
               "current_a": np.round(rng.uniform(0, 60, n), 1), "flag": (np.arange(n) % 3) * 1.0}
    formats = {"power_w": "%.3f"}
    for name in ("out.csv", "out.csv.gz"):
        one = write_columns(tmp_path / f"one_{name}", columns, formats, chunk_rows=n)
        text = (gzip.decompress(one.read_bytes()) if name.endswith(".gz")
                else one.read_bytes()).decode()
        lines = text.split("\n")
        assert len(lines) == n + 2 and lines[0] == "t_s,power_w,current_a,flag"
        assert lines[-1] == "" and lines[1] == (
            f"0.0,{columns['power_w'][0]:.3f},{float(columns['current_a'][0])!r},0.0")
        for rows in (1, 7, 100, 1002, 5000):
            many = write_columns(tmp_path / f"many_{rows}_{name}", columns, formats,
                                 chunk_rows=rows)
            if name.endswith(".gz"):
                assert gzip.decompress(many.read_bytes()).decode() == text
            else:
                assert many.read_bytes() == one.read_bytes()
        # the module's chunk size is the default
        monkeypatch.setattr(csvio, "WRITE_CHUNK_ROWS", 10)
        back = read_columns(write_columns(tmp_path / f"default_{name}", columns, formats))
        monkeypatch.undo()
        for key, values in columns.items():
            expected = np.round(values, 3) if key in formats else values
            np.testing.assert_array_equal(back[key], expected)
    # no rows: the header alone; columns of different lengths: one line, no file
    assert write_columns(tmp_path / "empty.csv", {"t_s": np.zeros(0)}).read_text() == "t_s\n"
    with pytest.raises(CsvError, match="columns of different lengths \\(t_s 3, p 2\\)"):
        write_columns(tmp_path / "bad.csv", {"t_s": np.arange(3.0), "p": np.arange(2.0)},
                      chunk_rows=1)
    # a format that fails part-way leaves no file and no .tmp
    with pytest.raises(TypeError):
        write_columns(tmp_path / "badfmt.csv", {"t_s": np.arange(3.0)}, {"t_s": "%s %s"},
                      chunk_rows=1)
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "badfmt.csv").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("t_s,current_a,current_a\n0,1,2\n1,1,2\n", "in.csv:1: column 'current_a' appears twice"),
    ("\ufefft_s,current_a\n0,1\n1,1\n", None),  # Excel's byte order mark
])
def test_csv_header_quirks(tmp_path: Path, capsys, text: str, message: str | None) -> None:
    src = tmp_path / "in.csv"
    src.write_text(text, encoding="utf-8")
    rc = main(["twin", "simulate", "battery", "--params", "battery_lfp_rack",
               "--input", str(src), "--out", str(tmp_path / "out.csv")])
    if message is None:
        assert rc == 0 and read_columns(tmp_path / "out.csv")["current_a"].tolist() == [1, 1]
    else:
        assert rc == 2 and capsys.readouterr().err == f"gridloop: error: {tmp_path}/{message}\n"
