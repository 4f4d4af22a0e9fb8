"""The package's layers: imports point down, never up, and never in a circle (docs/architecture.md).

The rule is read from the source with ``ast``, every import counted (module level, inside
functions, under ``TYPE_CHECKING``), so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Bottom up. A module's layer is that of the longest prefix listed here; the rest of the
#: package (the commands: api, batch, cli, demo, info and the package root) is the top layer.
LAYERS: dict[str, int] = {
    "darkraw._version": 0,
    "darkraw.errors": 0,
    "darkraw.choices": 0,
    "darkraw.config": 0,
    "darkraw.parallel": 0,
    "darkraw.progress": 0,
    "darkraw.raw": 1,
    "darkraw.classic": 2,
    "darkraw.synth": 3,
    "darkraw.nn": 4,
    "darkraw.training": 5,
}
TOP = 6


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return TOP


def module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_imports(src: Path, package: str = "darkraw") -> dict[str, set[str]]:
    """Every module of ``package`` under ``src`` and the modules of ``package`` it imports."""
    files = {module_name(p, src): p for p in sorted((src / package).rglob("*.py"))}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    mod = f"{base}.{node.module}" if node.module else base
                else:
                    mod = node.module or ""
                # ``from pkg import sub`` imports the submodule when there is one.
                targets.update(f"{mod}.{alias.name}" for alias in node.names)
                targets.add(mod)
        resolved = {resolve(t) for t in targets if t == package or t.startswith(package + ".")}
        graph[name] = {t for t in resolved if t is not None and t != name}
    # ``from darkraw.raw import cfa`` names darkraw.raw.cfa, not the package above it.
    for name, deps in graph.items():
        subs = {d for d in deps if any(o != d and o.startswith(d + ".") for o in deps)}
        graph[name] = deps - {d for d in subs if files[d].name == "__init__.py"}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
        for m, deps in graph.items()
        for d in deps
        if layer_of(d) > layer_of(m)
    )


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first repeated at the end), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_upward_imports() -> None:
    assert upward_imports(package_imports(SRC)) == []


def test_no_import_cycle() -> None:
    assert find_cycle(package_imports(SRC)) is None


def test_every_module_is_in_a_layer_or_a_command() -> None:
    """A new top-level module is a command; anything else belongs in a subpackage."""
    commands = {"darkraw", "darkraw.__main__", "darkraw.api", "darkraw.batch", "darkraw.cli"}
    commands |= {"darkraw.demo", "darkraw.info"}
    stray = sorted(m for m in package_imports(SRC) if layer_of(m) == TOP and m not in commands)
    assert stray == []


def test_inference_never_imports_training() -> None:
    graph = package_imports(SRC)
    bad = [(m, d) for m, deps in graph.items() if m.startswith("darkraw.nn") for d in deps]
    assert [pair for pair in bad if pair[1].startswith("darkraw.training")] == []


@pytest.fixture
def toy_package(tmp_path: Path) -> Path:
    root = tmp_path / "darkraw"
    for sub in ("raw", "nn"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    return tmp_path


def test_checker_finds_an_upward_import_even_inside_a_function(toy_package: Path) -> None:
    root = toy_package / "darkraw"
    (root / "raw" / "cfa.py").write_text("def f():\n    from darkraw.nn import model\n")
    (root / "nn" / "model.py").write_text("from darkraw.raw.cfa import f\n")
    found = upward_imports(package_imports(toy_package))
    assert found == ["darkraw.raw.cfa (layer 1) imports darkraw.nn.model (layer 4)"]


def test_checker_finds_a_cycle_through_relative_imports(toy_package: Path) -> None:
    root = toy_package / "darkraw"
    (root / "raw" / "a.py").write_text("from . import b\n")
    (root / "raw" / "b.py").write_text("from .c import x\n")
    (root / "raw" / "c.py").write_text("import darkraw.raw.a\n")
    graph = package_imports(toy_package)
    assert upward_imports(graph) == []
    assert find_cycle(graph) == ["darkraw.raw.a", "darkraw.raw.b", "darkraw.raw.c", "darkraw.raw.a"]


def test_checker_counts_the_package_root_as_the_top(toy_package: Path) -> None:
    (toy_package / "darkraw" / "raw" / "x.py").write_text("from darkraw import enhance\n")
    assert upward_imports(package_imports(toy_package)) == [
        "darkraw.raw.x (layer 1) imports darkraw (layer 6)"
    ]
