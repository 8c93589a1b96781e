"""The house rules that code review alone would let slip: one import name, arrows that run one way
(cli -> trainers -> pipeline -> kernels), no import circle, no sys.path edits in benchmarks, and every package
folder listed in pyproject.toml.

The import graph is read with ``ast`` from every module of the three folders (imports inside functions
included), so a lazy import that runs back up counts as much as one at the top of a file.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.helpers import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

FOLDERS = ("pipeline", "kernels", "trainers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["posestream", *parts])


def library_modules() -> dict[str, Path]:
    modules = {"posestream": REPO / "__init__.py"}
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def imported_modules(path: Path, modules: dict[str, Path]) -> tuple[set[str], list[str]]:
    """(posestream modules that ``path`` imports, imports of the bare folder names)."""
    found, bare = set(), []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from posestream import kernels" imports the module posestream.kernels
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in FOLDERS:
                bare.append(name)
            while name and name not in modules:  # "posestream.kernels.ParseConfig" -> its module
                name = name.rpartition(".")[0]
            if name.startswith("posestream"):
                found.add(name)
    return found, bare


def layer(module: str) -> int:
    """cli and the package root on top, then trainers, then the rest of pipeline, then kernels."""
    if module == "posestream" or module.startswith("posestream.pipeline.cli"):
        return 3
    if module.startswith("posestream.trainers"):
        return 2
    if module.startswith("posestream.pipeline"):
        return 1
    return 0


def import_graph() -> dict[str, set[str]]:
    modules = library_modules()
    return {name: imported_modules(path, modules)[0] - {name} for name, path in modules.items()}


def test_library_code_imports_through_the_posestream_name_only():
    modules = library_modules()
    bare = {name: imported_modules(path, modules)[1] for name, path in modules.items()}
    assert {name: found for name, found in bare.items() if found} == {}


def test_arrows_run_one_way():
    upward = sorted(f"{module} -> {target}" for module, targets in import_graph().items() for target in targets
                    if layer(target) > layer(module))
    assert upward == []


def test_the_runtime_never_imports_trainers_or_the_cli():
    graph = import_graph()
    offenders = sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                       if module.startswith(("posestream.pipeline", "posestream.kernels"))
                       and not module.startswith("posestream.pipeline.cli")
                       and target.startswith(("posestream.trainers", "posestream.pipeline.cli")))
    assert offenders == []


def test_no_import_circle():
    graph = import_graph()
    # A module's package __init__ runs before it; packages that only hold a docstring add no edges.
    state: dict[str, str] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_benchmarks_do_not_edit_sys_path():
    edits = [path.name for path in sorted((REPO / "benchmarks").glob("*.py")) if "sys.path" in path.read_text()]
    assert edits == []


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {module_name(init) for folder in FOLDERS for init in (REPO / folder).rglob("__init__.py")}
    assert listed == on_disk | {"posestream"}
