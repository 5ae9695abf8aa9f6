"""Pass/fail checks of a run, declared in its scenario: what a CI pipeline asserts about a
controller under test (limits held, the twin tracking the device).

::

    [checks]
    "north.grid.p_w" = { max = 60000 }                # never import more than 60 kW
    "north.battery.soc" = { min = 0.1, after_s = 5 }  # from 5 s on
    "north.battery.voltage_v" = { residual = 0.5 }    # |device - twin| <= 0.5 V

A key names one recorded signal (``NODE.ASSET.SIGNAL``); ``min`` and ``max`` bound it at every
tick from ``after_s`` on, ``residual`` bounds its distance from the twin's prediction.  A tick
whose reading is missing (NaN: a timeout, a fault) is not judged; a check that could judge no
tick fails, except a residual of an asset that ran in the twin: with no device there is nothing
to compare, and the check is reported as not applicable (``gridloop run --mode twin`` of a
scenario written for devices still passes).  ``gridloop run`` prints the table and exits
with status 1 when a check fails; ``gridloop report`` writes the same table into the summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bench.errors import ScenarioError

Bound = Literal["min", "max", "residual"]
_BOUNDS: tuple[Bound, ...] = ("min", "max", "residual")


@dataclass(frozen=True)
class Check:
    """One bound on one signal: ``key`` (``NODE.ASSET.SIGNAL``) ``bound`` ``limit``."""

    key: str
    bound: Bound
    limit: float
    after_s: float = 0.0

    def describe(self, unit: str = "") -> str:
        u = f" {unit}" if unit else ""
        text = {"min": f"{self.key} >= {self.limit:g}{u}",
                "max": f"{self.key} <= {self.limit:g}{u}",
                "residual": f"|{self.key} - twin| <= {self.limit:g}{u}"}[self.bound]
        return text + (f" from {self.after_s:g} s" if self.after_s else "")


@dataclass(frozen=True)
class Outcome:
    """A check judged on a recording: the worst value met and when, and how many ticks
    broke the bound out of those judged."""

    check: Check
    worst: float
    at_s: float
    judged: int
    failed: int
    unit: str = ""
    #: why the check does not apply to this run (a residual of an asset run in the twin)
    not_applicable: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.not_applicable) or (self.judged > 0 and self.failed == 0)


def parse_checks(table: Any, where: Callable[..., str]) -> tuple[Check, ...]:
    """The checks of a scenario's ``[checks]`` table; ``where(*path)`` names a field for an
    error (``file:line: checks.KEY``)."""
    if not isinstance(table, Mapping):
        raise ScenarioError(f"{where('checks')}: expected a table of checks")
    checks = []
    for key, spec in table.items():
        at = where("checks", key)
        if len(key.split(".")) != 3:
            raise ScenarioError(f"{at}: a check names one signal as NODE.ASSET.SIGNAL "
                                "(\"north.grid.p_w\")")
        if not isinstance(spec, Mapping):
            raise ScenarioError(f"{at}: expected {{ min = ..., max = ..., residual = ..., "
                                f"after_s = ... }}, got {spec!r}")
        unknown = [k for k in spec if k not in (*_BOUNDS, "after_s")]
        if unknown:
            from twin.params import did_you_mean

            raise ScenarioError(f"{at}.{unknown[0]}: not a check"
                                f"{did_you_mean(unknown[0], (*_BOUNDS, 'after_s'))}; "
                                "checks are min, max, residual (with after_s)")
        numbers = {}
        for name, value in spec.items():
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ScenarioError(f"{at}.{name}: expected a finite number, got {value!r}")
            numbers[name] = float(value)
        if not any(b in numbers for b in _BOUNDS):
            raise ScenarioError(f"{at}: give min, max or residual")
        if "min" in numbers and "max" in numbers and numbers["min"] > numbers["max"]:
            raise ScenarioError(f"{at}: min {numbers['min']:g} is above max "
                                f"{numbers['max']:g}")
        if numbers.get("residual", 0.0) < 0 or numbers.get("after_s", 0.0) < 0:
            raise ScenarioError(f"{at}: residual and after_s cannot be negative")
        after = numbers.get("after_s", 0.0)
        checks += [Check(key, b, numbers[b], after) for b in _BOUNDS if b in numbers]
    return tuple(checks)


def unknown_signals(checks: Iterable[Check], measured: Iterable[str],
                    twin: Iterable[str]) -> list[tuple[str, str]]:
    """``(key, what is wrong)`` for each check whose signal a run will not record (asked
    before it starts)."""
    from twin.params import did_you_mean

    measured, twin = set(measured), set(twin)
    out = []
    for c in checks:
        if c.key not in measured:
            out.append((c.key, f"no such signal{did_you_mean(c.key, measured)}"))
        elif c.bound == "residual" and c.key not in twin:
            out.append((c.key, "the twin does not predict it, so it has no residual"))
    return out


def judge(check: Check, t_s: np.ndarray, value: np.ndarray,
          twin: np.ndarray | None = None, unit: str = "") -> Outcome:
    """``check`` on one signal's samples (``twin``: the prediction, for a residual)."""
    x = np.abs(value - twin) if check.bound == "residual" else np.asarray(value, float)
    keep = (t_s >= check.after_s - 1e-9) & np.isfinite(x)
    t, x = t_s[keep], x[keep]
    if not x.size:
        return Outcome(check, math.nan, math.nan, 0, 0, unit)
    k = int(np.argmin(x)) if check.bound == "min" else int(np.argmax(x))
    broken = x < check.limit if check.bound == "min" else x > check.limit
    return Outcome(check, float(x[k]), float(t[k]), int(x.size), int(broken.sum()), unit)


def evaluate(run: Any, checks: Iterable[Check]) -> list[Outcome]:
    """Every check judged on a recording (:class:`bench.recording.Run`)."""
    t = run.time
    out = []
    for c in checks:
        node, asset, name = c.key.split(".")
        if not run.has(node, asset, name):
            out.append(Outcome(c, math.nan, math.nan, 0, 0))
            continue
        unit = run.unit(node, asset, name)
        twin = None
        if c.bound == "residual":
            if not run.has(node, asset, name, "twin"):
                # the recording holds one value: the asset ran in the twin, no device
                out.append(Outcome(c, math.nan, math.nan, 0, 0, unit,
                                   f"{node}.{asset} ran in the twin: no device to compare"))
                continue
            twin = run.signal(node, asset, name, "twin")
        out.append(judge(c, t, run.signal(node, asset, name), twin, unit))
    return out


def format_outcomes(outcomes: list[Outcome]) -> str:
    """The checks as a table, one line each, and a last line with the count that failed."""
    rows = []
    for o in outcomes:
        what = o.check.describe(o.unit)
        if o.not_applicable:
            rows.append((what, "-", "-", f"n/a ({o.not_applicable})"))
            continue
        if not o.judged:
            rows.append((what, "-", "-", "FAIL (no tick to judge: no reading, or after the run)"))
            continue
        verdict = "ok" if o.passed else f"FAIL ({o.failed} of {o.judged} ticks)"
        rows.append((what, f"{o.worst:.6g}", f"{o.at_s:.3f} s", verdict))
    width = max([len(r[0]) for r in rows] + [5])
    lines = [f"{'check':<{width}}  {'worst':>12}  {'at':>11}  verdict"]
    lines += [f"{a:<{width}}  {b:>12}  {c:>11}  {d}" for a, b, c, d in rows]
    failed = sum(not o.passed for o in outcomes)
    skipped = sum(bool(o.not_applicable) for o in outcomes)
    lines.append(f"checks: {len(outcomes) - failed - skipped} of {len(outcomes) - skipped} "
                 "passed" + (f", {skipped} not applicable" if skipped else ""))
    return "\n".join(lines)
