"""Writing a benchmark's section into BENCHMARKS.md: one way for every bench script."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace the section that starts with ``heading`` (up to the next ``## ``), keeping its
    hand-written notes from "What it shows" on, or append the section."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(heading)
    if start < 0:
        path.write_text(old.rstrip("\n") + "\n\n" + text)
        return
    end = old.find("\n## ", start + 1)
    end = len(old) if end < 0 else end + 1
    notes = old.find("\nWhat it shows", start, end)
    kept = "\n" + old[notes + 1 : end] if notes >= 0 else ("\n" if end < len(old) else "")
    path.write_text(old[:start] + text + kept + old[end:])
