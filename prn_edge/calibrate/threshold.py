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
    from ..data.images import IMAGE_EXTS, is_image_file

    if not Path(folder).is_dir():
        raise DataError(f"{what} folder {folder} does not exist")
    files = sorted(p for p in Path(folder).rglob("*") if is_image_file(p))
    if not files:
        raise DataError(f"{what} folder {folder} has no images ({', '.join(IMAGE_EXTS)})")
    return files


def _scores(engine, files: list[Path]) -> np.ndarray:
    from ..data.images import read_image
    from ..runtime.preprocess import rgb_to_frames

    spec = engine.input_spec
    out = []
    for i in range(0, len(files), 8):
        frames = rgb_to_frames([read_image(p) for p in files[i:i + 8]], spec)
        b = spec.batch or len(frames)
        for j in range(0, len(frames), b):
            out.append(np.asarray(engine.infer(frames[j:j + b]).scores, np.float64).reshape(-1))
    return np.concatenate(out)


def retune_threshold(artefact: Path, good: Path, out: Path, defects: Optional[Path] = None, quantile: float = 1.0,
                     margin: float = 0.1, threads: int = 0) -> dict:
    """Score the good (and defect) images with `artefact` (an exported .onnx) and write `out` with the new image
    threshold: between the highest good and the lowest defect score when they separate, else the good scores'
    `quantile` plus `margin` x the artefact's score spread."""
    import onnx

    from ..export.graph import set_metadata
    from ..export.metadata import encode_metadata, read_metadata
    from ..files import write_atomic
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
    model = onnx.load(str(artefact))
    set_metadata(model, encode_metadata({"image_threshold": new, "threshold_source": json.dumps(
        {k: report[k] for k in ("previous_threshold", "rule", "good_images", "defect_images", "images_sha256")})}))
    write_atomic(out, model.SerializeToString())
    return report
