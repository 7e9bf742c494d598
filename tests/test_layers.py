"""Imports point one way: every module under prn_edge is parsed (imports inside functions count too) and no
subpackage may import one of a higher layer. The layers follow the data flow; runtime sits below calibrate because
it runs engines to measure accuracy; trt (TensorRT: its builder and its runner) sits on runtime's Engine contract."""
from __future__ import annotations

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "prn_edge"

# Lowest first. A subpackage (or top-level module) may import its own layer and the ones listed before it.
LAYERS = [
    "errors", "logs", "input_policy", "tiling",
    "artefact",  # the artefact format (input spec, metadata, manifests, the decision rule): see issue 12
    # runtime (engines) and bench (timing them) sit below calibrate: it runs engines to measure accuracy and speed.
    # trt is TensorRT in one package: its runner is an Engine (runtime's registry names it by module path and
    # imports it only when an .engine is opened: no import edge), its builder takes a calibration run's folder
    # (not the calibrate package)
    "config", "data", "model", "evaluate", "train", "export", "runtime", "trt", "verify", "bench",
    "describe",  # `prn-edge info FILE`: reads checkpoints, artefact metadata and bench's precision label
    "calibrate",
    "serve",  # a Triton model repository from artefacts, and a local tritonserver (issue 14)
    "line", "sim",
    "demo", "cli",
]
RANK = {name: i for i, name in enumerate(LAYERS)}

def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _is_module(dotted: list[str]) -> bool:
    target = PACKAGE.parent.joinpath(*dotted)
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def _imported(node: ast.AST, module: list[str], is_package: bool) -> list[list[str]]:
    """Dotted names (as lists) that an import statement brings in; relative imports resolved."""
    if isinstance(node, ast.Import):
        return [a.name.split(".") for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module if is_package else module[:-1]
        base = base[:len(base) - node.level + 1]
    else:
        base = []
    base = base + (node.module.split(".") if node.module else [])
    # `from prn_edge import errors` imports a module; `from prn_edge import __version__` an attribute of the root.
    return [base + [a.name] if _is_module(base + [a.name]) else base for a in node.names]


def _layer(dotted: list[str]) -> str | None:
    """The layer an imported name belongs to; None for other packages and for the root package itself (its
    __init__ holds only the version constants every layer may read)."""
    if dotted[:1] != ["prn_edge"] or len(dotted) < 2:
        return None
    return dotted[1]


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importing layer, imported layer) -> where ("prn_edge/x/y.py:line") for every edge between two layers."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        source = _layer(module) if len(module) > 1 else None
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for dotted in _imported(node, module, path.name == "__init__.py"):
                target = _layer(dotted)
                if target is not None and target != source:
                    where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                    found = edges.setdefault((source or "prn_edge", target), [])
                    if where not in found:
                        found.append(where)
    return edges


def _violations(edges: dict) -> dict:
    return {(a, b): where for (a, b), where in edges.items() if RANK[b] > RANK[a]}


def test_every_subpackage_has_a_layer():
    names = {p.stem if p.suffix == ".py" else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert not names - set(LAYERS), f"place these in LAYERS (tests/test_layers.py): {sorted(names - set(LAYERS))}"
    assert not set(LAYERS) - names, f"layers without a module (renamed or removed?): {sorted(set(LAYERS) - names)}"


def test_the_root_package_imports_nothing_of_its_own():
    edges = import_edges()
    assert not [e for e in edges if e[0] == "prn_edge"], "prn_edge/__init__.py must stay below every layer"


def test_no_subpackage_imports_a_higher_layer():
    bad = {edge: where for edge, where in _violations(import_edges()).items()}
    assert not bad, "imports against the layers (lower -> higher):\n" + "\n".join(
        f"  {a} -> {b}: {', '.join(where)}" for (a, b), where in sorted(bad.items()))

