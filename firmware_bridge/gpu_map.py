"""The GPU rack's register map: SunSpec framing around a vendor model of its own, 64901.

No SunSpec model describes a rack of GPUs, so the rack exposes ``SunS``, the common model 1,
then model 64901 (``gridloop_gpu_rack``, defined in ``model_64901.json`` beside this module
in pysunspec2's JSON schema), then the end model.  Any SunSpec scanner walks it; pysunspec2
decodes it once :data:`MODEL_DIR` is on its model path.  Points: ``WRtg`` (rated power),
``W`` (AC power drawn, ``p_w``), ``WCap`` (power cap, read/write, ``power_cap_w``),
``TotWh`` (energy, ``energy_wh``), ``Tmp`` (mean GPU die temperature, ``temp_c``),
``Phase`` (workload phase code, ``phase``) and their scale factors.  docs/gpu-rack-map.md
has every address.
"""

from __future__ import annotations

from pathlib import Path

from firmware_bridge.maps import (
    Binding,
    Control,
    RegisterMap,
    common_identity,
    power_scale_factor,
)
from firmware_bridge.sunspec import to_raw

#: the vendor model of the GPU rack
GPU_RACK_MODEL = 64901
#: directory holding ``model_64901.json``, for pysunspec2's ``set_model_defs_path``
MODEL_DIR = Path(__file__).resolve().parent


def gpu_rack(rating_w: float = 100_000.0) -> RegisterMap:
    """A GPU rack: models 1 and 64901.

    Parameters
    ----------
    rating_w : float
        Rated AC power of the rack; sets the power scale factor. [W]
    """
    w_sf = power_scale_factor(rating_w)
    return RegisterMap(
        name="gpu_rack", kind="gpu_rack", models=(1, GPU_RACK_MODEL),
        bindings=(
            Binding("p_w", GPU_RACK_MODEL, "W"),
            Binding("energy_wh", GPU_RACK_MODEL, "TotWh"),
            Binding("temp_c", GPU_RACK_MODEL, "Tmp"),
            Binding("power_cap_w", GPU_RACK_MODEL, "WCap"),
            Binding("phase", GPU_RACK_MODEL, "Phase"),
        ),
        controls=(Control("power_cap_w", GPU_RACK_MODEL, "WCap"),),
        constants={
            **common_identity("gpu_rack"),
            (GPU_RACK_MODEL, "W_SF"): w_sf,
            (GPU_RACK_MODEL, "WRtg"): to_raw(rating_w, w_sf),
            (GPU_RACK_MODEL, "WCap"): to_raw(rating_w, w_sf),
            (GPU_RACK_MODEL, "TotWh_SF"): 0,
            (GPU_RACK_MODEL, "Tmp_SF"): -1,
        })
