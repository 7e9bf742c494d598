"""ONNX graph clean-up after the TorchScript exporter: fold what is static, so TensorRT sees plain layers.

The tracer records shape arithmetic even for dimensions that never change (`t.shape[-1] ** -0.5` becomes
Shape -> Gather -> Cast -> Pow; ZeroPad2d becomes ConstantOfShape/Slice/Cast feeding Pad), and it writes
Identity nodes for weights shared by several layers. This pass:

- replaces Shape (and Gather/Slice of it) by constants wherever the selected dimensions are static, which
  is every dimension but the batch;
- evaluates every node whose inputs are all constants (onnx.reference) and stores the result as an
  initializer;
- turns Constant nodes into initializers and drops Identity nodes by renaming their consumers;
- removes nodes and initializers nothing uses.

Only standard-domain nodes are folded, never a node producing a graph output.
"""
from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np
import onnx
from onnx import numpy_helper

# Never fold these even with constant inputs (random generators are not constants).
_NO_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
_MAX_FOLD_ELEMENTS = 1 << 24  # do not materialise huge tensors from tiny ones (e.g. ConstantOfShape)


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items(), key=lambda kv: (-kv[1], kv[0])))


def _constant_value(node: onnx.NodeProto) -> Optional[np.ndarray]:
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None  # sparse or string constants: left alone


def _static_dims(model: onnx.ModelProto) -> dict[str, list[Optional[int]]]:
    """name -> dims (None where not a fixed number) after ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    g = inferred.graph
    out: dict[str, list[Optional[int]]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for init in g.initializer:
        out[init.name] = list(init.dims)
    return out


def _evaluate(node: onnx.NodeProto, inputs: list[Optional[np.ndarray]], opset: int) -> Optional[list[np.ndarray]]:
    from onnx.reference import ReferenceEvaluator

    feeds = {}
    for name, value in zip(node.input, inputs):
        if name:
            feeds[name] = value
    try:
        ev = ReferenceEvaluator(node, opsets={"": opset})
        results = ev.run(None, feeds)
    except Exception:
        return None  # leave the node in the graph; folding is an optimisation, not a requirement
    return [np.asarray(r) for r in results]


def fold_static(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of `model` with static shape arithmetic and constant subgraphs folded (see module doc)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    dims = _static_dims(model)
    graph_outputs = {o.name for o in g.output}

    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    partial: dict[str, list[Optional[int]]] = {}  # 1-D int64 tensors with some entries known (shape vectors)
    rename: dict[str, str] = {}
    kept: list[onnx.NodeProto] = []

    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    for node in g.node:
        for i, name in enumerate(node.input):
            if name:
                node.input[i] = resolve(name)
        std = node.domain in ("", "ai.onnx")
        produces_output = any(o in graph_outputs for o in node.output)

        if std and node.op_type == "Constant" and not produces_output:
            value = _constant_value(node)
            if value is not None:
                consts[node.output[0]] = value
                continue
        if std and node.op_type == "Identity" and not produces_output:
            rename[node.output[0]] = node.input[0]
            continue
        if std and node.op_type == "Shape" and not produces_output:
            shape = dims.get(node.input[0])
            if node.input[0] in consts:
                shape = list(consts[node.input[0]].shape)
            if shape is not None:
                attrs = {a.name: a.i for a in node.attribute}
                sel = shape[slice(attrs.get("start", 0), attrs.get("end", None))]
                if all(d is not None for d in sel):
                    consts[node.output[0]] = np.array(sel, dtype=np.int64)
                    continue
                partial[node.output[0]] = sel
        if std and node.op_type == "Gather" and node.input[0] in partial and node.input[1] in consts \
                and not produces_output:
            idx = consts[node.input[1]]
            vec = partial[node.input[0]]
            picked = [vec[int(i)] for i in np.atleast_1d(idx).ravel()]
            if all(p is not None for p in picked):
                consts[node.output[0]] = np.array(picked, dtype=np.int64).reshape(idx.shape)
                continue
        if std and node.op_type == "Slice" and node.input[0] in partial and not produces_output \
                and all(n in consts for n in node.input[1:] if n):
            vec = partial[node.input[0]]
            starts, ends = consts[node.input[1]], consts[node.input[2]]
            steps = consts[node.input[4]] if len(node.input) > 4 and node.input[4] else np.array([1])
            sl = vec[slice(int(starts[0]), int(min(ends[0], len(vec))), int(steps[0]))]
            if all(p is not None for p in sl):
                consts[node.output[0]] = np.array(sl, dtype=np.int64)
                continue
            partial[node.output[0]] = sl
        inputs_const = all((not n) or n in consts for n in node.input) and len(node.input) > 0
        if std and inputs_const and node.op_type not in _NO_FOLD and not produces_output:
            values = _evaluate(node, [consts.get(n) if n else None for n in node.input], opset)
            if values is not None and all(v.size <= _MAX_FOLD_ELEMENTS for v in values):
                for name, v in zip(node.output, values):
                    if name:
                        consts[name] = v
                continue
        kept.append(node)

    # graph outputs that were renamed away would dangle: Identity producing outputs is kept above.
    used: set[str] = set(o.name for o in g.output)
    live: list[onnx.NodeProto] = []
    for node in reversed(kept):
        if any(o in used for o in node.output) or node.op_type in _NO_FOLD:
            live.append(node)
            used.update(n for n in node.input if n)
    live.reverse()

    del g.node[:]
    g.node.extend(live)
    del g.initializer[:]
    graph_inputs = {i.name for i in g.input}
    for name in sorted(n for n in used if n in consts and n not in graph_inputs):
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(consts[name]), name))
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)
