"""``gridloop replay RUN.h5``: a (new) controller against a recording; where it diverges.

Its verdict is the scenario's ``[checks]`` judged on the replay (the twin under the replayed
controller, as ``gridloop report`` judges them): exit status 1 when one fails, as ``gridloop
run``; a divergence is information only, unless ``--fail-on-divergence`` makes it fail too.
``--json RESULT.json`` writes the verdict for a pipeline in every outcome
(:func:`bench.replay.result_document`, :func:`bench.replay.stopped_document`), replacing what
was there as soon as the command has read its arguments."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="re-run a controller against a recording",
                       description="Feed a recording's measured values to a controller "
                       "(default: the recorded one), run the twin under its setpoints, record "
                       "it, and report where setpoints and the twin's signals diverge from "
                       "the recording. The scenario's checks are judged on the replay: exit "
                       "status 1 when one fails (2: bad input).")
    p.add_argument("recording", metavar="RUN.h5")
    p.add_argument("--controller", metavar="NAME",
                   help="built-in name or module:Class (default: the recorded controller)")
    p.add_argument("--option", dest="options", action="append", default=[],
                   metavar="KEY=VALUE", help="a controller option (repeatable)")
    p.add_argument("--out", metavar="RUN2.h5", help="recording of the replay (default "
                   "RUN.replay.CONTROLLER.h5 beside RUN.h5, CONTROLLER the controller's name "
                   "with : and other characters a file name should not have as _); one that "
                   "is there is replaced, and said so on stderr")
    p.add_argument("--scenario-dir", metavar="DIR", help="the folder the recorded "
                   "scenario's files (profiles, parameter sets, a module:Class controller) "
                   "are in now, when not where the scenario was when it ran")
    p.add_argument("--json", metavar="RESULT.json",
                   help="also write the verdict (exit status, outcome, each check, the "
                   "divergence table) as JSON, in every outcome (for CI)")
    p.add_argument("--fail-on-divergence", action="store_true",
                   help="exit with status 1 when a setpoint or signal diverges beyond its "
                   "tolerance (default: divergence is information only)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)


def bad_command_line(argv: list[str], message: str) -> None:
    """argparse refused ``gridloop replay``'s command line (:func:`bench.cli.main` calls
    this): its error to the ``--json PATH`` it names, as a replay that never started (status
    2, ``outcome`` ``input_error``; see :func:`bench.runner.refused_json_target`)."""
    from bench.replay import stopped_document
    from bench.runner import refused_json_target, write_json

    path = refused_json_target(argv)
    if path is not None:
        write_json(path, stopped_document(None, None, None, 2, "input_error", message, 0,
                                          False))


def main(args: argparse.Namespace) -> int:
    recording = Path(args.recording)
    verdict = _Verdict(Path(args.json) if args.json else None, recording, args.controller,
                       args.fail_on_divergence)
    try:
        return _main(args, recording, verdict)
    except BaseException as exc:
        verdict.stopped(exc)
        raise


def _main(args: argparse.Namespace, recording: Path, verdict: _Verdict) -> int:
    from bench.errors import BenchError
    from bench.replay import replay, replay_out
    from bench.scenario import parse_value

    out = Path(args.out) if args.out else None
    if verdict.path is not None:
        # the replay's recording, to refuse a --json naming it (the default is read from
        # the recording: an error doing so is the replay's, said once the JSON says it)
        early: BaseException | None = None
        try:
            out = replay_out(recording, args.controller, args.out, args.scenario_dir)
        except Exception as exc:
            early = exc
        verdict.start(out)
        if early is not None:
            raise early
    options = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--option {item}: expected KEY=VALUE")
        options[key.strip()] = parse_value(value.strip())
    report = replay(recording, args.controller, out, options,
                    progress=not args.quiet, scenario_dir=args.scenario_dir)
    diverged = bool(report.diverged)
    failed = not report.checks_passed or (args.fail_on_divergence and diverged)
    status = 1 if failed else 0
    # the JSON first, as run's: a reader of stdout that stops early does not lose it
    unwritten: BenchError | None = None
    try:
        verdict.finished(report, status)
    except BenchError as exc:
        unwritten = exc
    print(report.format())
    checks = report.format_checks()
    if checks:
        print(checks)
    if args.fail_on_divergence and diverged:
        sys.stdout.flush()
        n = len(report.diverged)
        print(f"gridloop: replay failed: {n} of {len(report.divergences)} setpoints and "
              f"signals diverge beyond their tolerance (--fail-on-divergence)", file=sys.stderr)
    if unwritten is not None:
        sys.stdout.flush()
        raise unwritten
    return status


class _Verdict:
    """Where ``replay --json`` goes (``path``, None without it) and what it holds: the
    placeholder once the arguments are read (:meth:`start`), the replay's verdict
    (:meth:`finished`) or why it stopped (:meth:`stopped`)."""

    def __init__(self, path: Path | None, source: Path, controller: str | None,
                 fail_on_divergence: bool) -> None:
        self.path = path
        self.source = source
        self.controller = controller
        self.fail_on_divergence = fail_on_divergence
        self.out: Path | None = None
        self.before: tuple[int, int, int] | None = None
        #: the placeholder is written: from here every outcome is
        self.started = False
        self.doc: dict[str, Any] | None = None
        #: a write failed (said once, by the error it raised): not tried again
        self.unwritable = False

    def start(self, out: Path | None) -> None:
        """Refuse a ``--json`` that names one of the replay's files (without writing it),
        then replace whatever is at it with the placeholder (its folder made if need be)."""
        from bench.errors import BenchError
        from bench.paths import same_file
        from bench.replay import running_document
        from bench.runner import file_identity

        assert self.path is not None
        own = [(self.source, "the recording being replayed")]
        if out is not None:
            own += [(out, "the replay's recording (--out)"),
                    (out.with_suffix(".replay.ledger.db"), "the replay's ledger")]
        for other, what in own:
            if same_file(self.path, other):
                raise BenchError(f"--json {self.path}: that is {what}; give another file")
        if self.path.is_dir():
            raise BenchError(f"--json {self.path}: that is a directory; give a file name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.unwritable = True
            raise BenchError(f"--json {self.path}: cannot make its folder "
                             f"({(exc.strerror or str(exc)).lower()})") from None
        self.out = out
        self.before = file_identity(out) if out is not None else None
        self._write(running_document(self.source, self.controller, out,
                                     self.fail_on_divergence))
        self.started = True

    def _write(self, doc: dict[str, Any]) -> None:
        from bench.errors import BenchError
        from bench.runner import write_json

        if self.path is None or self.unwritable:
            return
        try:
            write_json(self.path, doc)
        except BenchError:
            self.unwritable = True
            raise
        self.doc = doc

    def finished(self, report: Any, status: int) -> None:
        from bench.replay import result_document

        if self.started:
            self._write(result_document(report, status, self.fail_on_divergence))

    def stopped(self, exc: BaseException) -> None:
        """Write the document of a replay that ``exc`` stopped (or kept from starting)."""
        from bench.errors import BenchError
        from bench.replay import stopped_document
        from bench.runner import file_identity, outcome_of, recorded_ticks
        from bench.stopping import exit_status, stop_reason

        status = exit_status(exc)
        if not self.started or status == 0 or self.unwritable:
            return  # refused before the placeholder; a closed stdout after the verdict
        if self.doc is not None and self.doc.get("status") is not None:
            # its verdict was written; what ended the command after it (Ctrl-C) is said
            doc = {**self.doc, "status": status, "passed": False,
                   "outcome": outcome_of(exc), "stopped": stop_reason(exc)}
        else:
            out = self.out
            made = out is not None and file_identity(out) not in (None, self.before)
            ticks = recorded_ticks(out) if made else 0
            doc = stopped_document(self.source, self.controller, out if made else None,
                                   status, outcome_of(exc), stop_reason(exc), ticks,
                                   self.fail_on_divergence)
        try:
            self._write(doc)
        except BenchError as err:  # said, and the replay's own error goes on
            print(f"gridloop: warning: {err}", file=sys.stderr)
