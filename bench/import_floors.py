"""The import graph of ``src/preimage``: cycles and the floor of every module.

Every ``import`` and ``from … import`` in a module counts, wherever it stands: at the top, inside a
function (the imports that keep a job's start-up light) or under ``if TYPE_CHECKING``. An edge
``a → b`` means module ``a`` names module ``b`` in an import; ``from preimage import x`` is an edge
to ``preimage.x`` when that is a module, to the package ``preimage`` otherwise. The parent packages
that Python imports on the way (``preimage.features`` for ``preimage.features.cache``) are not
edges: a module of a package always has them. Imports by computed name
(``importlib.import_module``: the representation registry of :mod:`preimage.features.base` loading
its modules on first use) are not seen.

A module's floor is 0 when it imports nothing of the package, else one more than the highest floor
it imports: a module never stands below what it needs. Floors exist only without cycles; modules on
a cycle are reported and get no floor.

    python bench/import_floors.py            # the floors table
    python bench/import_floors.py --edges    # and every module's imports
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set

PACKAGE = "preimage"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def module_files(root: Path = SOURCE) -> Dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the package (a package is its
    ``__init__.py``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: Dict[str, Path]) -> Optional[str]:
    """The module ``name`` names, or its closest enclosing module of the package (``a.b.c`` where
    ``c`` is a function of ``a.b`` → ``a.b``); None outside the package."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """The modules of the package that ``module`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package upwards
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != module:
                found.add(resolved)
    return found


def import_graph(root: Path = SOURCE) -> Dict[str, Set[str]]:
    """``{module: the package's modules it imports}`` for every module under ``root``."""
    modules = module_files(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (or a module importing itself),
    each sorted: every import circle, whatever its length (Tarjan's algorithm)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def floors(graph: Dict[str, Set[str]]) -> Dict[str, int]:
    """``{module: floor}``: 0 for a module that imports nothing of the package, else 1 + the highest
    floor among its imports. Modules on a cycle, and those above one, are left out."""
    on_cycle = {m for component in cycles(graph) for m in component}
    result: Dict[str, int] = {}

    def floor(node: str, path: Set[str]) -> Optional[int]:
        if node in result:
            return result[node]
        if node in on_cycle or node in path:
            return None
        below = [floor(nxt, path | {node}) for nxt in graph.get(node, ())]
        if any(f is None for f in below):
            return None
        result[node] = 1 + max(below) if below else 0
        return result[node]

    for node in sorted(graph):
        floor(node, set())
    return result


def floors_table(graph: Dict[str, Set[str]], edges: bool = False) -> str:
    """The floors, top floor first, one line per floor (``--edges``: one line per module with what
    it imports)."""
    levels = floors(graph)
    lines = []
    for level in sorted(set(levels.values()), reverse=True):
        names = sorted(m.removeprefix(PACKAGE + ".") for m, f in levels.items() if f == level)
        if edges:
            for name in names:
                module = name if name == PACKAGE else f"{PACKAGE}.{name}"
                below = sorted(m.removeprefix(PACKAGE + ".") for m in graph[module])
                lines.append(f"{level:>2}  {name:<32} → {', '.join(below) or '-'}")
        else:
            lines.append(f"{level:>2}  {', '.join(names)}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", action="store_true", help="one line per module, with the modules it imports")
    args = parser.parse_args(argv)
    graph = import_graph()
    found = cycles(graph)
    print(f"{len(graph)} modules of {PACKAGE}, imports inside functions included")
    print("floor  modules (0: imports nothing of the package)")
    print(floors_table(graph, edges=args.edges))
    for component in found:
        print("import circle: " + " ↔ ".join(component))
    print(f"{len(found)} import circle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
