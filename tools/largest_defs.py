#!/usr/bin/env python
"""The largest functions and classes under prn_edge: big functions hide steps waiting to be named.

    python tools/largest_defs.py [--top 15] [--json runs/largest_defs.json]

Lines run from the first decorator (or def/class) to the last line of the body; methods are listed on their
own as well as inside their class. Prints a table; --json writes the same rows.
"""
from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def definitions(package: Path) -> list[dict]:
    rows = []

    def walk(node: ast.AST, path: Path, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                rows.append({"name": prefix + child.name, "kind": "class" if isinstance(child, ast.ClassDef) else "def",
                             "lines": child.end_lineno - start + 1,
                             "where": f"{path.relative_to(package.parent)}:{child.lineno}"})
                walk(child, path, prefix + child.name + ".")

    for path in sorted(package.rglob("*.py")):
        walk(ast.parse(path.read_text(), str(path)), path, "")
    return sorted(rows, key=lambda r: -r["lines"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--package", type=Path, default=ROOT / "prn_edge")
    ap.add_argument("--json", type=Path, help="write the rows as JSON too")
    args = ap.parse_args()
    rows = definitions(args.package)[:args.top]
    print("| lines | kind | name | where |\n|---:|---|---|---|")
    for r in rows:
        print(f"| {r['lines']} | {r['kind']} | {r['name']} | {r['where']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
