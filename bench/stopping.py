"""Stopping a command on a signal (SIGINT, SIGTERM) and what it ends with: its exit status
and the one line saying why (:func:`exit_status`, :func:`stop_reason`), and the signal
handling the engine and the build run under (:func:`deferred_stop`, :func:`interruptible`,
:func:`abandonable`)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from bench.errors import user_errors


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a CI runner sends on cancel or timeout), stopping a command as Ctrl-C
    does: a run records why it stopped and closes its recording, a sweep keeps its finished
    points."""


def exit_status(exc: BaseException) -> int:
    """The exit status :func:`bench.cli.main` ends with when a command raises ``exc`` (what ``run
    --json`` writes as ``status`` for a run that stopped)."""
    if isinstance(exc, Terminated):
        return 143
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, BrokenPipeError):
        return 0
    if isinstance(exc, user_errors()):
        return 2
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 1  # not caught: Python's traceback, and status 1


def stop_reason(exc: BaseException) -> str:
    """One line on why ``exc`` stopped a command: the line :func:`bench.cli.main` prints,
    without its ``gridloop: error:``."""
    if isinstance(exc, Terminated):
        return "terminated"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, user_errors()):
        return str(exc)
    return " ".join(f"{type(exc).__name__}: {exc}".split())


# -- stopping on a signal -------------------------------------------------------------------
#
# A signal handler that raises does so between any two bytecodes of the main thread: inside
# asyncio's own code (a lock's ``__aexit__``, a task's step) it leaves the event loop, and the
# run's stop path, half done; inside a numba function's call back into Python it breaks the
# compiled code's return (a SystemError, or a segfault).  So where a command runs such code it
# defers the signals (:func:`deferred_stop`): the handler only notes which one came, and the
# code stops at a point of its own (the engine: at the next tick, through its normal stop path;
# a build: where numba compiles, :func:`abandonable`, else once it is done).  Elsewhere SIGTERM
# raises :class:`Terminated` as Ctrl-C raises KeyboardInterrupt, which plain Python code stops
# on cleanly.

_deferring = 0  # depth of deferred_stop blocks (the main thread's)
_raising = False  # inside an interruptible() block (a signal raises there, once)
_abandoning = False  # inside an abandonable() block (a signal raises where numba compiles)
_pending: type[KeyboardInterrupt] | None = None  # the first signal that came while deferring


def _on_stop_signal(signum: int, frame: Any) -> None:
    """SIGINT or SIGTERM: raise its exception; inside :func:`deferred_stop` note it (and raise
    it only inside :func:`interruptible`: noted, a controller that swallows it still stops;
    or inside :func:`abandonable` where the code at ``frame`` is numba compiling)."""
    global _pending, _raising
    exc = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    if _deferring:
        if _pending is None:
            _pending = exc
        if _abandoning and _compiling(frame):
            raise exc
        if not _raising:
            return
        _raising = False  # once: wherever it lands, what follows is deferred again
    raise exc


def _compiling(frame: Any) -> bool:
    """Whether the main thread's code at ``frame`` is numba compiling a function: inside its
    compiler's pipeline (plain Python, which an exception leaves as cleanly as a typing
    error: its locks released), and neither in llvmlite (its Python code may be a callback
    from LLVM's C++, where an exception is printed and dropped) nor in numba's cache (a file
    it writes: its temporary file would be left behind; a load is no compile)."""
    compiler = sys.modules.get("numba.core.compiler")
    if compiler is None or frame is None:
        return False
    compiler_file = compiler.__file__
    caching = os.path.join(os.path.dirname(compiler_file), "caching.py")
    llvmlite = sys.modules.get("llvmlite")
    llvmlite_dir = (os.path.dirname(llvmlite.__file__) + os.sep
                    if llvmlite is not None and llvmlite.__file__ else None)
    inside = False
    while frame is not None:
        file = frame.f_code.co_filename
        if file == caching or (llvmlite_dir is not None and file.startswith(llvmlite_dir)):
            return False
        inside = inside or file == compiler_file
        frame = frame.f_back
    return inside


def stop_requested() -> type[KeyboardInterrupt] | None:
    """The exception of a SIGINT (KeyboardInterrupt) or SIGTERM (:class:`Terminated`) that came
    inside :func:`deferred_stop` and has not been raised yet; None: none came."""
    return _pending


@contextlib.contextmanager
def deferred_stop() -> Iterator[None]:
    """SIGINT and SIGTERM inside the block raise nothing: the code inside asks
    :func:`stop_requested` where it can stop, and raises it there; a signal still pending when
    the block ends without an exception is raised on leaving it (an exception the block raised
    goes on: it is why the block stopped).  Nested (compiled code a controller's
    :func:`interruptible` step calls), it defers inside its block only.  Only a handler
    Python's or the CLI's is replaced (an ignored signal stays ignored); outside the main
    thread, where no handler runs, this changes nothing."""
    global _deferring, _pending, _raising
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    replaced: dict[int, Any] = {}
    if not _deferring:
        _pending = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            current = signal.getsignal(sig)
            if current in (signal.default_int_handler, signal.SIG_DFL, _on_stop_signal):
                replaced[sig] = signal.signal(sig, _on_stop_signal)
    raising, _raising = _raising, False
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        pending = _pending
        if _deferring:  # kept for the outer block, in case the code here swallows it
            _raising = raising
        else:  # from here a signal raises
            _pending, _raising = None, False
            for sig, previous in replaced.items():
                signal.signal(sig, previous)
    if pending is not None:  # the block ended without stopping for it: here it does
        raise pending


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Inside :func:`deferred_stop`, a block of plain Python code (a controller's step) that a
    signal interrupts at once, as outside: a busy loop or a ``time.sleep`` still stops on
    Ctrl-C.  A stop already pending is raised on entering.  Not nested."""
    global _raising
    if threading.current_thread() is not threading.main_thread() or not _deferring:
        yield
        return
    if _pending is not None:
        raise _pending
    _raising = True
    try:
        yield
    finally:
        _raising = False


@contextlib.contextmanager
def abandonable() -> Iterator[None]:
    """Inside :func:`deferred_stop`, a block whose work a signal may abandon where numba
    compiles (a scenario's build: on a machine whose kernel cache is cold, a minute of
    compiling, longer than a CI runner waits between SIGTERM and SIGKILL): the signal is
    raised at once where the code is numba's compiler (:func:`_compiling`), else at the start
    of the next function numba compiles, else as :func:`deferred_stop` does, once the block
    is done.  Compiled code the block runs (the twin's kernels, a workload's schedule) is
    never interrupted: a signal there waits for it to return.  An error the compiler's
    C code makes of the exception (a ``SystemError``) is raised as the signal it was.  The
    block must leave nothing half done when abandoned (a build makes no file or process).
    Not nested."""
    global _abandoning
    if threading.current_thread() is not threading.main_thread() or not _deferring:
        yield
        return
    if _pending is not None:
        raise _pending
    try:
        from numba.core import event
    except ImportError:  # no numba: nothing to compile, and nothing to abandon
        yield
        return

    class _StopAtCompile(event.Listener):
        """Raise a pending signal as numba starts compiling a function."""

        def on_start(self, ev: Any) -> None:
            if _pending is not None:
                raise _pending

        def on_end(self, ev: Any) -> None:
            pass

    _abandoning = True
    try:
        with event.install_listener("numba:compile", _StopAtCompile()):
            yield
    except Exception as exc:  # the signal, turned into another error on its way out
        if _pending is not None:
            raise _pending() from exc
        raise
    finally:
        _abandoning = False


def stop_on_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated` in the main thread; returns the handler it
    replaced (None where none could be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_stop_signal)
