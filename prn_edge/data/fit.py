"""Fitting images and masks to the model input by the input policy (prn_edge.input_policy)."""
from __future__ import annotations

import cv2
import numpy as np

from ..input_policy import PAD_VALUE, Placement, placement, resample
from .images import resize


def fit_image(img: np.ndarray, dst_hw: tuple[int, int], policy: str) -> tuple[np.ndarray, Placement]:
    """HxWx3 uint8 image of any size -> (model-size image, its placement).

    Resampled by input_policy.resample (area down, linear up, per axis): the exported graph and the host
    reference compute the same weights, so training sees what the line sees at any frame size."""
    p = placement(img.shape[:2], dst_hw, policy)
    inner = img if img.shape[:2] == (p.h, p.w) else np.clip(np.rint(resample(img, (p.h, p.w))), 0, 255).astype(img.dtype)
    if (p.h, p.w) == tuple(dst_hw):
        return np.ascontiguousarray(inner), p
    out = np.full((*dst_hw, *img.shape[2:]), PAD_VALUE, img.dtype)
    out[p.y0:p.y0 + p.h, p.x0:p.x0 + p.w] = inner
    return out, p


def fit_mask(mask: np.ndarray, p: Placement) -> np.ndarray:
    """An image-size {0,1} mask -> model size under the same placement (nearest; padding is normal)."""
    out = np.zeros(p.dst_hw, np.float32)
    out[p.y0:p.y0 + p.h, p.x0:p.x0 + p.w] = resize(mask.astype(np.float32), p.w, p.h, cv2.INTER_NEAREST)
    return out
