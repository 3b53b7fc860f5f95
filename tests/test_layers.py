"""The package's import graph: layers import only downwards, and no module imports itself back.

Layers, from the physics up (a module may import its own layer and those below):

    schema < simulation < control < learning < evaluation < training < benchmarks

Imports are read from the source (every ``import``/``from`` statement, also those inside
functions), so a lazy import cannot hide a circle.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import oe3jax

LAYERS = ("schema", "simulation", "control", "learning", "evaluation", "training", "benchmarks")
ROOT = Path(oe3jax.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {"oe3jax": ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], "oe3jax."):
        rel = info.name.split(".")[1:]
        path = ROOT.joinpath(*rel)
        out[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("oe3jax"):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    # importing a submodule runs its packages' __init__ too, but a package's own imports of its
    # children are not edges back up: only what a module's source names counts
    return {name: _imports(name, path, known) - {"oe3jax"} for name, path in mods.items()}


def _layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else len(LAYERS)


def test_every_module_imports():
    for name in _modules():
        if not name.endswith(".__main__"):  # a command, run rather than imported
            importlib.import_module(name)


def test_layers_import_only_downwards():
    wrong = [f"{a} imports {b}" for a, deps in _graph().items() for b in deps
             if a != "oe3jax" and _layer(b) > _layer(a)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The graph reader itself: a planted circle and an upward import are found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from oe3jax.training import loop\n")
    b.write_text("from oe3jax.simulation import env\n")
    known = {"oe3jax.simulation.env", "oe3jax.training.loop", "oe3jax.simulation.x"}
    assert _imports("oe3jax.simulation.x", a, known) == {"oe3jax.training.loop"}
    assert _layer("oe3jax.training.loop") > _layer("oe3jax.simulation.x")
    assert _imports("oe3jax.training.loop", b, known) == {"oe3jax.simulation.env"}
