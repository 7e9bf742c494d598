"""Which prn_edge subpackages import which, and the cycles between them (read from the source, nothing imported).

    python tools/import_graph.py                 # edges and cycles as tables
    python tools/import_graph.py --json out.json

A subpackage is the first name under prn_edge (export, runtime, ...); a top-level module (config.py, errors.py)
counts as its own node. An edge A -> B counts the import statements in A that name B; "lazy" ones sit inside a
function (run only when it is called) and still count, since they still tie A to B.
"""
from __future__ import annotations

import argparse
import ast
import json
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "prn_edge"


def _node(module: str) -> str:
    """prn_edge.export.metadata -> export; prn_edge.errors -> errors; prn_edge.__version__ -> prn_edge."""
    parts = module.split(".")
    if len(parts) > 1 and ((ROOT / parts[1]).is_dir() or (ROOT / f"{parts[1]}.py").is_file()):
        return parts[1]
    return "prn_edge"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module imported, lazy) for each prn_edge import in the file."""
    rel = path.relative_to(ROOT.parent).with_suffix("")
    package = list(rel.parts[:-1])  # the package a relative import starts from (also for __init__.py)
    tree = ast.parse(path.read_text())
    lazy_lines = {n.lineno for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = package[:len(package) - n.level + 1]
                target = ".".join(base + ([n.module] if n.module else []))
            else:
                target = n.module or ""
            # `from .. import errors` / `from prn_edge import x`: the names are the modules (or root attributes)
            names = [target] if target != "prn_edge" else [f"{target}.{a.name}" for a in n.names]
        elif isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        else:
            continue
        for t in names:
            if t == "prn_edge" or t.startswith("prn_edge."):
                out.append((t, n.lineno in lazy_lines))
    return out


def import_graph(root: Path = ROOT) -> dict:
    edges: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"top": 0, "lazy": 0})
    for path in sorted(root.rglob("*.py")):
        src = _node("prn_edge." + ".".join(path.relative_to(root).with_suffix("").parts))
        for target, lazy in _imports(path):
            dst = _node(target)
            if dst != src and dst != "prn_edge":
                edges[(src, dst)]["lazy" if lazy else "top"] += 1
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    cycles = sorted({tuple(sorted((a, b))) for a, b in edges if (b, a) in edges})
    return {"edges": [{"from": a, "to": b, **c} for (a, b), c in sorted(edges.items())],
            "two_way": [list(c) for c in cycles], "cycles": [sorted(s) for s in _sccs(graph) if len(s) > 1]}


def _sccs(graph: dict) -> list[set]:
    """Strongly connected components (Tarjan): every group of subpackages that reach each other."""
    index, low, stack, on, out = {}, {}, [], set(), []
    nodes = set(graph) | {b for v in graph.values() for b in v}

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="also write the graph here")
    args = ap.parse_args(argv)
    g = import_graph()
    print("| from | to | imports (top-level + lazy) |\n|---|---|---|")
    for e in g["edges"]:
        print(f"| {e['from']} | {e['to']} | {e['top']} + {e['lazy']} |")
    print("\ntwo-way pairs:", ", ".join(" <-> ".join(p) for p in g["two_way"]) or "none")
    print("cycles (strongly connected groups):", "; ".join(", ".join(c) for c in g["cycles"]) or "none")
    if args.json:
        Path(args.json).write_text(json.dumps(g, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
