"""The package's shape: every module sits in a layer and imports only from its own layer or below, without cycles;
the configuration imports no runtime module; no module is over 450 lines and no class over 200.

Imports are read from the source (every ``import`` and ``from ... import`` of ``opensir_lite``, those inside
functions too), so a test fails before an upward import can hide behind a lazy one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "opensir_lite"

# Lowest first. A module may import from its own layer and the ones before it.
LAYERS = [
    # foundations: no opensir_lite imports
    ["prompts", "ranges", "attention", "distributed", "embedding", "generation", "sandbox", "sandbox_launcher",
     "peer_tasks"],
    # vocabulary: parsing, the pool, facts about the device
    ["parsing", "pool", "device", "memory"],
    # pure functions and loaders over them
    ["grading", "rewards", "label_rules", "checkpointing", "models", "programs", "sampling", "vllm_engine"],
    # configuration, evaluation, seeding, the probe, training curves
    ["method_args", "config", "plan", "evaluation", "evaluation.benchmarks", "evaluation.protocols", "evaluation.stats",
     "evaluation.runner", "evaluation.program_vote", "evaluation.compare", "evaluation.regrade", "evaluation.peer", "evaluation.lm_eval_cpu",
     "peer_tasks.data", "seeding", "probe", "curves"],
    # the engine: a round, its sources and the rollout adapter
    ["round", "round_output", "selfplay", "control", "rollout", "vllm_backend", "label_quality"],
    # a run: machine decisions, callbacks, training
    ["runtime", "callbacks", "training"],
    # reports of a run: exploration and publishing
    ["exploration", "exploration.statistics", "exploration.figures", "exploration.report", "exploration.explorer",
     "hub", "hub.cards", "hub.upload", "notebook"],
]  # fmt: skip
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
CONFIG_MAY_IMPORT = {
    "method_args",
    "ranges",
    "parsing",
    "prompts",
    "rewards",
    "label_rules",
}  # validation only: nothing that runs
MAX_MODULE_LINES = 450
MAX_CLASS_LINES = 200


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:
            out[name] = path
    return out


def imports_of(path: Path) -> set[str]:
    """The opensir_lite modules a file imports (relative to the package), anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "opensir_lite":
            names = [node.module] if node.module != "opensir_lite" else [f"opensir_lite.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "opensir_lite"]
        found.update(n.removeprefix("opensir_lite").lstrip(".") for n in names)
    return {n for n in found if n}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {d for d in imports_of(path) if d != name} for name, path in mods.items()}


def test_every_module_has_a_layer():
    assert sorted(set(modules()) - set(LAYER)) == [], "add new modules to LAYERS"


def test_no_import_from_a_higher_layer():
    upward = [f"{m} (layer {LAYER[m]}) imports {d} (layer {LAYER[d]})" for m, deps in graph().items()
              for d in sorted(deps) if d in LAYER and m in LAYER and LAYER[d] > LAYER[m]]  # fmt: skip
    assert upward == []


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the import graph as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ re-exports its modules: that import is not a dependency of the modules on it."""
    return {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in edges.items()}


def test_no_import_cycle():
    assert find_cycle(package_edges(graph())) is None


@pytest.mark.parametrize(
    "edges,cycle",
    [
        ({"a": {"b"}, "b": set()}, False),  # a chain
        ({"a": {"b"}, "b": {"a"}}, True),  # two modules importing each other
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),  # a longer loop
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),  # a diamond is no cycle
    ],
)
def test_find_cycle(edges, cycle):
    found = find_cycle(edges)
    assert (found is not None) == cycle
    if found:
        assert found[0] == found[-1]


def test_config_imports_no_runtime_module():
    deps = graph()
    assert deps["config"] <= CONFIG_MAY_IMPORT and deps["method_args"] <= CONFIG_MAY_IMPORT


def test_module_and_class_sizes():
    too_long = []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"class {name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []
