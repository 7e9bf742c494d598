"""Anomaly-detection metrics in numpy: AUROC, AP, F1-max, PRO curve / AUPRO, and a full report.

All sweeps are exact (see sweep.py): AUROC and AP equal scikit-learn's roc_auc_score and
average_precision_score, and AUPRO follows the official MVTec AD script (8-connected gt regions,
PRO averaged over all regions of all images, FPR over all normal pixels, trapezoid up to the FPR
limit with the PRO interpolated there, divided by the limit). Pixels are never subsampled; about
10 bytes per pixel are held (300 maps of 256x256 evaluate in a few seconds on one core).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..errors import ConfigError, DataError
from .sweep import Sweep, UndefinedMetricError, as_labels, item_parts, pixel_parts, sweep, trapezoid_to

__all__ = ["UndefinedMetricError", "auroc", "roc_curve", "average_precision", "f1_max",
           "pixel_auroc", "pro_curve", "aupro", "evaluate_predictions"]


def _roc(sw: Sweep) -> Tuple[np.ndarray, np.ndarray]:
    if sw.n_pos == 0 or sw.n_neg == 0:
        which = "anomalous" if sw.n_pos == 0 else "normal"
        raise UndefinedMetricError(f"AUROC needs both classes, but there are no {which} samples")
    return sw.vertices(sw.tps.astype(np.float64), sw.n_pos)


def _auroc(sw: Sweep) -> float:
    fpr, tpr = _roc(sw)
    return trapezoid_to(fpr, tpr, 1.0)


def _ap(sw: Sweep) -> float:
    if sw.n_pos == 0:
        raise UndefinedMetricError("average precision needs at least one anomalous sample")
    # Uninterpolated AP as sklearn: recall gain x precision at each threshold where recall grows.
    precision = sw.tps / (sw.tps + sw.neg_ge)
    return float(np.sum(np.diff(sw.tps, prepend=0) / sw.n_pos * precision))


def _f1(sw: Sweep) -> Tuple[float, float]:
    if sw.n_pos == 0:
        raise UndefinedMetricError("F1 needs at least one anomalous sample")
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (TP + FP + P). Only thresholds at positive scores can be
    # best: going lower without gaining a positive only adds false positives.
    f1 = 2.0 * sw.tps / (sw.tps + sw.neg_ge + sw.n_pos)
    k = int(np.argmax(f1))  # first maximum = the highest threshold reaching it
    return float(f1[k]), float(sw.thresholds[k])


def _pro(sw: Sweep) -> Tuple[np.ndarray, np.ndarray]:
    if sw.n_regions == 0:
        raise UndefinedMetricError("PRO needs at least one ground-truth defect region")
    if sw.n_neg == 0:
        raise UndefinedMetricError("PRO needs normal pixels to measure the false positive rate")
    return sw.vertices(sw.pro, sw.n_regions)


def _aupro(sw: Sweep, fpr_limit: float) -> float:
    fpr, pro = _pro(sw)
    return trapezoid_to(fpr, pro, fpr_limit) / fpr_limit


def _check_limit(fpr_limit: float) -> float:
    if not 0 < fpr_limit <= 1:
        raise ConfigError(f"fpr_limit={fpr_limit}: must be in (0, 1]; the MVTec AD protocol uses 0.3")
    return float(fpr_limit)


def _items(scores, labels) -> Sweep:
    return sweep(item_parts(scores, labels).values())


def auroc(scores, labels) -> float:
    """Area under the ROC curve; labels 1 = anomalous. Ties count half, as in roc_auc_score."""
    return _auroc(_items(scores, labels))


def roc_curve(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from (0, 0) to (1, 1), with collinear points dropped."""
    return _roc(_items(scores, labels))


def average_precision(scores, labels) -> float:
    """Average precision, equal to sklearn's average_precision_score."""
    return _ap(_items(scores, labels))


def f1_max(scores, labels) -> Tuple[float, float]:
    """(best F1 over all thresholds, the threshold reaching it); score >= threshold is anomalous."""
    return _f1(_items(scores, labels))


def pixel_auroc(maps, masks) -> float:
    """AUROC over all pixels of all images (mask > 0 anomalous; a None mask is all normal)."""
    return _auroc(sweep(pixel_parts(maps, masks, weighted=False).values()))


def pro_curve(maps, masks) -> Tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) of the MVTec AD per-region-overlap curve, from (0, 0) to (1, 1)."""
    return _pro(sweep(pixel_parts(maps, masks).values()))


def aupro(maps, masks, fpr_limit: float = 0.3) -> float:
    """Normalized area under the PRO curve for FPR in [0, fpr_limit] (MVTec AD protocol).

    A map that ranks every defect pixel above every normal pixel scores 1.0. A constant map gives
    the diagonal PRO = FPR, i.e. fpr_limit / 2 (0.15 at the default), as random scores would.
    """
    return _aupro(sweep(pixel_parts(maps, masks).values()), _check_limit(fpr_limit))


# ---------------------------------------------------------------------------------------------
# Whole test set: overall, per defect type, and means over seen / unseen types.

METRIC_KEYS = ("image_auroc", "image_ap", "image_f1_max", "image_f1_threshold",
               "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_f1_threshold", "aupro")
# Thresholds are operating points of one subset, not qualities: averaging them means nothing.
MEAN_KEYS = tuple(k for k in METRIC_KEYS if not k.endswith("_threshold"))
_NORMAL = ("__normal__",)  # part key of all normal images; a tuple cannot clash with a type name


def evaluate_predictions(image_scores, maps, labels, masks, defect_types,
                         seen: dict[str, bool] | None = None, *, fpr_limit: float = 0.3,
                         normal_type: str = "good") -> dict:
    """All metrics for one category's test set.

    image_scores, labels (1 = anomalous), defect_types: one entry per test image. maps, masks: one
    2-D array per image (a None mask: all normal for a normal image; for an anomalous one, no ground truth, and
    the image is left out of the pixel metrics); maps=None or masks=None skips pixel metrics.
    Each defect type is evaluated as its defect images against ALL normal test images. `seen`
    maps a defect type to whether real defects of it were used in training; types missing from it
    count as unseen; seen=None marks every type unknown (None). A metric that is undefined for a
    subset (no defects, no gt regions, ...) is None.

    Returns {"fpr_limit", "overall": {n_images, n_normal, n_anomalous, metrics...},
    "per_type": {type: {seen, n, metrics...}}, "means": {"seen"|"unseen"|"all": {n_types, metrics...}}}
    with the metric names in METRIC_KEYS (means: MEAN_KEYS).
    """
    fpr_limit = _check_limit(fpr_limit)
    y = as_labels(labels, "labels")
    n = y.size
    types = [str(t) for t in _one_per_image(defect_types, n, "defect_types")]
    bad = [i for i in np.flatnonzero(y) if types[i] == normal_type]
    if bad:
        raise DataError(f"images {bad[:5]} are labeled anomalous but typed {normal_type!r}")
    # Each image belongs to one part: all normals together, or the defect images of one type.
    keys = [types[i] if y[i] else _NORMAL for i in range(n)]
    images = item_parts(_one_per_image(image_scores, n, "image_scores"), y, keys)
    pixels = None
    if maps is not None and masks is not None:
        maps, masks = _one_per_image(maps, n, "maps"), _one_per_image(masks, n, "masks")
        # a defect image without a mask: its pixels are unknown (not normal), so it sits out the pixel metrics
        known = [i for i in range(n) if not (y[i] and masks[i] is None)]
        pixels = pixel_parts([maps[i] for i in known], [masks[i] for i in known], [keys[i] for i in known]) \
            if known else None
        if pixels and _NORMAL in pixels and pixels[_NORMAL].pos.size:
            raise DataError("some images labeled normal have defect pixels in their masks; "
                            "labels and masks must agree")

    def metrics_of(part_keys: list) -> dict:
        out = {}
        sw = sweep(images[k] for k in part_keys)
        out["image_auroc"] = _maybe(_auroc, sw)
        out["image_ap"] = _maybe(_ap, sw)
        out["image_f1_max"], out["image_f1_threshold"] = _maybe(_f1, sw) or (None, None)
        if pixels is None:
            out.update(dict.fromkeys(("pixel_auroc", "pixel_ap", "pixel_f1_max",
                                      "pixel_f1_threshold", "aupro")))
            return out
        # a type none of whose images has a mask has no pixel part: its pixel metrics are undefined (None)
        sw = sweep(pixels[k] for k in part_keys if k in pixels)
        out["pixel_auroc"] = _maybe(_auroc, sw)
        out["pixel_ap"] = _maybe(_ap, sw)
        out["pixel_f1_max"], out["pixel_f1_threshold"] = _maybe(_f1, sw) or (None, None)
        out["aupro"] = _maybe(_aupro, sw, fpr_limit)
        return out

    normal = [_NORMAL] if _NORMAL in images else []
    defect_types_found = sorted(k for k in images if k != _NORMAL)
    overall = {"n_images": n, "n_normal": int((~y).sum()), "n_anomalous": int(y.sum())}
    if maps is not None and masks is not None:
        overall["n_anomalous_without_mask"] = n - len(known)
    overall.update(metrics_of(normal + defect_types_found))
    per_type = {}
    for t in defect_types_found:
        per_type[t] = {"seen": None if seen is None else bool(seen.get(t, False)),
                       "n": int(images[t].pos.size)}
        per_type[t].update(metrics_of(normal + [t]))
    means = {
        "seen": _mean_over([e for e in per_type.values() if e["seen"] is True]),
        "unseen": _mean_over([e for e in per_type.values() if e["seen"] is False]),
        "all": _mean_over(list(per_type.values())),
    }
    return {"fpr_limit": fpr_limit, "overall": overall, "per_type": per_type, "means": means}


def _maybe(fn, *args):
    """The metric's value, or None where it is undefined for this subset."""
    try:
        return fn(*args)
    except UndefinedMetricError:
        return None


def _mean_over(entries: list) -> dict:
    out: dict = {"n_types": len(entries)}
    for k in MEAN_KEYS:
        vals = [e[k] for e in entries if e[k] is not None]
        out[k] = float(np.mean(vals)) if vals else None
    return out


def _one_per_image(values, n: int, name: str):
    # Checked before any work, so a misaligned list fails fast with a clear message.
    if len(values) != n:
        raise DataError(f"{name}: expected {n} entries (one per test image), got {len(values)}")
    return values
