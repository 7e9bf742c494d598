"""FP32 ONNX -> mixed FP16/FP32 ONNX, for TensorRT 11's strongly typed networks (and any FP16 runtime).

TensorRT 11 removed the FP16 builder flag: precision comes from the tensor types in the ONNX, and NVIDIA's
migration guide says to convert the model to mixed precision before building (ModelOpt AutoCast,
"tensorrt-10x-to-11x-python-api-patterns": BuilderFlag.FP16 removed, "convert your FP32 ONNX model to mixed
precision before building, then build with a strongly typed network"). This is our own small version of
that conversion, tuned to the PRN graph and with no dependency beyond `onnx`:

- a node computes in FP16 when its op is in a list of ops whose FP16 kernels are well-behaved (convolution,
  matrix products, element-wise arithmetic, pooling, resizing, layout ops) and it is not sensitive;
- sensitive nodes stay FP32: the artefact's keep-in-float list (prn_edge.artefact.keep_float: the prototype
  search and residual, the distance map, the last convolution and everything after it), Softmax / TopK /
  ReduceMean / Sigmoid, normalisations (FP16 overflow in LayerNorm, TensorRT #2564), and every op not on the
  FP16 list;
- FP32 weights used only by FP16 nodes are stored as FP16; a weight shared with an FP32 node gets an FP16
  copy; Cast nodes are inserted where an FP16 tensor meets an FP32 consumer and the other way round (one
  Cast per tensor and direction, shared by all consumers);
- graph inputs and outputs keep their types (keep_io_types), so the runtime feeds and reads the same
  buffers as for the FP32 model.

Only the inputs that carry the op's data type are converted (Resize's `scales` stays FLOAT as ONNX
requires; Reshape's shape, Split's sizes stay INT64).
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..artefact import read_keep_float

# Ops that may compute in FP16, and which of their inputs carry the floating-point type T
# (None = every input). Outputs of these ops all have type T.
FP16_OPS: dict[str, Optional[tuple[int, ...]]] = {
    "Conv": None, "ConvTranspose": None, "MatMul": None, "Gemm": None,
    "Add": None, "Sub": None, "Mul": None, "Div": None, "Max": None, "Min": None, "Sum": None, "Mean": None,
    "Relu": (0,), "LeakyRelu": (0,), "PRelu": None, "Clip": None, "HardSwish": (0,), "HardSigmoid": (0,),
    "Tanh": (0,), "Neg": (0,), "Abs": (0,), "Elu": (0,), "Selu": (0,),
    "AveragePool": (0,), "MaxPool": (0,), "GlobalAveragePool": (0,), "GlobalMaxPool": (0,),
    "Resize": (0,), "Upsample": (0,),
    "Concat": None, "Split": (0,), "Slice": (0,), "Reshape": (0,), "Transpose": (0,), "Flatten": (0,),
    "Squeeze": (0,), "Unsqueeze": (0,), "Identity": (0,), "Expand": (0,), "Tile": (0,), "Pad": (0, 2),
    "Gather": (0,), "DepthToSpace": (0,), "SpaceToDepth": (0,), "Where": (1, 2),
}
# Sensitive op types that stay FP32 wherever they are.
DEFAULT_KEEP_FP32_OPS = ("Softmax", "LogSoftmax", "TopK", "ReduceMean", "Sigmoid", "BatchNormalization",
                         "LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization",
                         "MeanVarianceNormalization", "RMSNormalization", "ArgMin", "ArgMax", "Pow", "Exp", "Log",
                         "Sqrt", "ReduceSum", "ReduceSumSquare", "ReduceL2")

_FLOAT, _HALF = TensorProto.FLOAT, TensorProto.FLOAT16


class MixedPrecisionError(ValueError):
    """The model cannot be converted (already reduced precision, quantized, or malformed)."""


def fp32_nodes(model: onnx.ModelProto, keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS,
               keep_fp32_names: Optional[Iterable[str]] = None, keep_tail: bool = True,
               keep_fp32_nodes: Iterable[str] = ()) -> set[str]:
    """Names of the nodes that must compute in FP32 (the sensitive set described in the module doc).

    Also used by the TensorRT 8.5-10.x FP16 build to pin the same layers to FP32 with precision constraints.
    keep_fp32_names: node-name fragments that stay FP32; None = the artefact's prototype search and distance map.
    keep_tail: the artefact's tail (the last Conv and every node after it) stays FP32.
    """
    record = read_keep_float(model)
    keep = set(record.tail) if keep_tail else set()
    if keep_fp32_names is None:
        keep |= set(record.search)
        frags: tuple[str, ...] = ()
    else:
        frags = tuple(keep_fp32_names)
    ops, extra = set(keep_fp32_ops), set(keep_fp32_nodes)
    for n in model.graph.node:
        if (n.op_type in ops or n.name in extra or any(f in n.name for f in frags)
                or n.op_type not in FP16_OPS or n.domain not in ("", "ai.onnx")):
            keep.add(n.name)
    return keep


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        g = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception as e:  # pragma: no cover - malformed models
        raise MixedPrecisionError(f"ONNX shape inference failed ({e}); re-export the model") from None
    types: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 1
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out


def to_mixed_fp16(onnx_model: onnx.ModelProto, keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                  keep_fp32_names: Optional[Sequence[str]] = None, keep_tail: bool = True,
                  keep_fp32_nodes: Sequence[str] = (), stats: Optional[dict] = None) -> onnx.ModelProto:
    """A copy of `onnx_model` computing in FP16 except the sensitive nodes; inputs/outputs keep their types.

    keep_fp32_ops / keep_fp32_names / keep_tail / keep_fp32_nodes: what stays FP32 (see `fp32_nodes`).
    stats: if given, filled with counts (fp16_nodes, fp32_nodes, casts, fp16_initializers, ...).
    Metadata (metadata_props) is carried over unchanged.
    """
    src = onnx_model
    for n in src.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            raise MixedPrecisionError("the model has Q/DQ nodes (INT8): build it as INT8, or convert the FP32 "
                                      "model to FP16 instead")
    if any(i.data_type == _HALF for i in src.graph.initializer):
        raise MixedPrecisionError("the model already holds FP16 weights; give the FP32 export")

    names = [n.name for n in src.graph.node]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise MixedPrecisionError("every node needs a unique name to be placed in FP16 or FP32; re-export the model "
                                  "with prn_edge.export")
    model = onnx.ModelProto()
    model.CopyFrom(src)
    g = model.graph
    types = _tensor_types(model)
    keep = fp32_nodes(model, keep_fp32_ops, keep_fp32_names, keep_tail, keep_fp32_nodes)
    low = {n.name for n in g.node if n.name not in keep}

    inits = {i.name: i for i in g.initializer}
    graph_inputs = {i.name for i in g.input}
    graph_outputs = {o.name for o in g.output}
    taken = {t for n in g.node for t in list(n.input) + list(n.output)} | set(inits) | graph_inputs
    taken |= {n.name for n in g.node}

    def t_inputs(node) -> list[int]:
        idx = FP16_OPS[node.op_type]
        return list(range(len(node.input))) if idx is None else [i for i in idx if i < len(node.input)]

    # Which initializers are used where: FP16 data inputs of low nodes vs anything else.
    low_uses: Counter = Counter()
    other_uses: Counter = Counter()
    for n in g.node:
        t_idx = set(t_inputs(n)) if n.name in low else set()
        for i, name in enumerate(n.input):
            if name in inits:
                (low_uses if i in t_idx else other_uses)[name] += 1
    for name in graph_outputs:
        if name in inits:
            other_uses[name] += 1

    half_name: dict[str, str] = {}  # FP32 tensor -> its FP16 version
    float_name: dict[str, str] = {}  # FP16 tensor -> its FP32 version (Cast back)
    new_inits: list[onnx.TensorProto] = []
    converted_inits = 0
    for name, init in inits.items():
        if init.data_type != _FLOAT or not low_uses[name]:
            continue
        arr = numpy_helper.to_array(init)
        if np.any(np.abs(arr[np.isfinite(arr)]) > 65504):
            continue  # out of FP16 range: leave FP32, a Cast will be inserted (and saturate) - rare
        half = numpy_helper.from_array(arr.astype(np.float16), name)
        if other_uses[name]:
            half.name = _unique(name + "_fp16", taken)
            new_inits.append(half)
            half_name[name] = half.name
        else:
            init.CopyFrom(half)
            half_name[name] = name  # converted in place
        converted_inits += 1

    # Tensors produced in FP16: float outputs of low nodes. Their original names keep the FP16 value.
    produced_half: set[str] = set()
    for n in g.node:
        if n.name in low:
            for o in n.output:
                if o and types.get(o) == _FLOAT:
                    produced_half.add(o)
    for name in produced_half:
        half_name[name] = name

    casts: list[tuple[int, onnx.NodeProto]] = []  # (insert before node index, cast)
    first_use: dict[str, int] = {}
    for idx, n in enumerate(g.node):
        for name in n.input:
            first_use.setdefault(name, idx)

    def cast(name: str, to: int, suffix: str) -> str:
        new = _unique(f"{name}{suffix}", taken)
        node = helper.make_node("Cast", [name], [new], name=_unique(f"{name}{suffix}/Cast", taken), to=to)
        casts.append((first_use.get(name, len(g.node)), node))
        types[new] = to
        return new

    def as_half(name: str) -> str:
        if name not in half_name:
            half_name[name] = cast(name, _HALF, "_fp16")
        return half_name[name]

    def as_float(name: str) -> str:
        if name not in float_name:
            float_name[name] = cast(name, _FLOAT, "_fp32")
        return float_name[name]

    for n in g.node:
        if n.name in low:
            t_idx = set(t_inputs(n))
            for i, name in enumerate(n.input):
                if not name:
                    continue
                if i in t_idx and types.get(name) == _FLOAT:
                    n.input[i] = as_half(name)
        else:
            for i, name in enumerate(n.input):
                if name in produced_half:  # an FP16 tensor meets an FP32 consumer
                    n.input[i] = as_float(name)

    # keep_io_types: a graph output produced in FP16 is renamed and cast back under its own name.
    tail_casts = []
    for out in g.output:
        if out.name in produced_half:
            inner = _unique(out.name + "_fp16", taken)
            for n in list(g.node) + [c for _, c in casts]:
                for i, o in enumerate(n.output):
                    if o == out.name:
                        n.output[i] = inner
                for i, name in enumerate(n.input):
                    if name == out.name:
                        n.input[i] = inner
            tail_casts.append(helper.make_node("Cast", [inner], [out.name], name=_unique(out.name + "/Cast", taken),
                                               to=_FLOAT))

    # Assemble: each Cast goes right before its first consumer (keeps topological order).
    by_pos: dict[int, list] = {}
    for pos, node in casts:
        by_pos.setdefault(pos, []).append(node)
    old = list(g.node)
    del g.node[:]
    for i, n in enumerate(old):
        g.node.extend(by_pos.get(i, []))
        g.node.append(n)
    g.node.extend(by_pos.get(len(old), []))
    g.node.extend(tail_casts)
    g.initializer.extend(new_inits)

    # value_info: FP16 tensors change type; the rest is left for shape inference to refill.
    for vi in g.value_info:
        if vi.name in produced_half and vi.type.HasField("tensor_type"):
            vi.type.tensor_type.elem_type = _HALF
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:  # pragma: no cover - a bug here, not the user's
        raise MixedPrecisionError(f"the converted model does not validate: {e}") from None

    if stats is not None:
        stats.update({"fp16_nodes": len(low), "fp32_nodes": len(keep), "casts": len(casts) + len(tail_casts),
                      "fp16_initializers": converted_inits, "fp32_kept_ops": dict(Counter(
                          n.op_type for n in old if n.name in keep))})
    return model


def has_qdq(model: onnx.ModelProto) -> bool:
    """True when the model is explicitly quantized (QuantizeLinear/DequantizeLinear nodes)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def qdq_types(model: onnx.ModelProto) -> set[str]:
    """Element types of the Q/DQ zero points ("int8", "uint8", ...): TensorRT takes symmetric INT8 only."""
    inits = {i.name: i for i in model.graph.initializer}
    names = {TensorProto.INT8: "int8", TensorProto.UINT8: "uint8", TensorProto.INT16: "int16",
             TensorProto.UINT16: "uint16", TensorProto.INT32: "int32"}
    out = set()
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if zp is None:
                # no zero point: the quantized type defaults to uint8 (QuantizeLinear) unless output_dtype says
                out.add("uint8" if n.op_type == "QuantizeLinear" and not any(
                    a.name == "output_dtype" for a in n.attribute) else "int8")
            else:
                out.add(names.get(zp.data_type, str(zp.data_type)))
    return out


__all__ = ["to_mixed_fp16", "fp32_nodes", "has_qdq", "qdq_types", "MixedPrecisionError", "FP16_OPS",
           "DEFAULT_KEEP_FP32_OPS"]
