"""Prototypes re-fitted on the INT8 encoder's own features.

The prototypes are k-means centres of the *FP32* encoder's features of the training normals. An INT8 encoder
computes slightly different features, and every such difference lands in the residual |f - p|^2 that the
head reads as "not normal": the residual maps of normal images brighten and the map loses contrast. So the
INT8 artefact gets its own prototypes: the same k-means (same images, K, seed and softness) over the features
its quantized encoder produces, and the residual normalization re-measured on them; a scale's distance memory
and the joint distance memory (of the distance scales' features joined) likewise. The head is unchanged;
nothing but training normals is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ..artefact import read_keep_float
from ..errors import BuildError

MEMORY = ("memory_t", "memory_sq", "memory_scale")  # a scale's distance memory (model.prototypes.ScalePrototypes)
JOINT_PREFIX = "prn.distance.memory."  # the joint distance memory's initializers (model.prototypes.JointMemory)
JOINT_SCOPE = "/distance/memory/"


def _scale_nodes(graph: onnx.GraphProto, scope: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if n.name.startswith(scope)]


def _external_inputs(graph: onnx.GraphProto, scope: str) -> set[str]:
    """The tensors that enter the nodes of `scope` from outside it (constants apart)."""
    nodes = _scale_nodes(graph, scope)
    inside = {o for n in nodes for o in n.output}
    consts = {t.name for t in graph.initializer}
    consts |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return {x for n in nodes for x in n.input if x and x not in inside and x not in consts}


def _feature_tensor(graph: onnx.GraphProto, i: int, scope: str) -> str:
    """The one tensor that enters scale i's prototype search from outside (the encoder feature map)."""
    external = _external_inputs(graph, scope)
    if len(external) != 1:
        raise BuildError(f"prototype scale {i}: expected one feature input, found {sorted(external)}; is this a "
                         "prn_edge export?")
    return external.pop()


def _initializers(graph: onnx.GraphProto, i: int, scope: str) -> dict[str, str]:
    """Initializer names of scale i: protos (K, D), its transpose for the distance MatMul, sq_norm, res_scale,
    and the distance memory's memory_t (D, M), memory_sq, memory_scale when the scale keeps one."""
    names = {t.name for t in graph.initializer}
    out = {k: f"prn.prototypes.{i}.{k}" for k in ("protos", "sq_norm", "res_scale")}
    missing = [v for v in out.values() if v not in names]
    if missing:
        raise BuildError(f"prototype initializers {missing} not in the model; is this a prn_edge export?")
    memory = {k: f"prn.prototypes.{i}.{k}" for k in MEMORY}
    if any(v in names for v in memory.values()):
        missing = [v for v in memory.values() if v not in names]
        if missing:
            raise BuildError(f"distance memory initializers {missing} not in the model; is this a prn_edge export?")
        out.update(memory)
    mm = next((n for n in _scale_nodes(graph, scope) if n.op_type == "MatMul" and n.input[1] in names
               and n.input[1] not in (out["protos"], memory["memory_t"])), None)
    if mm is not None:
        out["protos_t"] = mm.input[1]
    return out


def _joint_memory(graph: onnx.GraphProto) -> Optional[tuple[dict[str, str], list[str]]]:
    """The joint distance memory's initializer names and the feature tensors it reads, or None without one."""
    names = {t.name for t in graph.initializer}
    inits = {k: JOINT_PREFIX + k for k in MEMORY}
    if not any(v in names for v in inits.values()):
        return None
    missing = [v for v in inits.values() if v not in names]
    feats = sorted(_external_inputs(graph, JOINT_SCOPE))
    if missing or not feats:
        raise BuildError(f"joint distance memory: initializers {missing} missing or {len(feats)} feature inputs "
                         f"found under {JOINT_SCOPE}; is this a prn_edge export?")
    return inits, feats


def _refit_joint(inits: dict, names: dict[str, str], arrays: list[np.ndarray], seed: int) -> dict:
    """Fit the joint memory on the features `arrays` (each scale's maps of all the images) and write its
    initializers; the scales are joined finest first, as JointMemory does."""
    import torch

    from ..model.prototypes import JointMemory

    arrays = sorted(arrays, key=lambda a: -a.shape[2])  # finest (largest) map first
    fine = arrays[0].shape[2]
    size = numpy_helper.to_array(inits[names["memory_t"]]).shape[1]
    mem = JointMemory(tuple(a.shape[1] for a in arrays), tuple(fine // a.shape[2] for a in arrays), size,
                      tuple(arrays[0].shape[2:]))
    old_scale = float(numpy_helper.to_array(inits[names["memory_scale"]]).reshape(-1)[0])
    mem.fit([torch.from_numpy(a.astype(np.float32)) for a in arrays], seed=seed + 1000)  # as PRN.fit_prototypes
    for key in MEMORY:
        shape = numpy_helper.to_array(inits[names[key]]).shape
        inits[names[key]].CopyFrom(numpy_helper.from_array(
            getattr(mem, key).numpy().astype(np.float32).reshape(shape), names[key]))
    return {"size": int(size), "channels": int(sum(a.shape[1] for a in arrays)), "scale_before": old_scale,
            "scale_after": float(mem.memory_scale)}


def refit_prototypes(model_path: Path, out_path: Path, inputs: Sequence[np.ndarray], mode: str, softness: float,
                     seed: int, scales: Optional[int] = None, threads: int = 0,
                     features_from: Optional[Path] = None) -> dict:
    """Re-fit every scale's prototypes of `model_path` on the features it computes for `inputs` (model-ready
    batches of the training normals) and write the result to `out_path`. Returns what changed per scale.
    The scales are the artefact's prototype scopes (prn_edge.artefact.keep_float); `scales` takes the first few.
    features_from: another model of the same graph (an OpenVINO IR that NNCF quantized from `model_path`) whose
    features are fitted instead; the prototypes are still written into `model_path`'s graph."""
    import torch

    from ..model.prototypes import ScalePrototypes
    from .session import model_runner

    model = onnx.load(str(model_path))
    g = model.graph
    scopes = read_keep_float(model).prototypes[:scales]
    if not scopes:
        raise BuildError(f"{model_path} has no prototype search (no prototype scopes in its keep-in-float record or "
                         "node names); is this a prn_edge export?")
    scales = len(scopes)
    feats = [_feature_tensor(g, i, scope) for i, scope in enumerate(scopes)]
    joint = _joint_memory(g)
    joint_feats = [t for t in joint[1] if t not in feats] if joint else []
    run = model_runner(Path(features_from or model_path), g.input[0].name, feats + joint_feats, threads)
    per_tensor: dict[str, list[np.ndarray]] = {t: [] for t in feats + joint_feats}
    for x in inputs:
        for t, f in zip(feats + joint_feats, run(x)):
            per_tensor[t].append(f)
    inits = {t.name: t for t in g.initializer}
    report = []
    for i in range(scales):
        names = _initializers(g, i, scopes[i])
        old = numpy_helper.to_array(inits[names["protos"]])
        f = torch.from_numpy(np.concatenate(per_tensor[feats[i]]).astype(np.float32))
        k, c = old.shape[0], f.shape[1]
        memory = numpy_helper.to_array(inits[names["memory_t"]]).shape[1] if "memory_t" in names else 0
        sp = ScalePrototypes(mode, k, c, tuple(f.shape[2:]), softness, memory)
        sp.fit(f, seed=seed + i)
        p = sp.protos.numpy().astype(np.float32)
        old_scale = float(numpy_helper.to_array(inits[names["res_scale"]]).reshape(-1)[0])
        new = {"protos": p, "sq_norm": (p * p).sum(1).astype(np.float32),
               "res_scale": np.full(numpy_helper.to_array(inits[names["res_scale"]]).shape, float(sp.res_scale),
                                    np.float32)}
        if "protos_t" in names:
            new["protos_t"] = np.ascontiguousarray(p.T)
        if memory:
            new.update({key: getattr(sp, key).numpy().astype(np.float32).reshape(
                numpy_helper.to_array(inits[names[key]]).shape) for key in MEMORY})
        for key, arr in new.items():
            inits[names[key]].CopyFrom(numpy_helper.from_array(arr, names[key]))
        report.append({"scale": i, "k": int(k), "images": int(f.shape[0]), "res_scale_before": old_scale,
                       "res_scale_after": float(sp.res_scale), "distance_memory": int(memory)})
    result = {"images": int(sum(len(x) for x in inputs)), "scales": report}
    if joint:
        result["joint_memory"] = _refit_joint(inits, joint[0], [np.concatenate(per_tensor[t]) for t in joint[1]],
                                              seed)
    onnx.save(model, str(out_path))
    return result
