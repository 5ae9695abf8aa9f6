"""Load, build, run, summarise: what ``gridloop run`` and ``gridloop demo`` do."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError, LateTickError
from bench.paths import exclusive, replacing, same_file
from bench.scenario import load


def default_ledger_path(out: Path) -> Path:
    """``RUN.ledger.db`` beside the recording."""
    return out.with_name(out.stem + ".ledger.db")


def _warn_capped_hardware(scenario: Any) -> None:
    """An asset set to ``hardware`` in a run whose mode was left at its default runs
    emulated: the README's first hardware scenario passed against emulators without a word.
    A mode the user chose (``[run] mode``, ``--mode``) says nothing."""
    import tomllib
    import warnings

    from bench.errors import ScenarioWarning

    hardware = [f"{n}.{a}" for n, a, c in scenario.assets() if c.mode == "hardware"]
    chosen = "mode" in tomllib.loads(scenario.text).get("run", {}) or any(
        o.partition("=")[0].strip() == "run.mode" for o in scenario.overrides)
    if hardware and scenario.run.mode != "hardware" and not chosen:
        warnings.warn(ScenarioWarning(
            f"{', '.join(hardware)}: mode hardware, but the run's mode ({scenario.run.mode} "
            'by default) caps every asset\'s: they run emulated; set [run] mode = "hardware" '
            "(or --mode hardware) to use the devices"), stacklevel=2)


def execute(scenario_path: Path, out: Path, overrides: list[str], ledger: str | None = None,
            view: bool = False, quiet: bool = False, json_out: Path | None = None) -> int:
    """Run a scenario to ``out`` and print its summary; returns the exit status.  With
    ``json_out``, the same summary and the checks' outcomes are also written there as JSON
    (:func:`result_document`)."""
    scenario = load(scenario_path, overrides)
    _warn_capped_hardware(scenario)
    if view:
        from bench.view.app import require_screen

        require_screen(f"run without --view and look with gridloop view {out} --screenshot "
                       "OUT.png")
        # Flush often so the window follows closely.
        from dataclasses import replace

        scenario = replace(scenario, run=replace(scenario.run, flush_s=0.1))
    if ledger is not None and "://" not in ledger and same_file(Path(ledger), out):
        raise BenchError(f"--ledger {ledger} and --out {out} name the same file; the "
                         "recording would overwrite the ledger")
    if same_file(out, scenario_path):
        raise BenchError(f"--out {out}: that is the scenario ({scenario_path}); give another "
                         "file")
    if json_out is not None:
        for other, what in ((scenario_path, "the scenario"), (out, "the recording")):
            if same_file(json_out, other):
                raise BenchError(f"--json {json_out}: that is {what}; give another file")
    # a second run to the same recording would replace this one's files as it writes them
    with exclusive(out, "gridloop run"):
        return _run_and_summarise(scenario, out, ledger, view, quiet, json_out, scenario_path)


def _run_and_summarise(scenario: Any, out: Path, ledger: str | None, view: bool, quiet: bool,
                       json_out: Path | None, scenario_path: Path) -> int:
    """:func:`execute` once its inputs are checked and its recording is held."""
    from bench.build import build_plan
    from bench.checks import evaluate, format_outcomes
    from bench.engine import controller_for, run_plan
    from bench.recording import open_run
    from bench.summary import figures, format_figures

    ledger_url = str(default_ledger_path(out)) if ledger is None else ledger
    plan = build_plan(scenario, ledger=ledger_url)
    controller = controller_for(plan)  # its options checked before anything is replaced
    if ledger is None:
        # the default ledger belongs to the recording: a new run replaces both
        for suffix in ("", "-wal", "-shm"):
            Path(ledger_url + suffix).unlink(missing_ok=True)
    if plan.market is not None:
        # a ledger this run cannot append to is refused before the recording is replaced
        plan.market.open()
    print(f"{scenario.run.name}: {len(scenario.nodes)} node(s), "
          f"{len(scenario.assets())} asset(s), mode {scenario.run.mode}, "
          f"{scenario.run.duration_s:g} s at dt = {scenario.run.dt_s:g} s -> {out}",
          file=sys.stderr)
    try:
        if view:
            from bench.view.app import show_live

            holder: dict = {}

            def work() -> None:
                holder["summary"] = run_plan(plan, out, progress=not quiet,
                                             controller=controller)

            status = show_live(out, work)
            summary = holder.get("summary")
            if summary is None:
                return status or 1
        else:
            summary = run_plan(plan, out, progress=not quiet, controller=controller)
    except LateTickError as exc:
        # a run that broke its timing requirement failed (1), as one that broke a check;
        # 2 is bad input.  The recording keeps every tick before the late one.
        print(f"gridloop: run failed: {exc}; recording {out} kept up to that tick",
              file=sys.stderr)
        if json_out is not None:
            write_json(json_out, {"format": "gridloop-run-result", "version": 1,
                                  "status": 1, "passed": False,
                                  "scenario": str(scenario_path), "recording": str(out),
                                  "stopped": str(exc)})
        return 1
    finally:
        if plan.market is not None:
            plan.market.close()
    with open_run(out) as run:
        fig = figures(run)
        print(format_figures(fig))
        outcomes = evaluate(run, scenario.checks)
    print(f"{summary.ticks} ticks in {summary.wall_s:.2f} s wall "
          f"({summary.realtime_factor:.1f}x real time); recording {out}")
    if plan.market is not None:
        print(f"ledger {ledger_url}: {plan.market.describe()}")
    status = 0 if all(o.passed for o in outcomes) else 1
    if outcomes:
        print(format_outcomes(outcomes))
    if json_out is not None:
        doc = result_document(scenario_path, out, fig, outcomes, summary, status)
        write_json(json_out, doc)
    return status


def result_document(scenario_path: Path, out: Path, fig: Any, outcomes: list[Any],
                    summary: Any, status: int) -> dict[str, Any]:
    """What ``run --json`` writes: the exit status, the run's figures (energies in kWh,
    powers in kW, as the printed summary) and every check's outcome.  Numbers that do not
    exist (NaN: no PV on a node) are ``null``."""
    import dataclasses
    import math

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return {
        "format": "gridloop-run-result", "version": 1, "status": status,
        "passed": status == 0, "scenario": str(scenario_path), "recording": str(out),
        "stopped": None, "ticks": summary.ticks, "wall_s": summary.wall_s,
        "realtime_factor": clean(summary.realtime_factor),
        "figures": clean({k: v for k, v in dataclasses.asdict(fig).items() if k != "nodes"}),
        "nodes": {n: clean(dataclasses.asdict(f)) for n, f in fig.nodes.items()},
        "checks": [clean({"key": o.check.key, "bound": o.check.bound,
                          "limit": o.check.limit, "after_s": o.check.after_s,
                          "passed": o.passed, "worst": o.worst, "at_s": o.at_s,
                          "judged": o.judged, "failed": o.failed, "unit": o.unit,
                          "not_applicable": o.not_applicable or None})
                   for o in outcomes],
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """``doc`` to ``path`` whole or not at all (:func:`bench.paths.replacing`)."""
    import json

    try:
        with replacing(path) as tmp:
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        raise BenchError(f"--json {path}: cannot write it ({exc.strerror})") from None
