"""Small things of ``gridloop gpu`` and ``gridloop twin``: shipped sets by name (and a
misspelt one), the image ``gpu spectrum`` writes, ``--dt`` longer than the profile, plain
help text."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main

TWO_SECONDS = '[{"t_s": 0, "load": "compute", "seconds": 2}]'


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gridloop: error: ") and err.count("\n") == 1, err
    return err.removeprefix("gridloop: error: ").rstrip("\n")


def test_spectrum_takes_a_shipped_rack_by_name(
        tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no such files here: the shipped sets
    Path("two.events.json").write_text(TWO_SECONDS)
    argv = ["gpu", "spectrum", "--events", "two.events.json", "--dt", "0.05", "--band", "0.1",
            "10"]
    assert main([*argv, "--out", "f.png", "--rack", "rack_h100_4x8gpu"]) == 0
    assert "wrote f.png" in capsys.readouterr().out
    assert Path("f.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "two.events.json"]
    Path("f.png").unlink()
    # the name resolves to the shipped file, which is no rack
    assert main([*argv, "--out", "f.png", "--rack", "battery_lfp_rack.toml"]) == 2
    assert _one_line(capsys).endswith("battery_lfp_rack.toml: meta.kind is 'battery', "
                                      "expected 'gpu_rack'")
    assert main([*argv, "--out", "f.png", "--rack", "rack_h100_4x8gp"]) == 2
    assert _one_line(capsys) == ("rack_h100_4x8gp: no such parameter file (did you mean "
                                 "'rack_h100_4x8gpu'?)")
    assert main([*argv, "--out", "f.png", "--rack", "missing/rack.toml"]) == 2
    assert _one_line(capsys) == "missing/rack.toml: no such parameter file"
    assert not Path("f.png").exists()


@pytest.mark.parametrize(("out", "message"), [
    ("spec.txt", "--out spec.txt: '.txt' is not .png; the figure is a PNG: give a file "
                 "ending in .png"),
    ("spec.jpg", "--out spec.jpg: '.jpg' is not .png; the figure is a PNG: give a file "
                 "ending in .png"),
    ("spec", "--out spec: no extension; the figure is a PNG: give a file ending in .png"),
])
def test_spectrum_refuses_an_output_that_is_no_image(tmp_path: Path, monkeypatch, capsys,
                                                     out: str, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path("two.events.json").write_text(TWO_SECONDS)
    assert main(["gpu", "spectrum", "--events", "two.events.json", "--out", out]) == 2
    assert _one_line(capsys).startswith(message)
    assert not Path(out).exists()


@pytest.mark.parametrize("argv", [
    ["twin", "simulate", "battery", "--params", "battery_lfp_rak", "--input", "p.csv",
     "--out", "o.csv"],
    ["gpu", "predict", "battery_lfp_rak.toml", "--events", "two.events.json", "--out",
     "o.csv"],
])
def test_a_misspelt_shipped_set_gets_a_did_you_mean(tmp_path: Path, monkeypatch, capsys,
                                                    argv: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("p.csv").write_text("t_s,current_a\n0,10\n10,10\n")
    Path("two.events.json").write_text(TWO_SECONDS)
    assert main(argv) == 2
    assert _one_line(capsys) == (f"{argv[4] if argv[0] == 'twin' else argv[2]}: no such "
                                 "parameter file (did you mean 'battery_lfp_rack'?)")
    assert not Path("o.csv").exists()


@pytest.mark.parametrize(("profile", "dt", "message"), [
    ("0,10\n5,20\n10,30\n", "100", "--dt 100 s is longer than the profile, which spans 10 s "
                                   "(t_s 0 to 10); give --dt 10 or less"),
    ("0,10\n5,20\n10,30\n", "10.5", "--dt 10.5 s is longer than the profile, which spans "
                                    "10 s (t_s 0 to 10); give --dt 10 or less"),
    ("3,10\n", "1", "--dt 1: the profile has a single sample (t_s = 3), nothing to "
                    "resample; leave --dt out"),
])
def test_a_dt_longer_than_the_profile_is_refused(tmp_path: Path, capsys, profile: str,
                                                 dt: str, message: str) -> None:
    src, out = tmp_path / "p.csv", tmp_path / "o.csv"
    src.write_text("t_s,current_a\n" + profile)
    argv = ["twin", "simulate", "battery", "--params", "battery_lfp_rack", "--input",
            str(src), "--out", str(out)]
    assert main([*argv, "--dt", dt]) == 2
    assert _one_line(capsys) == message
    assert not out.exists()
    if profile.count("\n") > 1:  # the whole span as one step: both samples are read
        assert main([*argv, "--dt", "10"]) == 0
        assert out.read_text().splitlines()[-1].startswith("10.0,")


def test_gpu_help_is_plain_text(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["gpu", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and "NAME.events.json beside NAME.csv.gz" in " ".join(out.split())
