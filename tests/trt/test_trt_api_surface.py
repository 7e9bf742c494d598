"""Every TensorRT name our TensorRT code touches exists in every TensorRT version we claim for that code path.

The code is read with `ast` (nothing is run), in every module of prn_edge/trt and tools/gpu_check; the names are
looked up in the snapshots of the real API (tests/helpers/trt_api, made by tools/trt_api_snapshot.py).

What the walk follows (its inference limits):
- the module: `import tensorrt [as trt]`, a call of `[_]import_tensorrt(...)`, a parameter named `trt`,
  `x or y` of those, and `self.<attr>` assigned one of them anywhere in the class;
- objects: `trt.Class(...)` makes a Class; a method call or property read on a known class gives the type
  pybind11 declares for it (return types from the snapshot signatures: builder.create_builder_config() is an
  IBuilderConfig, network.get_input(0) an ITensor, ...); local names and `self.<attr>` keep the type of what
  they were assigned; parameters are typed by name only where PARAMETERS says so;
- dynamic names: `getattr(trt.BuilderFlag, name)` takes the names the code can pass (DYNAMIC: the strings given
  to set_flag(...) anywhere and appended to plan["flags"]; the HARDWARE_COMPAT constant), so they are derived
  from the code, not listed by hand;
- guards: an access inside `if hasattr(x, "n")` needs "n" there (and its `else:` needs it absent); a
  `getattr(x, "n", default)` needs nothing.
Not followed: values passed through containers or other modules, attributes of our own calibrator subclass,
dunder names (trt.__version__), and flow-sensitive checks (`if target.caps.explicit_batch_flag:`, an earlier
`raise` for versions without a feature): those are the per-name expectations in REACHED, each read from the
capability table the code asks (prn_edge/trt/capability.py, itself checked against the snapshots in
test_capability.py) and quoting the code that decides it.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from prn_edge.trt.capability import capabilities
from tests.helpers import trt_api

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "prn_edge" / "trt").glob("*.py")) + ["tools/gpu_check"]
CLAIMED = trt_api.FAMILIES  # 8.5 (JetPack 5.1), 8.6, 10.3 (JetPack 6), the latest 10.x and 11.x on the index
MODULE = "<tensorrt>"
# parameter name -> type, where a function takes the object from its caller (the builder's steps, _profile_batches)
PARAMETERS = {"network": "INetworkDefinition", "engine": "ICudaEngine", "builder": "Builder",
              "config": "IBuilderConfig"}
IMPORTERS = {"_import_tensorrt", "import_tensorrt"}


def newest_returns(cls: str, member: str) -> Optional[str]:
    for family in reversed(CLAIMED):
        t = trt_api.load(family).returns(cls, member)
        if t:
            return t
    return None


def kind_of(name: str) -> Optional[str]:
    """'class' / 'enum' / 'function' for a module-level name in any claimed version."""
    for family in CLAIMED:
        m = trt_api.load(family).module
        for kind in ("classes", "enums", "functions"):
            if name in m[kind]:
                return kind.rstrip("es") if kind != "classes" else "class"
    return None


@dataclass(frozen=True)
class Access:
    name: str  # 'Builder', 'BuilderFlag.FP16', 'IBuilderConfig.int8_calibrator'
    site: str  # file:line
    guard: tuple = ()  # (('has' | 'lacks'), dotted name) conditions from hasattr()


class Walker(ast.NodeVisitor):
    """Collects the TensorRT names a file uses (see the module docstring for what it follows)."""

    def __init__(self, path: str, tree: ast.AST):
        self.path, self.tree = path, tree
        self.accesses: list[Access] = []
        self.dynamic: list[tuple[str, str]] = []  # (enum/class, site) of getattr(trt.X, <expression>)
        self.self_types: dict[str, dict[str, str]] = {}  # class name -> self attribute -> type

    # ------------------------------------------------------------------ types
    def type_of(self, node, env: dict, cls: Optional[str]) -> Optional[str]:
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.BoolOp):
            return next((t for t in (self.type_of(v, env, cls) for v in node.values) if t), None)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self" and cls:
                return self.self_types.get(cls, {}).get(node.attr)
            owner = self.type_of(node.value, env, cls)
            if owner == MODULE:
                kind = kind_of(node.attr)
                return f"{kind}:{node.attr}" if kind else None
            if owner and ":" not in owner:
                return newest_returns(owner, node.attr) if self._is_property(owner, node.attr) else None
            return None
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in IMPORTERS:
                return MODULE
            t = self.type_of(f, env, cls)
            if t and t.startswith("class:"):
                return t[6:]
            if isinstance(f, ast.Attribute):
                owner = self.type_of(f.value, env, cls)
                if owner and ":" not in owner and owner != MODULE:
                    ret = newest_returns(owner, f.attr)
                    return ret if ret and kind_of(ret) == "class" else None
        return None

    @staticmethod
    def _is_property(cls: str, name: str) -> bool:
        return any((trt_api.load(f).member(cls, name) or ("",))[0] == "property" for f in CLAIMED)

    # ------------------------------------------------------------------ recording
    def record(self, owner: str, member: Optional[str], node, guards: tuple) -> None:
        if member is not None and member.startswith("__"):
            return
        if owner == MODULE:
            name = member
        elif owner.startswith(("class:", "enum:", "function:")):
            name = f"{owner.split(':', 1)[1]}.{member}"
        else:
            name = f"{owner}.{member}"
        self.accesses.append(Access(name, f"{self.path}:{node.lineno}", guards))

    def guard_of(self, test, env, cls, positive: bool) -> tuple:
        """hasattr(x, "n") conditions of an if-test (through `and` / `not`)."""
        out = []
        if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) and positive:
            for v in test.values:
                out.extend(self.guard_of(v, env, cls, True))
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            out.extend(self.guard_of(test.operand, env, cls, not positive))
        elif (isinstance(test, ast.Call) and isinstance(test.func, ast.Name) and test.func.id == "hasattr"
              and isinstance(test.args[1], ast.Constant)):
            owner = self.type_of(test.args[0], env, cls)
            if owner:
                base = owner.split(":", 1)[-1] if owner != MODULE else ""
                dotted = f"{base}.{test.args[1].value}".lstrip(".")
                out.append(("has" if positive else "lacks", dotted))
        return tuple(out)

    # ------------------------------------------------------------------ walking
    def run(self) -> "Walker":
        for _ in range(2):  # self attributes may be assigned in a later method than they are used
            for node in ast.walk(self.tree):
                if isinstance(node, ast.ClassDef):
                    for fn in node.body:
                        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            self.function(fn, node.name, record=False)
        self.accesses.clear()
        self.body(self.tree.body, {}, None, (), record=True)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ClassDef):
                for fn in node.body:
                    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.function(fn, node.name, record=True)
        return self

    def function(self, fn, cls: Optional[str], record: bool, env: Optional[dict] = None) -> None:
        env = dict(env or {})
        for a in fn.args.args + fn.args.kwonlyargs:
            if a.arg == "trt":
                env["trt"] = MODULE
            elif a.arg in PARAMETERS:
                env[a.arg] = PARAMETERS[a.arg]
        self.body(fn.body, env, cls, (), record)

    def body(self, stmts, env: dict, cls: Optional[str], guards: tuple, record: bool) -> None:
        for stmt in stmts:
            self.stmt(stmt, env, cls, guards, record)

    def stmt(self, stmt, env, cls, guards, record) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.function(stmt, cls, record, env)  # module functions and closures (methods: run walks them)
            return
        if isinstance(stmt, ast.ClassDef):
            return  # walked on its own (run)
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if isinstance(stmt, ast.Import) and alias.name == "tensorrt":
                    env[alias.asname or "tensorrt"] = MODULE
            return
        if isinstance(stmt, ast.If):
            self.expr(stmt.test, env, cls, guards, record)
            self.body(stmt.body, env, cls, guards + self.guard_of(stmt.test, env, cls, True), record)
            self.body(stmt.orelse, env, cls, guards + self.guard_of(stmt.test, env, cls, False), record)
            return
        if isinstance(stmt, (ast.For, ast.While, ast.With, ast.Try)):
            for _, value in ast.iter_fields(stmt):
                if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                    self.body(value, env, cls, guards, record)
                elif isinstance(value, list) and value and isinstance(value[0], ast.ExceptHandler):
                    for h in value:
                        self.body(h.body, env, cls, guards, record)
                elif isinstance(value, ast.expr):
                    self.expr(value, env, cls, guards, record)
                elif isinstance(value, list):
                    for v in value:
                        if isinstance(v, ast.withitem):
                            self.expr(v.context_expr, env, cls, guards, record)
            return
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            value = stmt.value
            if value is not None:
                self.expr(value, env, cls, guards, record)
                t = self.type_of(value, env, cls)
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    if isinstance(target, ast.Name) and t:
                        env[target.id] = t
                    elif (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                          and target.value.id == "self" and cls and t):
                        self.self_types.setdefault(cls, {})[target.attr] = t
                    elif isinstance(target, ast.Attribute):
                        self.expr(target, env, cls, guards, record)  # config.int8_calibrator = ...
            return
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.expr):
                self.expr(child, env, cls, guards, record)
            elif isinstance(child, ast.stmt):
                self.stmt(child, env, cls, guards, record)

    def expr(self, node, env, cls, guards, record) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Lambda):
                continue
            if isinstance(sub, ast.Attribute):
                owner = self.type_of(sub.value, env, cls)
                if owner and record:
                    self.record(owner, sub.attr, sub, guards)
            elif (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in ("getattr", "hasattr")
                  and len(sub.args) >= 2):
                owner = self.type_of(sub.args[0], env, cls)
                if not owner or not record:
                    continue
                if isinstance(sub.args[1], ast.Constant):
                    if sub.func.id == "getattr" and len(sub.args) == 2:
                        self.record(owner, sub.args[1].value, sub, guards)
                    # getattr with a default and hasattr probe: nothing is required
                else:
                    self.dynamic.append((owner.split(":", 1)[-1], f"{self.path}:{sub.lineno}"))


def walk(path: str) -> Walker:
    text = (ROOT / path).read_text()
    return Walker(path, ast.parse(text, filename=path)).run()


# ---------------------------------------------------------------------------------------------- dynamic names
def _strings_passed_to(tree, func: str) -> set[str]:
    return {a.value for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
            and c.func.id == func for a in c.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}


def _plan_flags(tree) -> set[str]:
    """Strings appended to plan["flags"] in plan_precision."""
    out = set()
    for c in ast.walk(tree):
        if (isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr == "append"
                and "flags" in ast.unparse(c.func.value) and c.args and isinstance(c.args[0], ast.Constant)):
            out.add(c.args[0].value)
    return out


def dynamic_names(owner: str, site: str) -> set[str]:
    path = site.rsplit(":", 1)[0]
    if owner == "BuilderFlag" and path.endswith("trt/builder_config.py"):  # set_flag: every caller's names
        trees = [ast.parse((ROOT / f).read_text()) for f in FILES]
        return set().union(*(_strings_passed_to(t, "set_flag") | _plan_flags(t) for t in trees))
    if owner == "HardwareCompatibilityLevel" and path.endswith("trt/compatibility.py"):
        from prn_edge.trt.request import HARDWARE_COMPAT
        return {h.upper() for h in HARDWARE_COMPAT if h != "none"}
    raise AssertionError(f"{site}: getattr(trt.{owner}, <expression>) with no rule in dynamic_names(): say which "
                         "names the expression can take")


# ---------------------------------------------------------------------------------------------- expectations
def version(family: str) -> tuple[int, int, int]:
    parts = [int(p) for p in trt_api.load(family).version.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def caps(v):
    return capabilities(".".join(map(str, v)))


def weak(v) -> bool:
    return caps(v).precision_flags


def implicit_int8(v) -> bool:
    return caps(v).implicit_int8


def version_compatible(v) -> bool:
    return caps(v).version_compatible


def level(name: str) -> Callable:
    return lambda v: name in caps(v).hardware_levels


def dla(v) -> bool:
    return caps(v).dla


# name -> (versions where the code reaches it, the code that decides). Every other name: all claimed versions.
REACHED: dict[str, tuple[Callable, str]] = {
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": (lambda v: caps(v).explicit_batch_flag,
                                                     "network.parse_network: `if target.caps.explicit_batch_flag:`"),
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED": (
        lambda v: caps(v).weak_typing_deprecated and caps(v).precision_flags,
        "network.parse_network: only when plan['strongly_typed'] and target.caps.precision_flags (10.12-10.x)"),
    "BuilderFlag.FP16": (weak, "precision.plan_precision: precision flags only when not strongly typed"),
    "BuilderFlag.INT8": (weak, "precision.plan_precision: precision flags only when not strongly typed"),
    "BuilderFlag.PREFER_PRECISION_CONSTRAINTS": (weak, "precision.set_precision: only with plan['fp32_constraints'] "
                                                       "(weakly typed only)"),
    "BuilderFlag.VERSION_COMPATIBLE": (version_compatible, "compatibility.check_portability raises without it"),
    "Runtime.engine_host_code_allowed": (version_compatible, "runner._load: `capabilities(...).version_compatible`"),
    "BuilderFlag.GPU_FALLBACK": (dla, "target.open_target: dla_core raises without capability dla"),
    "DeviceType.DLA": (dla, "target.open_target: dla_core raises without capability dla"),
    "IBuilderConfig.default_device_type": (dla, "target.open_target: dla_core raises without capability dla"),
    "IBuilderConfig.DLA_core": (dla, "target.open_target: dla_core raises without capability dla"),
    "HardwareCompatibilityLevel": (level("ampere_plus"), "compatibility.check_portability raises without levels"),
    "HardwareCompatibilityLevel.AMPERE_PLUS": (level("ampere_plus"), "compatibility.check_portability"),
    "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY": (
        level("same_compute_capability"), "compatibility.check_portability: a level not in caps.hardware_levels raises"),
    "IBuilderConfig.hardware_compatibility_level": (level("ampere_plus"), "compatibility.check_portability"),
    "IInt8EntropyCalibrator2": (implicit_int8, "plan_precision refuses implicit_int8 without the capability"),
    "IBuilderConfig.int8_calibrator": (implicit_int8, "builder: `if plan['int8'] == 'implicit'`"),
    "IBuilderConfig.set_calibration_profile": (implicit_int8, "builder: `if plan['int8'] == 'implicit'`"),
    # _pin_fp32_layers runs only `if plan["fp32_constraints"]`, which plan_precision sets on weakly typed only
    **{n: (weak, "precision._pin_fp32_layers: only with plan['fp32_constraints'] (weakly typed only)") for n in (
        "ILayer.precision", "ILayer.set_output_type", "ILayer.num_outputs", "ILayer.get_output", "ILayer.name",
        "INetworkDefinition.num_layers", "INetworkDefinition.get_layer", "ITensor.dtype", "float32")},
}

# (name, family) -> why the code is wrong there: strict xfails
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def collect() -> tuple[dict[str, list[Access]], list[tuple[str, str]]]:
    uses: dict[str, list[Access]] = {}
    dynamic = []
    for path in FILES:
        w = walk(path)
        for a in w.accesses:
            uses.setdefault(a.name, []).append(a)
        dynamic.extend(w.dynamic)
    for owner, site in dynamic:
        for member in dynamic_names(owner, site):
            uses.setdefault(f"{owner}.{member}", []).append(Access(f"{owner}.{member}", site + " (dynamic)"))
    return uses, dynamic


USES, DYNAMIC = collect()


def required(access: Access, family: str) -> bool:
    """Does the code reach this access on this version? (guards, then REACHED)"""
    surface = trt_api.load(family)
    for kind, dotted in access.guard:
        if surface.has(dotted) != (kind == "has"):
            return False
    rule = REACHED.get(access.name)
    return rule is None or rule[0](version(family))


CASES = [(name, family) for name in sorted(USES) for family in CLAIMED
         if any(required(a, family) for a in USES[name])]


def test_the_walk_finds_what_the_code_uses():
    names = set(USES)
    # a sample from each file and each kind of inference, so a walk that silently finds nothing fails here
    assert {"Builder", "Builder.create_builder_config", "IBuilderConfig.set_memory_pool_limit", "MemoryPoolType.WORKSPACE",
            "INetworkDefinition.get_input", "ITensor.shape", "OnnxParser.get_error", "ITimingCache.serialize",
            "IOptimizationProfile.set_shape", "Builder.build_serialized_network"} <= names  # the builder steps
    assert {"Runtime", "Runtime.deserialize_cuda_engine", "ICudaEngine.create_execution_context",
            "IExecutionContext.execute_async_v3", "IExecutionContext.set_tensor_address", "nptype",
            "ICudaEngine.get_tensor_profile_shape", "ICudaEngine.get_profile_shape", "Logger.WARNING"} <= names
    assert "IInt8EntropyCalibrator2" in names  # calibrator.py
    assert {"BuilderFlag.FP16", "BuilderFlag.GPU_FALLBACK", "HardwareCompatibilityLevel.AMPERE_PLUS"} <= names  # dynamic
    guarded = [a for a in USES["ICudaEngine.get_profile_shape"]]
    assert guarded and all(a.guard == (("lacks", "ICudaEngine.get_tensor_profile_shape"),) for a in guarded)
    assert not [n for n in REACHED if n not in names], "REACHED names the code no longer uses"
    assert len(DYNAMIC) == 2


@pytest.mark.parametrize("name,family", [
    pytest.param(n, f, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[(n, f)])) if (n, f) in KNOWN_BUGS
    else (n, f) for n, f in CASES])
def test_tensorrt_name_exists_where_the_code_reaches_it(name, family):
    surface = trt_api.load(family)
    sites = sorted({a.site for a in USES[name] if required(a, family)})
    assert surface.has(name), (f"TensorRT {surface.version} has no {name}, but the code reaches it there: {sites}. "
                               f"{REACHED[name][1] if name in REACHED else 'Reached on every version.'}")


def test_known_bugs_are_cases():
    assert set(KNOWN_BUGS) <= set(CASES)
