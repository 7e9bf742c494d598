#!/usr/bin/env python3
"""Snapshots of the real `tensorrt` Python API surface, one JSON per TensorRT version we claim, for the fake
TensorRT of the tests (tests/helpers/fake_tensorrt.py) and the API-surface test (tests/trt/test_trt_api_surface.py).

    tools/trt_api_snapshot.py [--versions 8.5 8.6 10.3 10.16 11.4] [--out tests/helpers/trt_api]
                              [--trt-oss GIT_DIR] [--latest]

No machine here has TensorRT or a GPU, so two extraction methods:

- import (8.6 and newer): `pip download --no-deps` the bindings wheel (tensorrt-bindings 8.6.1,
  tensorrt-cu12-bindings 10.x/11.x) into a temporary folder. Its tensorrt.so links libnvinfer, libnvonnxparser,
  libnvinfer_plugin (and libnvparsers in 8.x), absent here; it imports only a handful of their symbols
  (createInferBuilder_INTERNAL, getPluginRegistry, ...) and calls none of them while the module initialises.
  So we compile a stub library exporting those symbols (each returns 0), give it the NEEDED names, and import
  the real module in a child process with LD_LIBRARY_PATH on the stubs. Everything is then read by
  introspection: every class, its own methods/properties (writable or not), nested types and constants,
  enum members, module functions and values; method return types come from pybind11's signatures. Exact for
  what pybind11 registers at import; nothing is called. Needs `cc`, `nm` and `readelf`.
- source (8.5: NVIDIA publishes no 8.5 bindings wheel): parse the pybind11 binding sources
  (python/src/**/*.cpp and python/packaging/tensorrt/__init__.py) of NVIDIA's open-source TensorRT repository
  at branch release/8.5 (8.5.3), from a git directory given with --trt-oss. The parser reads py::class_ /
  py::enum_ declarations, their .def/.def_property/.value chains, m.def and m.attr; it cannot see return types.
  Its fidelity is measured: the same parser runs on the v8.6.1 and v10.3.0 tags and is compared with the
  imported 8.6.1 and 10.3.0 snapshots; the numbers go into the 8.5 snapshot's "faithfulness".

Each snapshot records where it came from (wheel file name and sha256, or repository ref and commit) and a
"faithfulness" statement with counts. Re-run after NVIDIA ships a new release (--latest picks the newest 10.x
and 11.x bindings wheels on the index) and commit the JSON.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "helpers" / "trt_api"
SNAPSHOT_FORMAT = 1

# family -> how to get it. "import": a bindings wheel; "source": NVIDIA's pybind11 sources at a git ref.
VERSIONS = {
    "8.5": {"method": "source", "ref": "release/8.5", "tensorrt_version": "8.5.3",
            "validate": {"8.6": "v8.6.1", "10.3": "v10.3.0"}},
    "8.6": {"method": "import", "package": "tensorrt-bindings", "version": "8.6.1"},
    "10.3": {"method": "import", "package": "tensorrt-cu12-bindings", "version": "10.3.0"},
    "10.16": {"method": "import", "package": "tensorrt-cu12-bindings", "version": "10.16.1.11"},
    "11.4": {"method": "import", "package": "tensorrt-cu12-bindings", "version": "11.4.0.106"},
}
ROLES = {"8.5": "JetPack 5.1", "8.6": "JetPack 6.0 (8.6.2; the index has 8.6.1)", "10.3": "JetPack 6.1/6.2",
         "10.16": "latest 10.x on the index", "11.4": "latest 11.x on the index"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def short_type(text: str) -> str:
    """'tensorrt_bindings.tensorrt.IBuilderConfig' -> 'IBuilderConfig' (also inside Optional[...] etc.)."""
    return re.sub(r"\btensorrt(?:_bindings)?(?:\.tensorrt)?\.", "", text.strip())


# ============================================================================================== import method
# Runs in a child process whose sys.path has the unpacked wheel and whose LD_LIBRARY_PATH has the stubs.
INTROSPECT = r'''
import inspect, json, re, sys, types
import tensorrt_bindings as pkg

def short(t):
    return re.sub(r"\btensorrt(?:_bindings)?(?:\.tensorrt)?\.", "", t.strip())

def returns(doc, name):
    """Return types of a pybind11 signature (all overloads) as 'A | B', '?' when the doc has none."""
    found = []
    for line in (doc or "").splitlines():
        m = re.match(r"\s*(?:\d+\.\s*)?" + re.escape(name) + r"\(.*\)\s*->\s*(.+)$", line)
        if m and short(m.group(1)) not in found:
            found.append(short(m.group(1)))
    return " | ".join(found) or "?"

def prop_type(prop):
    doc = getattr(prop.fget, "__doc__", None) or ""
    m = re.match(r"\s*\(.*\)\s*->\s*(.+)", doc.splitlines()[0] if doc else "")
    return short(m.group(1)) if m else "?"

DEPRECATED = re.compile(r"\[DEPRECATED\]|deprecated", re.I)

def is_enum(obj):
    return isinstance(obj, type) and isinstance(getattr(obj, "__members__", None), dict)

def enum_member_docs(cls):
    docs, cur = {}, None
    for line in (cls.__doc__ or "").split("Members:", 1)[-1].splitlines():
        m = re.match(r"  (\w+) : ?(.*)", line)
        if m:
            cur = m.group(1)
            docs[cur] = m.group(2)
        elif cur and line.strip():
            docs[cur] += " " + line.strip()
    return docs

classes, enums = {}, {}

def qual(cls):
    return cls.__qualname__

def visit(cls):
    q = qual(cls)
    if q in classes or q in enums:
        return
    if is_enum(cls):
        docs = enum_member_docs(cls)
        members = list(cls.__members__)
        enums[q] = {"members": members,
                    "deprecated": sorted(m for m in members if DEPRECATED.search(docs.get(m, "")))}
        return
    info = {"bases": [qual(b) for b in cls.__bases__ if b.__module__.startswith("tensorrt")],
            "constructible": (cls.__init__.__doc__ or "").lstrip().startswith("__init__("),
            "methods": {}, "static_methods": {}, "properties": {}, "constants": {}, "nested": {}, "deprecated": []}
    classes[q] = info
    for name, raw in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        doc = ""
        if type(raw).__name__ == "pybind11_static_property":
            info["constants"][name] = "static property"
        elif isinstance(raw, property):
            info["properties"][name] = {"type": prop_type(raw), "writable": raw.fset is not None}
            doc = raw.__doc__ or ""
        elif isinstance(raw, (staticmethod, classmethod)):
            fn = getattr(cls, name)
            doc = fn.__doc__ or ""
            info["static_methods"][name] = returns(doc, name)
        elif isinstance(raw, type):
            info["nested"][name] = qual(raw)
            visit(raw)
        elif is_enum(type(raw)):
            info["constants"][name] = f"{qual(type(raw))}.{raw.name}"
        elif callable(raw):
            doc = getattr(cls, name).__doc__ or ""
            info["methods"][name] = returns(doc, name)
        else:
            info["constants"][name] = type(raw).__name__
        if doc and DEPRECATED.search(doc.split("\n\n", 1)[-1][:400]):
            info["deprecated"].append(name)

module = {"classes": [], "enums": [], "functions": {}, "values": {}, "modules": []}
for name in sorted(dir(pkg)):
    if name.startswith("_"):
        continue
    obj = getattr(pkg, name)
    if isinstance(obj, types.ModuleType):
        module["modules"].append(name)
    elif isinstance(obj, type):
        visit(obj)
        module["enums" if is_enum(obj) else "classes"].append(name)
        if qual(obj) != name:
            module["values"][name] = qual(obj)
    elif callable(obj):
        module["functions"][name] = returns(getattr(obj, "__doc__", "") or "", name)
    elif is_enum(type(obj)):
        module["values"][name] = f"{qual(type(obj))}.{obj.name}"
    else:
        module["values"][name] = type(obj).__name__
print(json.dumps({"version": pkg.__version__, "module": module, "classes": classes, "enums": enums}))
'''


def pip_download(package: str, version: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}", "-d", str(dest),
           f"{package}=={version}"]
    errors = []
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64"):
        r = subprocess.run(cmd + ["--platform", platform], capture_output=True, text=True)
        if r.returncode == 0:
            break
        errors.append(r.stderr.strip().splitlines()[-1:] )
    else:
        raise SystemExit(f"pip download {package}=={version} failed: {errors}")
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"no wheel of {package}=={version} in {dest}")
    return wheels[0]


def stub_libraries(so: Path, dest: Path) -> list[str]:
    """A stub library for every libnv* the extension needs, exporting the symbols it takes from them."""
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(so)], capture_output=True, text=True,
                               check=True).stdout.split("\n")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(libnv[^\]]+)\]",
                        subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True, check=True).stdout)
    import ctypes

    process = ctypes.CDLL(None)  # libc, libdl, Python: what the process already provides
    symbols = []
    for line in undefined:
        parts = line.split()
        # unversioned, not Python's or libc's: TensorRT's own entry points (C and C++ mangled names)
        if (len(parts) == 2 and parts[0] == "U" and "@" not in parts[1] and not parts[1].startswith(("Py", "_Py"))
                and not hasattr(process, parts[1])):
            symbols.append(parts[1])
    src = "".join(f'void *trt_stub_{i}(void) __asm__("{s}");\nvoid *trt_stub_{i}(void) {{ return 0; }}\n'
                  for i, s in enumerate(symbols))
    (dest / "stub.c").write_text(src)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(dest / "libtrtstub.so"), str(dest / "stub.c")], check=True)
    for name in needed:
        (dest / name).write_bytes((dest / "libtrtstub.so").read_bytes())
    return symbols


def snapshot_from_wheel(family: str, package: str, version: str) -> dict:
    import zipfile

    with tempfile.TemporaryDirectory(prefix="trt_api_") as tmp:
        tmp = Path(tmp)
        wheel = pip_download(package, version, tmp)
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        unpacked = tmp / "wheel"
        zipfile.ZipFile(wheel).extractall(unpacked)
        so = next(unpacked.glob("tensorrt_bindings/tensorrt*.so"))
        stubs = tmp / "stubs"
        stubs.mkdir()
        symbols = stub_libraries(so, stubs)
        env = dict(os.environ, LD_LIBRARY_PATH=str(stubs), PYTHONPATH=str(unpacked))
        r = subprocess.run([sys.executable, "-c", INTROSPECT], capture_output=True, text=True, env=env, cwd=tmp)
        if r.returncode:
            raise SystemExit(f"importing {wheel.name} against stub libraries failed:\n{r.stderr[-2000:]}")
        surface = json.loads(r.stdout)
    counts = count(surface)
    return {
        **header(family, surface.pop("version")),
        "source": {"method": "import", "package": package, "wheel": wheel.name, "sha256": sha,
                   "stubbed_symbols": symbols},
        "faithfulness": (
            f"exact for what pybind11 registers at import: the real {wheel.name} extension was imported against "
            f"stub libraries for the {len(symbols)} TensorRT symbols it links (none is called during import) and "
            "read by introspection: classes with their own methods and properties (writable or read-only, from "
            "the property objects), nested types, class constants, enum members, module functions and values, "
            "plus what the package's __init__.py adds (nptype, volume, Logger severities, DataType.itemsize). "
            f"Return types from pybind11 signatures ('?' where none). {counts['classes']} classes, "
            f"{counts['methods']} methods, {counts['properties']} properties, {counts['enums']} enums with "
            f"{counts['enum_members']} members, {counts['functions']} module functions; 0 names unplaced. "
            "Names that exist but fail at run time (e.g. deprecated ones that raise) are listed as existing; "
            "'deprecated' lists are read from docstrings."),
        "counts": counts, **surface}


def header(family: str, version: str) -> dict:
    return {"format": SNAPSHOT_FORMAT, "family": family, "tensorrt_version": version, "role": ROLES.get(family, ""),
            "generated_by": "tools/trt_api_snapshot.py"}


def count(surface: dict) -> dict:
    classes, enums = surface["classes"], surface["enums"]
    return {"classes": len(classes), "methods": sum(len(c["methods"]) + len(c["static_methods"]) for c in classes.values()),
            "properties": sum(len(c["properties"]) for c in classes.values()), "enums": len(enums),
            "enum_members": sum(len(e["members"]) for e in enums.values()),
            "functions": len(surface["module"]["functions"])}


# ============================================================================================== source method
def _strip_comments(text: str) -> str:
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"' or (c == "R" and text.startswith('R"', i)):
            if c == "R":  # raw string R"delim( ... )delim"
                j = text.index("(", i)
                delim = ")" + text[i + 2:j] + '"'
                k = text.index(delim, j) + len(delim)
            else:
                k = i + 1
                while text[k] != '"':
                    k += 2 if text[k] == "\\" else 1
                k += 1
            out.append(text[i:k])
            i = k
        elif c == "'" and i + 2 < n and not text[i - 1].isalnum():
            k = i + 1
            while text[k] != "'":
                k += 2 if text[k] == "\\" else 1
            out.append(text[i:k + 1])
            i = k + 1
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            out.append(" ")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _match(text: str, i: int, open_: str, close: str) -> int:
    """Index just past the bracket closing the one at text[i] (strings skipped)."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unbalanced")


def _split_top(args: str) -> list[str]:
    parts, depth, cur, i = [], 0, [], 0
    while i < len(args):
        c = args[i]
        if c == '"':
            k = i + 1
            while args[k] != '"':
                k += 2 if args[k] == "\\" else 1
            cur.append(args[i:k + 1])
            i = k + 1
            continue
        if c in "(<{[":
            depth += 1
        elif c in ")>}]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


CHAIN = re.compile(r'\.\s*(def|def_property|def_property_readonly|def_static|def_readonly|def_readwrite|'
                   r'def_property_static|def_property_readonly_static|value|export_values)\s*\(\s*("([^"]*)")?')
# py::bind_vector's list methods; count/remove only where the element has operator== (not PluginField)
BIND_VECTOR_METHODS = ["append", "clear", "extend", "insert", "pop"]
BIND_VECTOR_COMPARABLE = ["count", "remove"]
# Preprocessor conditions of the binding sources, as NVIDIA's release builds have them (the imported 8.6.1 and
# 10.3.0 wheels show EXPORT_ALL_BINDINGS code and lack INetworkDefinition.serialize); pybind11 is >= 2.6.
MACROS = {"ENABLE_INETWORK_SERIALIZE": False, "EXPORT_ALL_BINDINGS": True}


def _preprocess(text: str) -> str:
    """Keep the lines a release build compiles (#if/#elif/#else/#endif on the conditions above)."""
    out, stack = [], []  # stack of [this branch active, some branch taken]

    def truth(cond: str) -> bool:
        if "PYBIND11_VERSION" in cond:
            return False
        name = re.sub(r"^!?defined\s*\(?\s*|\)", "", cond.strip())
        return MACROS.get(name, True) != cond.strip().startswith("!")

    for line in text.splitlines():
        d = re.match(r"\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)", line)
        if d:
            kind, cond = d.group(1), d.group(2)
            if kind in ("if", "ifdef", "ifndef"):
                value = truth(cond) if kind == "if" else MACROS.get(cond.strip(), False) == (kind == "ifdef")
                stack.append([value, value])
            elif kind == "elif":
                value = not stack[-1][1] and truth(cond)
                stack[-1] = [value, stack[-1][1] or value]
            elif kind == "else":
                stack[-1] = [not stack[-1][1], True]
            else:
                stack.pop()
            out.append("")
        else:
            out.append(line if all(a for a, _ in stack) else "")
    return "\n".join(out)


def parse_bindings(files: dict[str, str]) -> dict:
    """pybind11 C++ sources -> the surface, in the import method's layout (return types '?')."""
    classes, enums, cpp_to_py = {}, {}, {}
    module = {"classes": [], "enums": [], "functions": {}, "values": {}, "modules": []}
    variables: dict[str, str] = {}  # C++ variable holding a py::class_ -> qualified python name
    pending_bases: dict[str, list[str]] = {}

    def chain(text: str, i: int, target: str) -> int:
        """Read a .def/.value chain starting at text[i]; stop at the ';' that ends the statement."""
        depth = 0
        while i < len(text):
            c = text[i]
            if c == '"':
                i += 1
                while text[i] != '"':
                    i += 2 if text[i] == "\\" else 1
            elif c in "({[":
                depth += 1
            elif c in ")}]":
                depth -= 1
            elif c == ";" and depth <= 0:
                return i
            elif c == "." and depth == 0:
                m = CHAIN.match(text, i)
                if m:
                    kind, name = m.group(1), m.group(3)
                    if kind == "export_values":
                        enums[target]["exported"] = True
                    elif name is None:
                        if kind == "def" and re.match(r"\s*py::init", text[m.end():]):
                            classes[target]["constructible"] = True
                    elif kind == "value":
                        enums[target]["members"].append(name)
                    elif not name.startswith("_"):
                        info = classes[target]
                        if kind == "def":
                            info["methods"][name] = "?"
                        elif kind == "def_static":
                            info["static_methods"][name] = "?"
                        elif kind in ("def_property_static", "def_property_readonly_static"):
                            info["constants"][name] = "static property"
                        else:
                            # def_property(name, getter, setter, extra...): writable unless the setter is nullptr
                            open_at = m.start() + m.group(0).index("(")
                            args = _split_top(text[open_at + 1:_match(text, open_at, "(", ")") - 1])
                            writable = kind == "def_readwrite" or (
                                kind == "def_property" and len(args) > 2 and args[2] != "nullptr")
                            info["properties"][name] = {"type": "?", "writable": writable}
                    i = m.start() + m.group(0).index("(")  # into the call: its parentheses are counted
                    continue
            i += 1
        return i

    decl = re.compile(r"py::(class_|enum_)\s*<")
    for path, raw in sorted(files.items()):
        text = _strip_comments(_preprocess(raw))
        for m in decl.finditer(text):
            kind = m.group(1)
            t_end = _match(text, m.end() - 1, "<", ">")
            targs = _split_top(text[m.end():t_end - 1])
            rest = re.match(r"\s*(\w+)?\s*([({])", text[t_end:])
            if not rest:
                continue
            var = rest.group(1)
            open_at = t_end + rest.start(2)
            close_at = _match(text, open_at, rest.group(2), ")" if rest.group(2) == "(" else "}")
            args = _split_top(text[open_at + 1:close_at - 1])
            if len(args) < 2 or not args[1].startswith('"'):
                continue
            scope, name = args[0], args[1].strip('"')
            qual = name if scope in ("m", "module") or scope not in variables else f"{variables[scope]}.{name}"
            cpp_to_py[targs[0].strip()] = qual
            if kind == "enum_":
                enums.setdefault(qual, {"members": [], "deprecated": []})
            else:
                classes.setdefault(qual, {"bases": [], "constructible": False, "methods": {}, "static_methods": {},
                                          "properties": {}, "constants": {}, "nested": {}, "deprecated": []})
                pending_bases[qual] = [a.strip() for a in targs[1:]]
            if "." in qual:
                classes[qual.rsplit(".", 1)[0]]["nested"][name] = qual
            else:
                module["enums" if kind == "enum_" else "classes"].append(qual)
            if var:
                variables[var] = qual
            chain(text, close_at, qual)
        for m in re.finditer(r"\b(\w+)\s*\.\s*(def|def_property|def_property_readonly|def_static)\s*\(", text):
            if m.group(1) in variables and not text[:m.start()].rstrip().endswith(("py::class_", ">")):
                chain(text, m.start() + len(m.group(1)), variables[m.group(1)])
        for m in re.finditer(r'\bm\s*\.\s*def\s*\(\s*"(\w+)"', text):
            module["functions"][m.group(1)] = "?"
        for m in re.finditer(r'\bm\s*\.\s*attr\s*\(\s*"(\w+)"\s*\)\s*=\s*([^;]+);', text):
            module["values"][m.group(1)] = m.group(2).strip()
        for m in re.finditer(r'py::bind_vector<([^;]*?)>\s*\(\s*m\s*,\s*"(\w+)"', text):
            methods = BIND_VECTOR_METHODS + ([] if "PluginField" in m.group(1) else BIND_VECTOR_COMPARABLE)
            classes[m.group(2)] = {"bases": [], "constructible": True, "methods": dict.fromkeys(methods, "?"),
                                   "static_methods": {}, "properties": {}, "constants": {}, "nested": {},
                                   "deprecated": []}
            module["classes"].append(m.group(2))
        for m in re.finditer(r"py::register_exception<[^>]*>\s*\(\s*m\s*,\s*\"(\w+)\"", text):
            classes[m.group(1)] = {"bases": [], "constructible": True, "methods": {}, "static_methods": {},
                                   "properties": {}, "constants": {}, "nested": {}, "deprecated": []}
            module["classes"].append(m.group(1))
    for qual, targs in pending_bases.items():
        classes[qual]["bases"] = [cpp_to_py[a] for a in targs if a in cpp_to_py and cpp_to_py[a] in classes]
    for qual, e in enums.items():  # pybind11's export_values() puts the members in the enclosing scope
        if e.pop("exported", False):
            if "." in qual:
                classes[qual.rsplit(".", 1)[0]]["constants"].update({n: f"{qual}.{n}" for n in e["members"]})
            else:
                module["values"].update({n: f"{qual}.{n}" for n in e["members"]})
    # DataType members exported to the module by m.attr("float32") = DataType::kFLOAT etc.
    for name, expr in list(module["values"].items()):
        mm = re.match(r"(?:nvinfer1::)?(\w+)::k(\w+)$", expr)
        if mm and mm.group(1) in enums:
            module["values"][name] = f"{mm.group(1)}.{mm.group(2)}"
    return {"module": module, "classes": classes, "enums": enums}


def apply_package_init(surface: dict, init_source: str) -> None:
    """What the package's __init__.py adds on top of the extension (read with ast, not run)."""
    module, classes = surface["module"], surface["classes"]
    tree = ast.parse(init_source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            module["functions"][node.name] = "?"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = (alias.asname or alias.name).split(".")[0]
                if name != "*" and not name.startswith("_") and isinstance(node, ast.Import):
                    module["modules"].append(name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and not target.id.startswith("_"):
                    module["values"][target.id] = type(getattr(node.value, "value", node.value)).__name__
                elif (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                      and target.value.id in classes and not target.attr.startswith("_")):
                    info = classes[target.value.id]
                    if isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "property":
                        info["properties"][target.attr] = {"type": "?", "writable": False}
                    elif isinstance(node.value, ast.Attribute):
                        owner = ast.unparse(node.value)
                        if owner in surface["enums"] or owner in classes:
                            info["nested"][target.attr] = owner
        elif isinstance(node, ast.For):  # for attr, value in X.Y.__members__.items(): setattr(Z, attr, value)
            src = ast.unparse(node)
            mm = re.search(r"in ([\w.]+)\.__members__\.items\(\).*setattr\((\w+),", src, re.S)
            if mm and mm.group(1) in surface["enums"] and mm.group(2) in classes:
                classes[mm.group(2)]["constants"].update(
                    {n: f"{mm.group(1)}.{n}" for n in surface["enums"][mm.group(1)]["members"]})
            for target in ast.walk(node.target):
                if isinstance(target, ast.Name) and not target.id.startswith("_"):
                    module["values"][target.id] = "loop variable"
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            try:  # the 'if "tensorrt" == "tensorrt":' blocks of the packaging template; not the Windows ones
                taken = eval(compile(ast.Expression(node.test), "<init>", "eval"), {"__builtins__": {}})
            except Exception:
                taken = False
            if taken:
                apply_package_init(surface, "\n".join(ast.unparse(sub) for sub in node.body))
    module["modules"] = sorted(set(module["modules"]))


def oss_files(git_dir: Path, ref: str) -> tuple[dict[str, str], str, str]:
    def git(*args):
        return subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True,
                              check=True).stdout

    commit = git("rev-parse", ref).strip()
    names = [n for n in git("ls-tree", "-r", "--name-only", commit, "python/").splitlines()
             if re.match(r"python/src/.*\.cpp$", n)]
    files = {n: git("show", f"{commit}:{n}") for n in names}
    inits = [n for n in git("ls-tree", "-r", "--name-only", commit, "python/packaging/").splitlines()
             if n.endswith("tensorrt/__init__.py")]
    init = git("show", f"{commit}:{inits[0]}") if inits else ""
    init = re.sub(r"##\w+##", "tensorrt", init)  # the packaging template's placeholders
    return files, init, commit


def source_surface(git_dir: Path, ref: str) -> tuple[dict, str]:
    files, init, commit = oss_files(git_dir, ref)
    surface = parse_bindings(files)
    apply_package_init(surface, init)
    for c in surface["classes"].values():
        c["deprecated"] = sorted(set(c["deprecated"]))
    return surface, commit


def names_of(surface: dict) -> set[str]:
    """Every dotted name of a surface: module names, Class.member, Enum.MEMBER."""
    out = set(surface["module"]["classes"]) | set(surface["module"]["enums"]) | set(surface["module"]["functions"])
    out |= set(surface["module"]["values"])
    for q, c in surface["classes"].items():
        for kind in ("methods", "static_methods", "properties", "constants", "nested"):
            out |= {f"{q}.{n}" for n in c[kind]}
    for q, e in surface["enums"].items():
        out |= {f"{q}.{n}" for n in e["members"]}
    return out


def compare(parsed: dict, imported: dict) -> dict:
    a, b = names_of(parsed), names_of(imported)
    both = set(parsed["classes"]) & set(imported["classes"])
    writable = sorted(f"{q}.{p}" for q in both for p, info in parsed["classes"][q]["properties"].items()
                      if p in imported["classes"][q]["properties"]
                      and info["writable"] != imported["classes"][q]["properties"][p]["writable"])
    shape = sorted(q for q in both if parsed["classes"][q]["bases"] != imported["classes"][q]["bases"]
                   or parsed["classes"][q]["constructible"] != imported["classes"][q]["constructible"])
    return {"imported_names": len(b), "parsed_names": len(a), "found": len(a & b),
            "writability_differs": writable, "bases_or_constructor_differ": shape,
            "missed": sorted(b - a), "extra": sorted(a - b), "recall": round(len(a & b) / len(b), 4),
            "precision": round(len(a & b) / len(a), 4)}


def snapshot_from_source(family: str, spec: dict, git_dir: Path, out: Path) -> dict:
    surface, commit = source_surface(git_dir, spec["ref"])
    checks = {}
    for other, tag in spec.get("validate", {}).items():
        path = out / f"{other}.json"
        if not path.is_file():
            log(f"  (no {path.name} yet: cannot measure the source parser against it)")
            continue
        parsed, _ = source_surface(git_dir, tag)
        cmp = compare(parsed, json.loads(path.read_text()))
        checks[other] = {"tag": tag, **{k: v for k, v in cmp.items() if k not in ("missed", "extra")},
                         "missed_examples": cmp["missed"][:25], "extra_examples": cmp["extra"][:25]}
    counts = count(surface)
    measured = "; ".join(f"on {c['tag']} it recovers {c['found']} of the {c['imported_names']} names of the imported "
                         f"{k} snapshot (recall {c['recall']:.1%}) and adds {c['parsed_names'] - c['found']} that "
                         f"the import does not show (precision {c['precision']:.1%}); property writability differs for "
                         f"{len(c['writability_differs'])}, bases or constructibility for "
                         f"{len(c['bases_or_constructor_differ'])} classes" for k, c in checks.items())
    return {
        **header(family, spec["tensorrt_version"]),
        "source": {"method": "source", "repository": "NVIDIA/TensorRT (open-source components)", "ref": spec["ref"],
                   "commit": commit, "files": "python/src/**/*.cpp, python/packaging/tensorrt/__init__.py"},
        "faithfulness": (
            "inferred from source: NVIDIA publishes no 8.5 bindings wheel, so this surface is parsed from the "
            f"pybind11 binding sources of TensorRT OSS {spec['ref']} ({commit[:12]}), the Python bindings NVIDIA "
            "released with 8.5.3 (JetPack 5.1 ships 8.5.2: same API). Classes, methods, properties (writable when "
            "a setter is given), enum members and module functions are read from py::class_/py::enum_ chains; "
            "return and property types are unknown ('?'). The same parser, run on other tags and compared with "
            f"their imported wheels: {measured or 'not measured (run with the imported snapshots present)'}. "
            f"{counts['classes']} classes, {counts['methods']} methods, {counts['properties']} properties, "
            f"{counts['enums']} enums with {counts['enum_members']} members, {counts['functions']} module "
            "functions. Spot-checked against NVIDIA's archived 8.5.3 API pages: IRuntime has no engine-host-code "
            "setter (the 8.6 Python Runtime adds engine_host_code_allowed), IBuilderConfig has the INT8 "
            "calibrator; the Python pages were not compared name by name."),
        "parser_check": checks, "counts": counts, **surface}


# ============================================================================================== main
TOP_ORDER = ("format", "family", "tensorrt_version", "role", "generated_by", "source", "faithfulness", "counts",
             "parser_check", "module", "enums", "classes")


def dump(snap: dict) -> str:
    """Stable JSON: the header first, then the surface with its mappings sorted (enum members keep their order)."""
    def tidy(obj):
        if isinstance(obj, dict):
            return {k: tidy(obj[k]) for k in sorted(obj)}
        return [tidy(x) for x in obj] if isinstance(obj, list) else obj

    return json.dumps({k: tidy(snap[k]) for k in TOP_ORDER if k in snap}, indent=1) + "\n"


def latest_versions(package: str) -> dict[str, str]:
    r = subprocess.run([sys.executable, "-m", "pip", "index", "versions", package], capture_output=True, text=True,
                       check=True)
    line = next(l for l in r.stdout.splitlines() if "Available versions:" in l)
    versions = [v.strip() for v in line.split(":", 1)[1].split(",")]
    best = {}
    for v in versions:
        if not re.fullmatch(r"[\d.]+(\.post\d+)?", v):
            continue
        major = v.split(".")[0]
        key = tuple(int(x) for x in re.findall(r"\d+", v))
        if major not in best or key > best[major][0]:
            best[major] = (key, v)
    return {m: v for m, (_, v) in best.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", nargs="+", default=list(VERSIONS), help=f"families (default {list(VERSIONS)})")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--trt-oss", type=Path, help="git directory of NVIDIA's TensorRT repository (for 8.5)")
    ap.add_argument("--latest", action="store_true", help="replace the 10.x/11.x 'latest' families by the newest "
                                                          "tensorrt-cu12-bindings on the index")
    args = ap.parse_args(argv)
    versions = dict(VERSIONS)
    if args.latest:
        newest = latest_versions("tensorrt-cu12-bindings")
        for old in ("10.16", "11.4"):
            versions.pop(old)
        for major in ("10", "11"):
            v = newest[major]
            fam = ".".join(v.split(".")[:2])
            versions[fam] = {"method": "import", "package": "tensorrt-cu12-bindings", "version": v}
            ROLES[fam] = f"latest {major}.x on the index"
            args.versions = [f for f in args.versions if f not in ("10.16", "11.4")] + [fam]
    args.out.mkdir(parents=True, exist_ok=True)
    # imported snapshots first: the source snapshot measures its parser against them
    for family in sorted(args.versions, key=lambda f: versions[f]["method"] == "source"):
        spec = versions[family]
        log(f"{family}: {spec['method']} ...")
        if spec["method"] == "import":
            snap = snapshot_from_wheel(family, spec["package"], spec["version"])
        else:
            if not args.trt_oss:
                log(f"  skipped: {family} needs --trt-oss (a git directory of NVIDIA/TensorRT with {spec['ref']})")
                continue
            snap = snapshot_from_source(family, spec, args.trt_oss, args.out)
        path = args.out / f"{family}.json"
        path.write_text(dump(snap))
        log(f"  {path}: {snap['counts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
