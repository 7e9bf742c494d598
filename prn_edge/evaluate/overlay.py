"""Visual check panels: [image | ground truth | heat map | predicted mask], each with a caption."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Optional, Tuple

import cv2
import numpy as np

from ..errors import DataError
from .naming import safe_filename, sample_id

GT_COLOR = (0, 255, 0)  # RGB
PRED_COLOR = (255, 0, 0)
MIN_TILE = 192  # tiles narrower than this are upscaled so captions stay legible (64 px tiny models)
CAPTION_H = 20
GAP = 2


@dataclass
class OverlayItem:
    """One test image to draw. save_overlays also takes a mapping with these keys (amap may be
    named 'map') or a (sample, image, map, mask[, score[, decision]]) tuple."""

    image: np.ndarray
    amap: np.ndarray
    mask: Optional[np.ndarray]
    defect_type: str
    stem: str
    score: Optional[float] = None
    decision: Optional[bool] = None  # True = rejected (anomalous) by the image threshold


def overlay(image_rgb_uint8: np.ndarray, amap_float: np.ndarray, gt_mask: Optional[np.ndarray],
            threshold: Optional[float], *, score: Optional[float] = None, decision: Optional[bool] = None,
            value_range: Optional[Tuple[float, float]] = None, truth_panel: bool = True) -> np.ndarray:
    """A uint8 RGB panel: image | gt outlined | jet heat map over the image | map >= threshold outlined
    (without the ground-truth tile when truth_panel is False: images that have none, as `prn-edge predict` takes).

    The map and mask are resized to the image if their size differs. Heat map colours span
    value_range; by default [0, 1] when the map lies in it (probabilities, comparable across
    images), else the map's own min..max.
    """
    img = _rgb(image_rgb_uint8)
    h, w = img.shape[:2]
    amap = _resized(np.asarray(amap_float, dtype=np.float32), (h, w), cv2.INTER_LINEAR)
    lo, hi = value_range if value_range is not None else _auto_range(amap)
    norm = np.clip((amap - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    heat = cv2.addWeighted(img, 0.5, np.ascontiguousarray(heat), 0.5, 0.0)

    line = max(1, round(max(h, w) / 160))
    gt_tile, gt_caption = img.copy(), "no ground truth"
    if gt_mask is not None:
        gt = _resized(np.asarray(gt_mask) > 0, (h, w), cv2.INTER_NEAREST)
        _outline(gt_tile, gt, GT_COLOR, line)
        gt_caption = "ground truth" if gt.any() else "ground truth: none"
    pred_tile, pred_caption = img.copy(), "no threshold"
    if threshold is not None:
        pred = amap >= threshold
        _outline(pred_tile, pred, PRED_COLOR, line)
        pred_caption = f"map >= {threshold:.3g}"

    verdict = "" if decision is None else ("  REJECT" if decision else "  pass")
    captions = [("image" if score is None else f"image  score {score:.3g}") + verdict, gt_caption,
                f"map [{_num(lo)}, {_num(hi)}]", pred_caption]
    tiles = [_captioned(t, c) for t, c in zip((img, gt_tile, heat, pred_tile), captions)]
    if not truth_panel:
        del tiles[1]
    sep = np.full((tiles[0].shape[0], GAP, 3), 255, dtype=np.uint8)
    out = [tiles[0]]
    for t in tiles[1:]:
        out += [sep, t]
    return np.concatenate(out, axis=1)


def save_overlays(out_dir, items: Iterable[Any], max_images: int = 32,
                  threshold: Optional[float] = None) -> List[Path]:
    """Write one panel PNG per item as <out_dir>/<defect_type>_<stem>.png; returns the paths.

    With more items than max_images, defect types take turns (in the order given), so every type
    is shown rather than only the first ones.
    """
    items = [_item(it) for it in items]
    by_type: dict = {}
    for it in items:
        by_type.setdefault(it.defect_type, []).append(it)
    chosen: List[OverlayItem] = []
    queues = list(by_type.values())
    while len(chosen) < max_images and any(queues):
        for q in queues:
            if q and len(chosen) < max_images:
                chosen.append(q.pop(0))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for it in chosen:
        panel = overlay(it.image, it.amap, it.mask, threshold, score=it.score, decision=it.decision)
        p = out / f"{safe_filename(it.defect_type)}_{safe_filename(it.stem)}.png"
        if not cv2.imwrite(str(p), panel[..., ::-1]):
            raise OSError(f"could not write {p}")
        paths.append(p)
    return paths


def _item(it: Any) -> OverlayItem:
    if isinstance(it, OverlayItem):
        return it
    if isinstance(it, (tuple, list)) and len(it) in (4, 5, 6):
        # (sample, image, map, mask[, score[, decision]]); the sample names the file (see naming.sample_id).
        defect, stem = sample_id(it[0])
        return OverlayItem(it[1], it[2], it[3], defect, stem, *it[4:])
    if isinstance(it, dict):
        d = dict(it)
        if "amap" not in d and "map" in d:
            d["amap"] = d.pop("map")
        try:
            return OverlayItem(**{k: d.get(k) for k in OverlayItem.__dataclass_fields__})
        except TypeError as e:
            raise DataError(f"overlay item: {e}") from None
    raise DataError(f"overlay item: expected OverlayItem, dict or (sample, image, map, mask), "
                    f"got {type(it).__name__}")


def _rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise DataError(f"overlay: image must be uint8 RGB, got dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise DataError(f"overlay: image must be H x W x 3 (or grey H x W), got shape {a.shape}")
    if a.shape[1] < MIN_TILE:
        f = MIN_TILE / a.shape[1]
        a = cv2.resize(a, (MIN_TILE, round(a.shape[0] * f)), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(a)


def _resized(a: np.ndarray, hw: Tuple[int, int], interp: int) -> np.ndarray:
    a = np.squeeze(a)
    if a.ndim != 2:
        raise DataError(f"overlay: map and mask must be 2-D, got shape {a.shape}")
    if a.shape == hw:
        return a
    src = a.astype(np.uint8) if a.dtype == bool else a
    out = cv2.resize(src, (hw[1], hw[0]), interpolation=interp)
    return out.astype(bool) if a.dtype == bool else out


def _auto_range(amap: np.ndarray) -> Tuple[float, float]:
    lo, hi = float(amap.min()), float(amap.max())
    return (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi)


def _num(v: float) -> str:
    # Rounded first, so a range like 1e-19..3 reads "0..3", not "1e-19..3".
    return f"{round(v, 3):.4g}"


def _outline(tile: np.ndarray, mask: np.ndarray, color, thickness: int) -> None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(tile, contours, -1, color, thickness)


def _captioned(tile: np.ndarray, text: str) -> np.ndarray:
    strip = np.zeros((CAPTION_H, tile.shape[1], 3), dtype=np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    width = cv2.getTextSize(text, font, scale, 1)[0][0]
    if width > tile.shape[1] - 6:
        scale *= (tile.shape[1] - 6) / width
    cv2.putText(strip, text, (3, CAPTION_H - 6), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, tile], axis=0)
