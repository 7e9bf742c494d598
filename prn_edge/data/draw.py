"""Drawing primitives for defects, shared by the demo dataset and training-time synthesis.

Thin shapes are rasterised on a canvas SUPERSAMPLE times larger and averaged down, so a line narrower than a
pixel comes out as a faint anti-aliased line, the way a hairline crack looks in a photo.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

SUPERSAMPLE = 4


def raster(shape: tuple[int, int], draw: Callable[[np.ndarray], None]) -> np.ndarray:
    """Soft alpha in [0, 1]: `draw` paints 255 on a canvas SUPERSAMPLE times larger."""
    h, w = shape
    canvas = np.zeros((h * SUPERSAMPLE, w * SUPERSAMPLE), np.uint8)
    draw(canvas)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def canvas_points(points: np.ndarray) -> np.ndarray:
    """Image coordinates (x, y) -> integer canvas coordinates at pixel centres."""
    return np.round((np.asarray(points) + 0.5) * SUPERSAMPLE).astype(np.int32)


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: int = 6) -> np.ndarray:
    """Slowly varying random field in [0, 1], e.g. for uneven depth along a scratch."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def curve(p0: np.ndarray, length: float, angle: float, bend: float, n: int = 48) -> np.ndarray:
    """Quadratic Bezier from p0 of the given chord length; `bend` offsets the control point sideways."""
    d = np.array([np.cos(angle), np.sin(angle)])
    p2 = p0 + length * d
    ctrl = (p0 + p2) / 2 + bend * length * np.array([-d[1], d[0]])
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t ** 2 * p2


def jagged(p0: np.ndarray, length: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Random walk with a general heading: the zig-zag of a crack."""
    steps = max(3, int(length / rng.uniform(2.5, 4.5)))
    turns = angle + rng.normal(0, 0.55, steps) + np.cumsum(rng.normal(0, 0.08, steps))
    seg = np.stack([np.cos(turns), np.sin(turns)], 1) * (length / steps)
    return np.vstack([p0, p0 + np.cumsum(seg, 0)])


def point_in(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A random (x, y) where `region` (HxW) is set."""
    ys, xs = np.nonzero(region)
    i = rng.integers(len(xs))
    return int(xs[i]), int(ys[i])
