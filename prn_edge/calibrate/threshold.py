"""Re-tune an artefact's image threshold on the line's own good parts (and, when there are some, its own defects).

The threshold a training run picks comes from its validation split; a line's camera, lighting and material lot
can shift every score (measured on the demo's brick: test normals 0.44-0.65 against 0.24-0.43 on validation, so
the training threshold rejected 21 of 30 good parts while AUROC stayed 100). Integrators re-tune on the line:
capture good parts (and the defects they have), score them with the artefact itself, and write a copy whose
metadata carries the new threshold and where it came from. Score normalization keeps its spread, so the uncertain
band of the line keeps its meaning around the new threshold.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import ConfigError, DataError

def _images(folder: Path, what: str) -> list[Path]:
    from ..data.images import IMAGE_EXTS, list_images

    if not Path(folder).is_dir():
        raise DataError(f"{what} folder {folder} does not exist")
    files = list_images(folder, where=f"{what} folder {folder}")
    if not files:
        raise DataError(f"{what} folder {folder} has no images ({', '.join(IMAGE_EXTS)})")
    return files


MIN_GOOD = 10  # fewer good parts say nothing about the spread of good scores
MIN_DEFECTS = 3


def _check_like_frames(files: list[Path], spec) -> None:
    """Images must look like the artefact's camera frames: not a fraction of their size, not another aspect."""
    from ..data.images import image_header

    fh, fw = spec.height, spec.width
    # frames exported at the model's own size are often fed resized regions: check the aspect only where the
    # export named the camera's frame size
    own_size = (fh, fw) != spec.model_hw
    for p in files:
        w, h, _ = image_header(p)
        if h < fh / 4 or w < fw / 4 or (own_size and abs((w / h) / (fw / fh) - 1) > 0.25):
            raise DataError(f"{p} is {w}x{h}, unlike the {fw}x{fh} frames {spec.name!r} takes; re-tune on frames "
                            "captured on the line (same camera, same region)")


def _scores(engine, files: list[Path]) -> np.ndarray:
    from ..data.images import read_image
    from ..runtime.preprocess import rgb_to_frames

    spec = engine.input_spec
    _check_like_frames(files, spec)
    out = []
    for i in range(0, len(files), 8):
        frames = rgb_to_frames([read_image(p) for p in files[i:i + 8]], spec)
        b = spec.batch or len(frames)
        for j in range(0, len(frames), b):
            out.append(np.asarray(engine.infer(frames[j:j + b]).scores, np.float64).reshape(-1))
    return np.concatenate(out)


def histogram_png(path: Path, good: np.ndarray, defects: np.ndarray, old: float, new: float) -> Path:
    """Score histogram (good green, defects red) with the previous (grey) and new (blue) threshold: what an
    integrator looks at before trusting a new threshold. OpenCV only (the runtime has no plotting library)."""
    import cv2

    w, h, pad = 640, 280, 40
    values = np.concatenate([good, defects, [old, new]])
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    hi = hi if hi > lo else lo + 1e-6
    bins = np.linspace(lo, hi, 41)
    img = np.full((h, w, 3), 255, np.uint8)
    x = lambda v: int(pad + (v - lo) / (hi - lo) * (w - 2 * pad))  # noqa: E731
    counts = [np.histogram(a, bins)[0] for a in (good, defects)]
    top = max(1, max(int(c.max()) for c in counts if c.size))
    for c, colour, shift in zip(counts, ((60, 170, 60), (60, 60, 220)), (0, 3)):
        for i, n in enumerate(c):
            if n:
                cv2.rectangle(img, (x(bins[i]) + shift, h - pad - int(n / top * (h - 2 * pad))),
                              (x(bins[i + 1]) - 3 + shift, h - pad), colour, -1)
    for v, colour, label in ((old, (128, 128, 128), f"previous {old:.4g}"), (new, (200, 90, 0), f"new {new:.4g}")):
        if np.isfinite(v):
            cv2.line(img, (x(v), pad // 2), (x(v), h - pad), colour, 2)
            cv2.putText(img, label, (min(x(v) + 4, w - 150), pad // 2 + (12 if colour[0] == 200 else 26)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    cv2.line(img, (pad, h - pad), (w - pad, h - pad), (0, 0, 0), 1)
    cv2.putText(img, f"score {lo:.3g}", (pad, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{hi:.3g}", (w - pad - 30, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"good ({len(good)}) green, defects ({len(defects)}) red", (w // 2 - 110, h - 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise DataError(f"could not write the histogram {path}; check the folder")
    return path


def retune_threshold(artefact: Path, good: Path, out: Path, defects: Optional[Path] = None, quantile: float = 1.0,
                     margin: float = 0.1, threads: int = 0, force: bool = False) -> dict:
    """Score the good (and defect) images with `artefact` (an exported .onnx) and write `out` with the new image
    threshold: between the highest good and the lowest defect score when they separate, else the good scores'
    `quantile` plus `margin` x the artefact's score spread. Refuses too few images, images unlike the artefact's
    frames, and (unless `force`) a threshold that would let through more of the given defects than before.
    Writes the score histogram beside `out` (<out>.threshold.png)."""
    from ..artefact import read_metadata, write_atomic
    from ..artefact.metadata import with_metadata
    from ..artefact.onnx_header import read_header
    from ..runtime import open_engine

    artefact, out = Path(artefact), Path(out)
    if artefact.suffix != ".onnx":
        raise ConfigError(f"{artefact}: re-tune the exported .onnx, then build the engine from the result")
    if not 0.5 <= quantile <= 1.0 or margin < 0:
        raise ConfigError(f"--quantile {quantile} must be within 0.5..1 and --margin {margin} >= 0")
    if out.resolve() == artefact.resolve():
        raise ConfigError("write the re-tuned artefact to a new file (-o): the original stays as trained")
    meta = read_metadata(artefact)
    old = float(meta.get("image_threshold") or float("nan"))
    spread = float(meta.get("score_spread") or 0.1)
    good_files = _images(good, "good")
    bad_files = _images(defects, "defect") if defects else []
    if len(good_files) < MIN_GOOD or (defects and len(bad_files) < MIN_DEFECTS):
        raise DataError(f"{len(good_files)} good and {len(bad_files)} defect images: a threshold needs at least "
                        f"{MIN_GOOD} good parts (and {MIN_DEFECTS} defects when defects are given) from the line")
    with open_engine(artefact, threads=threads or None) as eng:
        g = _scores(eng, good_files)
        d = _scores(eng, bad_files) if bad_files else np.zeros(0)
    top_good = float(np.quantile(g, quantile))
    if len(d) and d.min() > top_good:
        new, rule = (top_good + float(d.min())) / 2, "midpoint between the highest good and the lowest defect score"
    else:
        new = top_good + margin * spread
        rule = f"good-score quantile {quantile} + {margin} x score spread {spread:.4g}"
    listing = hashlib.sha256("\n".join(f"{p.name}" for p in good_files + bad_files).encode()).hexdigest()
    report = {"artefact": str(artefact), "output": str(out), "previous_threshold": old, "threshold": new,
              "rule": rule, "good_images": len(g), "defect_images": len(d),
              "good_scores": {"min": float(g.min()), "median": float(np.median(g)), "max": float(g.max())},
              "defect_scores": ({"min": float(d.min()), "median": float(np.median(d)), "max": float(d.max())}
                                if len(d) else None),
              "false_rejects": {"previous": int((g >= old).sum()), "new": int((g >= new).sum())},
              "missed_defects": ({"previous": int((d < old).sum()), "new": int((d < new).sum())} if len(d) else None),
              "images_sha256": listing}
    if len(d) and report["missed_defects"]["new"] > report["missed_defects"]["previous"] and not force:
        raise ConfigError(f"the new threshold {new:.4g} would let through {report['missed_defects']['new']} of "
                          f"{len(d)} given defects, the previous {old:.4g} {report['missed_defects']['previous']}; "
                          "refused (pass --force to accept it anyway)")
    report["histogram"] = str(histogram_png(out.with_name(out.stem + ".threshold.png"), g, d, old, new))
    data = artefact.read_bytes()
    if read_header(data)[1]:
        raise ConfigError(f"{artefact} keeps weights in external data files; re-tune a self-contained export")
    write_atomic(out, with_metadata(data, {"image_threshold": new, "threshold_source": json.dumps(
        {k: report[k] for k in ("previous_threshold", "rule", "good_images", "defect_images", "images_sha256")})}))
    return report
