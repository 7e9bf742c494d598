"""Exact threshold sweeps shared by AUROC, AP, F1-max and the PRO curve.

Every distinct score is a threshold (score >= t is anomalous) and tied scores form one point, as
in scikit-learn and the official MVTec AD script. The curves only change direction at distinct
scores of *positive* items; between two of them only negatives enter, which moves the curve along
a straight (horizontal) line. So the sweep sorts the positives (few: defect pixels), sorts the
negatives' scores without payload (numpy's vectorized sort, ~0.2 s for 20M float32), and counts
negatives at and above each positive threshold with searchsorted. The curve through those
vertices is the full curve with collinear points dropped, so areas are exact, not approximated.

Negatives are kept in parts (e.g. all normal images; the images of one defect type), so a subset
"one defect type + all normal images" reuses the sorted parts instead of sorting again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterable, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..errors import DataError

# 8-connectivity: the official MVTec AD evaluation (compute_pro) labels ground-truth regions with
# structure = np.ones((3, 3)), so diagonal neighbours belong to the same defect region.
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
class Part:
    """Scores of a group of items: negatives sorted ascending, positives as they come."""

    neg: np.ndarray
    pos: np.ndarray
    weight: Optional[np.ndarray] = None  # PRO weight per positive: 1 / size of its gt region
    n_regions: int = 0

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray) -> "Part":
        return cls(np.sort(scores[~labels]), scores[labels])


@dataclass
class Sweep:
    """Counts at each distinct positive score t_j, thresholds descending."""

    thresholds: np.ndarray
    tps: np.ndarray  # positives with score >= t_j
    neg_ge: np.ndarray  # negatives with score >= t_j
    neg_gt: np.ndarray  # negatives with score > t_j
    pro: Optional[np.ndarray]  # summed PRO weight of positives with score >= t_j
    n_pos: int
    n_neg: int
    n_regions: int

    def vertices(self, y_cum: np.ndarray, y_total: float) -> Tuple[np.ndarray, np.ndarray]:
        """Curve (x = FPR, y = y_cum / y_total) through (0, 0), both ends of each tie, (1, 1).

        At t_j the curve runs from (negatives > t_j, y before t_j) to (negatives >= t_j, y at t_j):
        a diagonal if positives and negatives tie at t_j, which is how ties count half.
        """
        k = self.thresholds.size
        x = np.empty(2 * k + 2)
        y = np.empty(2 * k + 2)
        x[0] = y[0] = 0.0
        x[1:-1:2], x[2:-1:2] = self.neg_gt, self.neg_ge
        y[1:-1:2] = np.concatenate([[0.0], y_cum[:-1]])
        y[2:-1:2] = y_cum
        x[-1], y[-1] = self.n_neg, y_total
        # Clip cumulative round-off so the curve never exceeds (1, 1), as the official script does.
        return np.minimum(x / self.n_neg, 1.0), np.minimum(y / y_total, 1.0)


def sweep(parts: Iterable[Part]) -> Sweep:
    parts = list(parts)
    pos = np.concatenate([p.pos for p in parts]) if parts else np.empty(0)
    n_neg = sum(p.neg.size for p in parts)
    if pos.size + n_neg == 0:
        raise UndefinedMetricError("no scores to evaluate")
    weighted = all(p.weight is not None for p in parts)
    order = np.argsort(pos)[::-1]
    s = pos[order]
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True)) if s.size else np.empty(0, dtype=int)
    t = s[ends]
    pro = None
    if weighted and s.size:
        pro = np.cumsum(np.concatenate([p.weight for p in parts])[order], dtype=np.float64)[ends]
    # searchsorted wants ascending queries for speed; flip in and out.
    q = t[::-1]
    neg_lt = sum(np.searchsorted(p.neg, q, side="left") for p in parts)
    neg_le = sum(np.searchsorted(p.neg, q, side="right") for p in parts)
    return Sweep(thresholds=t, tps=(ends + 1).astype(np.int64),
                 neg_ge=(n_neg - np.asarray(neg_lt))[::-1], neg_gt=(n_neg - np.asarray(neg_le))[::-1],
                 pro=pro, n_pos=int(pos.size), n_neg=int(n_neg),
                 n_regions=sum(p.n_regions for p in parts))


def item_parts(scores, labels, keys: Optional[Sequence[Hashable]] = None) -> dict:
    """Parts of plain scored items (e.g. images), grouped by key (one part if keys is None)."""
    s = as_scores(scores, "scores")
    y = as_labels(labels, "labels")
    if s.shape != y.shape:
        raise DataError(f"{s.size} scores but {y.size} labels; they must pair up one to one")
    if keys is None:
        return {None: Part.of(s, y)}
    keys = list(keys)
    if len(keys) != s.size:
        raise DataError(f"{s.size} scores but {len(keys)} group keys")
    out = {}
    for key in dict.fromkeys(keys):  # first-seen order
        sel = np.fromiter((k == key for k in keys), dtype=bool, count=len(keys))
        out[key] = Part.of(s[sel], y[sel])
    return out


def pixel_parts(maps, masks, keys: Optional[Sequence[Hashable]] = None, weighted: bool = True) -> dict:
    """Pixel parts from maps and masks (lists of 2-D arrays or N x H x W arrays).

    A None mask is all normal; mask pixels > 0 are anomalous (MVTec masks are 0/255), as in the
    official script. Images may differ in size; each map must match its mask. Images with the
    same key share one part.
    """
    maps = list(maps)
    masks = [None] * len(maps) if masks is None else list(masks)
    if len(maps) != len(masks):
        raise DataError(f"{len(maps)} anomaly maps but {len(masks)} masks")
    if not maps:
        raise UndefinedMetricError("no anomaly maps to evaluate")
    keys = [None] * len(maps) if keys is None else list(keys)
    # One dtype for all parts, so searchsorted never converts a whole sorted part per call.
    dtype = np.result_type(*[np.asarray(m).dtype for m in maps])
    dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)
    acc: dict = {}
    for i, (m, g, key) in enumerate(zip(maps, masks, keys)):
        m = _plane(m, f"anomaly map {i}")
        g = np.zeros(m.shape, dtype=bool) if g is None else _plane(g, f"mask {i}") > 0
        if g.shape != m.shape:
            raise DataError(f"image {i}: map shape {m.shape} differs from mask shape {g.shape}; "
                            "resize the map to the mask (or the mask to the map) before evaluating")
        s = as_scores(m, f"anomaly map {i}").astype(dtype, copy=False)
        g = g.ravel()
        neg, pos, w, regions = acc.setdefault(key, ([], [], [], [0]))
        neg.append(s[~g] if g.any() else s)
        if g.any():
            pos.append(s[g])
            if weighted:
                lab, n = ndimage.label(g.reshape(m.shape), structure=CONNECTIVITY)
                inv = 1.0 / np.maximum(np.bincount(lab.ravel()), 1)
                w.append(inv[lab.ravel()[g]])
                regions[0] += n
    out = {}
    for key, (neg, pos, w, regions) in acc.items():
        neg_all = np.concatenate(neg)
        neg_all.sort()
        pos_all = np.concatenate(pos) if pos else np.empty(0, dtype=neg_all.dtype)
        weight = (np.concatenate(w) if w else np.empty(0)) if weighted else None
        out[key] = Part(neg_all, pos_all, weight, regions[0])
    return out


def _plane(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:-1])  # 1xHxW or HxWx1
    if a.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array, got shape {a.shape}")
    return a


def trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) for x in [x[0], x_max], with y at x_max linearly interpolated.

    x must be ascending (repeats allowed: vertical steps add no area). Same rule as the official
    script's `trapezoid`, so AUPRO values are comparable.
    """
    n_in = int(np.searchsorted(x, x_max, side="right"))  # points with x <= x_max
    if n_in == 0:
        return 0.0
    xs, ys = x[:n_in], y[:n_in]
    area = float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))
    if xs[-1] < x_max and n_in < x.size:
        x0, x1, y0, y1 = xs[-1], x[n_in], ys[-1], y[n_in]
        area += 0.5 * (y0 + y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)) * (x_max - x0)
    return area
