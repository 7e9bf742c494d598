"""One comparator for every check that sets one engine's results against another's on the same frames: export
parity (ONNX Runtime against PyTorch), a Triton rollout's parity (a new model version against the one it
replaces), benchmark agreement, the INT8 calibration gate and tools/gpu_check all report these fields, computed
here once.

    report = compare(reference_result, candidate_result, threshold=meta["image_threshold"])

It sits above the runtime (it runs engines for parity), below bench, calibrate, build and the CLI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .artefact import read_metadata
from .errors import PrnEdgeError

MAP_TOLERANCE = 1e-4
FIELDS = ("images", "max_abs_map_diff", "mean_abs_map_diff", "max_abs_score_diff", "mean_abs_score_diff",
          "map_correlation", "decision_agreement", "decisions_identical", "anomalous_reference",
          "anomalous_candidate")


class ParityError(PrnEdgeError):
    """An artefact does not reproduce its reference within tolerance; the message holds the comparison."""


def images_for(spec, images: Sequence[np.ndarray], names: Sequence[str]) -> tuple[list[np.ndarray], list[str]]:
    """The images a check gives an artefact: as they are, or for a tiles artefact (input policy tiles) the tiles of
    each (prn_edge.tiling, as evaluation and the line cut them; `name#k` says which), never an image resized."""
    if spec.fit != "tiles":
        return list(images), list(names)
    from .tiling import TileGrid

    tiles, tile_names = [], []
    for img, name in zip(images, names):
        img = np.asarray(img)
        grid = TileGrid(img.shape[0], img.shape[1], spec.height, spec.width)
        tiles += list(grid.split(img))
        tile_names += [f"{name}#{k}" for k in range(len(grid))]
    return tiles, tile_names


def compare(reference: Any, candidate: Any, threshold: Optional[float] = None) -> dict:
    """reference, candidate: results with maps (N, h, w), scores (N,) and decisions (N,) (runtime.InferResult).
    With threshold: also the smallest distance of a reference score to it (how close a decision came to flipping)."""
    ref_maps, cand_maps = np.asarray(reference.maps, np.float64), np.asarray(candidate.maps, np.float64)
    if ref_maps.shape != cand_maps.shape:
        raise ValueError(f"maps of different shapes {ref_maps.shape} and {cand_maps.shape}: compare results of "
                         "the same frames at the same model size")
    ref_s, cand_s = np.asarray(reference.scores, np.float64), np.asarray(candidate.scores, np.float64)
    ref_d, cand_d = np.asarray(reference.decisions, bool), np.asarray(candidate.decisions, bool)
    diff = np.abs(ref_maps - cand_maps)
    a, b = ref_maps.ravel(), cand_maps.ravel()
    if a.std() > 0 and b.std() > 0:
        corr = float(np.corrcoef(a, b)[0, 1])
    else:  # a constant map: identical or not at all
        corr = 1.0 if np.array_equal(a, b) else 0.0
    out = {"images": int(len(ref_s)),
           "max_abs_map_diff": float(diff.max()) if diff.size else 0.0,
           "mean_abs_map_diff": float(diff.mean()) if diff.size else 0.0,
           "max_abs_score_diff": float(np.abs(ref_s - cand_s).max()) if len(ref_s) else 0.0,
           "mean_abs_score_diff": float(np.abs(ref_s - cand_s).mean()) if len(ref_s) else 0.0,
           "map_correlation": corr,
           "decision_agreement": float(np.mean(ref_d == cand_d)) if len(ref_d) else 1.0,
           "decisions_identical": bool(np.array_equal(ref_d, cand_d)),
           "anomalous_reference": int(ref_d.sum()), "anomalous_candidate": int(cand_d.sum())}
    if threshold is not None and len(ref_s):
        out["min_margin_to_threshold"] = float(np.abs(ref_s - float(threshold)).min())
    return out


def compare_engines(reference: str | Path, candidate: str | Path, frames: np.ndarray, reference_opts: Optional[dict] = None,
                    **candidate_opts) -> dict:
    """Open both artefacts (any backend), run them on the same frames, compare()."""
    from .runtime import open_engine

    with open_engine(reference, **(reference_opts or {})) as ref:
        a = ref.infer(frames)
    with open_engine(candidate, **candidate_opts) as eng:
        b = eng.infer(frames)
    return compare(a, b)


def _onnxruntime_cpu(path: str | Path, frames: np.ndarray, threads: Optional[int]):
    """An ONNX artefact's result on frames, through ONNX Runtime's CPU provider (the same everywhere), and the
    camera frames it took."""
    from .runtime.onnxruntime_backend import OnnxRuntimeEngine

    with OnnxRuntimeEngine(path, providers="cpu", threads=threads) as engine:
        return engine.infer(frames), engine.input_spec


def check_rollout(previous: str | Path, candidate: str | Path, images: Sequence[np.ndarray], names: Sequence[str],
                  tol: float = MAP_TOLERANCE, threads: Optional[int] = 2) -> dict:
    """A new version of a served model against the version it replaces: both ONNX artefacts through ONNX Runtime
    (CPU) on the same images (RGB uint8, any size, turned into the artefact's camera frames; `names` say which
    is which). compare()'s fields, plus the image whose map or score moved most (worst_image, worst_map_diff,
    worst_score_diff), how many images are beyond `tol`, the images whose decision changed (a re-tuned threshold
    changes decisions on purpose and is not a failure by itself), and `ok` when every map and score is within
    `tol`."""
    from .runtime.preprocess import rgb_to_frames

    if len(images) == 0 or len(images) != len(names):
        raise ParityError("check_rollout needs at least one image, and one name for each")
    spec = read_metadata(candidate)["input_spec"]
    images, names = images_for(spec, images, names)
    frames = rgb_to_frames(images, spec)
    old, _ = _onnxruntime_cpu(previous, frames, threads)
    new, _ = _onnxruntime_cpu(candidate, frames, threads)
    map_diff = np.abs(np.asarray(old.maps, np.float64) - new.maps).reshape(len(frames), -1).max(axis=1)
    score_diff = np.abs(np.asarray(old.scores, np.float64) - new.scores)
    worst = int(np.argmax(np.maximum(map_diff, score_diff)))
    beyond = (map_diff > tol) | (score_diff > tol)
    return {**compare(old, new), "tolerance": tol, "worst_image": str(names[worst]),
            "worst_map_diff": float(map_diff[worst]), "worst_score_diff": float(score_diff[worst]),
            "beyond_tolerance": int(beyond.sum()),
            "decisions_changed": [str(names[i]) for i in np.flatnonzero(old.decisions != new.decisions)],
            "ok": not bool(beyond.any())}


def check_parity(ckpt: str | Path, onnx_path: str | Path, images: Sequence[np.ndarray] | np.ndarray,
                 tol: float = MAP_TOLERANCE, threads: Optional[int] = 2, strict: bool = False) -> dict:
    """An exported ONNX artefact against its PyTorch checkpoint on `images` (RGB uint8, any size; turned into the
    artefact's camera frames first, both backends get the same frames): compare()'s fields plus the decisions,
    and `ok` when maps and scores are within `tol` and the decisions identical. strict: raise ParityError if not."""
    from .runtime.preprocess import rgb_to_frames
    from .runtime.torch_backend import TorchEngine

    meta = read_metadata(onnx_path)
    spec = meta["input_spec"]
    if len(images) == 0:
        raise ParityError("check_parity needs at least one image")
    frames = rgb_to_frames(images_for(spec, images, [""] * len(images))[0], spec)
    hw = (spec.height, spec.width)
    onnx_res, camera = _onnxruntime_cpu(onnx_path, frames, threads)
    with TorchEngine(ckpt, channel_order=camera.channel_order, input_hw=hw, resize=camera.resize,
                     threads=threads) as torch_engine:
        torch_res = torch_engine.infer(frames)
    thr = float(meta["image_threshold"])
    report = {"input": f"{spec.format} {spec.channel_order} {spec.height}x{spec.width} resize={camera.resize}",
              **compare(torch_res, onnx_res, thr),
              "decisions_onnx": onnx_res.decisions.tolist(), "decisions_torch": torch_res.decisions.tolist(),
              "image_threshold": thr, "tolerance": tol}
    report["ok"] = bool(report["max_abs_map_diff"] <= tol and report["max_abs_score_diff"] <= tol
                        and report["decisions_identical"])
    if strict and not report["ok"]:
        raise ParityError(f"{onnx_path} does not match {ckpt}: {report}")
    return report
