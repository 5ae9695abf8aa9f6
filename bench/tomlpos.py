"""Line numbers of keys in a TOML text, so errors can say ``file:line: field: what``.

``tomllib`` returns plain data without positions; this scans the text once and maps every
dotted key path (tables, arrays of tables with their index, dotted keys) to the line where it
is defined.  Values spanning lines (arrays, multi-line strings) are skipped over.
"""

from __future__ import annotations

import re

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _split_key(text: str) -> tuple[list[str], str]:
    """Split a (possibly dotted, possibly quoted) key off the front of ``text``."""
    parts: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] in "\"'":
            q = text[i]
            j = i + 1
            buf = []
            while j < n and text[j] != q:
                if q == '"' and text[j] == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            m = _BARE.match(text, i)
            if not m:
                break
            parts.append(m.group(0))
            i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == ".":
            i += 1
            continue
        break
    return parts, text[i:]


def _depth_change(value: str, state: dict) -> int:
    """Bracket depth change over ``value`` outside strings; tracks multi-line strings."""
    depth = 0
    i = 0
    n = len(value)
    while i < n:
        if state.get("ml"):
            end = value.find(state["ml"], i)
            if end < 0:
                return depth
            i = end + 3
            state["ml"] = None
            continue
        c = value[i]
        if value.startswith('"""', i) or value.startswith("'''", i):
            state["ml"] = value[i:i + 3]
            i += 3
            continue
        if c in "\"'":
            j = value.find(c, i + 1)
            while c == '"' and j > 0 and value[j - 1] == "\\":
                j = value.find(c, j + 1)
            i = (j + 1) if j >= 0 else n
            continue
        if c == "#":
            break
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    return depth


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    array_counts: dict[tuple[str, ...], int] = {}
    depth = 0
    state: dict = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if depth > 0 or state.get("ml"):
            depth += _depth_change(raw, state)
            continue
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            parts, _ = _split_key(line[2:])
            key = tuple(parts)
            idx = array_counts.get(key, 0)
            array_counts[key] = idx + 1
            table = key + (str(idx),)
            lines.setdefault(key, lineno)
            lines[table] = lineno
            continue
        if line.startswith("["):
            parts, _ = _split_key(line[1:])
            table = _resolve_arrays(tuple(parts), array_counts)
            lines[table] = lineno
            continue
        parts, rest = _split_key(line)
        if not parts or not rest.startswith("="):
            continue
        path = table + tuple(parts)
        for k in range(len(table) + 1, len(path) + 1):
            lines.setdefault(path[:k], lineno)
        lines[path] = lineno
        depth += _depth_change(rest[1:], state)
    return lines


def _resolve_arrays(path: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> tuple[str, ...]:
    """Insert the current index after any prefix that names an array of tables."""
    out: list[str] = []
    for part in path:
        out.append(part)
        key = tuple(out)
        if key in counts:
            out.append(str(counts[key] - 1))
    return tuple(out)


def line_of(lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    """Line of ``path``, or of its longest defined prefix."""
    for k in range(len(path), 0, -1):
        if path[:k] in lines:
            return lines[path[:k]]
    return None
