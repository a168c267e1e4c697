"""Where each key of a TOML file is: every config error names its line, and tomllib keeps no
positions."""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")
_INLINE_KEY = re.compile(r"[{,]\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


def _key_parts(text: str) -> list[str]:
    return [p.strip().strip("\"'") for p in text.split(".")]


class KeyLines:
    """Maps a key path such as ``("test", 2, "params", "count")`` to its line in the source.

    tomllib keeps no positions, so this follows the file's table headers and assignments.
    It is used only to point at errors, so approximate is good enough: when a key is not
    found, the line of its nearest enclosing table is given. ``deepest`` is how deep arrays and
    inline tables nest at most, and the first line that deep.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str | int, ...], int] = {}
        self.deepest = (0, 1)
        counts: dict[tuple[str | int, ...], int] = {}
        table: tuple[str | int, ...] = ()
        depth = 0  # open brackets of a multi-line array or inline table
        string = ""  # the delimiter of the multi-line string open at the line's start
        for n, line in enumerate(text.splitlines(), start=1):
            code = depth == 0 and not string
            if code and (m := _HEADER.match(line)):
                path = self._in_arrays(_key_parts(m[2]), counts)
                if m[1] == "[[":
                    i = counts.get(path, 0)
                    counts[path] = i + 1
                    table = (*path, i)
                else:
                    table = path
                self._lines.setdefault(table, n)
            elif code and (m := _ASSIGN.match(line)):
                key = (*table, *_key_parts(m[1]))
                self._lines.setdefault(key, n)
                for k in _INLINE_KEY.finditer(line):
                    self._lines.setdefault((*key, k[1].strip('"')), n)
            balance, peak, string = _scan(line, string)
            if depth + peak > self.deepest[0]:
                self.deepest = (depth + peak, n)
            depth = max(0, depth + balance)

    @staticmethod
    def _in_arrays(
        parts: list[str], counts: dict[tuple[str | int, ...], int]
    ) -> tuple[str | int, ...]:
        """``[test.params]`` below the 2nd ``[[test]]`` → ``("test", 1, "params")``."""
        path: list[str | int] = []
        for k, part in enumerate(parts):
            path.append(part)
            if k < len(parts) - 1 and (count := counts.get(tuple(path))):
                path.append(count - 1)
        return tuple(path)

    def line_of(self, loc: tuple[str | int, ...]) -> int:
        for end in range(len(loc), 0, -1):
            if (n := self._lines.get(tuple(loc[:end]))) is not None:
                return n
        return 1


def _scan(line: str, string: str) -> tuple[int, int, str]:
    """Net open brackets on a line, ignoring strings and comments (for multi-line values), the
    most open at any point of it, and the multi-line string delimiter still open at its end.
    ``string``: the one open at its start.
    """
    depth, peak, quote, i = 0, 0, string, 0
    while i < len(line):
        if quote:
            if line[i] == "\\" and quote[0] == '"':  # an escape in a basic string
                i += 2
            elif line.startswith(quote, i):
                i += len(quote)
                quote = ""
            else:
                i += 1
            continue
        ch = line[i]
        if line.startswith(ch * 3, i) and ch in "\"'":
            quote = ch * 3
            i += 3
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            depth += 1
            peak = max(peak, depth)
        elif ch in "]}":
            depth -= 1
        i += 1
    return depth, peak, quote if len(quote) == 3 else ""
