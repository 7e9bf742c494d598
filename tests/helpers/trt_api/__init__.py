"""The real `tensorrt` Python API surface of each TensorRT version we claim, as JSON snapshots made by
tools/trt_api_snapshot.py (each file says where it came from and how faithful it is).

    surface = load("10.3")           # or surface_for("10.3.0") for an exact version string
    surface.has("IBuilderConfig.int8_calibrator"), surface.member("Runtime", "engine_host_code_allowed")
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
# family -> what it stands for (the 'role' inside each file says the same)
FAMILIES = ("8.5", "8.6", "10.3", "10.16", "11.4")
MEMBER_KINDS = ("methods", "static_methods", "properties", "constants", "nested")


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2])


class Surface:
    """One snapshot: module names, classes (own members + bases), enums (members)."""

    def __init__(self, data: dict):
        self.data = data
        self.family: str = data["family"]
        self.version: str = data["tensorrt_version"]
        self.module: dict = data["module"]
        self.classes: dict = data["classes"]
        self.enums: dict = data["enums"]

    def __repr__(self) -> str:
        return f"<TensorRT {self.version} API surface ({self.data['source']['method']})>"

    def module_names(self) -> set[str]:
        m = self.module
        return set(m["classes"]) | set(m["enums"]) | set(m["functions"]) | set(m["values"]) | set(m["modules"])

    def mro(self, cls: str) -> list[str]:
        """cls and its bases, nearest first (only classes this snapshot knows)."""
        out, todo = [], [cls]
        while todo:
            c = todo.pop(0)
            if c in self.classes and c not in out:
                out.append(c)
                todo.extend(self.classes[c]["bases"])
        return out

    def member(self, cls: str, name: str) -> Optional[tuple[str, object]]:
        """(kind, info) of cls.name, inherited members included; None when the class has no such member.
        kind: 'method' | 'static_method' | 'property' | 'constant' | 'nested' | 'enum_member'."""
        if cls in self.enums:
            return ("enum_member", None) if name in self.enums[cls]["members"] else None
        for c in self.mro(cls):
            for kind in MEMBER_KINDS:
                if name in self.classes[c][kind]:
                    return kind.rstrip("s").replace("propertie", "property"), self.classes[c][kind][name]
        return None

    def members(self, cls: str) -> dict[str, tuple[str, object]]:
        if cls in self.enums:
            return {m: ("enum_member", None) for m in self.enums[cls]["members"]}
        out: dict = {}
        for c in reversed(self.mro(cls)):
            for kind in MEMBER_KINDS:
                for name, info in self.classes[c][kind].items():
                    out[name] = (kind.rstrip("s").replace("propertie", "property"), info)
        return out

    def has(self, dotted: str) -> bool:
        """'Builder', 'BuilderFlag.FP16', 'IBuilderConfig.int8_calibrator', 'ILogger.Severity.WARNING'."""
        head, _, rest = dotted.partition(".")
        if head not in self.module_names():
            return False
        if not rest:
            return True
        owner = self.module["values"].get(head, head)  # aliases such as SliceMode -> SampleMode
        parts = rest.split(".")
        for i, part in enumerate(parts):
            found = self.member(owner, part)
            if found is None:
                return False
            kind, info = found
            if kind == "nested":
                owner = info
            elif i < len(parts) - 1:
                return False
        return True

    def returns(self, cls: str, method: str) -> Optional[str]:
        found = self.member(cls, method)
        if found and found[0] in ("method", "static_method") and found[1] not in ("?", None):
            return str(found[1])
        if found and found[0] == "property" and found[1]["type"] != "?":
            return found[1]["type"]
        return None


@lru_cache(maxsize=None)
def load(family: str) -> Surface:
    path = HERE / f"{family}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no TensorRT API snapshot {path.name}; families: {FAMILIES} "
                                "(make one with tools/trt_api_snapshot.py)")
    return Surface(json.loads(path.read_text()))


def family_for(version: str) -> str:
    """The snapshot that stands for a TensorRT version: the same major, the newest minor not above it, else
    the oldest above it (11.1 -> 11.4: the only 11.x snapshot). An approximation between snapshots."""
    major = int(version.split(".")[0])
    same = sorted((f for f in FAMILIES if int(f.split(".")[0]) == major), key=_key)
    if not same:
        same = sorted(FAMILIES, key=lambda f: abs(_key(f)[0] - major))[:1]
    below = [f for f in same if _key(f) <= _key(version)]
    return below[-1] if below else same[0]


def surface_for(version: str) -> Surface:
    return load(family_for(version))
