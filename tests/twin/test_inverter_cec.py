"""Import of CEC inverters from the library pvlib ships, and the shipped parameter file."""

from __future__ import annotations

import numpy as np
import pytest

from twin import params
from twin.errors import ParameterError
from twin.interop.cec import find_cec_inverter, import_cec_inverter
from twin.inverter import InverterParams, sandia_ac_power

pvlib = pytest.importorskip("pvlib")


def test_import_by_listed_name_and_by_key():
    by_name = import_cec_inverter("ABB: TRIO-60.0-TL-OUTD-US-480 [480V]")
    by_key = import_cec_inverter("abb__trio_60_0_tl_outd_us_480__480v_")
    assert by_name.params == by_key.params
    assert by_name.kind == "inverter"
    assert by_name.name == "ABB__TRIO_60_0_TL_OUTD_US_480__480V_"
    assert "pvlib" in by_name.source and "sam-library-cec-inverters" in by_name.source
    assert by_name.initial["p_cmd_w"] == by_name.params["s_max_va"] == 60000.0


def test_imported_parameters_reproduce_pvlib(tmp_path):
    name = "SMA_America__SB7000TL_US__240V_"
    path = params.save(import_cec_inverter(name), tmp_path / "sb7000.toml")
    p = InverterParams.from_params(params.load(path))
    row = pvlib.pvsystem.retrieve_sam("cecinverter")[name]
    p_dc = np.linspace(0, 1.3 * row.Pdco, 300)
    v = np.full_like(p_dc, row.Vdco)
    assert np.array_equal(sandia_ac_power(v, p_dc, p.sandia), pvlib.inverter.sandia(v, p_dc, row))


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ParameterError, match="no inverter 'ABB TRIO 60 TL OUTD US 48'.*"
                                             "did you mean 'ABB__TRIO_60_0_TL_OUTD_US_480__480V_'"):
        import_cec_inverter("ABB TRIO 60 TL OUTD US 48")
    # no name contains it, none is alike ('zzzz' is in two Princeton Power names)
    with pytest.raises(ParameterError, match="no inverter 'qqqq' in the CEC library$"):
        import_cec_inverter("qqqq")


def test_unknown_name_lists_the_names_that_contain_it():
    """What was typed, its punctuation as the library's keys have it, is part of names:
    those, not the closest spelling (ABB__TRIO_TM_60_0_US_480__480V_ was suggested)."""
    with pytest.raises(ParameterError) as exc:
        import_cec_inverter("ABB: TRIO-60.0")
    assert str(exc.value) == ("no inverter 'ABB: TRIO-60.0' in the CEC library; did you mean "
                              "'ABB__TRIO_60_0_TL_OUTD_US_480__480V_'?")
    names = ["X__AB_10__240V_", "X__AB_10__208V_", "Y__ZAB_10__240V_", "X__AB_12__240V_"]
    with pytest.raises(ParameterError, match=r"did you mean one of 'X__AB_10__208V_', "
                                             r"'X__AB_10__240V_', 'Y__ZAB_10__240V_'\?$"):
        find_cec_inverter("ab-10", names)
    many = [f"ACME__UNIT_{k}__240V_" for k in range(12)]
    with pytest.raises(ParameterError, match=r"; 12 names contain 'acme: unit', e\.g\. "
                                             r"'ACME__UNIT_0__240V_', .* \(and 7 more\)$"):
        find_cec_inverter("acme: unit", many)


def test_ambiguous_name_lists_candidates():
    names = ["A__B", "A_B", "C"]
    with pytest.raises(ParameterError, match="ambiguous: A__B, A_B"):
        find_cec_inverter("a-b", names)
    assert find_cec_inverter("A_B", names) == "A_B"


def test_shipped_file_is_what_the_importer_gives(repo):
    shipped = params.load(repo / "twin/data/inverter_pv_abb_trio_60.toml")
    fresh = import_cec_inverter(shipped.meta["cec_key"])
    assert shipped.params == fresh.params
    assert shipped.initial == fresh.initial
