"""The import layers of models/ and orchestrator/, read from the source with ast (nothing is imported):
no cycle among the imports a module runs when it is imported, the model zoo imports nothing from the
orchestrator, and run outputs (folder layout, score files, late fusion) sit at the bottom."""
import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "orchestrator")


def modules(root: Path) -> dict[str, Path]:
    """{dotted name: file} of every module of PACKAGES under `root` (a package is its __init__.py)."""
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def imported_names(root: Path, path: Path, *, module_level: bool) -> set[str]:
    """Dotted names the module at `path` imports (`from a.b import c` gives a.b.c). module_level: only
    what importing the module runs (function bodies and `if TYPE_CHECKING:` blocks left out); else
    every import in it (TYPE_CHECKING blocks still left out: they never run)."""
    package = path.relative_to(root).parent.parts  # what a relative import starts from

    def visit(node: ast.AST):
        if _is_type_checking(node) or (module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))):
            return
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[:len(package) - node.level + 1], node.module or ""] if node.level
                            else [node.module]).strip(".")
            yield from (f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    return set(visit(ast.parse(path.read_text())))


@functools.cache  # parsed once per root and kind for all the tests here
def import_graph(root: Path, *, module_level: bool = True) -> dict[str, set[str]]:
    """{module: the project modules it imports}; a name that is no module counts as its package."""
    found = modules(root)

    def project_module(name: str) -> str | None:
        while name and name not in found:
            name = name.rpartition(".")[0]
        return name or None

    return {module: {m for name in imported_names(root, path, module_level=module_level)
                     if (m := project_module(name)) not in (None, module)}
            for module, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle [a, b, ..., a], or [] when there is none (depth-first search)."""
    state, stack = {}, []  # state: 1 on the current path, 2 done

    def visit(module: str) -> list[str]:
        state[module] = 1
        stack.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return []


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"models/__init__.py": "", "orchestrator/__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_cycle_finder_finds_a_planted_cycle_and_ignores_lazy_and_type_checking_imports(tmp_path):
    a_b = {"orchestrator/a.py": "from orchestrator import b\n", "orchestrator/b.py": "import orchestrator.c as c\n"}
    lazy = _write_tree(tmp_path / "lazy", {**a_b, "orchestrator/c.py": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from orchestrator import a\n"
        "def f():\n    from . import a\n")})
    eager = _write_tree(tmp_path / "eager", {**a_b, "orchestrator/c.py": (
        "try:\n    from .a import x\nexcept ImportError:\n    x = 0\n")})
    cycle = ["orchestrator.a", "orchestrator.b", "orchestrator.c", "orchestrator.a"]
    assert find_cycle(import_graph(lazy)) == []
    assert find_cycle(import_graph(lazy, module_level=False)) == cycle
    assert find_cycle(import_graph(eager)) == cycle


@pytest.mark.parametrize("module_level", [True, False])
def test_no_import_cycle(module_level):
    """None among what importing a module runs, and none counting the imports inside functions either."""
    assert find_cycle(import_graph(ROOT, module_level=module_level)) == []


def test_the_model_zoo_imports_nothing_from_the_orchestrator():
    graph = import_graph(ROOT, module_level=False)
    upward = {m: sorted(d for d in deps if d.split(".")[0] == "orchestrator")
              for m, deps in graph.items() if m.split(".")[0] == "models"}
    assert {m: deps for m, deps in upward.items() if deps} == {}


# What sits at the bottom, and the layers above it that it must not reach, even from inside a function
BOTTOM = ["orchestrator.errors", "orchestrator.runs", "orchestrator.late_fusion"]
ABOVE = ("orchestrator.data", "orchestrator.training", "orchestrator.report", "orchestrator.study",
         "orchestrator.commands", "orchestrator.cli")


@pytest.mark.parametrize("module", BOTTOM)
def test_run_outputs_sit_at_the_bottom_and_import_no_torch(module):
    reached = {d for d in import_graph(ROOT, module_level=False)[module] if d.startswith(ABOVE)}
    assert reached == set()
    heavy = {n for n in imported_names(ROOT, modules(ROOT)[module], module_level=True)
             if n.split(".")[0] in ("torch", "models")}
    assert heavy == set()
