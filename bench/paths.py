"""The files a command reads and writes: parameter sets by path or shipped name, and an
output checked before any work (a command must not replace what it reads, nor find at the
end that it cannot write)."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.errors import BenchError, OutputBusy


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: another spelling of the path, a symbolic or a
    hard link to it included."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (Python 3.11)
        return False


def check_out(out: str | Path, inputs: Iterable[tuple[str, str | Path | None]] = (),
              flag: str = "--out") -> Path:
    """Refuse, before any work, an output that is one of the command's ``inputs`` (``(what,
    path)`` pairs: writing it would destroy what was read), a directory, or a file in a
    folder that does not exist."""
    path = Path(out)
    for what, source in inputs:
        if source is not None and same_file(path, Path(source)):
            raise BenchError(f"{flag} {out}: that is an input ({what} {source}); give another "
                             "file")
    if path.is_dir():
        raise BenchError(f"{flag} {out}: that is a directory; give a file name")
    if not path.parent.is_dir():
        raise BenchError(f"{flag} {out}: {path.parent} is not a directory")
    return path


def params_file(ref: str | Path) -> Path:
    """A parameter file: ``ref`` itself, or the set shipped with gridloop under that name
    (``battery_lfp_rack`` or ``battery_lfp_rack.toml``) when ``ref`` is a bare name that is not
    a file here."""
    from bench.build import shipped

    path = Path(ref)
    if path.is_file() or path.name != str(ref):  # a file, or a path with a folder
        return path
    name = path.name.removesuffix(".toml")
    return shipped(name) if name and shipped(name).is_file() else path


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Write ``path`` through a new file beside it: yields that file's path (with the same
    suffix, for writers that pick the format from it), and renames it over ``path`` only
    when the block ends without an error.  On an error the new file is removed and
    ``path`` is left as it was: a failed write never truncates what was there.

    The new file takes the mode of the file it replaces (else the umask's); through a
    symbolic link, the link's target is replaced.  Raises OSError where the folder cannot
    take the new file.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except OSError:  # a new file: what an ordinary open would have given it
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's file mode creation mask (read without changing it, where Linux says)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def lock_path(out: Path) -> Path:
    """The lock file of a command writing ``out``: ``.NAME.lock`` beside it."""
    return out.with_name(f".{out.name}.lock")


#: outputs this process holds (a lab run holds its recording, then runs it)
_held: set[Path] = set()


@contextmanager
def exclusive(out: Path, who: str, refusal: str = "") -> Iterator[None]:
    """Hold ``out`` (and what a run writes beside it) against other processes: a second
    command writing the same file stops at once with one line, before it touches anything,
    naming ``who`` holds it.  Held again by this process, it is held already.  The lock file
    is removed on release.  ``refusal``: that line, ``{holder}`` in it replaced by the
    holder (``gridloop sweep, pid N``); by default ``OUT is in use by another run (HOLDER);
    wait for it to finish, or give --out another file``."""
    key = Path(os.path.abspath(out))
    try:
        import fcntl
    except ImportError:  # not POSIX: the recordings' own HDF5 locks are the only guard
        yield
        return
    if key in _held:
        yield
        return
    lock = lock_path(out)
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BenchError(f"{out}: cannot write in {lock.parent} "
                             f"({(exc.strerror or str(exc)).lower()}); give --out another "
                             "file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            if refusal:
                raise OutputBusy(refusal.replace("{holder}", holder or who)) from None
            raise OutputBusy(f"{out} is in use by another run ({holder or who}); wait for it "
                             f"to finish, or give --out another file") from None
        try:  # the lock file may have been removed by the run that held it: start again
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    _held.add(key)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{who}, pid {os.getpid()}".encode())
        yield
    finally:
        _held.discard(key)
        lock.unlink(missing_ok=True)
        os.close(fd)
