"""`prn-edge predict`: image files through an engine (.onnx, .pt, .engine, .xml, triton://) -> one verdict per file.

What a line decides, for a folder of images instead of a camera: each image (any size, grey or colour) is fitted to
the engine's frames as training fitted its images (data.fit.fit_image: the artefact's input policy when its frames
are the model input, stretched to the camera frame size otherwise; tiles artefacts: split at native resolution,
prn_edge.tiling), run, and decided by the artefact's own rule (prn_edge.artefact.decision). The maps come back at
each image's own resolution for the heat-map pictures.
"""
from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from ..data.images import IMAGE_EXTS, check_no_twins, is_image_file, list_images, read_image
from ..errors import DataError
from ..input_policy import placement
from ..tiling import predict_in_tiles
from .preprocess import fit_to_frame, rgb_to_frames

COLUMNS = ("file", "verdict", "score", "normalized_score", "map_max", "width", "height")


@dataclass
class Prediction:
    file: Path
    score: float
    normalized_score: float
    anomalous: bool
    map_max: float
    width: int
    height: int

    @property
    def verdict(self) -> str:
        return "reject" if self.anomalous else "pass"

    def row(self, root: Optional[Path] = None) -> dict:
        name = str(self.file.relative_to(root)) if root is not None else str(self.file)
        return {"file": name, "verdict": self.verdict, "score": round(self.score, 6),
                "normalized_score": round(self.normalized_score, 6), "map_max": round(self.map_max, 6),
                "width": self.width, "height": self.height}


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named, or found below folders (data.images.list_images: sorted, masks and hidden files skipped).
    DataError when a path does not exist, a named file is not an image, nothing is found, or two images in one
    folder share a name (a mask beside its image)."""
    out: list[Path] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise DataError(f"{p}: no images ({', '.join(IMAGE_EXTS)}) below it")
            out += found
        elif p.is_file():
            if not is_image_file(p):
                raise DataError(f"{p}: not an image ({', '.join(IMAGE_EXTS)})")
            out.append(p)
        else:
            raise DataError(f"{p} does not exist; give image files or folders of them")
    unique = list(dict.fromkeys(f.resolve() for f in out))
    check_no_twins(unique, "predict")
    return unique


def _fitted(img: np.ndarray, spec) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """(the image as the engine's frame size, a function bringing a model-size map back to the image)."""
    frame, outer = fit_to_frame(img, spec)
    inner = placement((spec.height, spec.width), tuple(spec.model_hw), spec.fit)
    return frame, lambda m: outer.unfit(inner.unfit(m))


def predict_files(engine, files: Iterable[Path], batch: int = 8, progress: bool = False, keep_maps: bool = False):
    """Yield (Prediction, image, map or None) per file, in order; the map (at the image's resolution) with
    keep_maps (as the line's LoopOptions.keep_maps), for the caller to keep the few it draws."""
    from tqdm import tqdm

    from ..artefact import decide, normalize_scores

    files = list(files)
    spec, meta = engine.input_spec, engine.metadata
    tiles = spec.fit == "tiles"
    step = max(1, spec.batch or batch)
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress, leave=False)

    def run(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        frames = rgb_to_frames(images, spec)
        maps, scores = [], []
        for j in range(0, len(frames), step):
            r = engine.infer(frames[j:j + step])
            maps.append(np.asarray(r.maps, np.float32))
            scores.append(np.asarray(r.scores, np.float64).reshape(-1))
        return np.concatenate(maps), np.concatenate(scores)

    for i in range(0, len(files), step):
        chunk = files[i:i + step]
        images = [read_image(f) for f in chunk]
        if tiles:  # each image in tiles cut at native resolution, maps stitched, score = the highest tile's
            maps, scores = predict_in_tiles(lambda t: run(list(t)), images, tuple(spec.model_hw))
            scores = np.asarray(scores, np.float64)
        else:
            pairs = [_fitted(img, spec) for img in images]
            model_maps, scores = run([frame for frame, _ in pairs])
            maps = [back(m) for (_, back), m in zip(pairs, model_maps)]
        normalized, anomalous = normalize_scores(scores, meta), decide(scores, meta)
        for k, (f, img, amap) in enumerate(zip(chunk, images, maps)):
            p = Prediction(f, float(scores[k]), float(normalized[k]), bool(anomalous[k]), float(np.max(amap)),
                           img.shape[1], img.shape[0])
            yield p, img, (amap if keep_maps else None)
        bar.update(len(chunk))
    bar.close()


def common_root(files: Sequence[Path]) -> Optional[Path]:
    """The folder all files share (a single file's own folder), to name them relative to it in tables."""
    return Path(os.path.commonpath([f.parent for f in files])) if files else None


def write_csv(path: Path, rows: list[dict]) -> Path:
    from ..artefact import write_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, buf.getvalue().encode())
    return path


def predict_images(artefact: str | Path, paths: Sequence[str | Path], out: Optional[Path] = None,
                   backend: str = "auto", threads: Optional[int] = None, overlays: int = 16,
                   progress: bool = True, allow_failed_gate: bool = False) -> dict:
    """Run `artefact` on the images under `paths`; with `out`, write predictions.csv, predictions.json and heat-map
    pictures (the rejected parts first, then the highest-scoring passes: up to `overlays`) to it. Returns the
    report (also the JSON): the engine, its threshold, counts and one row per file."""
    from ..artefact import write_json
    from . import open_engine
    from .base import describe_line

    files = image_files(paths)
    if out is not None:  # an output folder inside an input folder: its pictures are not parts to predict next time
        inside = Path(out).resolve()
        files = [f for f in files if inside not in f.parents]
        if not files:
            raise DataError(f"no images to predict outside the output folder {out}")
    root = common_root(files)
    t0 = time.perf_counter()
    with open_engine(artefact, backend=backend, allow_failed_gate=allow_failed_gate, threads=threads) as engine:
        meta = engine.metadata
        # maps for the pictures: the rejects first, then the highest passes, `overlays` at most held at a time
        kept: list[tuple[Prediction, np.ndarray, np.ndarray]] = []
        preds = []
        for p, img, amap in predict_files(engine, files, progress=progress, keep_maps=out is not None and overlays > 0):
            preds.append(p)
            if amap is not None:
                kept.append((p, img, amap))
                kept.sort(key=lambda t: (not t[0].anomalous, -t[0].score))
                del kept[overlays:]
        described = describe_line(engine.describe())
    seconds = time.perf_counter() - t0
    rows = [p.row(root) for p in preds]
    rejected = sum(p.anomalous for p in preds)
    report = {
        "artefact": str(artefact), "engine": described, "root": str(root) if root else None,
        "image_threshold": meta.get("image_threshold"), "pixel_threshold": meta.get("pixel_threshold"),
        "input_policy": engine.input_spec.fit,
        "images": len(preds), "rejected": rejected, "passed": len(preds) - rejected,
        "seconds": round(seconds, 3), "predictions": rows,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        report["csv"] = str(write_csv(out / "predictions.csv", rows))
        report["overlays"] = [str(q) for q in _pictures(out / "overlays", kept, meta, root)]
        write_json(out / "predictions.json", report)
    return report


def _pictures(folder: Path, kept, meta: dict, root: Optional[Path]) -> list[Path]:
    """[image | heat map | map >= pixel threshold] per kept prediction, named after the file."""
    import cv2

    from ..evaluate.naming import safe_filename
    from ..evaluate.overlay import overlay

    if not kept:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    pixel = meta.get("pixel_threshold")
    written = []
    for p, img, amap in kept:
        panel = overlay(img, amap, None, None if pixel is None else float(pixel), score=p.score,
                        decision=p.anomalous, truth_panel=False)
        stem = str(p.file.relative_to(root).with_suffix("")) if root is not None else p.file.stem
        q = folder / f"{p.verdict}_{safe_filename(stem.replace('/', '_'))}.png"
        if not cv2.imwrite(str(q), panel[..., ::-1]):
            raise DataError(f"could not write {q}; check the folder and the free space")
        written.append(q)
    return written


def table(report: dict, limit: int = 20) -> str:
    """The verdicts as a markdown table (the highest scores first when there are more than `limit`)."""
    rows = sorted(report["predictions"], key=lambda r: -r["score"])
    shown = rows[:limit]
    lines = [f"{report['images']} images: {report['rejected']} rejected, {report['passed']} passed "
             f"(image threshold {report['image_threshold']:.4g}; {report['seconds']:.1f} s)", "",
             "| file | verdict | score | normalized |", "|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['verdict']} | {r['score']:.4g} | {r['normalized_score']:.3f} |" for r in shown]
    if len(rows) > limit:
        lines.append(f"| ... {len(rows) - limit} more (lower scores) in predictions.csv | | | |")
    return "\n".join(lines)
