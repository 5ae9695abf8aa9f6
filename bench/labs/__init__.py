"""Microgrid labs: scenarios with lab sheets, run and graded from the command line.

A lab is a folder ``experiments/<name>/`` holding

``lab.toml``
    the lab's title, its grader, its pass mark, the ``--set`` overrides of its quick
    variant, the further recordings it compares against (variants), the shared data
    files it replays, and the grader's targets it sets apart from their defaults;
``scenario.toml``
    the scenario of its main recording;
``sheet.md``
    the lab sheet: goal, background with the equations, steps with the exact commands,
    questions.

``gridloop lab run NAME`` writes the main recording ``RUN.h5`` and one ``RUN.<variant>.h5``
per variant (the same scenario with the variant's overrides); ``gridloop lab grade RUN.h5``
finds the lab from the recording (the ``lab`` attribute the run stamps, else the scenario's
run name), computes its figures with the lab's grader (a module of this package named in
``lab.toml``) and prints a score table.  See ``docs/labs.md``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError
from twin.errors import ParameterError
from twin.params import did_you_mean, from_mapping

#: where the labs live: ``experiments/`` beside the packages
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
#: the shared recordings (``../shared/data`` next to the repository unless the environment
#: variable names another place)
SHARED_DATA_ENV = "GRIDLOOP_SHARED_DATA"


class LabError(BenchError):
    """A lab, its files, a lab recording or an answers file is missing or malformed."""


@dataclass(frozen=True)
class Variant:
    """A further recording of the lab's scenario: ``RUN.<name>.h5`` with its overrides."""

    name: str
    #: what it shows, one line (printed by ``lab run``)
    about: str = ""
    #: ``--set KEY=VALUE`` overrides applied on top of the scenario (and the quick ones)
    set: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabInfo:
    """The ``[lab]`` table of ``lab.toml``."""

    title: str
    #: what the lab teaches, one line (``lab list``)
    summary: str
    #: grader module in :mod:`bench.labs` (default: the lab's name)
    grader: str = ""
    #: fraction of the points needed to pass
    pass_mark: float = 0.7

    def __post_init__(self) -> None:
        if not 0 < self.pass_mark <= 1:
            raise ValueError("pass_mark must be a fraction in (0, 1]")


@dataclass(frozen=True)
class QuickInfo:
    """The ``[quick]`` table: overrides of the quick variant (the shorter run CI grades; its
    wall time on a 2-core machine is in docs/labs.md)."""

    set: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lab:
    """One lab: its folder and what ``lab.toml`` says."""

    name: str
    folder: Path
    info: LabInfo
    quick: QuickInfo = field(default_factory=QuickInfo)
    variants: tuple[Variant, ...] = ()
    #: scenario key -> file name in the shared data folder (set as an absolute path)
    shared_data: dict[str, str] = field(default_factory=dict)
    #: the grader's targets this lab sets apart from their defaults (``[targets]``)
    targets: dict[str, float] = field(default_factory=dict)

    @property
    def scenario(self) -> Path:
        return self.folder / "scenario.toml"

    @property
    def sheet(self) -> Path:
        return self.folder / "sheet.md"

    @property
    def grader(self) -> str:
        return self.info.grader or self.name

    def variant_path(self, run: Path, variant: str) -> Path:
        """``RUN.<variant>.h5`` beside the main recording ``RUN.h5``."""
        return run.with_name(f"{run.stem}.{variant}{run.suffix or '.h5'}")


@dataclass(frozen=True)
class _LabFile:
    lab: LabInfo
    quick: QuickInfo = field(default_factory=QuickInfo)
    variants: tuple[Variant, ...] = ()
    shared_data: dict[str, str] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)


def load_lab(folder: Path) -> Lab:
    """Read and check ``folder/lab.toml``; errors name the file and the field."""
    path = folder / "lab.toml"
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"{path}: no such lab file") from None
    except tomllib.TOMLDecodeError as exc:
        raise LabError(f"{path}: not valid TOML: {exc}") from None
    try:
        spec = from_mapping(_LabFile, doc, where=str(path))
    except ParameterError as exc:
        raise LabError(str(exc)) from None
    names = [v.name for v in spec.variants]
    if len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
        raise LabError(f"{path}: variants need distinct names made of letters, digits and _")
    for name in ("scenario.toml", "sheet.md"):
        if not (folder / name).is_file():
            raise LabError(f"{folder / name}: missing (every lab has a scenario and a sheet)")
    return Lab(folder.name, folder, spec.lab, spec.quick, spec.variants, spec.shared_data,
               {k: float(v) for k, v in spec.targets.items()})


def labs(root: Path = EXPERIMENTS) -> dict[str, Lab]:
    """Every lab under ``root`` by name, in name order."""
    return {p.parent.name: load_lab(p.parent) for p in sorted(root.glob("*/lab.toml"))}


def get_lab(name: str, root: Path = EXPERIMENTS) -> Lab:
    """The lab called ``name``; an unknown name gets a suggestion and the list."""
    known = labs(root)
    if name not in known:
        raise LabError(f"no lab '{name}'{did_you_mean(name, known)}; labs: "
                       f"{', '.join(known)}")
    return known[name]


def shared_data_dir() -> Path:
    """``$GRIDLOOP_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get(SHARED_DATA_ENV)
    return Path(env) if env else EXPERIMENTS.parents[1] / "shared" / "data"


def shared_file(name: str) -> Path:
    """A file of the shared recordings; missing, it is a one-line error saying where to look."""
    folder = shared_data_dir()
    path = folder / name
    if not path.is_file():
        raise LabError(f"{path}: shared recording not found (put the shared data at "
                       f"{EXPERIMENTS.parents[1] / 'shared' / 'data'} or set "
                       f"{SHARED_DATA_ENV} to its folder)")
    return path
