"""Generated anomalies that change the surface itself rather than cover it: each returns (effect, soft alpha).

Foreign textures and pasted patches teach the model what foreign material looks like; most real surface defects
are not foreign material. On real photos (Magnetic Tile Defect) the two that went unseen were a hairline crack
and a region whose finish is off (brighter, darker, streakier) while its texture stays the surface's own. Both are
drawn here from the normal image itself, by multiplying or re-contrasting it, so the texture under the defect is
kept and only the defect is new:

- `shading`: a large region (Perlin blobs, or a band across the part bounded by a wavy line) with its brightness
  or its texture contrast changed, the edge sharp or soft: uneven coating, discolouration, a stain, a worn band.
- `hairline`: a thin jagged or curved line, often forked, one or two pixels wide or thinner (drawn
  supersampled, so a sub-pixel crack comes out faint), darker (crack, groove) or brighter (scratch), often of low
  contrast.

Sizes are designed for 256-pixel images and scale with the image (`unit`).
"""
from __future__ import annotations

import cv2
import numpy as np

from ..draw import SUPERSAMPLE, canvas_points, curve, jagged, point_in, raster, smooth_field
from .perlin import perlin_mask


def _band(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """HxW {0,1}: a band across the image bounded by wavy lines, from one edge inwards or between two lines,
    mostly along the image axes (worn or coated bands follow the part)."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.15)
    across = ys * np.cos(theta) - xs * np.sin(theta)
    lo, hi = float(across.min()), float(across.max())
    span = hi - lo
    across = across + 0.1 * span * (smooth_field(shape, rng, cells=4) - 0.5)  # the boundary wobbles
    width = span * rng.uniform(0.1, 0.5)
    if rng.random() < 0.5:
        band = across < lo + width if rng.random() < 0.5 else across > hi - width
    else:
        start = rng.uniform(lo, hi - width)
        band = (across > start) & (across < start + width)
    return band.astype(np.float32)


def shading(normal: np.ndarray, fg: np.ndarray, rng: np.random.Generator, unit: float,
            region: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A region whose brightness or texture contrast is off while its texture is the surface's own.
    `region` (HxW {0,1}) gives the shape, e.g. a real defect's mask; else large Perlin blobs or a band."""
    h, w = normal.shape[:2]
    if region is None:
        region = _band((h, w), rng) if rng.random() < 0.5 else perlin_mask((h, w), rng, (0, 1, 2), rng.uniform(0.2, 0.5))
    alpha = cv2.GaussianBlur(region.astype(np.float32), (0, 0), rng.uniform(0.5, 5.0) * unit) * fg
    base = normal.astype(np.float32)
    if rng.random() < 0.6:  # brighter or darker, by a factor: the texture scales with it
        gain = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.45)
        effect = base * gain
    else:  # the texture's contrast around its local mean: streakier or duller
        k = max(3, int(round(9 * unit)) | 1)
        local = cv2.blur(base, (k, k))
        contrast = rng.uniform(1.6, 3.0) if rng.random() < 0.6 else rng.uniform(0.15, 0.5)
        effect = local + (base - local) * contrast + rng.uniform(-12, 12)
    return np.clip(effect, 0, 255), alpha


def hairline(normal: np.ndarray, fg: np.ndarray, rng: np.random.Generator,
             unit: float) -> tuple[np.ndarray, np.ndarray]:
    """A thin crack or scratch, darker or brighter than the surface around it, often faint."""
    h, w = normal.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    start = np.array(point_in(fg, rng), np.float64)
    length = rng.uniform(25, 160) * unit
    main = jagged(start, length, angle, rng) if rng.random() < 0.6 else curve(start, length, angle,
                                                                              rng.uniform(-0.3, 0.3))
    width = rng.uniform(0.4, 2.5) * unit  # below one pixel it is drawn faint, as a hairline looks
    paths = [(main, width)]
    for _ in range(rng.integers(0, 3)):  # forks
        branch_start = main[rng.integers(len(main) // 4, len(main))]
        paths.append((jagged(branch_start, rng.uniform(0.15, 0.4) * length, angle + rng.choice([-1, 1])
                             * rng.uniform(0.4, 1.1), rng), width * rng.uniform(0.5, 0.9)))

    def draw_lines(canvas: np.ndarray) -> None:
        for pts, wd in paths:
            thick = max(1, round(wd * SUPERSAMPLE))
            cv2.polylines(canvas, [canvas_points(pts)], False, 255, thick, cv2.LINE_8)

    alpha = raster((h, w), draw_lines) * (0.5 + 0.5 * smooth_field((h, w), rng)) * fg
    base = normal.astype(np.float32)
    if rng.random() < 0.7:  # a crack or groove: a shadow
        effect = base * rng.uniform(0.2, 0.75)
    else:  # a scratch: exposed, brighter material
        effect = base + (255.0 - base) * rng.uniform(0.2, 0.7)
    return effect, alpha
