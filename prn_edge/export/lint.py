"""Will this ONNX parse and build with TensorRT X? A static check, for hosts without TensorRT.

Sources (onnx/onnx-tensorrt, docs/operators.md of each release branch):
- 8.5 (JetPack 5.1): "TensorRT 8.5 supports operators up to Opset 17"; INT64 is cast down to INT32;
  UINT8 network I/O is imported since 8.5 GA (onnx-tensorrt PR #879); TopK `K` must be an initializer
  (dynamic K only from 8.6, PR #904); Conv/ConvTranspose weights must be initializers.
- 10.x: opset 9..20 (10.0); INT64 native; "UINT8 is only supported as network input or output tensor types";
  TopK "`sorted` must be 1. `K` input must be less than 3840"; Resize: modes nearest/linear, coordinate modes
  half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric, align_corners; no antialias; aspect
  ratio policy stretch only.
- 11.x: as the 10.15 matrix (opset 9..24), plus Swish (11.0 parser notes); strongly typed networks only.
Beyond plain support, prn_edge forbids a few ops in its own graphs (POLICY_BANNED): they are either not
supported at all, or supported with restrictions that make engines fragile across versions and precisions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .errors import ExportError

DEFAULT_TARGETS = ("8.5", "10", "11")

# Operators with "Y" in onnx-tensorrt 8.5's support matrix.
_TRT85 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool
GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GRU HardSigmoid HardSwish Identity If ImageScaler
InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
# 10.0 adds (10.x matrix) ...
_TRT10 = _TRT85 | frozenset("""
BlackmanWindow CastLike GroupNormalization HammingWindow HannWindow Hardmax IsInf LayerNormalization STFT
""".split())
# ... and the 11.x parser (10.15 matrix plus Swish).
_TRT11 = _TRT10 | frozenset("""
Attention DeformConv Gelu Mish RMSNormalization RotaryEmbedding Swish TensorScatter
""".split())

_TARGETS = {
    "8.5": {"ops": _TRT85, "opset": (1, 17), "ir_max": 8, "int64": "cast", "dynamic_topk": False},
    "10": {"ops": _TRT10, "opset": (9, 20), "ir_max": 10, "int64": "native", "dynamic_topk": True},
    "11": {"ops": _TRT11, "opset": (9, 24), "ir_max": 11, "int64": "native", "dynamic_topk": True},
}

SEQUENCE_OPS = frozenset("""
SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap
SplitToSequence ConcatFromSequence Optional OptionalGetElement OptionalHasElement
""".split())
CONTROL_FLOW = frozenset({"Loop", "If", "Scan"})
# Not in any prn_edge graph by design (see prn_edge.model.prototypes: matrix products instead of cdist).
POLICY_BANNED = {
    "Einsum": "Einsum (TensorRT: no ellipsis, diagonal or broadcasting; slow in reduced precision); use MatMul",
    "Col2Im": "Col2Im (unfold/fold) is not supported by TensorRT",
    "Im2Col": "Im2Col is not an ONNX op TensorRT knows",
    "NonZero": "NonZero makes data-dependent shapes",
    "Unique": "Unique makes data-dependent shapes",
    "Compress": "Compress makes data-dependent shapes",
}
_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_MODES = {"nearest", "linear"}
_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_TOPK_MAX = 3840
_BAD_TYPES = {TensorProto.STRING: "STRING", TensorProto.COMPLEX64: "COMPLEX64", TensorProto.COMPLEX128: "COMPLEX128",
              TensorProto.UINT16: "UINT16", TensorProto.UINT32: "UINT32", TensorProto.UINT64: "UINT64",
              TensorProto.INT16: "INT16"}


@dataclass(frozen=True)
class LintIssue:
    target: str  # TensorRT version, or "all"
    severity: str  # "error" | "warning"
    node: str  # node name ("" for graph-level issues)
    op: str
    message: str

    def __str__(self) -> str:
        where = f"node {self.node!r} ({self.op})" if self.op else "graph"
        return f"[TensorRT {self.target}] {self.severity}: {where}: {self.message}"


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:
        g = model.graph
    types = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def lint_for_tensorrt(model: onnx.ModelProto, targets: Sequence[str] = DEFAULT_TARGETS) -> list[LintIssue]:
    """Issues that would stop (errors) or degrade (warnings) a TensorRT build of `model`, per target version."""
    unknown = [t for t in targets if t not in _TARGETS]
    if unknown:
        raise ExportError(f"unknown TensorRT target(s) {unknown}; choose from {sorted(_TARGETS)}")
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    inits = {i.name: i for i in g.initializer}
    consts = set(inits) | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    types = _types(model)
    graph_inputs = {i.name for i in g.input if i.name not in inits}
    graph_outputs = {o.name for o in g.output}
    issues: list[LintIssue] = []

    def add(target, severity, node, message):
        issues.append(LintIssue(target, severity, node.name if node is not None else "",
                                node.op_type if node is not None else "", message))

    # graph-level, target-independent
    for vi in g.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        dyn = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
        if any(i != 0 for i in dyn):
            add("all", "error", None, f"input {vi.name!r} has dynamic non-batch dimensions {dyn}: prn_edge engines "
                                     "need static H/W (one optimisation profile over the batch only)")
    for name, t in types.items():
        if t in _BAD_TYPES:
            add("all", "error", None, f"tensor {name!r} has type {_BAD_TYPES[t]}, which TensorRT cannot hold")
        if t == TensorProto.UINT8 and name not in graph_inputs and name not in graph_outputs:
            add("all", "error", None, f"tensor {name!r} is UINT8 inside the graph: TensorRT takes UINT8 only as "
                                      "network input/output, cast right after the input")

    for target in targets:
        tv = _TARGETS[target]
        lo, hi = tv["opset"]
        if opset is None or not lo <= opset <= hi:
            add(target, "error", None, f"opset {opset} is outside the range TensorRT {target} parses ({lo}..{hi}); "
                                       "export with opset=17")
        if model.ir_version > tv["ir_max"]:
            add(target, "warning", None, f"IR version {model.ir_version} is newer than TensorRT {target}'s parser "
                                         f"knows ({tv['ir_max']}); it may refuse the model")
        if tv["int64"] == "cast":
            for name, init in inits.items():
                if init.data_type == TensorProto.INT64:
                    arr = numpy_helper.to_array(init)
                    if arr.size and (arr.max() > np.iinfo(np.int32).max or arr.min() < np.iinfo(np.int32).min):
                        add(target, "error", None, f"INT64 initializer {name!r} holds values beyond INT32, which "
                                                   f"TensorRT {target} clamps when casting INT64 down")
        for node in g.node:
            issues.extend(_node_issues(node, target, tv, consts, inits, types, graph_inputs))
    # the same graph-level issue can repeat per target only where it is target-specific; dedupe "all"
    seen, unique = set(), []
    for i in issues:
        key = (i.target, i.severity, i.node, i.op, i.message)
        if key not in seen:
            seen.add(key)
            unique.append(i)
    return unique


def _node_issues(node, target, tv, consts, inits, types, graph_inputs) -> Iterable[LintIssue]:
    op, a = node.op_type, _attrs(node)

    def issue(message, severity="error"):
        return LintIssue(target, severity, node.name, op, message)

    if node.domain not in ("", "ai.onnx"):
        yield issue(f"custom-domain op {node.domain}::{op} needs a TensorRT plugin")
        return
    if op in SEQUENCE_OPS:
        yield issue("sequence/optional ops are not supported by any TensorRT ONNX parser")
        return
    if op in CONTROL_FLOW:
        yield issue("control flow (Loop/If/Scan) is not allowed in prn_edge graphs: TensorRT builds it with "
                    "restrictions (static trip counts, same-rank branches) and it blocks layer fusion")
        return
    if op in POLICY_BANNED:
        yield issue(f"banned in prn_edge graphs: {POLICY_BANNED[op]}")
        return
    if op not in tv["ops"]:
        yield issue(f"{op} is not supported by the TensorRT {target} ONNX parser (onnx-tensorrt operators.md)")
        return
    if op in ("ArgMin", "ArgMax") and int(a.get("select_last_index", 0)) != 0:
        yield issue("select_last_index=1 is a known hazard: TensorRT reduces with a TopK layer that keeps the "
                    "first index on ties; use the default (0)")
    if op == "TopK":
        k_name = node.input[1] if len(node.input) > 1 else ""
        if k_name not in consts:
            if not tv["dynamic_topk"]:
                yield issue(f"K comes from a computed tensor ({k_name!r}); TensorRT {target} needs K as an "
                            "initializer (dynamic K only from 8.6)")
            else:
                yield issue("K is computed at run time; TensorRT then cannot check K < 3840 at build time",
                            "warning")
        elif k_name in inits:
            k = numpy_helper.to_array(inits[k_name]).ravel()
            if k.size and int(k[0]) >= _TOPK_MAX:
                yield issue(f"K={int(k[0])}: TensorRT's TopK needs K < {_TOPK_MAX}")
        if int(a.get("sorted", 1)) != 1:
            yield issue("sorted=0 is not supported (TensorRT needs sorted=1)")
    if op == "Resize":
        mode = _s(a.get("mode", "nearest"))
        coord = _s(a.get("coordinate_transformation_mode", "half_pixel"))
        if mode not in _RESIZE_MODES:
            yield issue(f"Resize mode {mode!r} is not supported (TensorRT: {sorted(_RESIZE_MODES)})")
        if coord not in _RESIZE_COORD:
            yield issue(f"coordinate_transformation_mode {coord!r} is not supported (TensorRT: {sorted(_RESIZE_COORD)})")
        if mode == "nearest" and _s(a.get("nearest_mode", "round_prefer_floor")) not in _NEAREST_MODES:
            yield issue(f"nearest_mode {_s(a.get('nearest_mode'))!r} is not supported")
        if int(a.get("antialias", 0)):
            yield issue("antialias=1 is not supported by TensorRT's Resize")
        if _s(a.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
            yield issue("keep_aspect_ratio_policy other than 'stretch' is not supported")
        scales = node.input[2] if len(node.input) > 2 else ""
        sizes = node.input[3] if len(node.input) > 3 else ""
        if (scales and scales not in consts) or (sizes and sizes not in consts):
            yield issue("Resize scales/sizes are computed at run time (shape arithmetic); export with static "
                        "sizes so the engine has fixed shapes", "warning")
    if op in ("Conv", "ConvTranspose") and target == "8.5" and len(node.input) > 1 and node.input[1] not in inits:
        yield issue("weights W must be an initializer for TensorRT 8.5")
    if op in ("AveragePool", "MaxPool", "LpPool") and any(d != 1 for d in a.get("dilations", []) or []):
        yield issue("pooling dilations other than 1 are not supported")
    if op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        zp = inits.get(node.input[2])
        if zp is None or np.any(numpy_helper.to_array(zp) != 0):
            yield issue("zero point must be a constant 0 (symmetric quantization) for TensorRT")
    if op in ("Slice", "Squeeze", "Unsqueeze") and target == "8.5":
        axes_idx = 3 if op == "Slice" else 1
        if len(node.input) > axes_idx and node.input[axes_idx] and node.input[axes_idx] not in consts:
            yield issue("axes must be an initializer for TensorRT 8.5")
    if op.startswith("Reduce") and len(node.input) > 1 and node.input[1] and node.input[1] not in consts:
        yield issue("reduction axes must be an initializer")
    if op == "Cast" and node.input and types.get(node.input[0]) == TensorProto.UINT8 \
            and node.input[0] not in graph_inputs:
        yield issue("Cast from an internal UINT8 tensor: TensorRT supports UINT8 only at network I/O")
    if op == "Shape":
        yield issue("Shape op left in the graph: fine for the dynamic batch, but every static dimension should "
                    "have been folded", "warning")


def check_tensorrt_compatible(path: str | Path | onnx.ModelProto, targets: Sequence[str] = DEFAULT_TARGETS,
                              warnings_as_errors: bool = False) -> list[LintIssue]:
    """Raise ExportError naming each offending node and op; return the warnings when the graph is clean."""
    if isinstance(path, onnx.ModelProto):
        model, where = path, "model"
    else:
        where = str(path)
        try:
            model = onnx.load(str(path))
        except Exception as e:
            raise ExportError(f"{path} is not a readable ONNX model ({e.__class__.__name__}); export it again") from None
    issues = lint_for_tensorrt(model, targets)
    bad = [i for i in issues if i.severity == "error" or (warnings_as_errors and i.severity == "warning")]
    if bad:
        raise ExportError(f"{where} is not TensorRT-compatible for {', '.join(targets)}:\n"
                          + "\n".join(f"  {i}" for i in bad))
    return issues


def first_error(issues: Sequence[LintIssue]) -> Optional[LintIssue]:
    return next((i for i in issues if i.severity == "error"), None)
