"""What happened when: `gridloop report` writes every event to events.csv and a timeline of
them into summary.txt, each device named one way (``node.asset``) whether the bench or an
emulator (``node/asset``) wrote the event; the view's device health markers sit on the row
of the device they are about, and its cursor read-out lists per-tick datasets only."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from bench.cli import main
from bench.recording import Event, open_run, split_device
from bench.report import timeline

SCENARIO = """
[run]
name = "timeline"
dt_s = 0.1
duration_s = 3
seed = 3
mode = "emulated"
capture = true
[controller]
name = "schedule"
options = { "lab.battery.p_set_w" = [[0, 0], [0.5, 20000]] }
[nodes.lab.battery]
kind = "battery"
faults = [{ timeout = true, start_s = 1, stop_s = 2 }]
[nodes.lab.meter]
kind = "meter"
"""


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seconds of a battery and a meter, emulated and captured; the battery's
    emulator leaves every request unanswered from 1 s to 2 s."""
    folder = tmp_path_factory.mktemp("timeline")
    scenario = folder / "s.toml"
    scenario.write_text(SCENARIO)
    out = folder / "run.h5"
    with pytest.warns(Warning):  # the battery's timeout, said on stderr as a warning
        assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def report(recording: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(recording), "--out", str(out)]) == 0
    return out


def test_a_device_is_named_one_way_whoever_wrote_the_event() -> None:
    assert split_device("lab.battery: no answer within 40 ms") == (
        "lab.battery", "no answer within 40 ms")
    assert split_device("lab/battery: no answer to FC3 40000+2") == (
        "lab.battery", "no answer to FC3 40000+2")
    # only the devices named, where the caller knows them
    assert split_device("hold: tick 5 late by 3 ms", {"lab.battery"}) == (
        "", "hold: tick 5 late by 3 ms")
    assert split_device("lab/inverter: x", {"lab.battery"}) == ("", "lab/inverter: x")
    assert split_device("controller 'a.b:C' failed at t = 1.000 s: ZeroDivisionError: x") == (
        "", "controller 'a.b:C' failed at t = 1.000 s: ZeroDivisionError: x")


def test_events_csv_lists_every_event_with_its_device(recording: Path, report: Path) -> None:
    with open_run(recording) as run:
        stored = run.events()
    with (report / "events.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["t_s", "kind", "device", "message"]
    assert len(rows) == len(stored) == 14
    kinds = [r["kind"] for r in rows]
    # the kinds as stored: the bench's device_*, the emulator's fault.*
    assert kinds.count("fault.timeout") == 10
    assert {"fault.set", "device_timeout", "device_recovered", "safe_state"} <= set(kinds)
    # the emulator wrote lab/battery, the bench lab.battery: one name here, not in the text
    assert {r["device"] for r in rows} == {"lab.battery"}
    assert not any(r["message"].startswith(("lab/", "lab.")) for r in rows)
    timeouts = [float(r["t_s"]) for r in rows if r["kind"] == "fault.timeout"]
    assert timeouts == pytest.approx([1.0 + 0.1 * i for i in range(10)])


def test_the_summary_ends_with_a_timeline_a_streak_one_line(report: Path) -> None:
    text = (report / "summary.txt").read_text()
    lines = text[text.index("timeline:"):].splitlines()
    assert lines[0].startswith("timeline: 14 events in 5 lines")
    assert lines[1].split() == ["t", "[s]", "n", "device", "kind", "message"]
    body = lines[2:]
    assert len(body) == 5
    assert re.match(r"0\.000\s+1\s+lab\.battery\s+fault\.set\s+timeout=True", body[0])
    assert re.match(r"1\.000\s+1\s+lab\.battery\s+device_timeout\s+no answer", body[1])
    # ten unanswered requests, one per tick: one line with its span and count
    assert re.match(r"1\.000-1\.900\s+10\s+lab\.battery\s+fault\.timeout\s+no answer to FC3",
                    body[2])
    assert re.match(r"2\.000\s+1\s+lab\.battery\s+device_recovered\s+answers again after 10",
                    body[3])
    # the run's end: the battery it wrote left at 0 W
    assert re.match(r"3\.000\s+1\s+lab\.battery\s+safe_state\s+safe state written: "
                    r"p_set_w = 0 W", body[4])


def test_a_long_timeline_shows_its_first_lines_and_counts_the_rest() -> None:
    # a device failing on and off (errors and recoveries interleaved) for 3 s, then one
    # event per device on 25 devices, 2 s apart
    events = []
    for k in range(10):
        events.append(Event(0.3 * k, "device_error", "a.battery", f"error {k}"))
        events.append(Event(0.3 * k + 0.1, "device_recovered", "a.battery", "answers again"))
    events += [Event(10.0 + 2 * i, "device_timeout", f"n{i}.meter", "no answer")
               for i in range(25)]
    text = timeline(events, dt=0.1, lines=5)
    lines = text.splitlines()
    assert lines[0].startswith("timeline: 45 events in 27 lines")
    assert re.match(r"0\.000-2\.700\s+10\s+a\.battery\s+device_error\s+error 0 "
                    r"\(messages vary\)$", lines[2])
    assert re.match(r"0\.100-2\.800\s+10\s+a\.battery\s+device_recovered\s+answers again$",
                    lines[3])
    assert len(lines) == 2 + 5 + 1
    assert lines[-1] == ("... 22 more lines (22 events) from 16.000 s to 58.000 s: see "
                         "events.csv")
    # events of one kind on one device further apart than the gap are separate lines
    apart = [Event(0.0, "catch_up", "", "hold"), Event(5.0, "catch_up", "", "hold")]
    assert len(timeline(apart, dt=0.1).splitlines()) == 4
    assert timeline([], dt=0.1) == ""


@pytest.mark.qt
def test_the_view_puts_emulator_events_on_their_device_and_reads_out_ticks_only(
        recording: Path) -> None:
    from bench.view.app import ViewWindow, application
    from bench.view.panels import HealthPanel

    application(offscreen=True)
    win = ViewWindow(recording)
    try:
        win.set_cursor(1.5)
        win.frame()
        health = next(p for row in win.rows for p in row if isinstance(p, HealthPanel))
        row = [a.key for a in health.assets].index("lab.battery")
        spots = health.markers.data
        faults = [(d, y) for d, y in zip(spots["data"], spots["y"], strict=True)
                  if " fault." in d]
        assert len(faults) == 11  # fault.set and ten fault.timeout
        assert all(y == row + 0.5 for _, y in faults)  # not on the run's row
        assert all("lab.battery: " in d and "lab/battery" not in d for d, _ in faults)
        # the read-out: per-tick datasets; the capture's rows are transactions, not ticks
        listed = win.data.per_tick_paths()
        assert "wall" in listed and "quality/lab/battery" in listed
        assert "nodes/lab/battery/voltage_v" in listed
        assert not [p for p in listed if p.startswith("capture/")]
        assert not [p for p in win._items if p.startswith("capture/")]
        assert "capture/lab.battery/registers" in win.run.file  # there, not read out
    finally:
        win.close()
        win.run.close()
