"""The package's floor plan holds: every import goes to the module's own folder or a floor below, and no two
modules import each other, directly or round a circle (docs/architecture.md). Imports are read from the
source, those inside functions and under `TYPE_CHECKING` included, so a lazy import cannot hide a climb."""

from __future__ import annotations

import ast

from helpers import ROOT

PACKAGE = ROOT / "src" / "mnist_logreg"
# From the top floor down; the leaves (the package's own modules) at the bottom.
FLOORS = ["inference", "runs", "callbacks", "sweeps", "core", "tracking", ""]
SAME_FLOOR = {"core": {"tracking"}, "tracking": {"core"}}  # side by side: neither imports the other


def floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in FLOORS else ""


def imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist_logreg"):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("mnist_logreg"))
        found[name] = targets
    return found


def test_every_import_goes_down_or_stays_on_its_floor() -> None:
    climbs = []
    for module, targets in imports().items():
        here = FLOORS.index(floor(module))
        for target in targets:
            there = FLOORS.index(floor(target))
            if there < here or floor(target) in SAME_FLOOR.get(floor(module), set()):
                climbs.append(f"{module} -> {target}")
    assert climbs == []


def test_no_modules_import_each_other() -> None:
    graph = imports()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            module = todo.pop()
            for target in graph.get(module, ()):
                if target == goal:
                    return True
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return False

    circles = sorted({" <-> ".join(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})
    assert circles == []


def test_the_floors_are_the_folders() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(FLOORS) - {""}
