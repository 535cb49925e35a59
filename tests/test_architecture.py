"""The package's shape: data flows one way. No import cycle, and no module imports from a stage
later in the flow than its own (docs/ARCHITECTURE.md lists the stages)."""

from __future__ import annotations

import ast
from pathlib import Path

import autotune

# The import order of the stages: a module may import from its own stage and earlier ones only.
# ``runtime`` (the production loader) precedes ``deploy``, which validates through it.
STAGES = ("errors", "common", "models", "space", "targets", "schedules", "backends", "frontend",
          "measure", "search", "store", "runtime", "deploy", "bench", "jobs", "report", "cli", "api")
PACKAGE = Path(autotune.__file__).parent


def module_name(path: Path) -> str:
    parts = ["autotune", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom, known: set[str]) -> list[str]:
    """The autotune modules an ``import from`` names (a name that is a submodule counts as one)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    if not target.startswith("autotune"):
        return []
    names = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known]
    return names or [target]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Every autotune module and the autotune modules it imports, anywhere in its body."""
    paths = {module_name(p): p for p in package.rglob("*.py")}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                edges.update(_resolve(module, path.name == "__init__.py", node, known))
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.startswith("autotune"))
        graph[module] = {e for e in edges if e in known and e != module}
    return graph


def stage_of(module: str) -> str:
    parts = module.split(".")
    return "api" if len(parts) == 1 else parts[1]


def back_edges(graph: dict[str, set[str]], stages: tuple[str, ...] = STAGES) -> list[tuple[str, str]]:
    """Imports of a module from a later stage than its own (or from a stage not declared)."""
    order = {stage: i for i, stage in enumerate(stages)}
    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if order.get(stage_of(b), len(order)) > order.get(stage_of(a), -1))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph`` (one per strongly connected component of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_module_imports_from_a_later_stage():
    graph = import_graph()
    assert {stage_of(m) for m in graph} <= set(STAGES), "a stage missing from STAGES"
    assert back_edges(graph) == []


def test_the_checks_catch_a_back_edge_and_a_cycle():
    graph = {"autotune.frontend.importer": {"autotune.common.text"},
             "autotune.common.text": set(),
             "autotune.store.engine": {"autotune.jobs.tune"},  # storage importing orchestration
             "autotune.jobs.tune": {"autotune.jobs.confirm"},
             "autotune.jobs.confirm": {"autotune.jobs.tune"}}
    assert back_edges(graph) == [("autotune.store.engine", "autotune.jobs.tune")]
    assert cycles(graph) == [["autotune.jobs.confirm", "autotune.jobs.tune"]]
    assert back_edges({"autotune.common.text": {"autotune.frontend.importer"}}) == \
        [("autotune.common.text", "autotune.frontend.importer")]
