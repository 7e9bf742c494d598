"""Fitting images and masks to the model input by the input policy (prn_edge.input_policy); with "tiles", training
crops cut at native resolution (prn_edge.tiling)."""
from __future__ import annotations

import cv2
import numpy as np

from ..input_policy import PAD_VALUE, Placement, placement, resample
from ..tiling import cut, random_start
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
    """An image-size {0,1} mask -> model size under the same placement (nearest; padding is normal). A defect
    smaller than the shrink factor can fall between nearest's samples (a 7-pixel pit on a 2048-pixel image at
    256): when nothing is left of a non-empty mask, every model pixel the defect covers at all is marked."""
    out = np.zeros(p.dst_hw, np.float32)
    small = resize(mask.astype(np.float32), p.w, p.h, cv2.INTER_NEAREST)
    if not small.any() and mask.any():
        small = (resize(mask.astype(np.float32), p.w, p.h, cv2.INTER_AREA) > 0).astype(np.float32)
    out[p.y0:p.y0 + p.h, p.x0:p.x0 + p.w] = small
    return out


def tile_at(img: np.ndarray, mask: np.ndarray | None, y: int, x: int,
            tile_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(tile, its mask, where the image is or None when it fills the tile) at (y, x), cut at native resolution
    (input policy "tiles"): nothing is resized; where the tile leaves the image it is black and normal."""
    th, tw = tile_hw
    h, w = img.shape[:2]
    tile = np.ascontiguousarray(cut(img, y, x, th, tw))
    m = np.zeros(tile_hw, np.float32) if mask is None else np.ascontiguousarray(cut(mask, y, x, th, tw), np.float32)
    inside = y >= 0 and x >= 0 and y + th <= h and x + tw <= w
    return tile, m, None if inside else cut(np.ones((h, w), bool), y, x, th, tw)


def random_tile(img: np.ndarray, tile_hw: tuple[int, int], rng: np.random.Generator, mask: np.ndarray | None = None):
    """A training crop anywhere on the image (tile_at's result); a side shorter than the tile is centred and padded,
    as evaluation's grid places it."""
    (h, w), (th, tw) = img.shape[:2], tile_hw
    return tile_at(img, mask, random_start(h, th, rng), random_start(w, tw, rng), tile_hw)


def defect_tile(img: np.ndarray, mask: np.ndarray, tile_hw: tuple[int, int], rng: np.random.Generator):
    """A real shot as a training tile (tile_at's result): a random tile that holds the middle defect pixel (in
    row-major order), so the shot still shows its defect; the centroid of a defect in pieces (a crack in two
    parts) can lie on none of them."""
    (h, w), (th, tw) = img.shape[:2], tile_hw
    ys, xs = np.nonzero(mask > 0.5)
    if len(ys) == 0:
        return random_tile(img, tile_hw, rng, mask)
    cy, cx = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])

    def start(c: int, length: int, tile: int) -> int:
        if length <= tile:
            return random_start(length, tile, rng)
        lo, hi = max(0, c - tile + 1), min(c, length - tile)  # the tile holds c and stays on the image
        return int(rng.integers(lo, hi + 1))

    return tile_at(img, mask, start(cy, h, th), start(cx, w, tw), tile_hw)
