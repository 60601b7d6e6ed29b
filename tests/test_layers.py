"""The layers only point down: every `llmos` import (module level, lazy and `TYPE_CHECKING`
ones alike) goes to the same layer or a lower one. The imports that still point up are listed
by name, as debt: a new one fails, and one that is gone must leave the list."""

from __future__ import annotations

import ast
from pathlib import Path

import llmos

PACKAGE = Path(llmos.__file__).parent

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("llmos", "llmos.errors", "llmos.limits", "llmos.config", "llmos.imports",
              "llmos.atomic", "llmos.text", "llmos.client")),
    ("security", ("llmos.security",)),
    ("syscall ABI", ("llmos.syscalls", "llmos.syscalls.base", "llmos.syscalls.context",
                     "llmos.syscalls.hooks", "llmos.syscalls.services")),
    ("dispatch", ("llmos.syscalls.dispatch",)),
    ("families", ("llmos.syscalls.fs", "llmos.syscalls.fs_search", "llmos.syscalls.mem",
                  "llmos.syscalls.image",
                  "llmos.syscalls.tool", "llmos.syscalls.control", "llmos.syscalls.cmdline",
                  "llmos.documents")),
    ("memory", ("llmos.memory",)),
    ("kernel", ("llmos.kernel",)),
    ("pager", ("llmos.pager",)),
    ("apps", ("llmos.apps",)),
    ("system", ("llmos.system", "llmos.consolidate", "llmos.undo")),
    ("shell and cli", ("llmos.shell", "llmos.cli", "llmos.__main__", "llmos.mcp_server",
                       "llmos.doctor", "llmos.serve",
                       "llmos.bench", "llmos.evaluation",
                       "llmos.testing")),
)  # fmt: skip
"""Lowest first. A module belongs to the layer of the longest name that is it or its package
(`llmos` itself is only the package's own `__init__`)."""

KNOWN_UPWARD: set[tuple[str, str]] = set()
"""Imports that may point up: none now (the last four, the mem and fs families naming
memory's types, went when the families came to ask for services by protocol)."""


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            inside = module == name or (name != "llmos" and module.startswith(name + "."))
            if inside and (best is None or len(name) > best[1]):
                best = (index, len(name))
    return None if best is None else best[0]


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The llmos modules `path` imports anywhere in it (a `from x import y` names y when y is
    a module, else x)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {name for name in out if name in known}


def upward() -> set[tuple[str, str]]:
    known = modules()
    found = set()
    for module, path in known.items():
        for target in imports(path, known):
            low, high = layer_of(module), layer_of(target)
            assert low is not None and high is not None
            if high > low:
                found.add((module, target))
    return found


def package_of(module: str) -> str:
    """The package a module is part of: `llmos.memory` for `llmos.memory.store`; a top-level
    module (`llmos.pager`) is its own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def package_cycle() -> list[str]:
    """A cycle among llmos's packages (each edge: some module of one imports the other), or []."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for module, path in known.items():
        for target in imports(path, known):
            a, b = package_of(module), package_of(target)
            if a != b and a != "llmos" and b != "llmos":
                edges.setdefault(a, set()).add(b)
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        trail.pop()
        return []

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_two_packages_import_each_other() -> None:
    """Layers hold module by module, and packages too: `llmos.syscalls` never imports from
    `llmos.apps` (the hook specs are the ABI's), nor `llmos.memory` from `llmos.kernel` (the
    pager, which uses both, is its own module above them)."""
    cycle = package_cycle()
    assert not cycle, "these packages import each other in a cycle: " + " -> ".join(cycle)


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in modules() if layer_of(m) is None)
    assert not unplaced, f"put these in a layer of LAYERS: {unplaced}"


def test_no_new_import_points_up() -> None:
    new = sorted(upward() - KNOWN_UPWARD)
    assert not new, "these imports point to a higher layer: " + ", ".join(
        f"{a} -> {b} ({LAYERS[layer_of(a) or 0][0]} -> {LAYERS[layer_of(b) or 0][0]})"
        for a, b in new
    )


def test_the_list_of_upward_imports_only_shrinks() -> None:
    gone = sorted(KNOWN_UPWARD - upward())
    assert not gone, f"these no longer point up; take them off KNOWN_UPWARD: {gone}"


def test_the_check_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from llmos.system import System\n"
        "def f():\n    import llmos.cli\n    from llmos.kernel import loop\n"
    )
    known = {"llmos.system": source, "llmos.cli": source, "llmos.kernel.loop": source}
    assert imports(source, known) == {"llmos.system", "llmos.cli", "llmos.kernel.loop"}
