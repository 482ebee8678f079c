"""effnet's import direction, checked on the source of every module (imports inside functions too).

The declared order, low to high: a module may import modules of its own layer and of any layer
listed before it, never one listed after it. Layers whose names share a line (``PEERS``) are
peers: they may import each other, but the package graph must stay free of cycles. Imports
inside functions are refused too, except of the optional heavy dependencies below.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

# -- the declaration -----------------------------------------------------------------------------

LAYERS: list[tuple[str, tuple[str, ...]]] = [  # (layer, module prefixes), low to high
    ("specs", ("effnet.specs", "effnet.env")),  # env: optional dependencies and devices
    ("scaling", ("effnet.scaling",)),
    ("layers", ("effnet.layers", "effnet.fused")),  # fused: the one module of fused kernels
    ("blocks", ("effnet.blocks",)),
    ("model", ("effnet.model",)),
    ("fast", ("effnet.fast",)),  # effnet.accelerate: swaps model classes for their fast forms
    ("registry", ("effnet.registry",)),
    ("weights", ("effnet.weights",)),
    ("data", ("effnet.data",)),  # sits low: may import nothing above weights
    ("api", ("effnet.api", "effnet")),  # effnet/__init__.py re-exports the api
    (
        "peers",
        (
            "effnet.training",
            "effnet.analysis",
            "effnet.deploy",
            "effnet.lab",
            "effnet.benchmark",
        ),
    ),
    ("cli", ("effnet.cli", "effnet.__main__")),
]
PEERS = {"peers"}
# Optional or slow third-party packages that may be imported inside a function, when used.
OPTIONAL_HEAVY = {
    "matplotlib",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "optuna",
    "skimage",
    "sklearn",
    "timm",
    "torchvision",
}
# (module, imported top-level name) pairs allowed inside functions: effnet's lazy __getattr__.
ALLOWED_INSIDE = {("effnet", "importlib")}

# -- the check -------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "effnet"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _match(module: str) -> tuple[int, str, str] | None:
    """(rank, layer name, declared prefix) by the longest matching prefix."""
    best = None
    for rank, (layer, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > len(best[2])):
                best = (rank, layer, prefix)
    return best


def layer_of(module: str) -> tuple[int, str] | None:
    """(rank, layer name) of a module."""
    found = _match(module)
    return None if found is None else found[:2]


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The names an import statement pulls in: modules where they are modules."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([base] if base else []))
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        target = sub if _is_module(sub) else base
        if target not in out:
            out.append(target)
    return out


def _function_imports(tree: ast.AST) -> set[int]:
    inside = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    inside.add(id(node))
    return inside


def scan() -> tuple[list[str], dict[str, set[str]]]:
    """(violations, module import graph restricted to effnet)."""
    violations: list[str] = []
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        where = path.relative_to(ROOT)
        own = layer_of(module)
        if own is None:
            violations.append(f"{where}: module {module} is in no declared layer")
            continue
        tree = ast.parse(path.read_text(), str(path))
        inside = _function_imports(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(node, module, path.name == "__init__.py"):
                top = target.split(".")[0]
                lazy_ok = top in OPTIONAL_HEAVY or (module, top) in ALLOWED_INSIDE
                if id(node) in inside and not lazy_ok:
                    violations.append(f"{where}:{node.lineno}: imports {target} inside a function")
                if top != "effnet":
                    continue
                graph[module].add(target)
                theirs = layer_of(target)
                if theirs is not None and theirs[0] > own[0]:
                    violations.append(
                        f"{where}:{node.lineno}: {module} ({own[1]}) imports {target} "
                        f"({theirs[1]}), a higher layer"
                    )
    return violations, graph


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """Cycles among the declared units (the prefixes in ``LAYERS``, e.g. ``effnet.weights``);
    imports within one unit, and ``effnet/__init__.py``'s re-exports, are not edges."""
    edges: dict[str, set[str]] = defaultdict(set)
    for src, targets in graph.items():
        for dst in targets:
            a, b = _match(src), _match(dst)
            if a and b and a[2] != b[2] and "effnet" not in (a[2], b[2]):
                edges[a[2]].add(b[2])
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                found.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return [f"package import cycle: {c}" for c in found]


def test_imports_follow_the_declared_direction():
    violations, graph = scan()
    problems = violations + cycles(graph)
    assert not problems, f"{len(problems)} layering violation(s):\n" + "\n".join(problems)


# -- the checker itself ----------------------------------------------------------------------


def test_layer_map_covers_the_declared_order():
    assert layer_of("effnet.specs") == (0, "specs")
    assert layer_of("effnet.weights.serialize")[1] == "weights"
    assert layer_of("effnet.deploy.export.onnx")[1] == "peers"
    assert layer_of("effnet")[1] == "api" and layer_of("effnet.api")[1] == "api"
    assert layer_of("effnet.cli.predict")[1] == "cli"
    assert layer_of("effnet.fused")[1] == "layers" and layer_of("effnet.fast")[1] == "fast"
    ranks = [layer_of(m)[0] for m in ("effnet.model", "effnet.registry", "effnet.weights")]
    assert ranks == sorted(ranks)


def test_checker_catches_upward_inner_and_cyclic_imports(tmp_path, monkeypatch):
    fake = tmp_path / "effnet"
    (fake / "weights").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "specs.py").write_text("")
    (fake / "registry.py").write_text("from effnet.weights import x\n")  # upward
    (fake / "weights" / "__init__.py").write_text(
        "import effnet.registry\n\ndef f():\n    import json\n    import onnx\n"
    )
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    violations, graph = scan()
    text = "\n".join(violations)
    assert "effnet.registry (registry) imports effnet.weights (weights)" in text
    assert "imports json inside a function" in text
    assert "onnx" not in text  # an optional heavy dependency may load lazily
    assert cycles(graph) == [
        "package import cycle: effnet.registry -> effnet.weights -> effnet.registry"
    ]
