"""The Config::General files perfSONAR-PS daemons read (``daemon.conf``): ``key value`` lines,
``<block arg> … </block>`` blocks, ``#`` comments, ``\\`` continuations and
``<<include FILE>>``, each item with its line so an error can name it.

Only what the seed's files use is read; here-documents and the 2007 ``KEY?value`` format are
refused with the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from netsonde.config.importers.output import Unmappable

MAX_INCLUDES = 8  # deep: an include that includes itself ends here
_COMMENT = re.compile(r"(?<!\\)#.*$")
_TAGS = re.compile(r"^(?:<[^<>]+>\s*)+$")
_TAG = re.compile(r"<(/?)\s*([^<>\s]+)(?:\s+([^<>]*?))?\s*>")
_INCLUDE = re.compile(r"^<<\s*include\s+(.+?)\s*>>$", re.IGNORECASE)
_ITEM = re.compile(r"^([^\s=]+)\s*(?:=\s*|\s+|$)(.*)$")
_OLD_STYLE = re.compile(r"^[A-Z][A-Z0-9_]*\?")


@dataclass
class Item:
    key: str
    value: str
    line: int
    file: Path


@dataclass
class Block:
    """A ``<name arg>`` block (the file itself: name ``""``)."""

    name: str
    arg: str | None
    line: int
    file: Path
    items: list[Item] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    def get(self, key: str) -> Item | None:
        """The last ``key`` of this block (Config::General: a repeated key's last value)."""
        found = [i for i in self.items if i.key.lower() == key.lower()]
        return found[-1] if found else None

    def all(self, key: str) -> list[Item]:
        return [i for i in self.items if i.key.lower() == key.lower()]


def read(path: Path) -> Block:
    root = Block("", None, 1, path)
    _read_into(root, path, depth=0)
    return root


def _read_into(root: Block, path: Path, depth: int) -> None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise Unmappable(f"{path}: cannot read: {e.strerror}") from None
    stack = [root]
    pending = ""
    pending_line = 0
    for n, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", raw).strip()
        if pending:
            line, n = pending + " " + line, pending_line
            pending = ""
        if line.endswith("\\"):
            pending, pending_line = line[:-1].rstrip(), n
            continue
        if not line:
            continue
        where = f"{path}:{n}"
        if _OLD_STYLE.match(line):
            raise Unmappable(
                f"{where}: {line.split('?')[0]}?…: the 2007 KEY?value format is not imported"
                " (only the Config::General daemon.conf of 2008 and later)"
            )
        if m := _INCLUDE.match(line):
            if depth >= MAX_INCLUDES:
                raise Unmappable(f"{where}: includes nested deeper than {MAX_INCLUDES}")
            included = path.parent / m[1]
            if not included.is_file():
                raise Unmappable(f"{where}: <<include {m[1]}>>: {included}: no such file")
            _read_into(stack[-1], included, depth + 1)
            continue
        if _TAGS.match(line):
            for tag in _TAG.finditer(line):
                _tag(stack, tag, n, path)
            continue
        if "<<" in line:
            raise Unmappable(f"{where}: here-documents (<<) are not supported")
        if line.startswith("<"):
            raise Unmappable(f"{where}: not a block tag: {line[:60]}")
        if (m := _ITEM.match(line)) is None:  # pragma: no cover - _ITEM matches any text
            raise Unmappable(f"{where}: cannot read {line[:60]!r}")
        stack[-1].items.append(Item(m[1], m[2].strip().replace("\\#", "#"), n, path))
    if len(stack) > 1:
        open_block = stack[-1]
        raise Unmappable(f"{path}:{open_block.line}: <{open_block.name}> is never closed")


def _tag(stack: list[Block], tag: re.Match[str], n: int, path: Path) -> None:
    closing, name, arg = tag[1], tag[2], tag[3]
    if closing:
        if len(stack) == 1 or stack[-1].name.lower() != name.lower():
            expected = f"</{stack[-1].name}>" if len(stack) > 1 else "no closing tag"
            raise Unmappable(f"{path}:{n}: </{name}> where {expected} was expected")
        stack.pop()
        return
    block = Block(name, arg or None, n, path)
    stack[-1].blocks.append(block)
    stack.append(block)
