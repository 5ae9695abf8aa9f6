"""The GPU rack's register map: SunSpec framing around a vendor model of its own, 64901.

No SunSpec model describes a rack of GPUs, so the rack exposes ``SunS``, the common model 1,
then model 64901 (``gridloop_gpu_rack``, defined in ``model_64901.json`` beside this module
in pysunspec2's JSON schema), then the end model.  Any SunSpec scanner walks it; pysunspec2
decodes it once this package's directory is on its model path.  With the default base
address the absolute addresses are (docs/gpu-rack-map.md has the full table):

======  =========  ======  =====  ==========================================  ===========
addr    point      type    units  meaning                                     signal
======  =========  ======  =====  ==========================================  ===========
40070   ID         uint16         64901
40071   L          uint16         12
40072   WRtg       uint16  W      rated AC power (scaled by W_SF)
40073   W          int16   W      AC power drawn, positive consuming          ``p_w``
40074   WCap       uint16  W      power cap, read/write                       ``power_cap_w``
40075   TotWh      acc64   Wh     energy drawn (4 registers)                  ``energy_wh``
40079   Tmp        int16   C      hottest GPU temperature (Tmp_SF)            ``temp_c``
40080   Phase      enum16         workload phase code                         ``phase``
40081   W_SF       sunssf         scale factor of WRtg, W, WCap
40082   TotWh_SF   sunssf         scale factor of TotWh
40083   Tmp_SF     sunssf         scale factor of Tmp
======  =========  ======  =====  ==========================================  ===========

``Phase`` carries the plant's phase code unchanged (0 idle, 1 compute, 2 memory, 3 light,
4 checkpoint).  Writing ``WCap`` (function code 6 or 16) sets the plant's ``power_cap_w``.
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
