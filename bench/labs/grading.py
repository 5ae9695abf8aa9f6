"""Score tables: criteria with a measured or answered value, a target and points.

A grader turns a lab's recordings (and a student's answers) into a :class:`Grade`: the
figures it measured (findings) and the criteria it scored.  A criterion earns its points
when its check holds; answers are scored against what the bench measured, within a
tolerance the lab sheet states.
"""

from __future__ import annotations

import codecs
import errno
import importlib
import json
import math
import os
import shlex
import tomllib
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.labs import Lab, LabError, get_lab, labs
from bench.paths import lock_path
from bench.recording import Run, open_run
from bench.scenario import Scenario
from bench.tomlpos import key_lines
from twin.params import did_you_mean


@dataclass(frozen=True)
class Question:
    """A question of a lab sheet whose answer goes in the answers file under its key."""

    text: str
    #: unit of a numeric answer (SI, as in the parameter files)
    unit: str = ""
    #: the answer is a list of names instead of a number
    names: bool = False


@dataclass(frozen=True)
class Criterion:
    """One line of the score table."""

    name: str
    #: the value judged, formatted with its unit
    value: str
    #: what it had to be
    target: str
    points: float
    max_points: float
    #: False for an answer left ungraded because no answers file was given: it counts in
    #: neither the points nor the maximum, and the score says so
    graded: bool = True

    @property
    def passed(self) -> bool:
        return self.points >= self.max_points


@dataclass
class Grade:
    """A graded lab: findings (label, value with unit) and scored criteria."""

    lab: str
    pass_mark: float
    criteria: list[Criterion] = field(default_factory=list)
    findings: list[tuple[str, str]] = field(default_factory=list)
    #: printed above the score when the answers were not graded (no ``--answers``)
    answers_note: str = ""

    def check(self, name: str, value: str, target: str, ok: bool, points: float = 1.0
              ) -> bool:
        """Add a criterion that earns ``points`` when ``ok``; returns ``ok``."""
        self.criteria.append(Criterion(name, value, target, points if ok else 0.0, points))
        return ok

    def find(self, label: str, value: str) -> None:
        self.findings.append((label, value))

    def not_graded(self, name: str, target: str, points: float = 1.0) -> None:
        """List a criterion that is not graded this time (an answer, without an answers
        file): it is shown, and counts in neither the points nor the maximum."""
        self.criteria.append(Criterion(name, "not graded", target, 0.0, points, graded=False))

    @property
    def points(self) -> float:
        return sum(c.points for c in self.criteria if c.graded)

    @property
    def max_points(self) -> float:
        """The points graded this time (the lab's whole maximum unless answers were not
        graded: :attr:`ungraded_points`)."""
        return sum(c.max_points for c in self.criteria if c.graded)

    @property
    def ungraded_points(self) -> float:
        return sum(c.max_points for c in self.criteria if not c.graded)

    @property
    def score(self) -> float:
        """Fraction of the points earned."""
        return self.points / self.max_points if self.max_points else 0.0

    @property
    def passed(self) -> bool:
        return self.score >= self.pass_mark - 1e-12

    def format(self) -> str:
        lines = [f"lab {self.lab}"]
        if self.findings:
            width = max(len(label) for label, _ in self.findings)
            lines += [f"  {label:<{width}}  {value}" for label, value in self.findings]
        rows = [("criterion", "value", "target", "points")] + [
            (c.name, c.value, c.target,
             f"{c.points:g}/{c.max_points:g}" if c.graded else f"-/{c.max_points:g}")
            for c in self.criteria]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines.append("")
        for j, r in enumerate(rows):
            lines.append("  ".join(f"{cell:<{w}}" if i < 3 else f"{cell:>{w}}"
                                   for i, (cell, w) in enumerate(zip(r, widths))).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        verdict = "PASS" if self.passed else "FAIL"
        alone = ""
        if self.ungraded_points:
            alone = " of the run alone"
            total = self.max_points + self.ungraded_points
            lines.append(f"answers not graded (no --answers): {self.ungraded_points:g} of the "
                         f"lab's {total:g} points left out; the score is of the run alone")
        elif self.answers_note:
            lines.append(self.answers_note)
        lines.append(f"score {self.points:g}/{self.max_points:g} = {100 * self.score:.0f} %"
                     f"{alone} (pass mark {100 * self.pass_mark:.0f} %): {verdict}")
        return "\n".join(lines)


def relative_error(value: float, reference: float) -> float:
    """``|value / reference - 1|``; infinite when either is not a finite number."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
        return math.inf
    return abs(value / reference - 1.0)


#: how one answer is judged: the target shown, and whether a given value meets it
Judge = tuple[str, Callable[[Any], bool]]


def grade_answers(g: Grade, questions: Mapping[str, Question], answers: Mapping[str, Any] | None,
                  judges: Mapping[str, Judge], points: Mapping[str, float] | None = None
                  ) -> None:
    """Score every question of a lab, numbered as on its sheet (``answer 2 (traded_kwh)``).

    A question the answers file leaves out scores 0 of its points and is shown as
    ``missing``: the maximum is the same whatever the file holds.  Without an answers file
    (``answers`` None) each question is listed as not graded and the score says it is of the
    run alone."""
    for n, (key, q) in enumerate(questions.items(), start=1):
        name = f"answer {n} ({key})"
        target, meets = judges[key]
        pts = (points or {}).get(key, 1.0)
        if answers is None:
            g.not_graded(name, target, pts)
        elif key not in answers:
            g.check(name, "missing", target, False, pts)
        else:
            value = answers[key]
            shown = (", ".join(sorted(set(value))) or "none") if q.names else \
                f"{value:g} {q.unit}".rstrip()
            g.check(name, shown, target, bool(meets(value)), pts)


def read_answers(path: str | Path | None, questions: Mapping[str, Question],
                 runs: Collection[str] = ()) -> dict[str, Any]:
    """A student's answers file (TOML, one ``key = value`` per answered question), checked
    against the lab's ``questions``; the names a list answer gives must be of ``runs`` (the
    lab's variants) when given.  None reads as no answers."""
    if path is None:
        return {}
    path = Path(path)
    text = _answers_text(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LabError(f"{path}: not valid TOML: {exc}") from None
    for key, value in doc.items():
        q = questions.get(key)
        if q is None:
            listed = ", ".join(questions) or "none"
            raise LabError(f"{path}: {key}: not a question of this lab"
                           f"{did_you_mean(key, questions)}; questions: {listed}")
        _check_answer(path, key, value, q, text, runs)
    return dict(doc)


def _answers_text(path: Path) -> str:
    """The answers file as text: UTF-8, a leading byte-order mark (Windows Notepad's
    "UTF-8") dropped; other encodings are one line saying to save it as UTF-8."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LabError(f"--answers {path}: no such answers file") from None
    except IsADirectoryError:
        raise LabError(f"--answers {path}: a directory, not an answers file") from None
    raw = raw.removeprefix(codecs.BOM_UTF8)
    # UTF-16 (Notepad's "Unicode") has a NUL byte beside every ASCII letter: valid UTF-8
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in raw:
        what = "it looks like UTF-16, Notepad's 'Unicode'"
    else:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            what = f"byte {raw[exc.start]:#04x} on line {line}"
    raise LabError(f"{path}: not UTF-8 text ({what}); save it as UTF-8")


def _check_answer(path: Path, key: str, value: Any, q: Question, text: str,
                  runs: Collection[str]) -> None:
    """One answer's type (and for a list of names, that each is a run of the lab)."""
    if q.names:
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise LabError(f"{path}: {key}: expected a list of names, got "
                           f"{_as_written(text, key, value)}")
        for name in value if runs else ():
            if name not in runs:
                raise LabError(f"{path}: {key}: '{name}' is not a run of this lab"
                               f"{did_you_mean(name.lower(), runs)}; runs: {', '.join(runs)}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise LabError(f"{path}: {key}: expected a number in {q.unit or 'SI units'}, "
                       f"got {_as_written(text, key, value)}")


def _as_written(text: str, key: str, value: Any) -> str:
    """``value`` as the answers file wrote it (``true``, ``1e400``): the shortest start of
    what follows ``key =`` on its line that reads back as ``value``; else in TOML terms."""
    line = key_lines(text).get((key,))
    if line is not None:
        rest = text.splitlines()[line - 1].partition("=")[2].strip()
        for end in range(1, min(len(rest), 200) + 1):
            try:
                if _same(tomllib.loads(f"v = {rest[:end]}")["v"], value):
                    return rest[:end]
            except tomllib.TOMLDecodeError:
                continue
    return _in_toml(value)


def _same(a: Any, b: Any) -> bool:
    """Equal and of one type (``1`` is not ``true``); NaN is NaN."""
    return type(a) is type(b) and (a == b or (isinstance(a, float) and a != a and b != b))


def _in_toml(value: Any) -> str:
    """A value in TOML terms, for a message (a number TOML reads as infinite: too large)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "a number too large"
    if isinstance(value, int | float):
        return "nan" if value != value else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return f"[{', '.join(_in_toml(v) for v in value)}]"
    if isinstance(value, dict):
        return "a table"
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


@dataclass(frozen=True)
class Recordings:
    """The recordings of one lab run: the main one and its variants beside it."""

    lab: Lab
    path: Path
    quick: bool

    def path_of(self, variant: str = "") -> Path:
        """The recording of ``variant`` (the main one for ``""``); it must exist and be
        that variant's, of this lab and as quick as the main one, and complete."""
        if not variant:
            return self.path
        p = self.lab.variant_path(self.path, variant)
        rerun = _rerun(self.lab.name, self.quick, self.path)
        if not p.is_file():
            raise LabError(f"{p}: missing recording of variant '{variant}' of lab "
                           f"{self.lab.name} ({rerun})")
        with open_run(p) as run:
            attrs, complete = run.attrs, run.complete
        wrong = _not_lab_run(attrs, complete)
        if not wrong:
            if attrs["lab"] != self.lab.name:
                wrong = f"it is a recording of lab {attrs['lab']}"
            elif str(attrs.get("lab_variant", "")) != variant:
                got = str(attrs.get("lab_variant", ""))
                wrong = f"it is the recording of variant '{got}'" if got else \
                    "it is a main recording"
            elif bool(attrs.get("lab_quick", False)) != self.quick:
                wrong = "it is a quick run and the main recording is not" \
                    if not self.quick else "it is a full run and the main recording is quick"
        if wrong:
            raise LabError(f"{p}: not the recording of variant '{variant}' of lab "
                           f"{self.lab.name}: {wrong} ({rerun})")
        return p

    def open(self, variant: str = "") -> Run:
        return open_run(self.path_of(variant))

    def new_grade(self) -> Grade:
        return Grade(self.lab.name, self.lab.info.pass_mark)

    def targets(self, defaults: Mapping[str, float]) -> dict[str, float]:
        """The grader's ``defaults`` with the lab's ``[targets]`` over them; a target the
        grader does not have is an error naming the lab file."""
        for key in self.lab.targets:
            if key not in defaults:
                raise LabError(f"{self.lab.folder / 'lab.toml'}: targets.{key}: not a target "
                               f"of grader {self.lab.grader}{did_you_mean(key, defaults)}; "
                               f"targets: {', '.join(defaults)}")
        return {**defaults, **self.lab.targets}

    def scenario(self, variant: str = "") -> Scenario:
        """The scenario a recording ran: the recorded text with its overrides."""
        with self.open(variant) as run:
            return run.scenario()


def _not_lab_run(attrs: Mapping[str, Any], complete: bool) -> str:
    """Why a recording is not one ``lab run`` finished and stamped (empty if it is)."""
    if attrs.get("replay_of"):
        return f"it is a replay of {attrs['replay_of']}"
    if not complete:
        return "it is incomplete (the run was interrupted or killed)"
    if not attrs.get("lab"):
        return "it is not stamped by gridloop lab run"
    return ""


def _rerun(lab: str, quick: bool, path: Path) -> str:
    """The command that writes the lab run again as it was run (quick or not), to copy."""
    return (f"run: gridloop lab run {lab}{' --quick' if quick else ''} "
            f"--out {shlex.quote(str(path))}")


def _ran_quick(lab: Lab, attrs: Mapping[str, Any], overrides: list[str]) -> bool:
    """Whether a recording is of the lab's quick variant: its stamp says, and a recording
    never stamped (stopped) says by its overrides (the shared data's, then the quick ones)."""
    if "lab_quick" in attrs:
        return bool(attrs["lab_quick"])
    start, quick = len(lab.shared_data), list(lab.quick.set)
    return bool(quick) and overrides[start:start + len(quick)] == quick


def _writer(path: Path) -> str:
    """Who is writing ``path`` now (``gridloop lab run, pid N``): the holder of the lock a
    run keeps while it writes (:func:`bench.paths.exclusive`); "" when none holds it (a
    killed run's lock file is left, not held)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no such lock is kept
        return ""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return ""
    try:
        holder = os.read(fd, 200).decode(errors="replace").strip()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            held = exc.errno in (errno.EAGAIN, errno.EACCES)
            return (holder or "another run") if held else ""
        return ""
    finally:
        os.close(fd)  # releases the shared lock taken to look


def recordings(path: str | Path) -> Recordings:
    """The lab a recording belongs to (its ``lab`` attribute, which ``lab run`` stamps on a
    finished recording), checked to be the lab's main recording.  One a run is still writing
    (it or its variants) is refused with that run's pid: wait, then grade."""
    path = Path(path)
    if path.is_dir():
        raise LabError(f"{path}: a directory; give the main recording of a lab run (RUN.h5)")
    writer = _writer(path)
    if writer:
        raise LabError(f"{path}: the run writing it is still in progress ({writer}); wait "
                       f"for it to finish, then grade it")
    with open_run(path) as run:
        attrs, complete, overrides = run.attrs, run.complete, run.scenario_overrides
    name = str(attrs.get("lab") or attrs.get("name") or "")
    if name not in labs():
        what = "lab" if attrs.get("lab") else "run name"
        raise LabError(f"{path}: not a lab recording ({what} '{name}' is not a lab; "
                       f"labs: {', '.join(labs())})")
    lab = get_lab(name)
    wrong = _not_lab_run(attrs, complete)
    if wrong:
        hint = "grade the lab run it replays" if attrs.get("replay_of") else \
            _rerun(name, _ran_quick(lab, attrs, overrides), path)
        raise LabError(f"{path}: not a finished lab run of {name}: {wrong} ({hint})")
    variant = str(attrs.get("lab_variant", ""))
    if variant:
        main = path.name.removesuffix(f".{variant}{path.suffix}") + path.suffix
        raise LabError(f"{path}: this is the '{variant}' recording of lab {name}; grade the "
                       f"main recording {path.with_name(main)}")
    return Recordings(lab, path, bool(attrs.get("lab_quick", False)))


def grader(lab: Lab) -> ModuleType:
    """The grader module of ``lab``: ``bench.labs.<grader>`` with ``QUESTIONS``,
    ``grade(recordings, answers) -> Grade`` and ``figures(recordings, out) -> [paths]``."""
    try:
        return importlib.import_module(f"bench.labs.{lab.grader}")
    except ModuleNotFoundError as exc:
        if exc.name != f"bench.labs.{lab.grader}":
            raise
        raise LabError(f"{lab.folder / 'lab.toml'}: lab.grader: no grader "
                       f"'{lab.grader}' in bench/labs") from None


def grade(path: str | Path, answers: str | Path | None = None) -> Grade:
    """Grade a lab's main recording (and its variants beside it) with optional answers.

    The grader gets the answers read from the file (an empty file: no answer given, each
    scoring 0), or None without a file: then it grades the run alone and says so."""
    recs = recordings(path)
    module = grader(recs.lab)
    runs = [v.name for v in recs.lab.variants]
    given = None if answers is None else read_answers(answers, module.QUESTIONS, runs)
    return module.grade(recs, given)


#: the figures graders write, ``<lab>_<name>.png`` (``report`` removes stale ones)
LAB_FIGURES = ("pulse", "runs", "spectrum", "grid", "frequency", "bills")


def lab_figure_names() -> list[str]:
    """The file name of every figure a grader of a registered lab may write."""
    return [f"{lab}_{name}.png" for lab in labs() for name in LAB_FIGURES]


def lab_figures(path: str | Path, out: Path) -> list[Path]:
    """The lab's own figures of a lab's main recording (none for other recordings); a lab
    whose variant recordings are missing or wrong gets none, with a warning."""
    try:
        recs = recordings(path)
    except LabError:
        return []
    try:
        return list(grader(recs.lab).figures(recs, out))
    except LabError as exc:
        warnings.warn(f"no figures of lab {recs.lab.name}: {exc}", stacklevel=2)
        return []


def asset_of(s: Scenario, kind: str) -> tuple[str, str]:
    """``(node, asset)`` of the first asset of ``kind`` in a lab's scenario."""
    for node, name, cfg in s.assets():
        if cfg.kind == kind:
            return node, name
    raise LabError(f"{s.path}: the lab needs a {kind} and its scenario has none")
