"""Sort-once machinery shared by all threshold-sweeping metrics.

Every metric here (AUROC, AP, F1-max, the PRO curve) is a function of the confusion counts at each
distinct score, taken in descending order. Sorting is the only expensive step (about 2 s for 20M
pixels), so the pixels of a test set are sorted once and each subset (one defect type plus all
normal images) is taken from the sorted arrays with a boolean mask, which keeps them sorted.
The sweep is exact: every distinct score is a threshold, and tied scores form one point, as in
scikit-learn and in the official MVTec AD script.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from ..errors import DataError

# 8-connectivity: the official MVTec AD evaluation (pro_curve_util.compute_pro) labels ground-truth
# regions with structure = np.ones((3, 3)), so diagonal neighbours belong to the same defect region.
CONNECTIVITY = np.ones((3, 3), dtype=int)


class UndefinedMetricError(DataError):
    """The metric has no value for this input, e.g. AUROC with only one class present."""


def as_scores(x, name: str) -> np.ndarray:
    """A flat array of scores; float32 stays float32 (half the memory for pixel maps)."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise DataError(f"{name}: expected numbers, got dtype {a.dtype}")
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    a = a.ravel()
    # NaN has no place in an order; a model that emits it is broken, and sorting would hide that.
    if np.isnan(a).any():
        raise DataError(f"{name}: contains NaN; check the model output before evaluating")
    return a


def as_labels(y, name: str) -> np.ndarray:
    """Flat boolean labels from 0/1 or bool values; anything else is an error, not a guess."""
    a = np.asarray(y).ravel()
    if a.dtype == bool:
        return a
    if a.dtype.kind not in "iuf" or not np.isin(a, (0, 1)).all():
        raise DataError(f"{name}: labels must be 0/1 or bool, got values {np.unique(a)[:5]}")
    return a.astype(bool)


@dataclass
class Counts:
    """Confusion counts at each distinct threshold, thresholds descending (score >= t is positive)."""

    thresholds: np.ndarray
    tps: np.ndarray
    fps: np.ndarray
    pro: Optional[np.ndarray] = None  # cumulative PRO weight (sum of 1/region size), if weighted

    @property
    def n_pos(self) -> int:
        return int(self.tps[-1]) if self.tps.size else 0

    @property
    def n_neg(self) -> int:
        return int(self.fps[-1]) if self.fps.size else 0


@dataclass
class Ranked:
    """Items sorted by score, descending, with their payloads in the same order."""

    scores: np.ndarray
    positive: np.ndarray
    group: np.ndarray  # which image (or sample) each item came from
    weight: Optional[np.ndarray] = None  # PRO weight: 1/size of the item's gt region, 0 if normal

    @classmethod
    def build(cls, scores: np.ndarray, positive: np.ndarray, group: np.ndarray,
              weight: Optional[np.ndarray] = None) -> "Ranked":
        # Tie order does not matter: ties are merged into one threshold in counts().
        order = np.argsort(scores)[::-1]
        return cls(scores[order], positive[order], group[order],
                   None if weight is None else weight[order])

    def subset(self, keep_group: np.ndarray) -> "Ranked":
        """Only items whose group is selected; boolean indexing preserves the sorted order."""
        keep = keep_group[self.group]
        if keep.all():
            return self
        return Ranked(self.scores[keep], self.positive[keep], self.group[keep],
                      None if self.weight is None else self.weight[keep])

    def counts(self) -> Counts:
        s = self.scores
        if s.size == 0:
            raise UndefinedMetricError("no scores to evaluate")
        # Last index of each run of equal scores; `!=` (not np.diff) so that tied infinities stay tied.
        ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
        tps = np.cumsum(self.positive, dtype=np.int64)[ends]
        fps = ends + 1 - tps
        pro = None if self.weight is None else np.cumsum(self.weight, dtype=np.float64)[ends]
        return Counts(s[ends], tps, fps, pro)


def ranked_items(scores, labels) -> Ranked:
    s = as_scores(scores, "scores")
    y = as_labels(labels, "labels")
    if s.shape != y.shape:
        raise DataError(f"{s.size} scores but {y.size} labels; they must pair up one to one")
    return Ranked.build(s, y, np.arange(s.size))


@dataclass
class PixelSet:
    """All pixels of a test set, ranked once, plus how many gt regions each image has."""

    ranked: Ranked
    regions_per_image: np.ndarray

    def subset(self, keep_image: np.ndarray) -> "PixelSet":
        return PixelSet(self.ranked.subset(keep_image), self.regions_per_image[keep_image])


def pixel_set(maps, masks, weighted: bool = True) -> PixelSet:
    """Flatten maps and masks (lists of 2-D arrays or N x H x W arrays; a None mask is all normal).

    Images may differ in size; each map must match its mask. Mask pixels > 0 are anomalous, as in
    the official script (MVTec masks are 0/255).
    """
    maps = list(maps)
    masks = [None] * len(maps) if masks is None else list(masks)
    if len(maps) != len(masks):
        raise DataError(f"{len(maps)} anomaly maps but {len(masks)} masks")
    if not maps:
        raise UndefinedMetricError("no anomaly maps to evaluate")
    flat_s, flat_y, flat_w, sizes, regions = [], [], [], [], []
    for i, (m, g) in enumerate(zip(maps, masks)):
        m = np.asarray(m)
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]  # a 1 x H x W map straight from a model
        if m.ndim != 2:
            raise DataError(f"anomaly map {i}: expected a 2-D array, got shape {m.shape}")
        g = np.zeros(m.shape, dtype=bool) if g is None else _binary_mask(g, i)
        if g.shape != m.shape:
            raise DataError(f"image {i}: map shape {m.shape} differs from mask shape {g.shape}; "
                            "resize the map to the mask (or the mask to the map) before evaluating")
        flat_s.append(as_scores(m, f"anomaly map {i}"))
        flat_y.append(g.ravel())
        sizes.append(m.size)
        n = 0
        w = np.zeros(m.size, dtype=np.float64)
        if weighted and g.any():
            lab, n = ndimage.label(g, structure=CONNECTIVITY)
            inv = 1.0 / np.maximum(np.bincount(lab.ravel()), 1)
            inv[0] = 0.0
            w = inv[lab.ravel()]
        flat_w.append(w)
        regions.append(n)
    group = np.repeat(np.arange(len(maps), dtype=np.int32), sizes)
    ranked = Ranked.build(np.concatenate(flat_s), np.concatenate(flat_y), group,
                          np.concatenate(flat_w) if weighted else None)
    return PixelSet(ranked, np.asarray(regions, dtype=np.int64))


def _binary_mask(g, i: int) -> np.ndarray:
    g = np.asarray(g)
    if g.ndim == 3 and g.shape[0] == 1:
        g = g[0]
    elif g.ndim == 3 and g.shape[-1] == 1:
        g = g[..., 0]
    if g.ndim != 2:
        raise DataError(f"mask {i}: expected a 2-D array, got shape {g.shape}")
    return g > 0


def trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) for x in [x[0], x_max], with y at x_max linearly interpolated.

    x must be ascending (repeats allowed: vertical steps add no area). Same rule as the official
    script's `trapezoid`, so AUPRO values are comparable.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n_in = int(np.searchsorted(x, x_max, side="right"))  # points with x <= x_max
    if n_in == 0:
        return 0.0
    xs, ys = x[:n_in], y[:n_in]
    area = float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))
    if xs[-1] < x_max and n_in < x.size:
        x0, x1, y0, y1 = xs[-1], x[n_in], ys[-1], y[n_in]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_at) * (x_max - x0)
    return area


def roc_points(c: Counts) -> Tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) starting at (0, 0); needs both classes."""
    if c.n_pos == 0 or c.n_neg == 0:
        which = "anomalous" if c.n_pos == 0 else "normal"
        raise UndefinedMetricError(f"AUROC needs both classes, but there are no {which} samples")
    fpr = np.concatenate([[0.0], c.fps / c.n_neg])
    tpr = np.concatenate([[0.0], c.tps / c.n_pos])
    return fpr, tpr
