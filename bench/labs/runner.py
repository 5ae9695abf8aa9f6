"""Running a lab: its main recording and one recording per variant, each stamped as the lab's.

Every recording is a plain ``gridloop run`` of the lab's scenario (:func:`bench.runner.execute`)
with the lab's overrides: first the shared data paths, then the quick ones (``--quick``),
then the variant's (the recording keeps them beside the scenario text).  Afterwards the
recording's root gets the attributes ``lab``, ``lab_variant`` (empty for the main one) and
``lab_quick``, which ``lab grade`` reads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.labs import Lab, LabError, shared_file


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


def stamp(path: Path, lab: str, variant: str, quick: bool) -> None:
    """Mark a finished recording as lab ``lab``'s (``variant`` empty for the main one)."""
    import h5py

    with h5py.File(path, "r+") as f:
        f.attrs["lab"] = lab
        f.attrs["lab_variant"] = variant
        f.attrs["lab_quick"] = quick


def run_lab(lab: Lab, out: Path, quick: bool = False, quiet: bool = False) -> list[Path]:
    """Write the lab's recordings (``out`` and ``out.<variant>.h5``); returns their paths."""
    from bench.runner import execute

    jobs = [("", out)] + [(v.name, lab.variant_path(out, v.name)) for v in lab.variants]
    sets_of = {variant: overrides(lab, quick, variant) for variant, _ in jobs}  # fail early
    out.parent.mkdir(parents=True, exist_ok=True)
    for variant, path in jobs:
        label = f"variant {variant}" if variant else "main recording"
        print(f"lab {lab.name}{' (quick)' if quick else ''}: {label} -> {path}",
              file=sys.stderr)
        sets = sets_of[variant]
        status = execute(lab.scenario, path, sets, quiet=quiet)
        if status:
            raise LabError(f"lab {lab.name}: the run of {label} failed (status {status})")
        stamp(path, lab.name, variant, quick)
    return [p for _, p in jobs]
