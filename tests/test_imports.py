"""The package's import graph: no module imports, directly or through others, one that imports it
back, and ``config.py`` (the bottom of the house) imports nothing from the package.

Every ``import`` statement counts, wherever it stands: at the top, inside a function, under
``if TYPE_CHECKING:``. The graph is read from the source with :mod:`ast`, so nothing is imported.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fer_robust"


def module_files(package: Path) -> dict[str, tuple[Path, bool]]:
    """``{dotted module name: (file, is a package's __init__)}`` for every module of ``package``."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_init else parts)] = (path, is_init)
    return modules


def import_graph(package: Path) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}``, from every import statement of each file.

    ``from a.b import c`` is an import of ``a.b.c`` when that is a module, else of ``a.b``;
    relative imports are resolved against the importing module's package."""
    modules = module_files(package)
    root = package.name

    def nearest_module(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_init) in modules.items():
        here = name if is_init else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(nearest_module(a.name) for a in node.names
                               if a.name.split(".")[0] == root)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    source = node.module or ""
                if source.split(".")[0] != root:
                    continue
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    targets.add(full if full in modules else nearest_module(source))
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def import_groups(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (the strongly
    connected components of ``graph`` with more than one module, by Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle ``[a, b, ..., a]`` through each group of :func:`import_groups`: a shortest way
    from the group's first module back to itself."""
    circles = []
    for group in import_groups(graph):
        start, members = group[0], set(group)
        # Breadth-first from start's imports back to start, inside the group.
        paths = {w: [start, w] for w in sorted(graph[start] & members)}
        frontier = list(paths)
        while start not in paths:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
            frontier = nxt
        circles.append(paths[start])
    return circles


def test_no_module_of_the_package_imports_itself_back():
    graph = import_graph(PACKAGE)
    circles = [f"{' -> '.join(circle)}  (a circle among {', '.join(group)})"
               for circle, group in zip(import_circles(graph), import_groups(graph))]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_config_imports_nothing_from_the_package():
    assert import_graph(PACKAGE)["fer_robust.config"] == set()


def test_a_circle_through_a_function_level_relative_import_is_found(tmp_path):
    """The walker itself: ``low`` imports ``high`` inside a function, by a relative import, and
    ``high`` imports ``low`` at the top; ``other`` imports ``low`` and is in no circle."""
    pkg = tmp_path / "fer_robust"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from .sub import high\n    return high\n")
    (pkg / "sub" / "high.py").write_text("from fer_robust.low import f\n")
    (pkg / "other.py").write_text("import fer_robust.low as low\nfrom typing import Any\n")
    graph = import_graph(pkg)
    assert graph["fer_robust.low"] == {"fer_robust.sub.high"}
    assert graph["fer_robust.other"] == {"fer_robust.low"}
    assert import_circles(graph) == [["fer_robust.low", "fer_robust.sub.high", "fer_robust.low"]]
