"""docs/architecture.md, checked: which part may import which, no import cycles, import cost,
file sizes. Imports are read from the source (function bodies included), so a lazy import that
breaks the direction fails here too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tune_lsd", "trainables", "search_spaces")
CORE = (
    "tune_lsd",
    "tune_lsd.config",
    "tune_lsd.data",
    "tune_lsd.models",
    "tune_lsd.losses",
    "tune_lsd.engine",
    "tune_lsd.metrics",
    "tune_lsd.train",
    "tune_lsd.errors",
    "tune_lsd.storage",
)

# part -> the parts it may import (the diagram in docs/architecture.md)
ALLOWED = {
    "core": {"core"},
    "search_spaces": {"core"},
    "tracking": {"core"},
    "serving": {"core", "tracking"},
    "trainables": {"core", "tracking"},
    "search": {"core", "tracking", "serving", "trainables", "search_spaces", "export"},
    "report": {"core", "tracking", "serving", "search_spaces"},
    "export": {"core", "tracking"},
    "cluster": {"core"},  # tune_lsd.errors
    "config_reference": {"core"},
    "compare": {"core", "tracking", "search", "search_spaces", "export"},
    "cli": {"core", "tracking", "serving", "search", "search_spaces", "report", "export", "cluster", "compare"},
}
LONG_MODULES = {  # over 350 lines, each one idea (its docstring says so)
    "tune_lsd/engine.py": "the one training loop, read in one sitting",
    "tune_lsd/config.py": "the one config schema: every section with its fields and checks",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def part(module: str) -> str:
    for name in ("tracking", "serving", "search", "report", "export", "cluster", "config_reference", "cli", "compare"):
        if module == f"tune_lsd.{name}" or module.startswith(f"tune_lsd.{name}."):
            return name
    if module.split(".")[0] in ("trainables", "search_spaces"):
        return module.split(".")[0]
    assert module in CORE or module.startswith(tuple(c + "." for c in CORE[1:])), f"{module} belongs to no part"
    return "core"


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules that ``path`` imports anywhere in its source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PACKAGES)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_each_part_imports_only_the_parts_below_it():
    wrong = [
        f"{module} ({part(module)}) imports {target} ({part(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if part(target) != part(module) and part(target) not in ALLOWED[part(module)]
    ]
    assert not wrong, wrong


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(target) :] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stdout.split())


def test_the_training_core_imports_neither_ray_nor_mlflow():
    loaded = loaded_after("import " + ", ".join(CORE))
    assert "torch" in loaded and not {"ray", "mlflow"} & loaded


def test_the_search_driver_and_tracking_import_neither_torch_nor_timm():
    loaded = loaded_after("import tune_lsd.search, tune_lsd.tracking, trainables.dml")
    assert {"ray", "mlflow"} <= loaded and not {"torch", "timm"} & loaded


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in modules().values()))
def test_modules_are_short_or_one_idea(path):
    lines = len((ROOT / path).read_text().splitlines())
    assert lines <= 350 or path in LONG_MODULES, f"{path} has {lines} lines: split it by concept"
