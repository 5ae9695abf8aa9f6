"""The files a command reads and writes: parameter sets by path or shipped name, and an
output checked before any work (a command must not replace what it reads, nor find at the
end that it cannot write)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bench.errors import BenchError


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
