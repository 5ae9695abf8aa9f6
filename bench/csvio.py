"""Numeric CSV files (optionally gzipped): columns by name, errors naming file, line, column."""

from __future__ import annotations

import contextlib
import csv
import gzip
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bench.errors import BenchError


class CsvError(BenchError, ValueError):
    """A CSV file is missing, empty or malformed; the message names file, line and column."""


def read_columns(path: str | Path, columns: tuple[str, ...] | None = None,
                 required: tuple[str, ...] = ("t_s",)) -> dict[str, np.ndarray]:
    """Columns of a CSV as float arrays (``columns``, or every column); ``t_s`` must increase
    strictly.  Columns not asked for may hold text."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        # utf-8-sig: a spreadsheet's byte order mark is not part of the first column's name
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:  # type: ignore[operator]
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise CsvError(f"{path}: empty file (expected a header line)")
            names = [h.strip() for h in header]
            for name in required + tuple(columns or ()):
                if name not in names:
                    raise CsvError(f"{path}:1: no '{name}' column (columns: {', '.join(names)})")
            wanted = [i for i, n in enumerate(names)
                      if columns is None or n in columns or n in required]
            twice = next((names[i] for i in wanted if names[i] in names[:i]), None)
            if twice is not None:  # which of the two is meant?
                raise CsvError(f"{path}:1: column '{twice}' appears twice")
            rows = []
            for lineno, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(names):
                    raise CsvError(f"{path}:{lineno}: {len(row)} fields, the header has "
                                   f"{len(names)}")
                values = []
                for i in wanted:
                    name, cell = names[i], row[i]
                    try:
                        values.append(float(cell))
                    except ValueError:
                        raise CsvError(f"{path}:{lineno}: column '{name}': {cell!r} is not a "
                                       f"number") from None
                rows.append(values)
    except FileNotFoundError:
        raise CsvError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise CsvError(f"{path}: unreadable ({exc})") from None
    if not rows:
        raise CsvError(f"{path}: no data rows")
    data = np.asarray(rows)
    out = {names[i]: data[:, j] for j, i in enumerate(wanted)}
    if "t_s" in out:
        bad = np.flatnonzero(~(np.diff(out["t_s"]) > 0))
        if len(bad):
            raise CsvError(f"{path}:{int(bad[0]) + 3}: t_s does not increase")
    for name, col in out.items():
        nonfinite = np.flatnonzero(~np.isfinite(col))
        if len(nonfinite):
            raise CsvError(f"{path}:{int(nonfinite[0]) + 2}: column '{name}' is not finite")
    return out


#: rows :func:`write_columns` formats at a time: its memory does not grow with the file (a
#: day's prediction of 8.6 M rows held as Python strings took 5.7 GB)
WRITE_CHUNK_ROWS = 100_000


def write_columns(path: str | Path, columns: Mapping[str, np.ndarray],
                  formats: Mapping[str, str] | None = None, *,
                  chunk_rows: int | None = None) -> Path:
    """Write equal-length numeric columns as CSV with a header line (gzipped for ``.gz``, as
    :func:`read_columns` reads it), atomically (a temporary file, then renamed); ``formats``
    per column (default: the shortest text that reads back as the same float).  Rows are
    formatted and written ``chunk_rows`` (default :data:`WRITE_CHUNK_ROWS`) at a time."""
    path = Path(path)
    names = list(columns)
    arrays = [np.asarray(columns[n], dtype=float) for n in names]
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise CsvError(f"{path}: columns of different lengths ("
                       + ", ".join(f"{n} {len(a)}" for n, a in zip(names, arrays, strict=True))
                       + ")")
    rows = lengths.pop() if lengths else 0
    fmts = [(formats or {}).get(n) for n in names]
    step = max(1, int(chunk_rows if chunk_rows is not None else WRITE_CHUNK_ROWS))
    tmp = path.with_name(path.name + ".tmp")
    try:
        with (gzip.open(tmp, "wt", compresslevel=6, encoding="utf-8", newline="")
              if path.suffix == ".gz" else tmp.open("w", encoding="utf-8", newline="")) as f:
            f.write(",".join(names) + "\n")
            for start in range(0, rows, step) if names else ():
                cells = []
                for a, fmt in zip(arrays, fmts, strict=True):
                    values = a[start:start + step].tolist()
                    # repr: the shortest text that reads back as the same float (52.6, where
                    # %.17g writes 52.600000000000001), and as fast as savetxt
                    cells.append([fmt % v for v in values] if fmt else list(map(repr, values)))
                f.write("\n".join(map(",".join, zip(*cells, strict=True))) + "\n")
        tmp.replace(path)
    except OSError as exc:  # a directory, a full disk: no stray .tmp, and the real name
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CsvError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:  # a bad format, an interrupt part-way: no stray .tmp either
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path
