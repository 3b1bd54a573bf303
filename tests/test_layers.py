"""The package's shape: imports point one way between concern packages, no cycles, small modules.

commands -> cli -> results/deploy -> training -> data/models -> config -> errors. The imports are
read from the source with ``ast`` (function-level ones included: a lazy import is a dependency
too), so an upward import or a cycle fails here before anyone has to untangle it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmnist_lightning.config.files import project_root

PACKAGE = "fmnist_lightning"
SOURCE = project_root() / "src" / PACKAGE

# Lower imports nothing above it. Packages on one level (data and models; results and deploy) are
# independent of each other.
LEVELS = {
    "errors": 0,
    "config": 1,
    "data": 2,
    "models": 2,
    "sweeps": 2,
    "training": 3,
    "results": 4,
    "deploy": 4,
    "cli": 5,
    "commands": 6,
}
MAX_TOP_LEVEL_MODULES = 10
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60


def module_name(path: Path, source: Path) -> str:
    parts = list(path.relative_to(source.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(source: Path) -> dict[str, Path]:
    """Every module of the package under ``source``, by dotted name."""
    return {module_name(path, source): path for path in sorted(source.rglob("*.py"))}


def imported(path: Path, known: dict[str, Path], source: Path) -> Iterator[str]:
    """The package's own modules that ``path`` (a module under ``source``) imports, anywhere in the file."""
    package = module_name(path.parent / "__init__.py", source)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}".rstrip(".")
            # ``from a.b import c`` imports the module a.b.c when there is one, else names of a.b.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        yield from (name for name in names if name == PACKAGE or name.startswith(f"{PACKAGE}."))


def concern(module: str) -> str:
    """The package a module belongs to; the top-level modules (and the package itself) are the commands."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] not in LEVELS):
        return "commands"
    return parts[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import between packages that does not point strictly down."""
    bad = []
    for source, targets in graph.items():
        for target in sorted(targets):
            if concern(source) != concern(target) and LEVELS[concern(target)] >= LEVELS[concern(source)]:
                bad.append(f"{source} -> {target} ({concern(source)} may not import {concern(target)})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a module importing itself)."""
    found, stack, on_path, done = [], [], set(), set()

    def visit(node: str) -> None:
        stack.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                found.append([*stack[stack.index(target) :], target])
            elif target not in done:
                visit(target)
        on_path.discard(stack.pop())
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return found


def import_graph(source: Path) -> dict[str, set[str]]:
    known = modules(source)
    return {name: set(imported(path, known, source)) - {name, PACKAGE} for name, path in known.items()}


def test_imports_point_one_way() -> None:
    assert not upward_imports(import_graph(SOURCE))


def test_no_import_cycles() -> None:
    assert not cycles(import_graph(SOURCE))


def test_every_module_is_in_a_known_package() -> None:
    assert {concern(name) for name in modules(SOURCE)} <= set(LEVELS)


def test_package_inits_import_nothing() -> None:
    # fmnist-predict model=<file.onnx> runs without torch: no package __init__ may pull it (or anything) in.
    inits = [p for p in SOURCE.rglob("__init__.py") if p.parent != SOURCE]
    assert inits
    for path in inits:
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], path


def test_small_modules_and_functions() -> None:
    top = [p for p in SOURCE.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(p.name for p in top)
    long_modules, long_functions = [], []
    # src/ with its Hydra adapters (hydra_plugins/), and the benchmarks: the same limits everywhere.
    for path in [*(project_root() / "src").rglob("*.py"), *(project_root() / "bench").rglob("*.py")]:
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(path)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
            ):
                long_functions.append(f"{path.name}:{node.name}")
    assert not long_modules and not long_functions


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    # A package of the same shape with an upward import (data -> training) and a cycle inside training.
    pkg = tmp_path / PACKAGE
    for folder in (pkg, pkg / "data", pkg / "training"):
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
    (pkg / "data" / "loader.py").write_text("from fmnist_lightning.training import fit\n")
    (pkg / "training" / "fit.py").write_text("def go():\n    from fmnist_lightning.training.steps import step\n")
    (pkg / "training" / "steps.py").write_text("from . import fit\n")
    (pkg / "train.py").write_text("from fmnist_lightning.training.fit import go\n")
    graph = import_graph(pkg)
    assert graph["fmnist_lightning.data.loader"] == {"fmnist_lightning.training.fit"}
    assert upward_imports(graph) == [
        "fmnist_lightning.data.loader -> fmnist_lightning.training.fit (data may not import training)"
    ]
    assert cycles(graph) == [
        ["fmnist_lightning.training.fit", "fmnist_lightning.training.steps", "fmnist_lightning.training.fit"]
    ]


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("fmnist_lightning", "commands"),
        ("fmnist_lightning.train", "commands"),
        ("fmnist_lightning.training.callbacks.ema", "training"),
        ("fmnist_lightning.errors", "errors"),
    ],
)
def test_concern_of_a_module(module: str, expected: str) -> None:
    assert concern(module) == expected


def imports_of(source: Path, top: str) -> list[str]:
    """``<file>: <module>`` for every import of the top-level package ``top`` by a module under ``source``."""
    offenders = []
    for path in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(source)}: {n}" for n in names if n.split(".")[0] == top]
    return offenders


def test_the_package_never_imports_its_hydra_adapters() -> None:
    # hydra_plugins/ holds thin adapters over the package (the Optuna sweeper, the SLURM launcher); the package
    # knows nothing of them, so that the one-way rule holds across both top-level packages.
    assert not imports_of(SOURCE, "hydra_plugins")


def test_the_adapter_check_catches_a_planted_import(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "sweeps").mkdir(parents=True)
    (pkg / "sweeps" / "trials.py").write_text("def go():\n    from hydra_plugins.fmnist_optuna_sweeper import x\n")
    (pkg / "train.py").write_text("import hydra_plugins.fmnist_slurm_launcher.slurm_launcher\n")
    assert imports_of(pkg, "hydra_plugins") == [
        "sweeps/trials.py: hydra_plugins.fmnist_optuna_sweeper",
        "train.py: hydra_plugins.fmnist_slurm_launcher.slurm_launcher",
    ]


def test_nothing_in_src_imports_the_benchmarks() -> None:
    assert not imports_of(project_root() / "src", "bench")
