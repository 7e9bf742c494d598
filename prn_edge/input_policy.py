"""The input policy: where an image of any size lands in the model input (H x W), and how a map goes back.

Real data never comes in one size. The policy is chosen once (`model.input_policy`), stored in every
checkpoint and artefact, and applied the same way in training, evaluation, the exported graph and the line:

- "stretch": resize to the model size, whatever the aspect ratio (square parts, fixed cameras);
- "letterbox": keep the aspect ratio, scale the image as large as it fits the model input and pad the rest with
  black, centred, so a 3-pixel crack on a long strip is not squeezed to a sub-pixel line along one axis;
- "tiles": no scaling at all: the model input is a tile cut from the image at its own resolution (thin defects
  on large images). An image is split into overlapping tiles (prn_edge.tiling); `placement` here only places an
  image that fits in one tile (centred, padded black), and refuses a larger one.

A model input that is itself long (model.image_size [H, W], e.g. 256 x 640) takes long strips with little or no
padding; `as_hw` is the one reading of a size given as one side (square) or as (height, width).

Geometry only (numpy; OpenCV imported where a map is resized back): the runtime reads it without the data stack.
Metrics are taken at the original image resolution: `Placement.unfit` crops the valid region of a model-size map
and resizes it back.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

INPUT_POLICIES = ("stretch", "letterbox", "tiles")
AUTO_SIZE = "auto"  # model.image_size chosen from the training images' aspect ratio when training starts
AUTO_SQUARE_WITHIN = 1.25  # training images whose median aspect ratio is within this factor of 1 get a square
PAD_VALUE = 0  # letterbox and tile padding, in uint8 grey levels; the exported graph pads with the same constant


@dataclass(frozen=True)
class Placement:
    """Where an image of `src_hw` lands inside the model input `dst_hw`: rows y0:y0+h, columns x0:x0+w."""

    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    y0: int
    x0: int
    h: int
    w: int

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding in model pixels."""
        return self.y0, self.dst_hw[0] - self.y0 - self.h, self.x0, self.dst_hw[1] - self.x0 - self.w

    def valid(self) -> np.ndarray:
        """HxW bool at model size: True where the image is (False on padding)."""
        out = np.zeros(self.dst_hw, bool)
        out[self.y0:self.y0 + self.h, self.x0:self.x0 + self.w] = True
        return out

    def crop(self, amap: np.ndarray) -> np.ndarray:
        """The part of a model-size map that covers the image (padding dropped), still at model resolution."""
        return np.ascontiguousarray(amap[self.y0:self.y0 + self.h, self.x0:self.x0 + self.w], dtype=np.float32)

    def unfit(self, amap: np.ndarray) -> np.ndarray:
        """A model-size map back at the image's own resolution (bilinear), padding dropped."""
        import cv2

        crop = self.crop(amap)
        if crop.shape == tuple(self.src_hw):
            return crop
        return cv2.resize(crop, (self.src_hw[1], self.src_hw[0]), interpolation=cv2.INTER_LINEAR)


def as_hw(size) -> tuple[int, int]:
    """(height, width) from a size given as one side S (a square, S x S) or as a pair (H, W)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        return int(size), int(size)
    try:
        h, w = size
        return int(h), int(w)
    except (TypeError, ValueError):
        raise ConfigError(f"size {size!r}: give one side (a square) or [height, width]") from None


def check_policy(policy: str) -> str:
    if policy not in INPUT_POLICIES:
        raise ConfigError(f"input policy {policy!r} is not allowed; choose one of {list(INPUT_POLICIES)}")
    return policy


def placement(src_hw: tuple[int, int], dst_hw: tuple[int, int], policy: str) -> Placement:
    """Where an image of src_hw goes in dst_hw under `policy`."""
    check_policy(policy)
    (sh, sw), (dh, dw) = src_hw, dst_hw
    if sh < 1 or sw < 1:
        raise ConfigError(f"image of {sw}x{sh} pixels has no area")
    if policy == "stretch":
        return Placement((sh, sw), (dh, dw), 0, 0, dh, dw)
    if policy == "tiles":
        if sh > dh or sw > dw:
            raise ConfigError(f"input policy tiles: an image of {sw}x{sh} pixels is larger than the {dw}x{dh} tile; "
                              "split it into tiles (prn_edge.tiling.TileGrid), it is never resized")
        return Placement((sh, sw), (dh, dw), (dh - sh) // 2, (dw - sw) // 2, sh, sw)
    scale = min(dh / sh, dw / sw)
    h, w = min(dh, max(1, round(sh * scale))), min(dw, max(1, round(sw * scale)))
    return Placement((sh, sw), (dh, dw), (dh - h) // 2, (dw - w) // 2, h, w)


def axis_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) resampling weights of one axis, each row summing to 1: the share of each source pixel in each
    output pixel when shrinking (area averaging, cv2.INTER_AREA's coverage), linear interpolation between the two
    nearest pixel centres when enlarging (half-pixel centres, edges clamped: cv2.INTER_LINEAR), identity when equal.

    One definition for every place an image meets the model input: training (data.fit), the host reference
    (runtime.preprocess) and the exported graph (two MatMuls), so a non-integer resize is the same everywhere."""
    return _axis_weights(int(src), int(dst)).copy()


@functools.lru_cache(maxsize=64)
def _axis_weights(src: int, dst: int) -> np.ndarray:
    """axis_weights, computed once per (src, dst): a line resizes every frame by the same two pairs."""
    if src < 1 or dst < 1:
        raise ConfigError(f"cannot resample {src} pixels to {dst}")
    if src == dst:
        return np.eye(src)
    w = np.zeros((dst, src))
    rows = np.arange(dst)
    if dst < src:
        edges = np.arange(dst + 1) * (src / dst)  # output pixel i covers source [edges[i], edges[i + 1])
        for i in rows:
            a, b = edges[i], edges[i + 1]
            j = np.arange(int(np.floor(a)), min(int(np.ceil(b)), src))
            w[i, j] = np.minimum(b, j + 1) - np.maximum(a, j)
        return w / (src / dst)
    x = np.clip((rows + 0.5) * (src / dst) - 0.5, 0, src - 1)
    j = np.floor(x).astype(int)
    f = x - j
    np.add.at(w, (rows, j), 1 - f)
    np.add.at(w, (rows, np.minimum(j + 1, src - 1)), f)
    return w


def resample(img: np.ndarray, dst_hw: tuple[int, int]) -> np.ndarray:
    """HxW or HxWxC image -> dst_hw by `axis_weights` on each axis, float32 (rounding is the caller's)."""
    (h, w), (dh, dw) = img.shape[:2], dst_hw
    x = np.asarray(img, np.float32)
    if (h, w) == (dh, dw):
        return x
    rows = np.tensordot(_axis_weights(h, dh).astype(np.float32), x, axes=(1, 0))  # (dh, w, ...)
    out = np.tensordot(_axis_weights(w, dw).astype(np.float32), np.moveaxis(rows, 1, 0), axes=(1, 0))  # (dw, dh, ...)
    return np.ascontiguousarray(np.moveaxis(out, 0, 1))


def auto_image_size(aspect: float, policy: str, side: int = 256, largest: int = 2048):
    """model.image_size "auto": the model input for training images whose median height / width is `aspect`.
    Square (`side`) for near-square images (within AUTO_SQUARE_WITHIN) and for the tiles policy (its size is a
    tile, cut at native resolution); otherwise the short side is `side` and the long side follows the aspect
    ratio, a multiple of 32 up to `largest` (and 4 x `side`). Long parts stay long: KolektorSDD's 500 x 1250
    commutators get 640 x 256 instead of being squeezed 2.5-fold along their length, where the cracks run
    (docs/real-data.md)."""
    if policy == "tiles" or not aspect > 0 or 1 / AUTO_SQUARE_WITHIN <= aspect <= AUTO_SQUARE_WITHIN:
        return side
    long_side = int(min(largest, 4 * side, max(side, 32 * round(side * max(aspect, 1 / aspect) / 32))))
    return (long_side, side) if aspect > 1 else (side, long_side)
