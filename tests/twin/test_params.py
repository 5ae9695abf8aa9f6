"""Parameter files: reading, writing, and errors that name the file and the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from twin import params
from twin.errors import ParameterError, TwinError


def test_a_file_that_is_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[meta]\nkind = "battery"\n# at 25 °C\n[params]\n'.encode("latin-1"))
    with pytest.raises(ParameterError) as exc:
        params.load(path)
    assert str(exc.value) == f"{path}:3: not UTF-8 (byte 0xb0); save the file as UTF-8"


def test_save_into_a_directory_names_it_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    pset = params.ParamSet(kind="battery", name="x", params={"capacity_ah": 1.0})
    folder = tmp_path / "somedir"
    folder.mkdir()
    with pytest.raises(TwinError) as exc:
        params.save(pset, folder)
    assert str(exc.value).startswith(f"{folder}: cannot write the parameter file (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somedir"]
    # and what it writes, it writes in UTF-8 (what load reads), whatever the locale
    pset.meta["note"] = "at 25 °C"
    assert params.load(params.save(pset, tmp_path / "ok.toml")).meta["note"] == "at 25 °C"


@dataclass(frozen=True)
class _Inner:
    rating_w: float

    def __post_init__(self) -> None:
        if self.rating_w <= 0:  # named from the [params] table, as the models do
            raise ParameterError("inner.rating_w: must be positive")


@dataclass(frozen=True)
class _Outer:
    s_max_va: float
    inner: _Inner = field(default_factory=lambda: _Inner(1.0))

    def __post_init__(self) -> None:
        if self.s_max_va <= 0:
            raise ParameterError("s_max_va: must be positive")


@pytest.mark.parametrize(("mapping", "message"), [
    ({"s_max_va": 0.0}, "p.toml: params.s_max_va: must be positive"),
    ({"s_max_va": 1.0, "inner": {"rating_w": -1.0}},
     "p.toml: params.inner.rating_w: must be positive"),
])
def test_a_check_of_the_model_names_file_and_field(mapping: dict, message: str) -> None:
    with pytest.raises(ParameterError) as exc:
        params.from_mapping(_Outer, mapping, "p.toml: params")
    assert str(exc.value) == message
