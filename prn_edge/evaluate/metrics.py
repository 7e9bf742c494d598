"""Anomaly-detection metrics in numpy: AUROC, AP, F1-max, PRO curve / AUPRO.

All sweeps are exact (every distinct score is a threshold; ties form one point), so AUROC and AP
equal scikit-learn's roc_auc_score / average_precision_score and AUPRO follows the official
MVTec AD script (8-connected gt regions, FPR over all normal pixels, trapezoid to the FPR limit
with the PRO interpolated there, divided by the limit). Pixel metrics are never subsampled: about
25 bytes per pixel are held while sorting (20M pixels ~ 0.5 GB, ~2-3 s on one core).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..errors import ConfigError, DataError
from .ranking import (Counts, PixelSet, UndefinedMetricError, as_labels, pixel_set, ranked_items,
                      roc_points, trapezoid_to)

__all__ = ["UndefinedMetricError", "auroc", "roc_curve", "average_precision", "f1_max",
           "pixel_auroc", "pro_curve", "aupro", "evaluate_predictions"]


def _auroc(c: Counts) -> float:
    fpr, tpr = roc_points(c)
    return float(np.sum(0.5 * (tpr[1:] + tpr[:-1]) * np.diff(fpr)))


def _ap(c: Counts) -> float:
    if c.n_pos == 0:
        raise UndefinedMetricError("average precision needs at least one anomalous sample")
    # Step-wise (uninterpolated) AP: sum over thresholds of recall gain x precision, as sklearn.
    precision = c.tps / (c.tps + c.fps)
    recall_gain = np.diff(c.tps, prepend=0) / c.n_pos
    return float(np.sum(recall_gain * precision))


def _f1(c: Counts) -> Tuple[float, float]:
    if c.n_pos == 0:
        raise UndefinedMetricError("F1 needs at least one anomalous sample")
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (TP + FP + P).
    f1 = 2.0 * c.tps / (c.tps + c.fps + c.n_pos)
    k = int(np.argmax(f1))  # first maximum = the highest threshold reaching it
    return float(f1[k]), float(c.thresholds[k])


def _pro_points(px: PixelSet) -> Tuple[np.ndarray, np.ndarray]:
    c = px.ranked.counts()
    n_regions = int(px.regions_per_image.sum())
    if n_regions == 0:
        raise UndefinedMetricError("PRO needs at least one ground-truth defect region")
    if c.n_neg == 0:
        raise UndefinedMetricError("PRO needs normal pixels to measure the false positive rate")
    # Normal pixels are exactly the unlabeled ones, so fps counts them; clip cumsum round-off at 1.
    fpr = np.minimum(c.fps / c.n_neg, 1.0)
    pro = np.minimum(c.pro / n_regions, 1.0)
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], pro, [1.0]])


def _aupro(px: PixelSet, fpr_limit: float) -> float:
    fpr, pro = _pro_points(px)
    return trapezoid_to(fpr, pro, fpr_limit) / fpr_limit


def _check_limit(fpr_limit: float) -> float:
    if not 0 < fpr_limit <= 1:
        raise ConfigError(f"fpr_limit={fpr_limit}: must be in (0, 1]; the MVTec AD protocol uses 0.3")
    return float(fpr_limit)


def auroc(scores, labels) -> float:
    """Area under the ROC curve; labels 1 = anomalous. Ties count half, as in roc_auc_score."""
    return _auroc(ranked_items(scores, labels).counts())


def roc_curve(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    return roc_points(ranked_items(scores, labels).counts())


def average_precision(scores, labels) -> float:
    """Average precision, equal to sklearn's average_precision_score."""
    return _ap(ranked_items(scores, labels).counts())


def f1_max(scores, labels) -> Tuple[float, float]:
    """(best F1 over all thresholds, the threshold reaching it); score >= threshold is anomalous."""
    return _f1(ranked_items(scores, labels).counts())


def pixel_auroc(maps, masks) -> float:
    """AUROC over all pixels of all images (masks > 0 anomalous; None = all normal)."""
    return _auroc(pixel_set(maps, masks, weighted=False).ranked.counts())


def pro_curve(maps, masks) -> Tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) of the MVTec AD per-region-overlap curve, starting at (0, 0), ending at (1, 1)."""
    return _pro_points(pixel_set(maps, masks))


def aupro(maps, masks, fpr_limit: float = 0.3) -> float:
    """Normalized area under the PRO curve for FPR in [0, fpr_limit] (MVTec AD protocol).

    A map that ranks every defect pixel above every normal pixel scores 1.0; a constant map gives
    the diagonal PRO = FPR, i.e. fpr_limit / 2 (0.15 at the default), as random scores would.
    """
    return _aupro(pixel_set(maps, masks), _check_limit(fpr_limit))


# ---------------------------------------------------------------------------------------------
# Whole test set: overall, per defect type, and means over seen / unseen types.

METRIC_KEYS = ("image_auroc", "image_ap", "image_f1_max", "image_f1_threshold",
               "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_f1_threshold", "aupro")
# Thresholds are per-subset operating points, not qualities: averaging them means nothing.
MEAN_KEYS = tuple(k for k in METRIC_KEYS if not k.endswith("_threshold"))


def evaluate_predictions(image_scores, maps, labels, masks, defect_types,
                         seen: dict[str, bool] | None = None, *, fpr_limit: float = 0.3,
                         normal_type: str = "good") -> dict:
    """All metrics for one category's test set.

    image_scores, labels (1 = anomalous), defect_types: one entry per test image. maps, masks: one
    2-D array per image (a None mask means all normal); maps=None or masks=None skips pixel metrics.
    Each defect type is evaluated as its defect images against ALL normal test images. `seen` maps
    a defect type to whether real defects of that type were used in training; types missing from
    it count as unseen; seen=None marks every type as unknown (None). A metric that is undefined
    for a subset (e.g. no defects, no gt regions) is None.
    """
    fpr_limit = _check_limit(fpr_limit)
    y = as_labels(labels, "labels")
    n = y.size
    types = [str(t) for t in _one_per_image(defect_types, n, "defect_types")]
    images = ranked_items(_one_per_image(image_scores, n, "image_scores"), y)
    pixels = None
    if maps is not None and masks is not None:
        pixels = pixel_set(_one_per_image(maps, n, "maps"), _one_per_image(masks, n, "masks"))
        normal_with_defect = np.flatnonzero(~y & (pixels.regions_per_image > 0))
        if normal_with_defect.size:
            raise DataError(f"images {normal_with_defect[:5].tolist()} are labeled normal but their masks "
                            "mark defects; labels and masks must agree")
    bad = [i for i in np.flatnonzero(y) if types[i] == normal_type]
    if bad:
        raise DataError(f"images {bad[:5]} are labeled anomalous but typed {normal_type!r}")

    def subset_metrics(keep: np.ndarray) -> dict:
        out = {}
        c = images.subset(keep).counts()
        out["image_auroc"] = _maybe(_auroc, c)
        out["image_ap"] = _maybe(_ap, c)
        out["image_f1_max"], out["image_f1_threshold"] = _maybe(_f1, c) or (None, None)
        if pixels is None:
            out.update(pixel_auroc=None, pixel_ap=None, pixel_f1_max=None,
                       pixel_f1_threshold=None, aupro=None)
            return out
        px = pixels.subset(keep)
        pc = px.ranked.counts()
        out["pixel_auroc"] = _maybe(_auroc, pc)
        out["pixel_ap"] = _maybe(_ap, pc)
        out["pixel_f1_max"], out["pixel_f1_threshold"] = _maybe(_f1, pc) or (None, None)
        out["aupro"] = _maybe(_aupro, px, fpr_limit)
        return out

    overall = {"n_images": n, "n_normal": int((~y).sum()), "n_anomalous": int(y.sum())}
    overall.update(subset_metrics(np.ones(n, dtype=bool)))
    per_type = {}
    type_arr = np.asarray(types, dtype=object)
    for t in sorted({types[i] for i in np.flatnonzero(y)}):
        keep = ~y | (type_arr == t)
        entry = {"seen": None if seen is None else bool(seen.get(t, False)),
                 "n": int((y & (type_arr == t)).sum())}
        entry.update(subset_metrics(keep))
        per_type[t] = entry
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
    # Sized sequences (lists, arrays) are checked against the image count before any work is done.
    if len(values) != n:
        raise DataError(f"{name}: expected {n} entries (one per test image), got {len(values)}")
    return values
