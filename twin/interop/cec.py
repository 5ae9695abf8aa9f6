"""Inverter parameter sets from the CEC inverter library that pvlib ships.

pvlib (an optional extra, ``gridloop[interop]``) bundles the CEC list of grid-tied inverters
with their Sandia-model coefficients, as the System Advisor Model distributes it.  pvlib keys
each inverter by its name with punctuation turned into underscores
(``ABB__TRIO_60_0_TL_OUTD_US_480__480V_``); :func:`import_cec_inverter` accepts that key or
the listed name (``ABB: TRIO-60.0-TL-OUTD-US-480 [480V]``), in any case.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path

from twin.errors import ParameterError, TwinError
from twin.params import ParamSet

_SANDIA_FIELDS = {"paco_w": "Paco", "pdco_w": "Pdco", "vdco_v": "Vdco", "pso_w": "Pso",
                  "c0_per_w": "C0", "c1_per_v": "C1", "c2_per_v": "C2", "c3_per_v": "C3",
                  "pnt_w": "Pnt"}
_INFO_FIELDS = {"vdc_max_v": "Vdcmax", "idc_max_a": "Idcmax", "mppt_low_v": "Mppt_low",
                "mppt_high_v": "Mppt_high"}


def _key(name: str) -> str:
    """Compare names by letters and digits only, ignoring case and punctuation."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _library():
    try:
        import pvlib
    except ImportError:
        raise TwinError("importing from the CEC library needs pvlib: "
                        "pip install 'gridloop[interop]'") from None
    files = sorted((Path(pvlib.__file__).parent / "data").glob("sam-library-cec-inverters-*.csv"))
    source = files[-1].name if files else "the CEC inverter library"
    return pvlib.pvsystem.retrieve_sam("cecinverter"), pvlib.__version__, source


def find_cec_inverter(name: str, names: list[str]) -> str:
    """The pvlib key of inverter ``name``; a clear error with suggestions when there is none."""
    if name in names:
        return name
    wanted = _key(name)
    hits = [n for n in names if _key(n) == wanted]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ParameterError(f"CEC inverter '{name}' is ambiguous: " + ", ".join(hits[:5]))
    raise ParameterError(f"no inverter '{name}' in the CEC library{_suggest(name, names)}")


#: the most names a "did you mean" lists
SUGGEST_AT_MOST = 5


def _suggest(name: str, names: list[str]) -> str:
    """"; did you mean ...?" for an unknown inverter ``name``: the library's names that
    contain it (punctuation turned into underscores, as in the library's keys, any case),
    those that start with it first, up to :data:`SUGGEST_AT_MOST`; else the closest names;
    else ``""``."""
    wanted = _key(name)
    keys = {n: _key(n) for n in names}
    within = sorted((n for n, k in keys.items() if wanted and wanted in k),
                    key=lambda n: (not keys[n].startswith(wanted),
                                   re.search(rf"(?<![0-9a-z]){re.escape(wanted)}", keys[n])
                                   is None, keys[n]))
    if within:
        listed = ", ".join(repr(n) for n in within[:SUGGEST_AT_MOST])
        more = len(within) - SUGGEST_AT_MOST
        if more > 0:
            return (f"; {len(within)} names contain '{name}', e.g. {listed} (and {more} "
                    "more)")
        return f"; did you mean {'one of ' if len(within) > 1 else ''}{listed}?"
    by_key = {k: n for n, k in keys.items()}
    close = difflib.get_close_matches(wanted, list(by_key), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(by_key[c]) for c in close)}?" if close else ""


def import_cec_inverter(name: str) -> ParamSet:
    """An ``inverter`` parameter set (Sandia model) for a CEC-listed inverter.

    ``s_max_va`` and ``p_max_w`` are the listed AC rating ``Paco`` (the list gives no separate
    apparent-power rating); the nominal voltage is the listed ``Vac``; the frequency is 60 Hz
    (the list covers North American products).  The initial command is the rating, so the
    unit tracks the maximum power point from the start, as pvlib's static model does.
    """
    db, version, source = _library()
    key = find_cec_inverter(name, list(db.columns))
    row = db[key]
    sandia = {ours: float(row[theirs]) for ours, theirs in _SANDIA_FIELDS.items()}
    sandia.update({ours: float(row[theirs]) for ours, theirs in _INFO_FIELDS.items()
                   if not _missing(row[theirs])})
    paco = sandia["paco_w"]
    params = {
        "s_max_va": paco,
        "p_max_w": paco,
        "efficiency_model": "sandia",
        "mode": "grid_following",
        "priority": "p",
        "tau_s": 0.1,
        "ramp_w_per_s": 0.0,
        "v_nom_v": float(row["Vac"]),
        "f_nom_hz": 60.0,
        "sandia": sandia,
    }
    meta = {
        "source": f"CEC inverter library as shipped with pvlib {version} ({source}), "
                  f"imported with gridloop twin params import-cec",
        "cec_key": key,
        "cec_type": "" if _missing(row["CEC_Type"]) else str(row["CEC_Type"]),
        "notes": "s_max_va = p_max_w = Paco; tau_s and ramp_w_per_s are gridloop defaults, "
                 "not from the library",
    }
    if not _missing(row["CEC_Date"]):
        meta["cec_date"] = str(row["CEC_Date"])
    return ParamSet(kind="inverter", name=key, params=params,
                    initial={"p_cmd_w": paco, "q_cmd_var": 0.0}, meta=meta)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
