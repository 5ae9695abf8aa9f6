"""Parameter sets as files with provenance.

A parameter file is TOML with four tables::

    [meta]                      # what this is and where it came from
    kind = "battery"            # which model reads it
    name = "LFP 280 Ah cell"
    source = "datasheet X, fitted with gridloop calibrate on run Y"
    [initial]                   # initial conditions that belong to the parameters
    soc = 0.5
    [params]                    # the model's parameters, units in their names
    capacity_ah = 280.0
    [params.ocv_v]              # a table: named axes and values
    soc = [0.0, 0.5, 1.0]
    values = [3.0, 3.3, 3.6]

Values are SI unless the name says otherwise (``_ah``, ``_c``, ``_pct``).  Models turn
``params`` into their own dataclasses with :func:`from_mapping`, which rejects unknown keys
with a "did you mean" hint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tomli_w

from twin.errors import ParameterError, TwinError

T = TypeVar("T")

_TOP_LEVEL = ("meta", "initial", "params")


def did_you_mean(name: str, choices: typing.Iterable[str], cutoff: float = 0.6) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest of ``choices`` at least ``cutoff``
    alike (difflib's ratio), or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class Table:
    """A lookup table over named axes, evaluated by multilinear interpolation.

    ``axes`` maps each axis name to its strictly increasing breakpoints; ``values`` has one
    dimension per axis, in the same order.  Outside the breakpoints the edge value holds
    (no extrapolation); PyBaMM's linear interpolants extrapolate linearly by default, so
    the two agree within the breakpoints only.
    """

    axes: tuple[tuple[str, np.ndarray], ...]
    values: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(len(b) for _, b in self.axes)
        if self.values.shape != shape:
            raise ParameterError(
                f"table values have shape {self.values.shape}, axes need {shape}"
            )
        for name, b in self.axes:
            if len(b) > 1 and not np.all(np.diff(b) > 0):
                raise ParameterError(f"table axis '{name}' is not strictly increasing")

    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.axes)

    def __call__(self, **coords: Any) -> np.ndarray:
        """Evaluate at ``coords`` (one array-like per axis, broadcast together)."""
        missing = set(self.axis_names) - set(coords)
        if missing:
            raise ParameterError(f"table needs coordinates {sorted(missing)}")
        pts = np.broadcast_arrays(*(np.asarray(coords[n], dtype=float) for n in self.axis_names))
        out = np.zeros(pts[0].shape)
        # Multilinear interpolation: sum over the 2**d corners of each cell.
        idx, frac = [], []
        for (_, b), x in zip(self.axes, pts):
            if len(b) == 1:
                idx.append(np.zeros(x.shape, dtype=int))
                frac.append(np.zeros(x.shape))
                continue
            xc = np.clip(x, b[0], b[-1])
            i = np.clip(np.searchsorted(b, xc, side="right") - 1, 0, len(b) - 2)
            idx.append(i)
            frac.append((xc - b[i]) / (b[i + 1] - b[i]))
        d = len(self.axes)
        for corner in range(2**d):
            w = np.ones(pts[0].shape)
            sel = []
            for k in range(d):
                hi = (corner >> k) & 1
                n_k = len(self.axes[k][1])
                w = w * (frac[k] if hi else 1.0 - frac[k])
                sel.append(np.minimum(idx[k] + hi, n_k - 1))
            out = out + w * self.values[tuple(sel)]
        return out

    def to_mapping(self) -> dict[str, Any]:
        m: dict[str, Any] = {n: b.tolist() for n, b in self.axes}
        m["values"] = self.values.tolist()
        return m

    @classmethod
    def from_mapping(cls, m: dict[str, Any], where: str = "table") -> Table:
        if "values" not in m:
            raise ParameterError(f"{where}: a table needs 'values' and one list per axis")
        axes = []
        for k, v in m.items():
            if k == "values":
                continue
            try:
                axes.append((k, np.asarray(v, dtype=float).reshape(-1)))
            except (TypeError, ValueError) as exc:
                raise ParameterError(f"{where}.{k}: axis is not a list of numbers") from exc
        try:
            values = np.asarray(m["values"], dtype=float)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"{where}.values: not a (nested) list of numbers") from exc
        try:
            return cls(tuple(axes), values)
        except ParameterError as exc:
            raise ParameterError(f"{where}: {exc}") from None


@dataclass
class ParamSet:
    """One parameter file: what the model reads, the initial state, and the provenance."""

    kind: str
    name: str
    params: dict[str, Any]
    initial: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def source(self) -> str:
        return str(self.meta.get("source", ""))


def load(path: str | Path) -> ParamSet:
    """Read a parameter file; errors name the file and the field."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:  # a misspelt name of a shipped set, say: name the nearest
        shipped = sorted(f.stem for f in Path(__file__).with_name("data").glob("*.toml"))
        raise ParameterError(f"{path}: no such parameter file"
                             f"{did_you_mean(path.name.removesuffix('.toml'), shipped)}"
                             ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; an editor saved it as Latin-1, say
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise ParameterError(f"{path}:{line}: not UTF-8 (byte 0x{exc.object[exc.start]:02x}); "
                             "save the file as UTF-8") from None
    for key in doc:
        if key not in _TOP_LEVEL:
            raise ParameterError(
                f"{path}: unknown table [{key}]{did_you_mean(key, _TOP_LEVEL)}; "
                f"expected {', '.join(_TOP_LEVEL)}"
            )
    meta = dict(doc.get("meta", {}))
    if "kind" not in meta:
        raise ParameterError(f"{path}: meta.kind is missing (which model reads this file?)")
    if "params" not in doc:
        raise ParameterError(f"{path}: the [params] table is missing")
    return ParamSet(
        kind=str(meta["kind"]),
        name=str(meta.get("name", path.stem)),
        params=dict(doc["params"]),
        initial=dict(doc.get("initial", {})),
        meta=meta,
        path=path,
    )


def _plain(value: Any) -> Any:
    """Turn numpy values, tables and dataclasses into TOML-serialisable data."""
    if isinstance(value, Table):
        return value.to_mapping()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dump(pset: ParamSet) -> str:
    """The TOML text of a parameter set."""
    meta = {"kind": pset.kind, "name": pset.name, **{k: v for k, v in pset.meta.items()
                                                       if k not in ("kind", "name")}}
    doc = {"meta": _plain(meta), "initial": _plain(pset.initial), "params": _plain(pset.params)}
    return tomli_w.dumps(doc)


def save(pset: ParamSet, path: str | Path) -> Path:
    """Write a parameter set atomically (a crash never leaves half a file)."""
    path = Path(path)
    text = dump(pset)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")  # what load reads, whatever the locale
        tmp.replace(path)
    except OSError as exc:  # a directory, a full disk: no stray .tmp, and the real name
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise TwinError(f"{path}: cannot write the parameter file ({exc.strerror or exc})"
                        ) from None
    return path


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        # Prefer a table when the value is a mapping, a number otherwise.
        for a in sorted((a for a in args if a is not type(None)),
                        key=lambda a: 0 if (a is Table) == isinstance(value, dict) else 1):
            try:
                return _coerce(a, value, where)
            except ParameterError as exc:
                errors.append(str(exc))
        raise ParameterError(errors[0] if errors else f"{where}: bad value {value!r}")
    if tp is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ParameterError(f"{where}: {value!r} is not one of "
                                 f"{', '.join(repr(a) for a in args)}"
                                 f"{did_you_mean(str(value), map(str, args))}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ParameterError(f"{where}: expected a table, got {value!r}")
        vt = args[1] if args else Any
        return {str(k): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{where}: expected a list, got {value!r}")
        vt = args[0] if args else Any
        return [_coerce(vt, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterError(f"{where}: expected a number, got {value!r}")
        v = float(value)
        if not np.isfinite(v):
            raise ParameterError(f"{where}: {value!r} is not finite")
        return v
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParameterError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ParameterError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Table:
        if isinstance(value, Table):
            return value
        if not isinstance(value, dict):
            raise ParameterError(f"{where}: expected a table with axes and 'values'")
        return Table.from_mapping(value, where)
    if origin is tuple and args and args[-1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParameterError(f"{where}: expected a table, got {value!r}")
        return from_mapping(tp, value, where)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ParameterError(f"{where}: cannot read {value!r} as {tp}")


def from_mapping(cls: type[T], mapping: dict[str, Any], where: str = "params") -> T:
    """Build dataclass ``cls`` from a mapping, validating names and types.

    Unknown keys raise :class:`ParameterError` naming ``where.key`` with a "did you mean"
    hint; missing fields without defaults are named too.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in mapping:
        if key not in fields:
            raise ParameterError(
                f"{where}.{key}: unknown parameter{did_you_mean(key, fields)}"
            )
    kwargs = {}
    for name, f in fields.items():
        if name in mapping:
            kwargs[name] = _coerce(hints[name], mapping[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParameterError(f"{where}.{name}: required parameter is missing")
    try:
        return cls(**kwargs)
    except ParameterError as exc:  # a check of the dataclass's own, naming the field
        raise ParameterError(_within(where, str(exc))) from None
    except (ValueError, TypeError) as exc:
        raise ParameterError(f"{where}: {exc}") from None


def _within(where: str, message: str) -> str:
    """``message`` (``field: what is wrong``, from a dataclass check) under ``where``:
    ``p.toml: params`` and ``s_max_va: must be positive`` make ``p.toml: params.s_max_va:
    must be positive``.  A message that already starts at ``where``'s last table
    (``sandia.pdco_w`` under ``params.sandia``, ``params.gpus`` under ``params``) is not
    named twice."""
    if message.startswith(where):
        return message
    last = re.search(r"\w+$", where)
    if last and re.match(rf"{last.group()}\b", message):
        return where[:last.start()] + message
    return f"{where}.{message}"


def to_mapping(obj: Any) -> dict[str, Any]:
    """The inverse of :func:`from_mapping`: plain data, ready for :func:`save`."""
    return _plain(obj)
