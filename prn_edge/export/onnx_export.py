"""Checkpoint -> ONNX (opset 17, static H/W, optional dynamic batch), with camera preprocessing in the graph.

Exporter: the TorchScript-based `torch.onnx.export(..., dynamo=False)`. The dynamo exporter in torch 2.13
needs onnxscript (not a dependency), has no opset-17 implementations (it exports opset 18, which TensorRT 8.5
on JetPack 5 cannot parse, and its down-conversion fails on Pad), emits GatherND for the prototype lookup
and takes ~25x longer. The TorchScript graph is then folded (prn_edge.export.graph) so that no Shape
arithmetic is left for static dimensions.
"""
from __future__ import annotations

import io
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..artefact import (CHANNEL_ORDERS, INPUT_NAME_FLOAT, INPUT_NAME_UINT8, OUTPUT_MAP, OUTPUT_SCORE, InputSpec,
                        KeepFloat, SpecError, build_metadata, choose_resize, keep_float_for, read_metadata,
                        sha256_file, write_atomic, write_metadata)
from ..errors import PrnEdgeError
from ..input_policy import PAD_VALUE, axis_weights, placement
from ..model.prn import PRN, DistanceMap, describe
from ..model.prototypes import ScalePrototypes
from .errors import ExportError
from .graph import fold_static, op_histogram
from .lint import DEFAULT_TARGETS, lint_for_tensorrt

DEFAULT_OPSET = 17


def resize_scale(src: int, dst: int) -> float:
    """The Resize scale (as a float32 value) for which floor(src * scale) == dst in float32 and float64.

    ONNX Resize (and torch with recompute_scale_factor=False) derive the output size as floor(src * scale)
    and map coordinates with 1 / scale; S / src rounded to float32 can land just below dst, so nudge it up.
    """
    s = np.float32(dst / src)
    for _ in range(8):
        if np.floor(np.float32(src) * s) == dst and np.floor(float(src) * float(s)) == dst:
            return float(s)
        s = np.nextafter(s, np.float32(np.inf))
    raise ExportError(f"cannot find a resize scale from {src} to {dst} pixels")


class SeparableResample(nn.Module):
    """(N, C, H, W) -> (N, C, h, w) by constant per-axis weights: rows @ x @ cols^T. Its nodes stay in float at
    every precision (keep-in-float scope PREPROCESS_SCOPE): 8 bits cannot carry grey levels 0..255 exactly."""

    def __init__(self, src_hw: tuple[int, int], dst_hw: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", torch.from_numpy(axis_weights(src_hw[0], dst_hw[0])).float(), persistent=False)
        self.register_buffer("cols_t", torch.from_numpy(axis_weights(src_hw[1], dst_hw[1]).T.copy()).float(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows, x), self.cols_t)


PREPROCESS_SCOPE = "/resample/"  # the name scope of CameraPRN.resample's nodes in the exported graph


class CameraPRN(nn.Module):
    """uint8 camera frames (N, H, W, C) -> PRN outputs; every preprocessing step is a plain ONNX node.

    Cast -> Transpose(NHWC->NCHW) -> AveragePool (integer area shrink), two MatMuls (separable: the weights of
    input_policy.axis_weights, what training resamples with) or Resize (bilinear, half_pixel) -> Pad (letterbox only) -> channel reorder (Gather) or replication (Concat) -> Div 255 -> PRN. The host-side reference of the
    same steps is prn_edge.runtime.preprocess.frames_to_model_input.
    """

    def __init__(self, prn: PRN, spec: InputSpec):
        super().__init__()
        self.prn, self.spec = prn, spec
        self.register_buffer("bgr_to_rgb", torch.tensor([2, 1, 0], dtype=torch.long), persistent=False)
        if spec.resize == "separable":
            where = spec.placement()
            self.resample = SeparableResample((spec.height, spec.width), (where.h, where.w))

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        spec, where = self.spec, self.spec.placement()
        x = frames.float().permute(0, 3, 1, 2)
        if spec.resize == "area":
            kh, kw = spec.height // where.h, spec.width // where.w
            x = F.avg_pool2d(x, (kh, kw), (kh, kw))
        elif spec.resize == "separable":
            x = self.resample(x)
        elif spec.resize == "bilinear":
            x = F.interpolate(x, scale_factor=(resize_scale(spec.height, where.h), resize_scale(spec.width, where.w)),
                              mode="bilinear", align_corners=False, recompute_scale_factor=False)
        top, bottom, left, right = where.pads
        if top or bottom or left or right:  # letterbox: a constant Pad, static for the frame size
            x = F.pad(x, (left, right, top, bottom), value=float(PAD_VALUE))
        if spec.channel_order == "bgr":
            x = x.index_select(1, self.bgr_to_rgb)
        elif spec.channel_order == "mono":
            x = torch.cat([x, x, x], 1)
        return x / 255.0

    def forward(self, frames: torch.Tensor):
        return self.prn.predict(self.preprocess(frames))


class FloatPRN(nn.Module):
    """RGB float (N, 3, H, W) in [0, 1] at the model input -> (anomaly_map, score)."""

    def __init__(self, prn: PRN):
        super().__init__()
        self.prn = prn

    def forward(self, x: torch.Tensor):
        return self.prn.predict(x)


def make_input_spec(cfg, model: PRN, input_format: str, channel_order: str, input_hw: Optional[Sequence[int]],
                    batch: Optional[int], resize: str = "auto") -> InputSpec:
    mh, mw = cfg.model.hw
    if input_format not in ("float", "uint8"):
        raise ExportError(f"input_format={input_format!r}: choose 'uint8' (camera frames, preprocessing in the "
                          "graph) or 'float' (RGB [0, 1] NCHW at the model size)")
    if channel_order not in CHANNEL_ORDERS:
        raise ExportError(f"channel_order={channel_order!r}: choose one of {list(CHANNEL_ORDERS)}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ExportError(f"batch={batch!r}: give a positive integer, or None for a dynamic batch")
    mean, std = tuple(float(v) for v in model.encoder.mean), tuple(float(v) for v in model.encoder.std)
    if input_format == "float":
        if channel_order != "rgb" or (input_hw is not None and tuple(input_hw) != (mh, mw)):
            raise ExportError(
                "a float artefact takes the model tensor itself (RGB, [0, 1], NCHW, "
                f"{mh}x{mw}); for other channel orders or frame sizes export with input_format='uint8' "
                "(--input-format uint8), "
                "which converts and resizes inside the graph")
        return InputSpec(name=INPUT_NAME_FLOAT, format="float", layout="NCHW", batch=batch, height=mh,
                         width=mw, channels=3, channel_order="rgb", model_height=mh, model_width=mw, resize="none",
                         scale=1.0, mean=mean, std=std, value_range=(0.0, 1.0), fit=cfg.model.input_policy)
    h, w = (mh, mw) if input_hw is None else (int(input_hw[0]), int(input_hw[1]))
    if h < 1 or w < 1:
        raise ExportError(f"input_hw={input_hw!r}: need positive (height, width)")
    if cfg.model.input_policy == "tiles" and (h, w) != (mh, mw):
        raise ExportError(f"the model takes {mh}x{mw} tiles cut at native resolution (input policy tiles), so its "
                          f"frames are tiles of that size and the graph resizes nothing; drop --input-size "
                          f"{h}x{w}: the line splits larger camera regions into tiles (region.tiles: true)")
    where = placement((h, w), (mh, mw), cfg.model.input_policy)
    try:
        method = choose_resize((h, w), (where.h, where.w), resize)
    except SpecError as e:
        raise ExportError(str(e)) from None
    return InputSpec(name=INPUT_NAME_UINT8, format="uint8", layout="NHWC", batch=batch, height=h, width=w,
                     channels=1 if channel_order == "mono" else 3, channel_order=channel_order, model_height=mh,
                     model_width=mw, resize=method, scale=1.0 / 255.0, mean=mean, std=std, value_range=(0.0, 255.0),
                     fit=cfg.model.input_policy)


def _check_exportable(model: PRN, meta: dict, ckpt: Path) -> None:
    if not all(bool(p.fitted) for p in model.prototypes):
        raise ExportError(f"{ckpt}: prototypes are not fitted; export a checkpoint written by `prn-edge train`")
    missing = [k for k in ("image_threshold", "score_spread") if meta.get(k) is None]
    if missing:
        raise ExportError(f"{ckpt} carries no {' / '.join(missing)}: export the best checkpoint written by "
                          "`prn-edge train` (the resume file last.pt has no decision thresholds)")


def build_onnx(model: PRN, cfg, meta: dict, spec: InputSpec, opset: int = DEFAULT_OPSET,
               checkpoint_sha256: Optional[str] = None) -> onnx.ModelProto:
    """In-memory ONNX of `model` for `spec`: exported, folded, with metadata, checked. Writes nothing."""
    if not 13 <= opset <= 21:
        raise ExportError(f"opset={opset}: prn_edge exports opset 13..21 (17 is what TensorRT 8.5 to 11 all read)")
    model = model.eval()
    wrapper = CameraPRN(model, spec) if spec.format == "uint8" else FloatPRN(model)
    wrapper.eval()
    trace_batch = spec.batch if spec.batch is not None else 2  # 2: a dynamic export must not specialise on 1
    g = torch.Generator().manual_seed(0)
    if spec.format == "uint8":
        dummy = torch.randint(0, 256, (trace_batch, spec.height, spec.width, spec.channels), dtype=torch.uint8,
                              generator=g)
    else:
        dummy = torch.rand(trace_batch, 3, spec.height, spec.width, generator=g)
    dynamic = None
    if spec.batch is None:
        dynamic = {spec.name: {0: "batch"}, OUTPUT_MAP: {0: "batch"}, OUTPUT_SCORE: {0: "batch"}}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about constants; the graph is checked below
        try:
            torch.onnx.export(wrapper, (dummy,), buf, dynamo=False, opset_version=opset,
                              input_names=[spec.name], output_names=[OUTPUT_MAP, OUTPUT_SCORE],
                              dynamic_axes=dynamic, do_constant_folding=True)
        except Exception as e:
            raise ExportError(f"torch.onnx.export failed: {e.__class__.__name__}: {str(e)[:300]}") from e
    proto = fold_static(onnx.load_from_string(buf.getvalue()))
    proto.producer_name, proto.producer_version = "prn_edge", __version__
    proto.doc_string = (f"PRN anomaly detector ({cfg.variant}, category {meta.get('category', '?')}): "
                        f"{spec.name} -> {OUTPUT_MAP} (N,1,{spec.model_height},{spec.model_width}), "
                        f"{OUTPUT_SCORE} (N,)")
    md = build_metadata(toolkit_version=__version__, variant=cfg.variant, ckpt_meta=meta, input_spec=spec,
                        model=describe(model), checkpoint_sha256=checkpoint_sha256, opset=opset,
                        exporter=f"torch.onnx TorchScript exporter, torch {torch.__version__}",
                        keep_float=keep_in_float(model, proto, preprocess=spec.resize == "separable"))
    write_metadata(proto, md)
    _validate(proto, spec)
    return proto


def keep_in_float(model: PRN, proto: onnx.ModelProto, preprocess: bool = False) -> KeepFloat:
    """The graph's keep-in-float record (prn_edge.artefact.keep_float) from the model's structure: the name scopes
    of its prototype modules and, when the map fuses it, of its distance map; the tail from the last Conv; the
    camera resampling when the graph has one (`preprocess`)."""
    def scopes(kind) -> list[str]:
        return [f"/{name}/" for name, m in model.named_modules() if isinstance(m, kind)]

    prototypes, distance = scopes(ScalePrototypes), (scopes(DistanceMap) if model.fuses_distance else [])
    names = [n.name for n in proto.graph.node]
    pre = [PREPROCESS_SCOPE] if preprocess else []
    unnamed = [s for s in prototypes + distance + pre if not any(s in n for n in names)]
    if unnamed or not prototypes:
        raise ExportError(f"the exported graph has no nodes under {unnamed or 'any prototype scope'}: the exporter "
                          "named the nodes differently, so the layers that must stay in float cannot be found")
    return keep_float_for(proto.graph.node, prototypes, distance, pre)


def _validate(proto: onnx.ModelProto, spec: InputSpec) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ExportError(f"the exported graph fails onnx.checker: {str(e)[:400]}") from None
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    b = spec.batch
    want = {OUTPUT_MAP: [b, 1, *spec.model_hw], OUTPUT_SCORE: [b]}
    for out in inferred.graph.output:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in out.type.tensor_type.shape.dim]
        if out.name in want and dims != want[out.name]:
            raise ExportError(f"output {out.name} has shape {dims}, expected {want[out.name]} (None = dynamic batch)")
    shape_ops = [n.name for n in proto.graph.node if n.op_type == "Shape"]
    if shape_ops and spec.batch is not None:
        raise ExportError(f"static-batch export still has Shape nodes {shape_ops[:3]}: a dimension was not static")


def export_onnx(ckpt: str | Path, out: str | Path, batch: Optional[int] = 1, input_format: str = "float",
                channel_order: str = "rgb", input_hw: Optional[Sequence[int]] = None, opset: int = DEFAULT_OPSET,
                resize: str = "auto", lint_targets: Sequence[str] = DEFAULT_TARGETS) -> dict:
    """Export a checkpoint to ONNX at `out` (atomically) and return a summary dict.

    batch: fixed batch size, or None for a dynamic batch dimension (H, W are always static).
    The model input is model.image_size, Hm x Wm (square or not).
    input_format: "float" -> input `image` (N, 3, Hm, Wm) RGB in [0, 1]; "uint8" -> input `frames` (N, H, W, C)
    camera frames in `channel_order` ("bgr", "rgb" or "mono" with C = 1) of size `input_hw` (default: the
    model size), converted, resized (`resize`: "auto", "area", "bilinear"; letterboxed when the input policy says
    so) and scaled inside the graph. Outputs: `anomaly_map` (N, 1, Hm, Wm) probabilities and `score` (N,). The
    graph is linted for the TensorRT versions in `lint_targets` (empty: skip) and the export fails on any error.
    """
    from ..model.checkpoint import load_model

    t0 = time.perf_counter()
    ckpt, out = Path(ckpt), Path(out)
    if out.suffix != ".onnx":
        hint = "; for an OpenVINO IR add --to openvino" if out.suffix == ".xml" else ""
        raise ExportError(f"output {out} should end in .onnx{hint}")
    try:
        model, cfg, meta = load_model(ckpt)
    except PrnEdgeError as e:
        raise ExportError(f"cannot export {ckpt}: {e}") from None
    _check_exportable(model, meta, ckpt)
    spec = make_input_spec(cfg, model, input_format, channel_order, input_hw, batch, resize)
    proto = build_onnx(model, cfg, meta, spec, opset, checkpoint_sha256=sha256_file(ckpt))
    issues = lint_for_tensorrt(proto, lint_targets) if lint_targets else []
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise ExportError("the exported graph would not build with TensorRT:\n" + "\n".join(str(i) for i in errors))
    data = proto.SerializeToString()
    write_atomic(out, data)
    read_metadata(out)  # what we wrote reads back
    return {
        "path": str(out), "bytes": len(data), "sha256": sha256_file(out), "checkpoint": str(ckpt),
        "input": spec.__dict__ | {"mean": list(spec.mean), "std": list(spec.std)},
        "batch": batch, "opset": opset, "nodes": len(proto.graph.node), "ops": op_histogram(proto),
        "lint_targets": list(lint_targets), "lint_warnings": [str(i) for i in issues if i.severity != "error"],
        "exporter": "torchscript", "seconds": round(time.perf_counter() - t0, 3),
    }
