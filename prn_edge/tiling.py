"""Tiles at native resolution: overlapping windows of the model's size over an image, and their maps blended back.

One implementation for every stage that tiles: training crops, evaluation and validation of a model whose input
policy is "tiles" (prn_edge.input_policy), and the line, which splits a camera region into tiles of the engine's
frame size (prn_edge.line.tiles). Nothing is resized, so a 3-pixel crack stays 3 pixels wide.

A side shorter than the tile gets one tile with the image centred in it and PAD_VALUE (black) around it, where
letterbox would put it at scale 1; the line refuses such regions before it starts.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .errors import ConfigError
from .input_policy import PAD_VALUE

# Pixels shared by neighbouring tiles, in evaluation, validation and on the line (region.overlap): a defect on a
# tile border is then seen whole by one tile.
DEFAULT_OVERLAP = 32


def axis_starts(length: int, tile: int, overlap: int = DEFAULT_OVERLAP) -> list[int]:
    """Tile starts covering [0, length): step tile - overlap, the last tile flush with the end. A length shorter
    than the tile gets one start, negative: the tile centred on it (the rest is padding)."""
    if not 0 <= overlap < tile:
        raise ConfigError(f"tile overlap {overlap} must be >= 0 and smaller than the tile ({tile} px)")
    if length < 1:
        raise ConfigError(f"a side of {length} px has nothing to tile")
    if length <= tile:
        return [-((tile - length) // 2)]
    starts = list(range(0, length - tile + 1, tile - overlap))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def random_start(length: int, tile: int, rng: np.random.Generator) -> int:
    """Where a training crop starts along one side: anywhere the tile fits, or centred on a shorter side (as the
    grid places it)."""
    if length <= tile:
        return -((tile - length) // 2)
    return int(rng.integers(0, length - tile + 1))


def cut(image: np.ndarray, y: int, x: int, tile_h: int, tile_w: int) -> np.ndarray:
    """The tile_h x tile_w window at (y, x) of an image or mask; where it leaves the image, PAD_VALUE (0: black for
    images, normal for masks, False for bool regions)."""
    h, w = image.shape[:2]
    if y >= 0 and x >= 0 and y + tile_h <= h and x + tile_w <= w:
        return image[y:y + tile_h, x:x + tile_w]
    out = np.full((tile_h, tile_w, *image.shape[2:]), PAD_VALUE, image.dtype)
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + tile_h, h), min(x + tile_w, w)
    out[y0 - y:y1 - y, x0 - x:x1 - x] = image[y0:y1, x0:x1]
    return out


def paste(canvas: np.ndarray, tile: np.ndarray, y: int, x: int) -> np.ndarray:
    """`canvas` with the part of `tile` that lies on it written back at (y, x): cut's inverse (its padding
    dropped). Changes canvas in place and returns it."""
    th, tw = tile.shape[:2]
    h, w = canvas.shape[:2]
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + th, h), min(x + tw, w)
    canvas[y0:y1, x0:x1] = tile[y0 - y:y1 - y, x0 - x:x1 - x]
    return canvas


def blend_window(h: int, w: int, floor: float = 0.05) -> np.ndarray:
    """Separable tent weights, `floor` at the border so a pixel covered by one tile only still counts."""
    def tent(n: int) -> np.ndarray:
        x = (np.arange(n, dtype=np.float32) + 0.5) / n
        return np.maximum(1.0 - np.abs(2.0 * x - 1.0), 0.0) * (1 - floor) + floor
    return np.outer(tent(h), tent(w)).astype(np.float32)


class TileGrid:
    """Fixed tiling of a height x width image into tile_h x tile_w tiles with at least `overlap` px shared."""

    def __init__(self, height: int, width: int, tile_h: int, tile_w: int, overlap: int = DEFAULT_OVERLAP):
        self.height, self.width, self.tile_h, self.tile_w = height, width, tile_h, tile_w
        ys, xs = axis_starts(height, tile_h, overlap), axis_starts(width, tile_w, overlap)
        self.boxes = [(y, x) for y in ys for x in xs]
        # maps are blended on a canvas that also holds the padding of a short side, then cropped to the image
        self._origin = (-min(ys[0], 0), -min(xs[0], 0))
        self._canvas = (max(height, tile_h), max(width, tile_w))
        self._window = blend_window(tile_h, tile_w)
        self._inv_norm = 1.0 / self._accumulate([self._window] * len(self.boxes))

    def __len__(self) -> int:
        return len(self.boxes)

    def _accumulate(self, weighted: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros(self._canvas, np.float32)
        (oy, ox), th, tw = self._origin, self.tile_h, self.tile_w
        for (y, x), m in zip(self.boxes, weighted):
            out[oy + y:oy + y + th, ox + x:ox + x + tw] += m
        return out[oy:oy + self.height, ox:ox + self.width]

    def split(self, image: np.ndarray) -> np.ndarray:
        """(n, tile_h, tile_w, C) copies of the tiles of an (height, width, C) image."""
        return np.stack([cut(image, y, x, self.tile_h, self.tile_w) for y, x in self.boxes])

    def stitch(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        """One (height, width) float32 map from n tile maps (any size; resized to the tile when different)."""
        th, tw = self.tile_h, self.tile_w
        if len(maps) != len(self.boxes):
            raise ValueError(f"{len(maps)} maps for a grid of {len(self.boxes)} tiles")
        resized = []
        for m in maps:
            m = np.asarray(m, np.float32)
            if m.shape != (th, tw):
                import cv2  # only maps of another resolution (an engine's at the model size) need it

                m = cv2.resize(m, (tw, th), interpolation=cv2.INTER_LINEAR)
            resized.append(m * self._window)
        return self._accumulate(resized) * self._inv_norm


def predict_in_tiles(predict: Callable, images: Sequence[np.ndarray], tile_hw: tuple[int, int],
                     overlap: int = DEFAULT_OVERLAP) -> tuple[list[np.ndarray], np.ndarray]:
    """Each image (any size) split into its grid's tiles, `predict` (tiles (n, tile_h, tile_w, C) -> (maps, scores))
    run on them, the maps blended back at the image's own resolution and the image's score the highest tile score
    (a defect in one tile makes the part defective, as on the line)."""
    maps, scores = [], []
    for img in images:
        grid = TileGrid(img.shape[0], img.shape[1], *tile_hw, overlap)
        tile_maps, tile_scores = predict(grid.split(img))
        maps.append(grid.stitch(tile_maps))
        scores.append(np.max(tile_scores))
    return maps, np.asarray(scores, np.float32)
