"""The layout the README draws, checked on the source: imports go one way (entry points -> flows -> tasks ->
models -> synrank core), no import cycle (imports inside functions count), models/ never imports Prefect or
MLflow, Prefect tasks live in tasks/ and flows in flows/, and the size limits (functions <= 60 lines,
modules <= 400) hold, and every command of the stage registry (synrank.stages) has its rooms. The code is
read with `ast`; only the registries are imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from synrank.codehash import PACKAGES, direct_imports
from synrank.config import ROOT

# cli/ holds the entry points: they parse arguments and start flows, so they may import every layer below.
LAYER = {"synrank": 0, "models": 1, "tasks": 2, "flows": 3, "cli": 4}
LAYER_NAMES = {0: "synrank core", 1: "models", 2: "tasks", 3: "flows", 4: "entry point"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def layer(module: str) -> int:
    return LAYER[module.split(".")[0]]


def imports_of(path: Path) -> set[str]:
    """Every module name an import statement in the file names (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_layer_of_a_module_by_hand() -> None:
    assert [layer(m) for m in ("synrank.stage", "models.trainer", "tasks.generate", "flows.pipeline")] == [0, 1, 2, 3]
    assert layer("cli.main") == 4


def test_imports_go_one_way() -> None:
    upward = [
        f"{m} ({LAYER_NAMES[layer(m)]}) imports {d} ({LAYER_NAMES[layer(d)]})"
        for m, path in project_modules().items()
        for d in direct_imports(path)
        if d.split(".")[0] in LAYER and layer(d) > layer(m)
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one module (a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in graph), None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    if len(comp) > 1:
                        cycles.append(sorted(comp))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return cycles


def test_cycle_finder_on_a_hand_made_graph() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    graph = {m: set(direct_imports(p)) for m, p in project_modules().items()}
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_models_import_neither_prefect_nor_mlflow() -> None:
    bad = [
        f"{m} imports {name}"
        for m, p in project_modules().items()
        if m.startswith("models")
        for name in imports_of(p)
        if name.split(".")[0] in ("prefect", "mlflow")
    ]
    assert not bad, "\n".join(bad)


def decorated(path: Path, decorator: str) -> list[str]:
    """Names of the functions in a file decorated with `decorator` or `decorator(...)`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                target = d.func if isinstance(d, ast.Call) else d
                if getattr(target, "id", getattr(target, "attr", None)) == decorator:
                    out.append(node.name)
    return out


@pytest.mark.parametrize("package", ["flows", "tasks"])
def test_flows_hold_only_flows_and_tasks_only_tasks(package: str) -> None:
    other = {"flows": "task", "tasks": "flow"}[package]
    misplaced = {m: decorated(p, other) for m, p in project_modules().items() if m.startswith(package)}
    assert not {m: f for m, f in misplaced.items() if f}, f"@{other} in {package}/: {misplaced}"
    if package == "tasks":
        empty = [m for m, p in project_modules().items() if m.startswith("tasks.") and not decorated(p, "task")]
        assert not empty, f"modules of tasks/ with no Prefect task: {empty}"


def test_every_command_of_the_stage_registry_has_its_rooms() -> None:
    """flows/ holds exactly the registered commands, each with its flow; each single stage (one that writes a
    folder) has its tasks module and a stamp identity (synrank.stamp.IDENTITIES)."""
    from synrank.stages import STAGE_OUTPUT, STAGES
    from synrank.stamp import IDENTITIES

    modules = project_modules()
    assert {m.split(".")[1] for m in modules if m.startswith("flows.")} == set(STAGES)
    missing = [n for n in STAGES if f"{n}_flow" not in decorated(modules[f"flows.{n}"], "flow")]
    assert not missing, f"flows/<name>.py without <name>_flow: {missing}"
    assert set(STAGE_OUTPUT) <= {m.split(".")[1] for m in modules if m.startswith("tasks.")}  # single stages
    assert set(IDENTITIES) == set(STAGE_OUTPUT)


def python_files() -> list[Path]:
    return [p for d in (*PACKAGES, "tests", "scripts") for p in sorted((ROOT / d).rglob("*.py"))]


def test_size_limits() -> None:
    """After `ruff format` (CI checks the format): no module over 400 lines, no function over 60."""
    too_long = []
    for path in python_files():
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if text.count("\n") > 400:
            too_long.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    too_long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, "\n".join(too_long)


def test_mlflow_folder_has_no_init() -> None:
    """mlflow/ is the tracking store; an __init__.py there would shadow the mlflow package."""
    assert not (ROOT / "mlflow" / "__init__.py").exists()
