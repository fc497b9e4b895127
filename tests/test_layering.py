"""The package's layers, checked from the import statements (no VM).

memory (vmi) -> kernel objects (profile, linux) -> syscalls -> tracer -> output -> cli: a
module imports only from its own layer or below, and inside ``syscalls/`` the printers
never import the decoder that runs them (no import circle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import xenhpt

PACKAGE = Path(xenhpt.__file__).parent
# Which top-level packages each one may import (its own layer and those below it).
ALLOWED = {
    "vmi": {"vmi", "errors"},
    "profile": {"profile", "vmi", "errors"},
    "linux": {"linux", "profile", "vmi", "errors"},
    "syscalls": {"syscalls", "errors"},
    "tracer": {"tracer", "syscalls", "linux", "profile", "vmi", "errors"},
    "output": {"output", "tracer", "syscalls", "linux", "errors"},
}


def _imports(path: Path) -> set[str]:
    """The xenhpt modules ``path`` imports, as dotted names below xenhpt."""
    module = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(module[:len(module) - node.level])
                if node.module:
                    found.add(f"{base}.{node.module}".lstrip("."))
                else:  # from . import calls
                    found |= {f"{base}.{a.name}".lstrip(".") for a in node.names}
            elif node.module and node.module.startswith("xenhpt."):
                found.add(node.module.removeprefix("xenhpt."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("xenhpt.") for a in node.names
                      if a.name.startswith("xenhpt.")}
    return found


def test_each_layer_imports_only_itself_and_the_layers_below() -> None:
    wrong = []
    for layer, allowed in ALLOWED.items():
        for path in (PACKAGE / layer).rglob("*.py"):
            for name in _imports(path):
                top = name.split(".")[0]
                if top and top not in allowed:
                    wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert wrong == []


def test_the_syscall_modules_import_each_other_without_a_circle() -> None:
    graph = {}
    for path in (PACKAGE / "syscalls").glob("*.py"):
        graph[path.stem] = {name.split(".")[1] for name in _imports(path)
                            if name.startswith("syscalls.") and name.count(".") == 1}
    assert "calls" in graph["decode"]  # (the graph is read right)
    done: set[str] = set()

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in trail, " -> ".join((*trail, node))
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, (*trail, node))
        done.add(node)

    for node in graph:
        visit(node, ())
