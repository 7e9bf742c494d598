"""Where an object lies on its background, so synthetic defects land on the object, not beside it."""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi

BORDER = 4  # pixels of the image edge taken as background
MIN_FRACTION, MAX_FRACTION = 0.01, 0.95  # outside this the estimate is not trusted


def estimate_foreground(image: np.ndarray) -> np.ndarray:
    """HxW bool: pixels that differ from the border colour, cleaned by morphology.

    Meant for an object on a plain background. When the result is implausible (almost nothing,
    almost everything) the whole image is returned, which is the safe choice for textures.
    """
    img = image.astype(np.float32)
    h, w = img.shape[:2]
    full = np.ones((h, w), bool)
    edge = np.concatenate([img[:BORDER].reshape(-1, 3), img[-BORDER:].reshape(-1, 3),
                           img[:, :BORDER].reshape(-1, 3), img[:, -BORDER:].reshape(-1, 3)])
    ref = np.median(edge, axis=0)
    dist = np.linalg.norm(img - ref, axis=2)
    spread = np.percentile(np.linalg.norm(edge - ref, axis=1), 95)  # how much the background itself varies
    scaled = np.clip(dist * (255.0 / max(dist.max(), 1e-6)), 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = dist > max(otsu * dist.max() / 255.0, 1.5 * spread + 8.0)
    k = max(3, (min(h, w) // 64) | 1)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, disk)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3 * k, 3 * k)))
    fg = ndi.binary_fill_holes(fg)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8))
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= 0.005 * h * w]  # drop specks of noise
    fg = np.isin(labels, keep)
    if not MIN_FRACTION <= fg.mean() <= MAX_FRACTION:
        return full
    return fg
