"""The house rules of the code base: an import graph without cycles, the dependency rules between
packages, and the public surface users and tests import (names that must stay importable)."""

import ast
import importlib
import tomllib
from pathlib import Path

import pytest

from fedsign.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedsign", "strategies", "clients")


# ---------------------------------------------------------------- the import graph (AST, no importing)

def module_files(root: Path, packages) -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of ``packages`` under ``root``."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _resolve(modules: dict[str, Path], module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    package = module if modules[module].name == "__init__.py" else module.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def import_graph(root: Path, packages) -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """Modules and ``{module: {imported module of ours: first line importing it}}``, counting imports at
    module level and inside functions; ``from package import name`` imports the submodule ``package.name``
    when that is a module, else ``package``."""
    modules = module_files(root, packages)
    edges: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        found = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(modules, module, node)
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
                found += [(sub, node.lineno) for sub in subs]
                if len(subs) < len(node.names):  # the other names are attributes of ``target`` itself
                    found.append((target, node.lineno))
        edges[module] = {}
        for name, line in sorted(found, key=lambda item: item[1]):
            if name.split(".")[0] in packages and name != module:
                assert name in modules, f"{path.relative_to(root)}:{line} imports {name}, which does not exist"
                edges[module].setdefault(name, line)
    return modules, edges


def strongly_connected(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(components)


def shortest_cycle(edges: dict[str, dict[str, int]], start: str) -> list[str]:
    """The shortest import path from ``start`` back to ``start`` (breadth first)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{start} is on no cycle")


def cycle_report(root: Path, modules: dict[str, Path], edges: dict[str, dict[str, int]]) -> list[str]:
    """One line per cycle: the shortest cycle through each module on one, each step with the line that
    imports the next module."""
    cycles = set()
    for component in strongly_connected(edges):
        for module in component:
            path = shortest_cycle(edges, module)[:-1]
            first = path.index(min(path))
            cycles.add(tuple(path[first:] + path[:first] + [path[first]]))
    return [" -> ".join([f"{a} ({modules[a].relative_to(root)}:{edges[a][b]})" for a, b in zip(c, c[1:])] + [c[0]])
            for c in sorted(cycles)]


MODULES, EDGES = import_graph(ROOT, PACKAGES)


def test_the_graph_sees_relative_and_function_level_imports_and_cycles(tmp_path):
    files = {
        "pkg/__init__.py": "from .a import f\n",
        "pkg/a.py": "from . import b\n\ndef f():\n    from pkg.sub.c import g\n    return g\n",
        "pkg/b.py": "import os\nimport pkg.sub\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..a import f\nfrom .. import b\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules, edges = import_graph(tmp_path, ("pkg",))
    assert edges == {"pkg": {"pkg.a": 1}, "pkg.a": {"pkg.b": 1, "pkg.sub.c": 4}, "pkg.b": {"pkg.sub": 2},
                     "pkg.sub": {}, "pkg.sub.c": {"pkg.a": 1, "pkg.b": 2}}
    assert cycle_report(tmp_path, modules, edges) == [
        "pkg.a (pkg/a.py:4) -> pkg.sub.c (pkg/sub/c.py:1) -> pkg.a"]


def test_no_import_cycles():
    cycles = cycle_report(ROOT, MODULES, EDGES)
    assert not cycles, f"{len(cycles)} import cycle(s), function-level imports included:\n  " + "\n  ".join(cycles)


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(sources, forbidden, allowed=()) -> list[str]:
    """For each module under ``sources`` (not under ``allowed``): the modules under ``forbidden`` (and outside
    ``sources``) it imports, directly or through other modules that are neither, as the chain of imports."""
    found = []
    for module in MODULES:
        if not _under(module, sources) or _under(module, allowed):
            continue
        via = {name: [name] for name in EDGES[module]}  # breadth first: the shortest chain to each module
        frontier = list(via)
        while frontier:
            following = []
            for v in frontier:
                if _under(v, sources) or _under(v, forbidden):
                    continue  # checked on its own / reported: what it imports is its own business
                for w in EDGES[v]:
                    if w not in via and w != module:
                        via[w] = [*via[v], w]
                        following.append(w)
            frontier = following
        found += [f"{MODULES[module].relative_to(ROOT)}:{EDGES[module][chain[0]]} imports "
                  + " -> ".join(chain) for name, chain in sorted(via.items())
                  if _under(name, forbidden) and not _under(name, sources)]
    return found


# The federated-learning side: run config, engines, server/client apps, CLIs and deployment (with the
# package names the planned layout gives them).
FL_SIDE = ("fedsign.task", "fedsign.config", "fedsign.server", "fedsign.client_app", "fedsign.server_app",
           "fedsign.engines", "fedsign.cli",
           "fedsign.deploy", "fedsign.algorithms", "clients", "strategies")


@pytest.mark.parametrize("sources,forbidden,allowed", [
    pytest.param(("strategies",), ("clients",), (), id="strategies import no clients"),
    pytest.param(("clients",), ("strategies",), (), id="clients import no strategies"),
    pytest.param(("fedsign.landscape",), FL_SIDE, (), id="landscape knows no FL"),
    pytest.param(("fedsign.models",), PACKAGES, (), id="models import nothing else of ours"),
    pytest.param(("fedsign.data",), PACKAGES, (), id="data imports nothing else of ours"),
    pytest.param(("fedsign.faults",), PACKAGES, (), id="faults imports nothing of ours"),
    pytest.param(("fedsign.algorithms",), PACKAGES, (), id="the registry imports nothing of ours"),
])
def test_dependency_rule(sources, forbidden, allowed):
    assert not _violations(sources, forbidden, allowed), "\n".join(_violations(sources, forbidden, allowed))


# ---------------------------------------------------------------- the public surface

# What users, benchmarks and tests import by name today (re-export what moves). The registry
# (fedsign.algorithms) names every algorithm's classes: strategies has a module only where the server
# differs from FedAvg's.
PUBLIC = {
    "strategies": ["FedAvg", "FedDyn"],
    "clients.fedprox": ["proximal_term"],
    "clients.fedsign": ["sign_term"],
    "clients.feddyn": ["dyn_term", "STATE_KEY"],
    "clients.moon": ["moon_contrastive_loss", "STATE_KEY"],
    "clients.fedpan": ["pan_encoding", "apply_pan", "add_position_encoding"],
    "fedsign.data": ["dirichlet_partition", "load_dataset", "check_data_source", "DATASETS", "DataSourceError"],
    "fedsign.data.partition": ["dirichlet_partition", "partition_counts", "partition_report"],
    "fedsign.models": ["build_model", "check_model_input", "MODEL_NAMES"],
    "fedsign.landscape": [
        "BN_POLICIES", "COMMON_NOISES", "DIRECTION_SETS", "DirectionError", "EvalData", "Evaluation", "GROUP_NAMES",
        "GroupError", "Line", "NORMALIZATIONS", "PolicyError", "SPECIAL_DIRECTIONS", "asymmetry", "difference",
        "evaluate_lines", "evaluate_point", "group_stats", "interpolation", "lambda_grid", "make_direction",
        "make_directions", "model_state", "normalize", "perturb", "point_buffers", "prepare_data", "ratio_noise",
        "ratio_sweep", "select_parameters", "sign_consistency", "sign_replaced", "special_direction", "split_state",
        "valley_curves",
    ],
}

# Every run-config key (kebab-case, as in `--run-config` and pyproject's [tool.flwr.app.config]): a key that
# goes or comes must be changed here too, on purpose.
RUN_CONFIG_KEYS = [
    "strategy", "dataset", "data-dir", "model", "init", "num-clients", "clients-per-round", "num-rounds",
    "local-epochs", "batch-size", "lr", "momentum", "weight-decay", "grad-clip", "dirichlet-alpha", "partition-style",
    "min-partition-size", "train-samples", "validation-fraction", "seed", "eval-every", "out-dir", "device",
    "engine", "mixed-precision", "resume", "checkpoint-every", "weighted", "min-replies", "round-timeout",
    "fail-partitions", "tracking", "mlflow-uri", "proximal-mu", "moon-mu", "moon-temperature", "moon-out-dim",
    "moon-head", "moon-first-previous", "feddyn-alpha", "feddyn-adaptive-alpha", "pan-op", "pan-amplitude",
    "pan-period", "fedsign-gamma", "fedsign-reduction", "sign-gamma",
]


@pytest.mark.parametrize("module", list(PUBLIC))
def test_public_names_importable(module):
    imported = importlib.import_module(module)
    assert [name for name in PUBLIC[module] if not hasattr(imported, name)] == []
    if hasattr(imported, "__all__"):
        assert [name for name in PUBLIC[module] if name not in imported.__all__] == []


def test_console_entry_point():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fedsign"] == "fedsign.cli:console"
    module, _, name = scripts["fedsign"].partition(":")
    assert callable(getattr(importlib.import_module(module), name))


def test_every_run_config_key_is_accepted():
    defaults = RunConfig.defaults()
    assert sorted(RUN_CONFIG_KEYS) == sorted(defaults)
    text = " ".join(f"{key}={value!r}" if isinstance(value, str) else f"{key}={str(value).lower()}"
                    for key, value in defaults.items() if key in RUN_CONFIG_KEYS)
    RunConfig.from_overrides(text)
    with pytest.raises(ConfigError):  # the check above can fail: unknown keys are refused
        RunConfig.from_overrides("no-such-key=1")
