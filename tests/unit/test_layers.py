"""The layering holds itself: a module imports only from its own package or from floors below,
a service never imports another service, and no import circle exists (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "src" / "netsonde"

# Floor of each top-level part of the package; a module may import its own part or lower floors.
FLOORS: dict[str, int] = {
    "__init__": 0,
    "model": 0,
    "units": 0,
    "auth": 0,
    "proctree": 0,
    "filesystem": 0,
    "restartable": 0,
    "limits": 0,
    "metrics": 1,
    "engines": 2,
    "nmwg": 2,
    "archive": 3,
    "config": 4,
    "probes": 5,
    "http": 5,
    "mp": 6,
    "services": 7,
    "registration": 7,  # the daemon gives it the services' registrants
    "api": 8,
    "daemon": 9,
    "cli": 10,
    "__main__": 11,
}
SHARED_IN_SERVICES = {"base", "__init__"}  # the contract and the table, not a service


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported netsonde module) for every import in the file, lazy ones included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("netsonde"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("netsonde"):
                continue
            known = modules()
            for alias in node.names:  # ``from netsonde.x import y``: y may be a module
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in known else base


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def service(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "services" and parts[2] not in SHARED_IN_SERVICES:
        return parts[2]
    return None


def breaches() -> list[str]:
    found = []
    for name, path in sorted(modules().items()):
        src_part = part(name)
        if src_part not in FLOORS:
            found.append(f"{name}: not in FLOORS (give its part a floor)")
            continue
        for line, target in imports_of(name, path):
            dst_part = part(target)
            where = f"{path.relative_to(ROOT.parent)}:{line}: {name} imports {target}"
            if dst_part not in FLOORS:
                found.append(f"{where} (unknown part {dst_part})")
            elif dst_part != src_part and FLOORS[dst_part] >= FLOORS[src_part]:
                found.append(f"{where} (floor {FLOORS[dst_part]} ≥ {FLOORS[src_part]})")
            elif service(name) and service(target) and service(name) != service(target):
                found.append(f"{where} (a service imports another service)")
    return found


def import_graph() -> dict[str, set[str]]:
    return {n: {t for _, t in imports_of(n, p)} for n, p in modules().items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        path.append(n)
        for t in sorted(graph.get(n, ())):
            if t == n or t not in graph:
                continue
            if state.get(t) == 1 and not _is_package_of(t, n):
                found.append([*path[path.index(t) :], t])
            elif t not in state:
                visit(t)
        path.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def _is_package_of(package: str, module: str) -> bool:
    """A package's ``__init__`` re-exporting its own modules is no circle of design."""
    return module.startswith(package + ".")


def test_every_part_has_a_floor() -> None:
    parts = {part(n) for n in modules()}
    assert parts <= set(FLOORS), sorted(parts - set(FLOORS))


def test_no_module_imports_upward_or_across_services() -> None:
    assert breaches() == []


def test_no_import_circles() -> None:
    assert circles(import_graph()) == []


def test_a_circle_is_found() -> None:
    graph = {"n.a": {"n.b"}, "n.b": {"n.c"}, "n.c": {"n.a"}, "n.p": {"n.p.x"}, "n.p.x": {"n.p"}}
    assert circles(graph) == [["n.a", "n.b", "n.c", "n.a"]]


@pytest.mark.parametrize(
    ("source", "target", "breach"),
    [
        ("netsonde.nmwg.echo", "netsonde.http.soap", True),  # the circle the house removed
        ("netsonde.services.status.nmwg", "netsonde.services.pinger.ma", True),
        ("netsonde.services.status.nmwg", "netsonde.services.base", False),
        ("netsonde.api.app", "netsonde.services", False),
        ("netsonde.archive.sqlite", "netsonde.config", True),
    ],
)
def test_the_rule_itself(source: str, target: str, breach: bool) -> None:
    """The checker would catch a breach (it is not vacuously green)."""
    upward = part(source) != part(target) and FLOORS[part(target)] >= FLOORS[part(source)]
    across = bool(service(source) and service(target) and service(source) != service(target))
    assert (upward or across) is breach
