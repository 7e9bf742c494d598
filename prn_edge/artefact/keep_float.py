"""The nodes an exported graph keeps in float whatever the precision: decided once, at export, from the model's
structure, and read by INT8 calibration, the FP16 conversion and TensorRT's layer pinning.

8 (or 16) bits cannot carry what these nodes compute:
- the prototype search and residual, and the prototype distance map: an argmin over distances that differ in the
  last bits picks another prototype, and squared residuals span orders of magnitude;
- the last convolution and everything after it (logits, upsampling, sigmoid, top-k score): normal parts live in
  the lowest 1% of the [0, 1] probability range, which 8 bits would flatten.

Export records the name scopes of the prototype and distance modules, the nodes inside them and the graph's tail
from the last Conv under `prn_edge.keep_float`. The tail is named once, on the exported graph: tools that re-sort
a graph later (ONNX Runtime's quantization pre-processing does) would move other nodes behind the last Conv.
Artefacts exported before the record get the rule the toolkit applied until then, from their node names
(`legacy_keep_float`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from .errors import MetadataError

KEY = "prn_edge.keep_float"
_LEGACY_PROTOTYPE_SCOPE = re.compile(r"/prototypes\.(\d+)/")  # how the prototype modules' nodes were named


@dataclass(frozen=True)
class KeepFloat:
    """The keep-in-float record of one graph."""

    prototypes: tuple[str, ...]  # name scope of each prototype scale, in scale order ("/prototypes.0/", ...)
    distance: tuple[str, ...]  # name scopes of the prototype distance map ("/distance/"; none when not fused)
    search: tuple[str, ...]  # the graph's nodes inside those scopes
    tail: tuple[str, ...]  # the last Conv and every node after it, in graph order
    # name scope of the camera resampling (uint8 graphs with a separable resize): grey levels 0..255 in 8 bits
    # would move every pixel; records written before it have none
    preprocess: tuple[str, ...] = ()

    @property
    def scopes(self) -> tuple[str, ...]:
        return self.prototypes + self.distance + self.preprocess

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node kept in float, each once."""
        return tuple(dict.fromkeys(self.search + self.tail))

    def covers(self, name: str) -> bool:
        """True for a kept node, or anything named inside a kept scope (TensorRT names the layers it makes of one
        ONNX node after that node, so a layer of the prototype search carries its scope)."""
        return name in self.search or name in self.tail or any(s in name for s in self.scopes)

    def to_dict(self) -> dict:
        return {"prototypes": list(self.prototypes), "distance": list(self.distance), "search": list(self.search),
                "tail": list(self.tail), "preprocess": list(self.preprocess)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "metadata") -> "KeepFloat":
        try:
            return cls(*(tuple(str(v) for v in d[k]) for k in ("prototypes", "distance", "search", "tail")),
                       preprocess=tuple(str(v) for v in d.get("preprocess", ())))
        except (KeyError, TypeError) as e:
            raise MetadataError(f"{source}: {KEY} is not a keep-in-float record ({e}); re-export the model with "
                                "`prn-edge export`") from None


def keep_float_for(nodes: Iterable, prototypes: Iterable[str], distance: Iterable[str] = (),
                   preprocess: Iterable[str] = ()) -> KeepFloat:
    """The record of a graph (its nodes, in graph order: anything with .name and .op_type) whose prototype,
    distance and camera-resampling modules have these name scopes. Graph order is topological, so "after the last
    Conv" is position."""
    nodes = list(nodes)
    prototypes, distance, preprocess = tuple(prototypes), tuple(distance), tuple(preprocess)
    scopes = prototypes + distance + preprocess
    last_conv = max((i for i, n in enumerate(nodes) if n.op_type == "Conv"), default=len(nodes))
    return KeepFloat(prototypes, distance,
                     search=tuple(n.name for n in nodes if any(s in n.name for s in scopes)),
                     tail=tuple(n.name for n in nodes[last_conv:]), preprocess=preprocess)


def legacy_keep_float(nodes: Iterable) -> KeepFloat:
    """The rule for graphs without a record: the prototype scopes found in the node names, no distance scope, and
    the tail from the last Conv of the graph as it is now."""
    nodes = list(nodes)
    found = {int(m.group(1)) for n in nodes for m in [_LEGACY_PROTOTYPE_SCOPE.search(n.name)] if m}
    return keep_float_for(nodes, [f"/prototypes.{i}/" for i in sorted(found)])


def read_keep_float(model) -> KeepFloat:
    """The record of an ONNX model (a ModelProto or a path): from its metadata, else `legacy_keep_float`.

    A record naming nodes the graph does not have means the graph was edited after export: MetadataError."""
    source = "the model"
    if isinstance(model, (str, Path)):
        import onnx  # here only: the artefact layer imports no ONNX at import time

        source = str(model)
        model = onnx.load(str(model), load_external_data=False)
    nodes = list(model.graph.node)
    raw: Optional[str] = next((p.value for p in model.metadata_props if p.key == KEY), None)
    if raw is None:
        return legacy_keep_float(nodes)
    try:
        record = KeepFloat.from_dict(json.loads(raw), source)
    except ValueError:
        raise MetadataError(f"{source}: {KEY} is not valid JSON; re-export the model with `prn-edge export`") from None
    missing = sorted(set(record.nodes) - {n.name for n in nodes})
    if missing:
        raise MetadataError(f"{source}: its keep-in-float list names nodes the graph does not have ({missing[:3]}"
                            f"{' ...' if len(missing) > 3 else ''}): the graph was changed after export; export it "
                            "again with `prn-edge export` and repeat the later steps")
    return record
