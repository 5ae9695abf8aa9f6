"""Load, build, run, summarise: what ``gridloop run`` and ``gridloop demo`` do."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from bench.errors import BenchError, ControllerError, LateTickError, OutputBusy
from bench.paths import check_out, exclusive, replacing, same_file
from bench.scenario import Override, load

#: the files of a SQLite ledger: the database and its write-ahead log and shared memory
LEDGER_FILE_SUFFIXES = ("", "-wal", "-shm")

#: ``outcome`` of ``run --json``: one of these, stable for a pipeline to branch on (the
#: exit status of each is in docs/scenarios.md#checks); ``replay --json`` uses the same
#: words for the outcomes it has
OUTCOMES = ("running", "passed", "checks_failed", "device_silent", "controller_error",
            "input_error", "busy", "terminated", "interrupted", "internal_error")


def outcome_of(exc: BaseException) -> str:
    """The ``outcome`` of a run that ``exc`` stopped (or kept from starting): SIGTERM,
    Ctrl-C; its recording held by another run (``busy``); a real-time tick late with
    ``catch_up = "fail"`` (a requirement of the run's own, as a check: ``checks_failed``);
    the controller could not be loaded, refused its options, raised, exited, overran or
    returned a setpoint the asset cannot take (``controller_error``); anything else the CLI
    says in one line is bad input (``input_error``); an error of the bench itself
    (``internal_error``)."""
    from bench.errors import user_errors
    from bench.stopping import Terminated

    if isinstance(exc, Terminated):
        return "terminated"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, OutputBusy):
        return "busy"
    if isinstance(exc, LateTickError):
        return "checks_failed"
    if isinstance(exc, ControllerError):
        return "controller_error"
    if isinstance(exc, user_errors()):
        return "input_error"
    return "internal_error"


def default_ledger_path(out: Path) -> Path:
    """``RUN.ledger.db`` beside the recording."""
    return out.with_name(out.stem + ".ledger.db")


def say_replacing(out: Path, ledger: Path | None = None, holds: str = "") -> None:
    """One line on stderr when ``out`` holds a file that the command is about to replace
    (``gridloop run``, ``replay``), naming what it held: reruns (CI) replace a recording as
    they always did, but never without a word.  ``ledger``: the run's default ledger
    (``RUN.ledger.db``), replaced with the recording, and what it ``holds`` (read from it
    when not given): the line names it too (None: there was none).  Called once every
    refusal is past."""
    if ledger is not None and not holds:
        ledger, holds = (ledger, _ledger_holds(ledger)) if ledger.is_file() else (None, "")
    if not out.is_file():
        if ledger is not None:
            print(f"gridloop: replacing {ledger} ({holds})", file=sys.stderr)
        return
    from bench.recording import open_run

    try:
        with open_run(out) as run:
            attrs = run.attrs
            ticks = len(run)
            if attrs.get("replay_of"):
                what = (f"a replay of {Path(str(attrs['replay_of'])).name} under "
                        f"{attrs.get('replay_controller') or 'its recorded controller'}")
            else:
                what = f"a recording of {attrs.get('name') or 'an unnamed scenario'}"
            what += f", {ticks} ticks" + ("" if run.complete else ", incomplete")
    # only a description: a file that is not a readable recording is replaced all the same
    except (BenchError, OSError, RuntimeError, KeyError, ValueError):
        what = "not a readable recording"
    also = "" if ledger is None else f" and its ledger {ledger} ({holds})"
    print(f"gridloop: replacing {out} ({what}){also}", file=sys.stderr)


def _ledger_holds(path: Path) -> str:
    """What a ledger file holds, in a few words (read only: it is left as it was)."""
    from ledger import open_store

    try:
        store = open_store(path, create=False, readonly=True)
        try:
            head = store.head()
            sealed, pending = store.count()
        finally:
            store.close()
    # only a description: a file that is not a readable ledger is replaced all the same
    except Exception:
        return "not a readable ledger"
    blocks = 0 if head is None else head.height + 1
    return (f"{blocks} block{'' if blocks == 1 else 's'}, {sealed} record"
            f"{'' if sealed == 1 else 's'} in blocks" + (f", {pending} pending" if pending
                                                          else ""))


def _warn_capped_hardware(scenario: Any) -> None:
    """An asset set to ``hardware`` in a run whose mode was left at its default runs
    emulated: the README's first hardware scenario passed against emulators without a word.
    A mode the user chose (``[run] mode``, ``--mode``) says nothing."""
    import tomllib
    import warnings

    from bench.errors import ScenarioWarning

    hardware = [f"{n}.{a}" for n, a, c in scenario.assets() if c.mode == "hardware"]
    chosen = "mode" in tomllib.loads(scenario.text).get("run", {}) or any(
        o.partition("=")[0].strip() == "run.mode" for o in scenario.overrides)
    if hardware and scenario.run.mode != "hardware" and not chosen:
        warnings.warn(ScenarioWarning(
            f"{', '.join(hardware)}: mode hardware, but the run's mode ({scenario.run.mode} "
            'by default) caps every asset\'s: they run emulated; set [run] mode = "hardware" '
            "(or --mode hardware) to use the devices"), stacklevel=2)


def execute(scenario_path: Path, out: Path, overrides: Sequence[Override],
            ledger: str | None = None, view: bool = False, quiet: bool = False,
            json_out: Path | None = None, say_replaced: bool = False) -> int:
    """Run a scenario to ``out`` and print its summary; returns the exit status.  With
    ``json_out``, the same summary and the checks' outcomes are also written there as JSON
    (:func:`result_document`), in every outcome: a run that stopped on an error, Ctrl-C or
    SIGTERM, or never started (bad input), writes its exit status and why it stopped
    (:func:`stopped_document`) before the exception goes on to the CLI.  Only a ``json_out``
    that names one of the run's own files (the scenario, the recording, the ledger) is
    refused without one.  Before anything else, ``json_out`` is replaced by a document
    with no verdict (:func:`running_document`), so a run killed outright (SIGKILL, a CI
    runner's timeout) leaves that, never an earlier run's verdict; its folder is made
    if it is not there, and a file that cannot be written is refused now, not after the
    run.  ``say_replaced``: say in one line on stderr when ``out`` held a recording that the
    run replaces (:func:`say_replacing`; ``gridloop run``)."""
    if json_out is not None:
        ledger_path = default_ledger_path(out) if ledger is None else (
            None if "://" in ledger else Path(ledger))
        for other, what in ((scenario_path, "the scenario"), (out, "the recording"),
                            (ledger_path, "the ledger")):
            if other is not None and same_file(json_out, other):
                raise BenchError(f"--json {json_out}: that is {what}; give another file")
        make_folder(json_out, "--json")
        check_out(json_out, flag="--json")
    result = _Result(json_out, scenario_path, out)
    try:
        result.write(running_document(scenario_path))
        status = _execute(scenario_path, out, overrides, ledger, view, quiet, result,
                          say_replaced)
    except BaseException as exc:
        result.stopped(exc)
        raise
    if result.path is not None and result.doc is not None and result.doc["status"] is None:
        # ended without a verdict of its own (a view whose run made no summary): its status
        result.write(stopped_document(scenario_path, None, status, "the run made no summary",
                                      0, outcome="internal_error"))
    return status


def make_folder(path: Path, flag: str) -> None:
    """Make the folder ``path`` is to be written in, as ``--out`` does (``--json
    artifacts/result.json`` in a fresh CI workspace)."""
    if path.parent.is_dir():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"{flag} {path}: cannot make its folder "
                         f"({(exc.strerror or str(exc)).lower()})") from None


def _execute(scenario_path: Path, out: Path, overrides: Sequence[Override], ledger: str | None,
             view: bool, quiet: bool, result: _Result, say_replaced: bool = False) -> int:
    """:func:`execute` once ``--json`` is known to name a file of its own."""
    scenario = load(scenario_path, overrides)
    _warn_capped_hardware(scenario)
    if view:
        require_display(out)
        # Flush often so the window follows closely.
        from dataclasses import replace

        scenario = replace(scenario, run=replace(scenario.run, flush_s=0.1))
    if ledger is not None and "://" not in ledger and same_file(Path(ledger), out):
        raise BenchError(f"--ledger {ledger} and --out {out} name the same file; the "
                         "recording would overwrite the ledger")
    if same_file(out, scenario_path):
        raise BenchError(f"--out {out}: that is the scenario ({scenario_path}); give another "
                         "file")
    if out.is_dir():  # refused before the ledger and its keys are made beside it
        raise BenchError(f"{out}: is a directory; name the recording's file (such as "
                         f"{out / 'run.h5'})")
    # a second run to the same recording would replace this one's files as it writes them
    with exclusive(out, "gridloop run"):
        return _run_and_summarise(scenario, out, ledger, view, quiet, result, say_replaced)


def require_display(out: Path) -> None:
    """Refuse ``--view`` where no window can open, before the build, in one line that says
    what to do instead: ``run``'s and ``demo``'s own ways, not ``view``'s ``--screenshot``
    (an option they do not have)."""
    import os

    instead = (f"drop --view, and look at the recording afterwards with gridloop view {out} "
               "--screenshot OUT.png")
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform.partition(":")[0] in ("offscreen", "minimal"):
        raise BenchError(f"--view: QT_QPA_PLATFORM={platform}: the window would open on no "
                         f"screen and never be closed; {instead}, or unset QT_QPA_PLATFORM")
    if (sys.platform.startswith("linux") and not platform and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY")):
        raise BenchError(f"--view: no display to open the window on (DISPLAY is not set); "
                         f"{instead}")


class _Result:
    """Where ``run --json`` goes (``path``, None without ``--json``), and the last document
    written there (the placeholder of a run in progress, then the run's own): an exception
    after the run's own (a closed stdout while the summary prints, Ctrl-C) keeps its
    figures and says how the command ended."""

    def __init__(self, path: Path | None, scenario_path: Path, out: Path) -> None:
        self.path = path
        self.scenario_path = scenario_path
        self.out = out
        self.before = file_identity(out)  # a recording there already is not this run's
        self.doc: dict[str, Any] | None = None
        #: a write failed (said once, by the error it raised): not tried again
        self.unwritable = False

    def write(self, doc: dict[str, Any]) -> None:
        if self.path is not None and not self.unwritable:
            try:
                write_json(self.path, doc)
            except BenchError:
                self.unwritable = True
                raise
            self.doc = doc

    def stopped(self, exc: BaseException) -> None:
        """Write the document of a run that ``exc`` stopped (or kept from starting)."""
        from bench.stopping import exit_status, stop_reason

        status = exit_status(exc)
        if self.path is None or self.unwritable or self.doc is None:
            return  # refused before the placeholder was written
        if status == 0 and self.doc["status"] is not None:
            return  # a closed stdout (| head) after the result was written: not an error
        if self.doc["status"] is not None:  # its verdict was written: how the command ended
            doc = {**self.doc, "status": status, "outcome": outcome_of(exc),
                   "passed": False, "stopped": stop_reason(exc)}
        else:
            made = file_identity(self.out) not in (None, self.before)
            doc = stopped_document(self.scenario_path, self.out if made else None, status,
                                   stop_reason(exc), recorded_ticks(self.out) if made else 0,
                                   outcome=outcome_of(exc))
        try:
            self.write(doc)
        except BenchError as err:  # say so, and end as the run's own error would
            print(f"gridloop: warning: {err}", file=sys.stderr)


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """What tells a file apart from the one there before (None: no file)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def recorded_ticks(out: Path) -> int | None:
    """The ticks a stopped run's recording holds (None: it cannot be read)."""
    from bench.recording import open_run

    try:
        with open_run(out) as run:
            return len(run)
    except Exception:
        return None


def _run_and_summarise(scenario: Any, out: Path, ledger: str | None, view: bool, quiet: bool,
                       result: _Result, say_replaced: bool = False) -> int:
    """:func:`execute` once its inputs are checked and its recording is held."""
    from bench.build import build_plan
    from bench.checks import evaluate, format_outcomes
    from bench.engine import controller_for, run_plan
    from bench.recording import open_run
    from bench.stopping import abandonable, deferred_stop
    from bench.summary import figures, format_figures

    ledger_url = str(default_ledger_path(out)) if ledger is None else ledger
    cache = uncached_kernels()
    if cache is not None:  # a minute without a word looks hung in a CI log: said, --quiet too
        print(f"gridloop: building the twin: its compiled kernels are not cached yet (a "
              f"first run on this machine, or the twin's code changed), about a minute; "
              f"cached afterwards in {cache}", file=sys.stderr)
    # the twin's compiled (numba) code runs here: a signal stops the build where numba
    # compiles (it makes no file or process), else once the compiled call returns
    with deferred_stop(), abandonable():
        plan = build_plan(scenario, ledger=ledger_url)
    controller = controller_for(plan)  # its options checked before anything is replaced
    # the default ledger belongs to the recording: a new run replaces both.  The previous
    # run's is set aside, not deleted, until this run's recording replaces its recording:
    # a run refused before that (its keys, its recording) leaves both as they were
    # a run killed outright left what it replaced aside: kept as RUN.previous.h5 now
    _keep_left_aside(out, Path(ledger_url) if ledger is None else None)
    previous = None
    replaced: _PreviousRecording | None = None
    if ledger is None:
        previous = _PreviousLedger(Path(ledger_url), out, result.before,
                                   plan.market.keys if plan.market is not None else None)
    try:
        if plan.market is not None:
            # a ledger this run cannot append to is refused before the recording is replaced
            plan.market.open()
        if say_replaced:  # every refusal is past: the recording there is replaced now
            say_replacing(out, *(previous.said() if previous is not None else (None, "")))
        print(f"{scenario.run.name}: {len(scenario.nodes)} node(s), "
              f"{len(scenario.assets())} asset(s), mode {scenario.run.mode}, "
              f"{scenario.run.duration_s:g} s at dt = {scenario.run.dt_s:g} s -> {out}",
              file=sys.stderr)
        # the recording there is moved aside, not overwritten: kept if this run stops early
        replaced = _PreviousRecording(out)
    except BaseException:
        if plan.market is not None:
            plan.market.close()
        if replaced is not None:
            replaced.settle()
        if previous is not None:
            previous.restore()
        raise
    try:
        if view:
            from bench.view.app import show_live

            holder: dict = {}

            def work() -> None:
                holder["summary"] = run_plan(plan, out, progress=not quiet,
                                             controller=controller)

            status = show_live(out, work)
            summary = holder.get("summary")
            if summary is None:
                return status or 1
        else:
            summary = run_plan(plan, out, progress=not quiet, controller=controller)
    except LateTickError as exc:
        # a run that broke its timing requirement failed (1), as one that broke a check;
        # 2 is bad input.  The recording keeps every tick before the late one.
        print(f"gridloop: run failed: {exc}; recording {out} kept up to that tick",
              file=sys.stderr)
        result.write(stopped_document(result.scenario_path, out, 1, str(exc),
                                      recorded_ticks(out), outcome=outcome_of(exc)))
        return 1
    finally:
        if plan.market is not None:
            plan.market.close()
        kept, moved = replaced.settle() if replaced is not None else (None, False)
        if previous is not None:  # kept, or deleted once this run's recording is there
            previous.settle(default_ledger_path(kept) if moved and kept is not None else None)
        if kept is not None:
            ledger_kept = default_ledger_path(kept)
            also = f" (its ledger {ledger_kept})" if ledger_kept.is_file() else ""
            print("gridloop: the run stopped before its end; " + (
                f"the recording it replaced is kept as {kept}{also}" if moved else
                f"the recording it replaced was incomplete too; the last complete one stays "
                f"{kept}{also}"), file=sys.stderr)
    with open_run(out) as run:
        fig = figures(run)
        outcomes = evaluate(run, scenario.checks)
    # a device that never gave a reading: an absent or miswired kit, not a run to pass
    silent = fig.never_read()
    status = 0 if all(o.passed for o in outcomes) and not silent else 1
    outcome = "passed" if status == 0 else "device_silent" if silent else "checks_failed"
    # the JSON first: a reader of stdout that stops early (| head) does not lose it; one
    # that cannot be written (its placeholder was, before the run) ends the command once the
    # summary and the checks are printed
    unwritten: BenchError | None = None
    try:
        result.write(result_document(result.scenario_path, out, fig, outcomes, summary,
                                     status, outcome))
    except BenchError as exc:
        unwritten = exc
    print(format_figures(fig))
    print(f"{summary.ticks} ticks in {summary.wall_s:.2f} s wall "
          f"({summary.realtime_factor:.1f}x real time); recording {out}")
    if plan.market is not None:
        print(f"ledger {ledger_url}: {plan.market.describe()}")
    if outcomes:
        print(format_outcomes(outcomes))
    if silent:
        sys.stdout.flush()
        names = ", ".join(f"{k} ({d.why()})" for k, d in silent.items())
        # only timeouts: silent, or slower than the tick allows (a 19200 bit/s line, a busy
        # board), which the deadline cannot tell apart
        slow = (f"; if {'it answers' if len(silent) == 1 else 'they answer'}, but later than "
                f"the tick's deadline (a slow line or board), raise run.deadline_s "
                f"({deadline_applied(scenario.run)}) or run.dt_s"
                if all(d.timeout == d.missing for d in silent.values()) else "")
        print(f"gridloop: run failed: no valid reading in any of the {fig.ticks} ticks from "
              f"{names}; {'its' if len(silent) == 1 else 'their'} figures are null{slow}",
              file=sys.stderr)
    if unwritten is not None:
        sys.stdout.flush()
        raise unwritten
    return status


class _PreviousLedger:
    """The default ledger (``RUN.ledger.db`` and its ``-wal``, ``-shm``) of the recording a
    run is about to replace, moved aside (``.RUN.ledger.db.PID.previous``) so the run starts
    a ledger of its own there; :meth:`restore` puts it back (and removes what the run
    made: its new ledger, and its key folder when there was none), :meth:`settle` deletes
    it once the run's recording has replaced the previous one, else restores it."""

    def __init__(self, path: Path, out: Path, before: tuple[int, int, int] | None,
                 keys: Path | None) -> None:
        import os

        self.path = path
        self.out = out
        self.before = before
        self.keys = keys
        self.had_keys = keys is not None and keys.exists()
        self.aside = _aside(path)
        self.moved: list[str] = []
        try:
            for suffix in LEDGER_FILE_SUFFIXES:
                if Path(str(path) + suffix).exists():
                    os.replace(str(path) + suffix, str(self.aside) + suffix)
                    self.moved.append(suffix)
        except OSError as exc:
            self.restore()
            raise BenchError(f"{path}: cannot replace the previous run's ledger "
                             f"({(exc.strerror or str(exc)).lower()})") from None

    def said(self) -> tuple[Path | None, str]:
        """``(path, what it held)`` of the ledger set aside, for :func:`say_replacing`
        (``(None, "")``: there was none)."""
        if "" not in self.moved:
            return None, ""
        return self.path, _ledger_holds(self.aside)

    def restore(self) -> None:
        """Put the previous ledger back (nothing of it was replaced)."""
        import os
        import shutil

        try:
            for suffix in LEDGER_FILE_SUFFIXES:
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            for suffix in list(self.moved):
                os.replace(str(self.aside) + suffix, str(self.path) + suffix)
                self.moved.remove(suffix)
        except OSError as exc:  # said, and the run's own error goes on
            print(f"gridloop: warning: {self.path}: cannot put the previous run's ledger "
                  f"back ({(exc.strerror or str(exc)).lower()}); it is "
                  f"{self.aside}", file=sys.stderr)
        if self.keys is not None and not self.had_keys and self.keys.is_dir():
            shutil.rmtree(self.keys, ignore_errors=True)  # made by this run, for no run

    def settle(self, keep_as: Path | None = None) -> None:
        """Delete the previous ledger once the run's recording replaced the previous
        recording (or made a first one), or move it to ``keep_as`` (the ledger of the
        previous recording where that is kept, :class:`_PreviousRecording`); restore it
        when the run stopped before that."""
        import os

        if file_identity(self.out) in (None, self.before):
            self.restore()
            return
        for suffix in self.moved:
            aside = str(self.aside) + suffix
            if keep_as is not None:
                os.replace(aside, str(keep_as) + suffix)
            else:
                Path(aside).unlink(missing_ok=True)
        self.moved = []


class _PreviousRecording:
    """The recording a run replaces, moved aside (``.RUN.h5.PID.previous``) while the run
    writes its own: deleted when the run's recording is complete, kept as
    ``RUN.previous.h5`` when it is not (a rerun that failed after 2 s must not take the
    last good session with it); put back when the run made no recording."""

    def __init__(self, out: Path) -> None:
        import os

        self.out = out
        self.aside: Path | None = None
        if out.is_file():
            aside = _aside(out)
            try:
                os.replace(out, aside)
            except OSError as exc:
                raise BenchError(f"{out}: cannot replace the previous recording "
                                 f"({(exc.strerror or str(exc)).lower()})") from None
            self.aside = aside

    def settle(self) -> tuple[Path | None, bool]:
        """Once the run ended: where a previous recording is kept (None: deleted, or there
        was none), and whether it is the one this run replaced (:func:`_keep_aside`)."""
        import os

        if self.aside is None:
            return None, False
        aside, self.aside = self.aside, None
        if not self.out.exists():  # the run made none: the previous one is still the one
            os.replace(aside, self.out)
            return None, False
        if _complete(self.out):
            aside.unlink(missing_ok=True)
            return None, False
        return _keep_aside(aside, self.out)


def _aside(path: Path, name: str = "", pid: str = "") -> Path:
    """Where a run sets ``path`` aside while it writes its own: ``.NAME.PID.previous``
    (``name`` and ``pid`` given: a glob pattern for those of any run)."""
    import os

    return path.with_name(f".{name or path.name}.{pid or os.getpid()}.previous")


def _keep_aside(aside: Path, out: Path) -> tuple[Path, bool]:
    """Keep the recording set aside at ``aside`` as ``RUN.previous.h5``, unless that holds a
    complete recording and ``aside`` is an incomplete one (a second failed rerun must not
    replace the last complete session with the first one's remains): then ``aside`` is
    deleted.  Returns the kept file and whether ``aside`` became it."""
    import os

    kept = out.with_name(f"{out.stem}.previous{out.suffix}")
    if kept.exists() and _complete(kept) and not _complete(aside):
        aside.unlink(missing_ok=True)
        return kept, False
    os.replace(aside, kept)
    return kept, True


def _keep_left_aside(out: Path, ledger: Path | None) -> None:
    """A run killed outright (SIGKILL, a power cut) leaves the recording it replaced, and
    that recording's ledger, aside (:class:`_PreviousRecording`, :class:`_PreviousLedger`).
    Only a run holding the recording's lock moves them there, and this run holds it: any
    found now are a dead run's.  They become ``RUN.previous.h5`` (and its ledger), said in
    one line."""
    import glob
    import os

    def left(path: Path) -> list[Path]:
        found = path.parent.glob(_aside(path, glob.escape(path.name), "*").name)
        return sorted(found, key=lambda p: p.stat().st_mtime_ns)

    asides = left(out)
    if not asides:
        return
    kept, moved = _keep_aside(asides[-1], out)
    for older in asides[:-1]:
        older.unlink(missing_ok=True)
    ledgers = left(ledger) if ledger is not None else []
    kept_ledger = default_ledger_path(kept)
    for suffix in LEDGER_FILE_SUFFIXES if ledgers else ():
        side = Path(str(ledgers[-1]) + suffix)
        if not moved:  # the last complete recording stays, with its own ledger
            side.unlink(missing_ok=True)
            continue
        Path(str(kept_ledger) + suffix).unlink(missing_ok=True)
        if side.exists():
            os.replace(side, str(kept_ledger) + suffix)
    if moved:
        also = f" (its ledger {kept_ledger})" if ledgers else ""
        print(f"gridloop: a run to {out} was killed before its end; the recording it "
              f"replaced is kept as {kept}{also}", file=sys.stderr)


def _complete(out: Path) -> bool:
    """Whether the recording at ``out`` is complete (False where it cannot be read)."""
    from bench.recording import open_run

    try:
        with open_run(out) as run:
            return run.complete
    except Exception:
        return False


def deadline_applied(run: Any) -> str:
    """The device deadline a run's reads had, and where it came from, in a few words (the
    hint of a device that never answered in time)."""
    if run.deadline_s > 0:
        return f"{run.deadline_s:g} s in this run"
    if run.realtime:
        return (f"{run.device_deadline_s:g} s in this run: the default in real time, "
                f"0.8 dt")
    return f"{run.device_deadline_s:g} s in this run: the default as fast as possible"


def uncached_kernels() -> Path | None:
    """Where the twin's compiled (numba) kernels are cached, when its main kernel is neither
    compiled in this process nor cached there yet (a fresh checkout or CI workspace,
    ``NUMBA_CACHE_DIR`` new, the twin's code changed): the build then compiles for about a
    minute.  None: cached, or no telling (numba's cache is read through its internals,
    which may change)."""
    try:
        from twin import microgrid

        kernel = microgrid._step
        if kernel.overloads:  # compiled (or loaded) by this process already
            return None
        cache = kernel._cache
        if cache._cache_file._load_index():
            return None
        return Path(cache._cache_path)
    except Exception:
        return None


def result_document(scenario_path: Path, out: Path, fig: Any, outcomes: list[Any],
                    summary: Any, status: int, outcome: str | None = None) -> dict[str, Any]:
    """What ``run --json`` writes for a run that ran to its end: the exit status, its
    ``outcome`` (``passed``, ``checks_failed`` or ``device_silent``; by default ``passed``
    or ``checks_failed`` as the status says), the run's figures (energies in kWh, powers
    in kW, as the printed summary), every check's outcome and, per asset that ran a device,
    its ticks with and without a reading (:class:`bench.summary.DeviceTicks`).  Numbers that
    do not exist (NaN: no PV on a node, an energy of a device that never answered) are
    ``null``."""
    import dataclasses
    import math

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    if outcome is None:
        outcome = "passed" if status == 0 else "checks_failed"
    return {
        "format": "gridloop-run-result", "version": 1, "status": status, "outcome": outcome,
        "passed": status == 0, "scenario": str(scenario_path), "recording": str(out),
        "stopped": None, "ticks": summary.ticks, "wall_s": summary.wall_s,
        "realtime_factor": clean(summary.realtime_factor),
        "figures": clean({k: v for k, v in dataclasses.asdict(fig).items()
                          if k not in ("nodes", "devices")}),
        "nodes": {n: clean(dataclasses.asdict(f)) for n, f in fig.nodes.items()},
        "devices": {k: dataclasses.asdict(d) for k, d in fig.devices.items()},
        "checks": [clean({"key": o.check.key, "bound": o.check.bound,
                          "limit": o.check.limit, "after_s": o.check.after_s,
                          "passed": o.passed, "worst": o.worst, "at_s": o.at_s,
                          "judged": o.judged, "failed": o.failed, "unit": o.unit,
                          "not_applicable": o.not_applicable or None})
                   for o in outcomes],
    }


def stopped_document(scenario_path: Path | None, out: Path | None, status: int | None,
                     stopped: str, ticks: int | None, outcome: str | None = None
                     ) -> dict[str, Any]:
    """What ``run --json`` writes for a run that did not run to its end: the exit status,
    its ``outcome`` (:func:`outcome_of`; by default ``input_error`` for status 2, else
    ``internal_error``), ``passed`` false, ``stopped`` the one line on why, the ticks its
    recording holds (``recording`` null, ticks 0: it never started, bad input); no figures
    or checks (they are null), which judge a whole run (``gridloop report`` reads what was
    recorded).  ``scenario`` null: a command line too bad to name one."""
    if outcome is None:
        outcome = "input_error" if status == 2 else "internal_error"
    return {"format": "gridloop-run-result", "version": 1, "status": status,
            "outcome": outcome, "passed": False,
            "scenario": None if scenario_path is None else str(scenario_path),
            "recording": None if out is None else str(out),
            "stopped": stopped, "ticks": ticks, "wall_s": None, "realtime_factor": None,
            "figures": None, "nodes": None, "devices": None, "checks": None}


def running_document(scenario_path: Path) -> dict[str, Any]:
    """What ``run --json`` holds from the moment the command has read its arguments until
    the run's own document replaces it: no verdict (``status`` null, ``passed`` false,
    ``outcome`` and ``stopped`` ``running``) and which process wrote it, when; a run killed
    outright (SIGKILL, a power cut) leaves this, never an earlier run's verdict."""
    import datetime
    import os

    doc = stopped_document(scenario_path, None, None, "running", None, outcome="running")
    return {**doc, "pid": os.getpid(),
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds")}


#: the ``format`` of what ``run --json`` and ``replay --json`` write
RESULT_FORMATS = ("gridloop-run-result", "gridloop-replay-result")


def is_result(path: Path) -> bool:
    """Whether ``path`` holds what ``run --json`` or ``replay --json`` writes (a document
    of any outcome)."""
    import json

    try:
        if path.stat().st_size > 1 << 24:
            return False
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") in RESULT_FORMATS


class _Refused(Exception):
    pass


class _JsonOnly(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Refused(message)


def json_option(argv: list[str]) -> Path | None:
    """``--json PATH`` of a command line as argparse reads it (``--json=PATH``, an
    abbreviation), whatever else the line holds; None: not given, or without its PATH."""
    p = _JsonOnly(add_help=False)
    p.add_argument("--json")
    try:
        known, _ = p.parse_known_args(argv)
    except _Refused:
        return None
    return Path(known.json) if known.json else None


def refused_json_target(argv: list[str]) -> Path | None:
    """Where a command line argparse refused may write its error (its ``--json PATH``), so
    that an earlier verdict there is not read as this one's; None: nowhere.  Only a result
    file (or none) is replaced, in a folder that is there: a command line that could not be
    read may have named the wrong file."""
    path = json_option(argv)
    if path is None or path.is_dir() or not path.parent.is_dir():
        return None
    if path.exists() and not is_result(path):
        return None
    return path


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """``doc`` to ``path`` whole or not at all (:func:`bench.paths.replacing`)."""
    import json

    try:
        with replacing(path) as tmp:
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        raise BenchError(f"--json {path}: cannot write it ({exc.strerror})") from None
