"""ONNX Runtime (CPU) against PyTorch on the same real images: maps, scores and decisions."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..artefact import read_metadata
from .errors import ExportError

MAP_TOLERANCE = 1e-4


def check_parity(ckpt: str | Path, onnx_path: str | Path, images: Sequence[np.ndarray] | np.ndarray,
                 tol: float = MAP_TOLERANCE, threads: Optional[int] = 2, strict: bool = False) -> dict:
    """Run both backends on `images` and compare.

    images: RGB uint8 (H, W, 3) of any size; they are turned into the artefact's camera frames (size, channel
    order) first, and both backends get the same frames: ONNX Runtime runs the exported graph (in-graph
    preprocessing for uint8 artefacts), PyTorch runs the checkpoint on the host reference preprocessing.
    Returns max/mean absolute map difference, max score difference, and whether the decisions under the
    artefact's image_threshold are identical; `ok` is all of that within `tol`. strict: raise ExportError
    when not ok.
    """
    from ..runtime.onnxruntime_backend import OnnxRuntimeEngine
    from ..runtime.preprocess import rgb_to_frames
    from ..runtime.torch_backend import TorchEngine

    meta = read_metadata(onnx_path)
    spec = meta["input_spec"]
    if len(images) == 0:
        raise ExportError("check_parity needs at least one image")
    frames = rgb_to_frames(images, spec)
    hw = (spec.height, spec.width)
    with OnnxRuntimeEngine(onnx_path, providers="cpu", threads=threads) as ort_engine:
        onnx_res = ort_engine.infer(frames)
        camera = ort_engine.input_spec
    with TorchEngine(ckpt, channel_order=camera.channel_order, input_hw=hw, resize=camera.resize,
                     threads=threads) as torch_engine:
        torch_res = torch_engine.infer(frames)
    diff = np.abs(onnx_res.maps - torch_res.maps)
    thr = float(meta["image_threshold"])
    report = {
        "images": int(len(frames)),
        "input": f"{spec.format} {spec.channel_order} {spec.height}x{spec.width} resize={camera.resize}",
        "max_abs_map_diff": float(diff.max()),
        "mean_abs_map_diff": float(diff.mean()),
        "max_abs_score_diff": float(np.abs(onnx_res.scores - torch_res.scores).max()),
        "decisions_identical": bool(np.array_equal(onnx_res.decisions, torch_res.decisions)),
        "decisions_onnx": onnx_res.decisions.tolist(),
        "decisions_torch": torch_res.decisions.tolist(),
        "image_threshold": thr,
        "min_margin_to_threshold": float(np.abs(torch_res.scores.astype(np.float64) - thr).min()),
        "tolerance": tol,
    }
    report["ok"] = bool(report["max_abs_map_diff"] <= tol and report["max_abs_score_diff"] <= tol
                        and report["decisions_identical"])
    if strict and not report["ok"]:
        raise ExportError(f"{onnx_path} does not match {ckpt}: {report}")
    return report
