"""A run's emulators in a process of their own, stepped on the bench's clock.

The emulated devices of a run are real servers on loopback; serving them costs as much CPU
as reading them.  In the bench's own event loop they would take turns with it, so a tick
would pay for both sides of every transaction.  Here they run in a child process (the other
core), which builds the same twin-backed plants from the same scenario, and the bench steps
them once per tick with an ``advance`` command it waits for: the plants still follow the
bench's clock exactly, so a run stays deterministic.

Each device is emulated on the transport its asset's device would use (:func:`specs`): an
asset whose hardware device is ``modbus_rtu`` is Modbus RTU on a pseudo-terminal pair, a
``serial`` one the serial protocol on a pseudo-terminal, each with the line settings, unit
id and base address of its device table; ``modbus_tcp`` (and an asset without a device) is
Modbus TCP on loopback.  The ``modbus_rtu`` devices of one port share one pseudo-terminal,
each answering its own unit id, as the slaves of the lab's RS-485 line do.  An asset's
``transport`` field, when the scenario gives it, chooses instead.  So ``--mode emulated``
(CI) and ``gridloop emulate`` speak to the bench as the lab's devices do.

Protocol on the child's stdin/stdout, one JSON object per line: the parent sends the
scenario (text, path, overrides), the child answers ``{"devices": [...]}`` (what
``gridloop emulate --json`` prints) once its servers listen; then ``{"advance": dt}`` is
answered ``{"ok": t}`` (``{"prepare": dt}`` too, which only precomputes what depends on
``dt``), and ``{"stop": true}`` ends it.  Fault events the emulators inject
come as ``{"event": kind, "message": ..., "t": ...}`` lines in between.

The child runs in a session (and process group) of its own, as the recorder's writer does:
Ctrl-C in a terminal signals the terminal's whole process group, and the emulators must
keep answering until the run stops at its next tick and stops them (the ``stop`` command).
It ends by itself when its stdin closes (the bench died, even of SIGKILL), and a bench that
exits without stopping it kills it on its way out, so no emulator outlives its run.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import json
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.errors import BenchError, ScenarioError
from bench.scenario import Scenario, apply_override, parse

EventSink = Callable[[float, str, str], None]


def specs(s: Scenario, drives: dict[str, Any] | None = None
          ) -> tuple[dict[str, Any], list[Any], dict[tuple[str, str], str]]:
    """The plants, the device specs of every emulated asset of ``s`` on the transport its
    device would use, and for each device why that transport (in words).

    An asset's ``transport`` field, when given, is kept; else its device table decides
    (:func:`firmware_bridge.emulators.host.link_for_device`); else Modbus TCP.
    """
    from bench.build import check_unopened_table, emulator_specs
    from firmware_bridge.emulators.host import link_for_device
    from firmware_bridge.errors import ConfigError

    plants, device_specs = emulator_specs(s, drives)
    chosen = _chosen_transports(s)
    where = s.where
    out: list[Any] = []
    why: dict[tuple[str, str], str] = {}
    for spec in device_specs:
        key = (spec.node, spec.asset)
        cfg = s.nodes[spec.node][spec.asset]
        if key in chosen:
            why[key] = f'transport = "{cfg.transport}"'
        elif cfg.device:
            check_unopened_table(cfg.device, s.where("nodes", spec.node, spec.asset, "device"))
            try:
                fields, why[key] = link_for_device(
                    cfg.device, where("nodes", spec.node, spec.asset, "device"))
            except ConfigError as exc:
                raise ScenarioError(str(exc)) from None
            spec = dataclasses.replace(spec, **fields)
        else:
            why[key] = "no device table: the default"
        out.append(spec)
    _say_shared(out, why)
    return plants, out, why


def _say_shared(specs: list[Any], why: dict[tuple[str, str], str]) -> None:
    """Add to the reason of each RTU device on a line of several which others are on it."""
    from firmware_bridge.emulators.host import rtu_buses
    from firmware_bridge.errors import ConfigError

    try:
        buses = rtu_buses(specs)
    except ConfigError as exc:  # refused when the scenario was parsed already
        raise ScenarioError(str(exc)) from None
    for members in buses.values():
        for i in members:
            spec = specs[i]
            others = ", ".join(f"{specs[j].node}.{specs[j].asset}" for j in members if j != i)
            why[(spec.node, spec.asset)] += f"; one line with {others}, port {spec.bus}"


def _chosen_transports(s: Scenario) -> set[tuple[str, str]]:
    """The assets whose ``transport`` the scenario (its text or a ``--set``) gives."""
    doc = tomllib.loads(s.text) if s.text else {}
    for item in s.overrides:
        try:
            apply_override(doc, item)
        except ScenarioError:  # refused when the scenario was parsed already
            continue
    nodes = doc.get("nodes", {})
    return {(n, a) for n, assets in nodes.items() if isinstance(assets, dict)
            for a, raw in assets.items() if isinstance(raw, dict) and "transport" in raw}


def build_host(s: Scenario, drives: dict[str, Any] | None = None, host: str = "127.0.0.1",
               port_base: int | None = None, on_event: Any = None
               ) -> tuple[Any, dict[tuple[str, str], str]]:
    """An EmulatorHost serving every emulated asset of ``s`` (None when nothing is
    emulated), each on its device's transport (:func:`specs`), and why each transport."""
    from firmware_bridge.emulators.host import EmulatorHost

    plants, device_specs, why = specs(s, drives)
    if not device_specs:
        return None, why
    return EmulatorHost(plants, device_specs, host=host, port_base=port_base,
                        on_event=on_event), why


class EmulatorProcess:
    """The child process serving every emulated device of a scenario."""

    def __init__(self, s: Scenario, overrides: list[str] | tuple[str, ...] = (),
                 on_event: EventSink | None = None) -> None:
        self.scenario = s
        self.overrides = list(overrides)
        self.on_event = on_event
        self.devices: list[dict[str, Any]] = []
        self._proc: subprocess.Popen | None = None
        self._stderr: list[str] = []

    # -- parent side ------------------------------------------------------------------------

    def start(self) -> list[dict[str, Any]]:
        """Start the child and wait until its servers listen; returns their descriptions."""
        # a session of its own: Ctrl-C (the terminal's process group) reaches the bench,
        # which stops its run at the next tick and then the emulators, not the emulators
        # in the middle of a tick
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.emulation"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True)
        atexit.register(self._kill)
        threading.Thread(target=self._drain_stderr, daemon=True,
                         name="gridloop-emulators-stderr").start()
        self._send({"scenario": self.scenario.text,
                    "path": str(self.scenario.path or ""),
                    "overrides": self.overrides})
        reply = self._receive()
        if "devices" not in reply:
            raise BenchError(f"emulators did not start: {reply.get('error', reply)}")
        self.devices = reply["devices"]
        return self.devices

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip())
            del self._stderr[:-20]

    def _send(self, msg: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(msg) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise BenchError(f"the emulator process died: {self._last_error()}") from None

    def _receive(self) -> dict[str, Any]:
        """The next reply, handing event lines to ``on_event`` on the way."""
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            line = self._proc.stdout.readline()
            if not line:
                self._proc.wait(5)
                raise BenchError(f"the emulator process died: {self._last_error()}")
            msg = json.loads(line)
            if "event" in msg:
                if self.on_event is not None:
                    self.on_event(float(msg.get("t", 0.0)), msg["event"], msg["message"])
                continue
            if "error" in msg and "devices" not in msg:
                raise BenchError(f"emulators: {msg['error']}")
            return msg

    def _last_error(self) -> str:
        lines = [x for x in self._stderr if x.strip()]
        return lines[-1] if lines else f"exit status {self._proc.poll() if self._proc else '?'}"

    def prepare(self, dt: float) -> None:
        """Have the plants precompute what depends on ``dt`` alone, before the clock starts."""
        self._send({"prepare": dt})
        self._receive()

    def advance(self, dt: float) -> None:
        """Step every plant by ``dt`` and wait until it is done (the bench's clock)."""
        self._send({"advance": dt})
        self._receive()

    def stop(self) -> None:
        """Stop the servers and wait for the child to exit (killed after 10 s)."""
        if self._proc is None:
            return
        atexit.unregister(self._kill)
        if self._proc.poll() is not None:
            return
        try:
            self._send({"stop": True})
            self._receive()
        except BenchError:
            pass
        try:
            self._proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _kill(self) -> None:
        """At the bench's exit, a child never stopped (a run that did not reach its stop
        path): in its own session no signal of the terminal's reaches it, so it is ended
        here rather than left serving."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


# -- child side -----------------------------------------------------------------------------


def _serve() -> int:
    """``python -m bench.emulation``: serve a scenario's emulators, stepped by commands."""
    out = sys.stdout
    sys.stdout = sys.stderr  # only protocol lines on the real stdout

    def reply(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    first = sys.stdin.readline()
    if not first:
        return 0
    req = json.loads(first)
    try:
        s = parse(req["scenario"], req.get("path") or "<scenario>",
                  Path(req["path"]) if req.get("path") else None, req.get("overrides", []))
        plants_t = {"t": 0.0}

        def on_event(kind: str, message: str) -> None:
            reply({"event": kind, "message": message, "t": plants_t["t"]})

        host, _ = build_host(s, on_event=on_event)
    except Exception as exc:  # the parent reports it as one line
        reply({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    if host is None:
        reply({"error": "nothing to emulate"})
        return 1
    return asyncio.run(_loop(host, reply, plants_t))


async def _loop(host: Any, reply: Callable[[dict[str, Any]], None],
                plants_t: dict[str, float]) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await host.start()
    try:
        reply({"devices": host.describe()})
        while True:
            line = await reader.readline()
            if not line:
                break  # the bench died: stop serving
            msg = json.loads(line)
            if "prepare" in msg:
                for plant in host.plants.values():
                    plant.prepare(float(msg["prepare"]))
                reply({"ok": plants_t["t"]})
            elif "advance" in msg:
                host.advance(float(msg["advance"]))
                plants_t["t"] = next(iter(host.plants.values())).t
                reply({"ok": plants_t["t"]})
            elif "stop" in msg:
                reply({"ok": plants_t["t"]})
                break
    finally:
        await host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_serve())
