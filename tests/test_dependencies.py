"""The package declares what it imports: a module that only happens to be installed (say, as another
package's dependency) fails a fresh `pip install actionlab` at the first command that reaches it."""
import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
OWN_PACKAGES = ("orchestrator", "models")  # pyproject's [tool.setuptools.packages.find]


def _normal(name: str) -> str:
    """A distribution name as PEP 503 compares them: 'PyYAML' == 'pyyaml', 'nvidia_ml_py' == 'nvidia-ml-py'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(folder: Path):
    """(top-level module, file) of every absolute import in `folder`, inside functions too."""
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                yield from ((alias.name.split(".")[0], path) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                yield node.module.split(".")[0], path


def test_every_third_party_import_is_a_declared_dependency():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # an optional extra (torchcodec) counts: its module is imported only where its setting asks for it,
    # and preflight refuses the setting, naming the extra, where it is missing (tests/test_decoders.py)
    extras = [r for name, reqs in project["optional-dependencies"].items() if name != "test" for r in reqs]
    requirements = project["dependencies"] + extras
    declared = {_normal(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}
    distributions = packages_distributions()  # module -> the installed distributions that provide it
    undeclared = {}
    for package in OWN_PACKAGES:
        for module, path in _imports(ROOT / package):
            if module in sys.stdlib_module_names or module in OWN_PACKAGES:
                continue
            if not {_normal(d) for d in distributions.get(module, [])} & declared:
                undeclared.setdefault(module, str(path.relative_to(ROOT)))
    assert undeclared == {}, "imported, not in pyproject's dependencies (module: first file)"
