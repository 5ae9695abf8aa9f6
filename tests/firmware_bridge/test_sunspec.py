"""SunSpec layouts and value encoding, checked against pysunspec2's own encoder and decoder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sunspec2.device import Model

from firmware_bridge.errors import ConfigError, DeviceError
from firmware_bridge.maps import get_map
from firmware_bridge.sunspec import (
    DEFAULT_BASE_ADDRESS,
    END_MODEL_ID,
    SUNS_MARKER,
    Point,
    decode_value,
    device_layout,
    encode_value,
    fit_scale_factor,
    from_raw,
    layout_from_definition,
    model_layout,
    to_raw,
    type_range,
    unimplemented,
)

from .modbus_support import KINDS

SUNSPEC_JSON = Path(__import__("sunspec2").__file__).parent / "models" / "json"


def _fixed_models() -> list[int]:
    """Every model pysunspec2 ships whose groups repeat a fixed number of times."""
    ids = []
    for path in sorted(SUNSPEC_JSON.glob("model_*.json")):
        text = path.read_text()
        definition = json.loads(text)
        if '"count"' not in text or all(
                isinstance(g.get("count", 1), int) for g in _groups(definition["group"])):
            ids.append(int(definition["id"]))
    return ids


def _groups(group: dict) -> list[dict]:
    out = []
    for sub in group.get("groups", ()):
        out += [sub, *_groups(sub)]
    return out


@pytest.mark.parametrize("model_id", _fixed_models())
def test_model_length_matches_pysunspec2_encoding(model_id: int) -> None:
    expected = len(Model(model_id=model_id).get_mb()) // 2 - 2
    assert model_layout(model_id).length == expected


def test_704_length_counts_its_groups() -> None:
    layout = model_layout(704)
    assert layout.length == 65  # the 59 of its top-level points, plus four 2-register groups
    assert layout.point("PFWInj.PF").offset == 61 - 2
    assert layout.point("PFWAbsRvrt.Ext").offset == 66


def test_offsets_and_scale_factors_of_701() -> None:
    layout = model_layout(701)
    w, hz = layout.point("W"), layout.point("Hz")
    assert (w.offset, w.size, w.type, w.sf) == (10, 1, "int16", "W_SF")
    assert (hz.offset, hz.size, hz.type, hz.sf) == (17, 2, "uint32", "Hz_SF")
    assert layout.point("TotWhInj").size == 4
    assert layout.point("W_SF").type == "sunssf"


def test_a_model_without_a_definition_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="model 64999"):
        model_layout(64999)
    with pytest.raises(ConfigError, match="did you mean 'WMaxLimPct'"):
        model_layout(704).point("WMaxLimPc")


def test_repeating_groups_are_refused_by_name() -> None:
    definition = json.loads((SUNSPEC_JSON / "model_705.json").read_text())
    with pytest.raises(ConfigError, match="705.*repeats by point"):
        layout_from_definition(definition)


def test_device_layout_puts_models_back_to_back() -> None:
    layout = device_layout([1, 701], DEFAULT_BASE_ADDRESS)
    assert layout.models == {1: 40002, 701: 40002 + 68}
    assert layout.end_address == 40002 + 68 + 155 + 2
    assert layout.address(701, "W") == 40070 + 10
    with pytest.raises(ConfigError, match="no SunSpec model 802"):
        layout.address(802, "SoC")


# ---------------------------------------------------------------------- values


def _pt(ptype: str, size: int = 0) -> Point:
    return Point("X", ptype, 0, size or {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2,
                                         "acc32": 2, "int64": 4, "uint64": 4, "acc64": 4,
                                         "sunssf": 1, "enum16": 1, "float32": 2,
                                         "string": 4}[ptype])


@pytest.mark.parametrize("ptype, value, registers", [
    ("int16", -2, [0xFFFE]),
    ("uint16", 50_000, [50_000]),
    ("int32", -12345, [0xFFFF, 0xCFC7]),           # most significant word first
    ("uint32", 0x12345678, [0x1234, 0x5678]),
    ("uint64", 0x0102030405060708, [0x0102, 0x0304, 0x0506, 0x0708]),
    ("acc32", 0, [0, 0]),
    ("string", "SunS", [0x5375, 0x6E53, 0, 0]),     # NUL-padded to its full size
])
def test_golden_register_vectors(ptype: str, value: object, registers: list[int]) -> None:
    point = _pt(ptype)
    assert encode_value(point, value) == registers  # type: ignore[arg-type]
    assert decode_value(point, registers) == value


@pytest.mark.parametrize("ptype, sentinel", [
    ("int16", [0x8000]), ("uint16", [0xFFFF]), ("sunssf", [0x8000]), ("enum16", [0xFFFF]),
    ("int32", [0x8000, 0]), ("uint32", [0xFFFF, 0xFFFF]), ("uint64", [0xFFFF] * 4),
    ("int64", [0x8000, 0, 0, 0]), ("float32", [0x7FC0, 0]), ("string", [0, 0, 0, 0]),
])
def test_unimplemented_sentinels(ptype: str, sentinel: list[int]) -> None:
    point = _pt(ptype)
    assert unimplemented(point) == sentinel
    assert encode_value(point, None) == sentinel
    assert decode_value(point, sentinel) is None


def test_accumulator_zero_reads_as_zero() -> None:
    assert decode_value(_pt("acc32"), [0, 0]) == 0


@pytest.mark.parametrize("ptype", ["int16", "uint16", "int32", "uint32", "uint64"])
def test_out_of_range_raw_values_are_refused(ptype: str) -> None:
    lo, hi = type_range(ptype)
    point = _pt(ptype)
    assert decode_value(point, encode_value(point, hi)) == hi
    with pytest.raises(ConfigError, match="does not fit"):
        encode_value(point, hi + 1)  # the sentinel (or past the type)
    with pytest.raises(ConfigError, match="does not fit"):
        encode_value(point, lo - 1)


def test_strings_longer_than_the_point_are_refused() -> None:
    with pytest.raises(ConfigError, match="longer than 8 bytes"):
        encode_value(_pt("string"), "gridloop!")


@given(st.sampled_from(["int16", "uint16", "int32", "uint32", "int64", "uint64", "acc32"]),
       st.data())
def test_integer_round_trip(ptype: str, data: st.DataObject) -> None:
    lo, hi = type_range(ptype)
    value = data.draw(st.integers(lo, hi))
    point = _pt(ptype)
    regs = encode_value(point, value)
    assert all(0 <= r <= 0xFFFF for r in regs) and len(regs) == point.size
    assert decode_value(point, regs) == value


@given(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x7F), max_size=8))
def test_string_round_trip(text: str) -> None:
    assert decode_value(_pt("string"), encode_value(_pt("string"), text)) == (text or None)


@given(st.floats(-3e4, 3e4, allow_nan=False), st.integers(-3, 2))
def test_scaling_round_trip_is_within_half_a_step(value: float, sf: int) -> None:
    assert abs(from_raw(to_raw(value, sf), sf) - value) <= 0.5 * 10.0 ** sf + 1e-9


def test_fit_scale_factor_picks_the_finest_that_fits() -> None:
    assert fit_scale_factor(20_000, "int16", finest=0) == 0
    assert fit_scale_factor(200_000, "int16", finest=0) == 1
    assert fit_scale_factor(400_000, "int16", finest=0) == 2
    assert fit_scale_factor(50.0, "int16") == -2
    assert fit_scale_factor(655_340, "uint16", finest=0) == 1


# ---------------------------------------------------------------------- maps vs pysunspec2


def _pysunspec2_values(image: list[int], layout: object, model_id: int) -> dict[str, object]:
    """pysunspec2's decoding of one model's registers out of ``image``."""
    start = layout.model_address(model_id) - layout.base_address  # type: ignore[attr-defined]
    size = model_layout(model_id).size
    data = b"".join(r.to_bytes(2, "big") for r in image[start:start + size])
    model = Model(model_id=model_id, data=data)
    return {name: point.cvalue for name, point in model.points.items()}


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "gpu_rack"])
def test_encoded_maps_decode_the_same_in_pysunspec2(kind: str) -> None:
    map_name, signals = KINDS[kind]
    regmap = get_map(map_name)
    layout = regmap.layout()
    image = regmap.blank(layout, {"SN": "node1.x", "DA": 7})
    regmap.encode_into(image, layout, signals)
    assert tuple(image[:2]) == SUNS_MARKER and image[-2:] == [END_MODEL_ID, 0]
    ours = regmap.decode(image, layout)
    for b in regmap.bindings:
        if b.signal not in signals or b.codes:
            continue
        theirs = _pysunspec2_values(image, layout, b.model)[b.point]
        assert theirs is not None, (b.model, b.point)
        assert ours[b.signal] == pytest.approx(float(theirs) * b.factor, rel=1e-9), b
        step = 10.0 ** _sf_of(image, layout, regmap, b) * abs(b.factor)
        assert ours[b.signal] == pytest.approx(signals[b.signal], abs=step / 2 + 1e-9), b
    common = _pysunspec2_values(image, layout, 1)
    assert (common["Mn"], common["SN"], common["DA"]) == ("gridloop", "node1.x", 7)


def _sf_of(image: list[int], layout: object, regmap: object, b: object) -> int:
    point = model_layout(b.model).point(b.point)  # type: ignore[attr-defined]
    if point.sf is None:
        return 0
    sf_addr = layout.address(b.model, point.sf) - layout.base_address  # type: ignore
    raw = image[sf_addr]
    return raw - 0x10000 if raw >= 0x8000 else raw


@pytest.mark.parametrize("kind", list(KINDS))
def test_decode_inverts_encode_for_every_map(kind: str) -> None:
    map_name, signals = KINDS[kind]
    regmap = get_map(map_name)
    layout = regmap.layout()
    decoded = regmap.decode(regmap.encode(signals, layout), layout)
    assert set(decoded) == {s for s in regmap.signals if s in signals}
    for name, value in decoded.items():
        assert value == pytest.approx(signals[name], rel=1e-3, abs=0.06), name


def test_missing_and_nan_signals_are_unimplemented_points() -> None:
    regmap = get_map("sunspec_battery")
    layout = regmap.layout()
    decoded = regmap.decode(regmap.encode({"soc": 0.5, "p_w": math.nan}, layout), layout)
    assert decoded == {"soc": 0.5}


def test_a_value_too_large_for_the_scale_factor_names_the_point() -> None:
    regmap = get_map("sunspec_inverter", rating_w=10_000.0)
    with pytest.raises(ConfigError, match=r"701.*W.*does not fit|W \(int16\)"):
        regmap.encode({"p_ac_w": 5e6})


def test_control_writes_merge_adjacent_registers_and_refuse_unknown_names() -> None:
    regmap = get_map("sunspec_inverter")
    layout = regmap.layout()
    image = regmap.blank(layout)
    writes = regmap.control_writes({"p_set_w": -12_345.0}, image, layout)
    # WSetEna, WSetMod, WSet (int32): one write of four registers
    assert writes == [(layout.address(704, "WSetEna"), [1, 1, 0xFFFF, 0xCFC7])]
    with pytest.raises(ConfigError, match="cannot write p_sett_w"):
        regmap.control_writes({"p_sett_w": 1.0}, image, layout)


def test_controls_written_follow_their_enable_points() -> None:
    regmap = get_map("sunspec_inverter")
    layout = regmap.layout()
    image = regmap.blank(layout)
    (address, values), = regmap.control_writes({"w_max_lim_pct": 40.0}, image, layout)
    at = address - layout.base_address
    image[at:at + len(values)] = values
    assert regmap.controls_written(image, layout, address, len(values)) == \
        {"w_max_lim_pct": 40.0}
    ena = layout.address(704, "WMaxLimPctEna")
    image[ena - layout.base_address] = 0  # a client disables the limit: back to 100 %
    assert regmap.controls_written(image, layout, ena, 1) == {"w_max_lim_pct": 100.0}
    assert not regmap.writable(layout, layout.address(701, "W"), 1)
    assert regmap.writable(layout, address, len(values))


def test_read_spans_are_few_and_within_125_registers() -> None:
    for name in ("sunspec_inverter", "sunspec_battery", "sunspec_meter", "gpu_rack"):
        regmap = get_map(name)
        spans = regmap.read_spans(regmap.layout())
        assert 1 <= len(spans) <= 4  # the inverter's DC side is in legacy model 103
        assert all(0 < n <= 125 for _, n in spans)
        assert spans == sorted(spans)


def test_unknown_map_names_suggest_the_close_one() -> None:
    with pytest.raises(ConfigError, match="did you mean 'sunspec_meter'"):
        get_map("sunspec_metre")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        get_map("sunspec_meter", rating_kw=5)


def test_meters_reporting_export_positive_are_flipped_into_our_sign() -> None:
    flipped = get_map("sunspec_meter", import_positive=False)
    layout = flipped.layout()
    image = flipped.encode({"p_w": 12_000.0, "e_import_wh": 5.0e6}, layout)
    w = image[layout.address(203, "W") - layout.base_address]
    assert w == 0x10000 - 1200  # the meter says -12 kW at W_SF = 1...
    assert flipped.decode(image, layout)["p_w"] == 12_000.0  # ...which is import for us
    assert get_map("sunspec_meter").decode(image, layout)["p_w"] == -12_000.0


def test_the_documented_addresses_are_the_generated_ones(repo: Path) -> None:
    """docs/register-maps.md and docs/gpu-rack-map.md quote addresses; they must not drift."""
    import re

    checked = 0
    text = (repo / "docs" / "register-maps.md").read_text()
    for section in text.split("\n### ")[1:]:
        name = section.split("`")[1]
        layout = get_map(name).layout()
        for model, point, address in re.findall(r"\| `\w+` \| (\d+)\.(\w+)[^|]*\| (\d+) \|",
                                                section):
            assert layout.address(int(model), point) == int(address), (name, model, point)
            checked += 1
    gpu = get_map("gpu_rack").layout()
    for address, point in re.findall(r"^\| (\d+)(?:-\d+)? \| (\w+) \|",
                                     (repo / "docs" / "gpu-rack-map.md").read_text(), re.MULTILINE):
        assert gpu.address(64901, point) == int(address), point
        checked += 1
    assert checked >= 30


@pytest.mark.parametrize("raw", [0x7FFF, 20, 0x10000 - 11])
def test_a_device_scale_factor_out_of_sunspec_range_is_a_device_error(raw: int) -> None:
    """10**32767 overflows and 10**20 W is nonsense: the reading fails, naming the point."""
    map_name, signals = KINDS["meter"]
    regmap = get_map(map_name)
    layout = regmap.layout()
    image = regmap.blank(layout, {"SN": "m", "DA": 1})
    regmap.encode_into(image, layout, signals)
    point = model_layout(203).point("W")
    image[layout.address(203, point.sf) - layout.base_address] = raw
    signed = raw - 0x10000 if raw >= 0x8000 else raw
    with pytest.raises(DeviceError, match=rf"model 203 W_SF = {signed}: a scale factor "
                                          r"outside SunSpec's -10..10"):
        regmap.decode(image, layout)
