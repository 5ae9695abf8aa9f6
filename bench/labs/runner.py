"""Running a lab: its main recording and one recording per variant, each stamped as the lab's.

Every recording is a plain ``gridloop run`` of the lab's scenario (:func:`bench.runner.execute`)
with the lab's overrides: first the shared data paths, then the quick ones (``--quick``),
then the variant's (the recording keeps them beside the scenario text).  Afterwards the
recording's root gets the attributes ``lab``, ``lab_variant`` (empty for the main one) and
``lab_quick``, which ``lab grade`` reads.

Two lab runs to the same recording (two students in one folder) would replace each other's
files, ledger included: a run holds an exclusive lock on ``.RUN.h5.lock`` beside the
recording while it writes, and a second run that finds it held stops at once with one line,
before it touches anything.  A run over an earlier one says so in one line on stderr, naming
what the main recording (and its ledger) held, as ``gridloop run`` does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.labs import Lab, LabError, shared_file
from bench.paths import exclusive


def overrides(lab: Lab, quick: bool, variant: str = "") -> list[str]:
    """The ``--set`` strings of one recording of ``lab``."""
    out = [f"{key}={json.dumps(str(shared_file(name)))}"
           for key, name in lab.shared_data.items()]
    if quick:
        out += lab.quick.set
    if variant:
        v = next((v for v in lab.variants if v.name == variant), None)
        if v is None:
            raise LabError(f"lab {lab.name} has no variant '{variant}'")
        out += v.set
    return out


def stamp(path: Path, lab: str, variant: str, quick: bool, wait_s: float = 2.0) -> None:
    """Mark a finished recording as lab ``lab``'s (``variant`` empty for the main one).
    A recording another program holds open (a viewer, a plain ``gridloop run`` to the same
    file) is waited for ``wait_s``, then one line, not HDF5's traceback."""
    import time

    import h5py

    deadline = time.monotonic() + wait_s
    while True:
        try:
            f = h5py.File(path, "r+")
            break
        except FileNotFoundError:
            raise LabError(f"{path}: the recording was removed before the run could stamp "
                           f"it as the lab's") from None
        except OSError as exc:  # HDF5: "unable to lock file", "already open for write/SWMR"
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise LabError(f"{path} is in use by another program ({_hdf5_reason(exc)}): "
                           f"close what has it open (gridloop view, another gridloop run to "
                           f"the same file) and run the lab again, or give --out another "
                           f"file") from None
    with f:
        f.attrs["lab"] = lab
        f.attrs["lab_variant"] = variant
        f.attrs["lab_quick"] = quick


def _hdf5_reason(exc: OSError) -> str:
    """HDF5's reason in its message, ``... (unable to lock file, errno = 11, ...)``."""
    text = str(exc)
    inner = text.partition("(")[2].rpartition(")")[0] or text
    return inner.split(",")[0].split(" (")[0].strip()


def run_lab(lab: Lab, out: Path, quick: bool = False, quiet: bool = False) -> list[Path]:
    """Write the lab's recordings (``out`` and ``out.<variant>.h5``); returns their paths."""
    jobs = [("", out)] + [(v.name, lab.variant_path(out, v.name)) for v in lab.variants]
    sets_of = {variant: overrides(lab, quick, variant) for variant, _ in jobs}  # fail early
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(out, "gridloop lab run"):
        _run_jobs(lab, jobs, sets_of, quick, quiet)
    return [p for _, p in jobs]


def _run_jobs(lab: Lab, jobs: list[tuple[str, Path]], sets_of: dict[str, list[str]],
              quick: bool, quiet: bool) -> None:
    from bench.runner import execute

    for variant, path in jobs:
        label = f"variant {variant}" if variant else "main recording"
        print(f"lab {lab.name}{' (quick)' if quick else ''}: {label} -> {path}",
              file=sys.stderr)
        sets = sets_of[variant]
        # an earlier run of the lab there is replaced: said in one line, as gridloop run does
        status = execute(lab.scenario, path, sets, quiet=quiet, say_replaced=not variant)
        if status:
            raise LabError(f"lab {lab.name}: the run of {label} failed (status {status})")
        stamp(path, lab.name, variant, quick)
