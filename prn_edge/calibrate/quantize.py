"""Explicit (Q/DQ) INT8 quantization of an exported PRN with ONNX Runtime's static quantizer.

Two flavours of the same Q/DQ graph:
- "tensorrt": symmetric int8 activations and weights, per-channel weights, zero points 0: what TensorRT's
  explicit quantization (and TensorRT 11, where Q/DQ is the only INT8 path) accepts.
- "cpu": uint8 activations and int8 weights, which ONNX Runtime's x86 kernels run fastest; weights at 7 bits
  (reduce_range) on CPUs without VNNI, where 8-bit products can saturate.
The third calibration flavour, "openvino", is NNCF's (nncf_quantize.py).
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx

from ..artefact import metadata_props, read_keep_float, set_metadata
from ..errors import ConfigError

QDQ_FLAVOURS = ("tensorrt", "cpu")  # this module's
FLAVOURS = QDQ_FLAVOURS + ("openvino",)
METHODS = ("minmax", "entropy", "percentile")
# ModelOpt's / TensorRT's INT8 op set intersected with what the PRN graph has; Softmax, ArgMin, TopK stay float.
TRT_OPS = ["Conv", "MatMul", "Gemm", "Add", "Mul", "AveragePool", "MaxPool", "Clip", "GlobalAveragePool"]


def cpu_has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


class _Reader:
    """ONNX Runtime's calibration reader protocol over a list of ready input batches."""

    def __init__(self, name: str, batches: Sequence[np.ndarray]):
        self.name, self.batches, self.i = name, list(batches), 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.name: self.batches[self.i - 1]}

    def rewind(self):
        self.i = 0

    def __iter__(self):
        return iter({self.name: b} for b in self.batches)


def _reduce_range() -> bool:
    """7-bit weights on CPUs without VNNI (their u8 x s8 multiply-add saturates 16-bit sums); the environment
    variable PRN_EDGE_REDUCE_RANGE=0/1 overrides it (experiments, or quantizing for another CPU)."""
    import os

    v = os.environ.get("PRN_EDGE_REDUCE_RANGE", "")
    return v == "1" if v in ("0", "1") else not cpu_has_vnni()


def prepare(fp32: Path, out: Path) -> Path:
    """Shape inference and graph clean-up that the quantizer needs; node names of the result are the ones
    `exclude` lists refer to."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Symbolic shape inference fails on a dynamic batch and leaves temp files in the working directory;
    # ONNX's own inference suffices, since every dimension but the batch is static.
    with _quiet():
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    src, q = onnx.load(str(fp32)), onnx.load(str(out))
    set_metadata(q, metadata_props(src))
    onnx.save(q, str(out))
    return out


def quantize_qdq(fp32: Path, out: Path, input_name: str, batches: Sequence[np.ndarray], flavour: str = "tensorrt",
                 method: str = "minmax", exclude: Iterable[str] = (), percentile: float = 99.99) -> dict:
    """Write a Q/DQ INT8 model of `fp32` (a `prepare`d model) to `out`, ranges from `batches`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if flavour not in QDQ_FLAVOURS:
        raise ConfigError(f"flavour={flavour!r}: a Q/DQ ONNX is made for one of {QDQ_FLAVOURS}")
    if method not in METHODS:
        raise ConfigError(f"method={method!r}: choose one of {METHODS}")
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    extra = {"CalibMovingAverage": False}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    if flavour == "tensorrt":
        kw = dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
                  op_types_to_quantize=TRT_OPS)
        # TensorRT dequantizes int8 only: biases stay float (it fuses them into the int8 convolution itself).
        extra.update(ActivationSymmetric=True, WeightSymmetric=True, QuantizeBias=False)
    else:
        # Per-channel weights: depthwise convolutions of EfficientNet lose everything with one scale per tensor.
        kw = dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                  reduce_range=_reduce_range())
    with _quiet():
        quantize_static(str(fp32), str(out), _Reader(input_name, batches), quant_format=QuantFormat.QDQ,
                        calibrate_method=calib, nodes_to_exclude=sorted(set(exclude)) or None,
                        extra_options=extra, **kw)
    # The quantizer drops metadata_props: the INT8 artefact must carry the same spec and thresholds.
    src, q = onnx.load(str(fp32)), onnx.load(str(out))
    set_metadata(q, metadata_props(src))
    onnx.save(q, str(out))
    counts: dict[str, int] = {}
    for n in q.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return {"flavour": flavour, "method": method, "excluded": sorted(set(exclude)),
            "activation_type": "int8" if flavour == "tensorrt" else "uint8", "weight_type": "int8",
            "per_channel": kw["per_channel"], "reduce_range": kw["reduce_range"],
            "quantize_linear_nodes": counts.get("QuantizeLinear", 0),
            "dequantize_linear_nodes": counts.get("DequantizeLinear", 0)}


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantizer logs and prints a lot at INFO; keep the user's terminal readable."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def float_by_design(model_path: Path) -> list[str]:
    """Nodes that stay float in every attempt, because 8 bits cannot carry what they compute: the artefact's
    keep-in-float list (prn_edge.artefact.keep_float: prototype search and distance map, the last Conv and after)."""
    return list(read_keep_float(model_path).nodes)


def input_layer(model_path: Path) -> list[str]:
    """The graph's first convolution and every node before it (the normalization of the camera image; a uint8
    graph's camera resampling). Quantizing them puts the normalized image on a new 8-bit grid that does not line
    up with the camera's 256 grey levels: on low-contrast grey parts that rounding is a large share of the texture
    the encoder sees (MTD, docs/openvino-int8.md: score noise 0.035 -> 0.025 with this layer in float, speed
    unchanged)."""
    nodes = list(onnx.load(str(model_path), load_external_data=False).graph.node)
    first = next((i for i, n in enumerate(nodes) if n.op_type == "Conv"), None)
    return [] if first is None else [n.name for n in nodes[:first + 1]]


def quantizable_nodes(model_path: Path, flavour: str) -> list[str]:
    """Names of the nodes the quantizer would touch (candidates for keeping in float); NNCF ("openvino")
    quantizes the same kinds of operations as ONNX Runtime for the CPU."""
    m = onnx.load(str(model_path))
    ops = set(TRT_OPS) if flavour == "tensorrt" else {"Conv", "MatMul", "Gemm", "Add", "Mul", "AveragePool",
                                                      "Concat", "Resize", "Sigmoid", "Relu", "Clip"}
    return [n.name for n in m.graph.node if n.op_type in ops]
