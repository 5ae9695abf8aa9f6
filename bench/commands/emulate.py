"""``gridloop emulate SCENARIO.toml``: serve every emulated device of a scenario."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
import time
from typing import Any

#: longest the plants advance without letting the servers answer [s]
CATCH_UP_S = 0.02
#: the longest a profile is generated for when emulate serves until stopped [s]
MAX_HORIZON_S = 7 * 86400.0
#: about the most entries a workload is generated with (an inference schedule has one per
#: decode step, a training one two or three per step), so a kit starts in under a second
ENTRY_BUDGET = 300_000
#: about the most samples a series (irradiance, a power trace) is generated with (16 B each)
SAMPLE_BUDGET = 2_000_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emulate", help="serve a scenario's emulated devices until stopped",
                       description="Serve every emulated device of a scenario (SunSpec "
                       "Modbus over TCP or RTU on a pty, the serial MCU protocol) from the "
                       "twin's plant models, on the wall clock, until SIGINT or SIGTERM.")
    p.add_argument("scenario", metavar="SCENARIO.toml")
    p.add_argument("--host", default="127.0.0.1",
                   help="address TCP emulators bind to (default 127.0.0.1, loopback)")
    p.add_argument("--port-base", type=int, metavar="N",
                   help="first TCP port: the k-th TCP device listens on N + k (default: free "
                   "ports)")
    p.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="simulated seconds per wall-clock second (default 1); past what "
                   "the plants can do, they run as fast as they can")
    p.add_argument("--json", action="store_true",
                   help="first print one JSON object per device per line")
    p.add_argument("--duration", type=float, metavar="S",
                   help="stop after S wall-clock seconds (default: run until stopped); "
                   "profiles are generated for the S x speed simulated seconds it serves "
                   "(default: days, or as many hours as keep a profile cheap); a profile "
                   "that runs out is said on stderr")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from bench.emulation import build_host
    from bench.errors import BenchError
    from bench.recording import split_device
    from bench.scenario import load

    if not math.isfinite(args.speed) or args.speed <= 0:
        raise BenchError(f"--speed must be a positive number, not {args.speed}")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise BenchError(f"--duration must be a positive number of seconds, not {args.duration}")
    if args.port_base is not None and not 0 < args.port_base < 65536:
        raise BenchError(f"--port-base must be a TCP port, not {args.port_base}")
    s = load(args.scenario, args.overrides + ["run.mode=emulated"])

    plants: list = []  # the emulators' clock, for each event line

    def on_event(kind: str, message: str) -> None:
        # the time on the device clock (the plants' simulated time, as fault cards' start_s
        # and stop_s), and the device named node.asset as the bench names it
        t = max((float(p.t) for p in plants), default=0.0)
        device, rest = split_device(message)
        print(f"event {kind} at t = {t:.3f} s: {device + ': ' if device else ''}{rest}",
              file=sys.stderr, flush=True)

    drives = long_drives(s, math.inf if args.duration is None
                         else args.duration * args.speed)
    host, why = build_host(s, drives, host=args.host, port_base=args.port_base,
                           on_event=on_event)
    if host is None:
        raise BenchError(f"{args.scenario}: no asset to emulate (batteries, inverters, meters "
                         f"and GPU racks that are not mode = \"twin\")")
    plants.extend(host.plants.values())
    n_tcp = sum(spec.transport == "tcp" for spec in host.specs)  # RTU and serial: a pty
    if args.port_base is not None and args.port_base + n_tcp - 1 > 65535:
        raise BenchError(f"--port-base {args.port_base}: {n_tcp} devices listen "
                         f"on ports up to {args.port_base + n_tcp - 1}, past "
                         f"65535; use at most {65536 - n_tcp}")
    return asyncio.run(_serve(host, s.run.dt_s, args, why, profile_ends(s, drives)))


def long_drives(s: Any, wanted_s: float) -> dict[str, Any]:
    """Each profile of the nodes emulate serves, generated for ``wanted_s`` of simulated
    time rather than the scenario's ``duration_s`` (a run's length, not the kit's), within
    :data:`MAX_HORIZON_S` and :data:`ENTRY_BUDGET`: past its end a workload idles the rack
    and an irradiance holds its last value, so residuals would come from the stand-in."""
    from bench.build import emulated_assets
    from bench.profiles import build_profile

    nodes = {n for n, _, _ in emulated_assets(s)}
    names = sorted({c.profile for n, _, c in s.assets() if n in nodes and c.profile})
    drives: dict[str, Any] = {}
    for name in names:
        drive = build_profile(s, name)
        horizon = _horizon_s(drive, s.run.duration_s, wanted_s)
        if not s.profiles[name].file and horizon > s.run.duration_s:
            drive = build_profile(s, name, horizon)
        drives[name] = drive
    return drives


def _horizon_s(drive: Any, duration_s: float, wanted_s: float) -> float:
    """How long to generate a profile for: ``wanted_s``, at most :data:`MAX_HORIZON_S` and
    as long as keeps it within its budget at the rate of the one generated for a run."""
    from bench.profiles import profile_end_s
    from twin.microgrid import Series

    budget = SAMPLE_BUDGET if isinstance(drive, Series) else ENTRY_BUDGET
    per_s = _entries(drive) / max(profile_end_s(drive), duration_s)
    budget_s = budget / per_s if per_s > 0 else math.inf
    return max(duration_s, min(wanted_s, MAX_HORIZON_S, budget_s))


def _entries(drive: Any) -> int:
    """Entries of a profile: a series' samples, a schedule's entries (all groups')."""
    if isinstance(drive, list | tuple):
        return sum(_entries(d) for d in drive)
    return len(drive.t_s)


def profile_ends(s: Any, drives: dict[str, Any]) -> list[tuple[float, str]]:
    """(when, what to say) for each asset whose profile ends, in time order: said when the
    emulators' clock passes it (a run against the kit then would see a stand-in at rest)."""
    from bench.profiles import profile_end_s

    ends = []
    for node, asset, cfg in s.assets():
        if cfg.profile not in drives:
            continue
        drive = drives[cfg.profile]
        end = profile_end_s(drive)
        kind = s.profiles[cfg.profile].kind
        after = ("the rack idles from now on" if kind == "workload" else
                 f"it holds its last value, {float(drive.values[-1]):.6g}, from now on")
        ends.append((end, f"emulate: {node}.{asset}: {kind} profile '{cfg.profile}' ends at "
                          f"t = {end:.1f} s; {after}"))
    return sorted(ends)


def _say_ended(ends: list[tuple[float, str]], t: float) -> list[tuple[float, str]]:
    """Say on stderr each profile that has ended by simulated time ``t``; the others."""
    for end, message in ends:
        if end <= t:
            print(message, file=sys.stderr, flush=True)
    return [(end, message) for end, message in ends if end > t]


def transport_line(d: dict, why: str) -> str:
    """``lab.inverter: modbus_rtu on /tmp/gridloop-pty-x/tty (19200 8E1), unit 1 (its
    device is modbus_rtu)``: which transport an emulated device got, and why."""
    from firmware_bridge.line import label

    if d["transport"] == "tcp":
        where = f"{d['host']}:{d['port']}"
    else:
        where = (f"{d['serial_port']} ("
                 f"{label(d['baudrate'], d['bytesize'], d['parity'], d['stopbits'])})")
    unit = f", unit {d['unit']}" if d["transport"] != "serial" else ""
    return f"{d['node']}.{d['asset']}: {d['backend']} on {where}{unit} ({why})"


async def _serve(host, dt: float, args: argparse.Namespace,
                 why: dict[tuple[str, str], str] | None = None,
                 ends: list[tuple[float, str]] | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await host.start()
    try:
        for d in host.describe():  # which transport each device got, and why
            reason = (why or {}).get((d["node"], d["asset"]), "")
            print(f"emulate: {transport_line(d, reason)}", file=sys.stderr, flush=True)
        if args.json:
            for entry in host.describe():
                print(json.dumps(entry), flush=True)
        else:
            for d in host.describe():
                where = (f"{d['host']}:{d['port']}" if d["transport"] == "tcp"
                         else d["serial_port"])
                print(f"{d['node']}.{d['asset']:<10} {d['kind']:<9} {d['transport']} "
                      f"{where} unit {d['unit']} models {d['models']}", flush=True)
        # Plants advance in whole ticks of the scenario's dt, paced to the wall clock.  A
        # speed the plants cannot keep up with runs them as fast as they go, in slices of
        # CATCH_UP_S so the servers still answer and --duration and signals still stop it.
        t0 = time.monotonic()
        end = math.inf if args.duration is None else t0 + args.duration
        steps = 0
        while not stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            due = (now - t0) * args.speed / dt  # a float: no overflow however fast
            slice_end = min(now + CATCH_UP_S, end)
            while steps < due and time.monotonic() < slice_end:
                host.advance(dt)
                steps += 1
            ends = _say_ended(ends or [], steps * dt)
            if steps < due:  # behind: let the servers and signal handlers run, then go on
                await asyncio.sleep(0)
                continue
            try:
                await asyncio.wait_for(stop.wait(), timeout=min(0.05, dt / args.speed))
            except TimeoutError:
                pass
    finally:
        await host.stop()
    print(f"emulate: stopped after {steps * dt:.1f} simulated s", file=sys.stderr)
    return 0
