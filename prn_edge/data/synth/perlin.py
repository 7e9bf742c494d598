"""Vectorised 2-D Perlin noise and the thresholded blob masks used for simulated anomalies."""
from __future__ import annotations

import cv2
import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """HxW float32 gradient noise with res = (cells down, cells across); values roughly in [-1, 1]."""
    h, w = shape
    ry, rx = res
    y = np.arange(h, dtype=np.float32) * ry / h
    x = np.arange(w, dtype=np.float32) * rx / w
    yi, xi = y.astype(np.int64), x.astype(np.int64)
    yf, xf = (y - yi)[:, None], (x - xi)[None, :]
    angles = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    gx, gy = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)

    def corner(dy: int, dx: int) -> np.ndarray:  # gradient at the corner . offset from it
        iy, ix = (yi + dy)[:, None], (xi + dx)[None, :]
        return gx[iy, ix] * (xf - dx) + gy[iy, ix] * (yf - dy)

    u, v = _fade(xf), _fade(yf)
    top = corner(0, 0) + u * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + u * (corner(1, 1) - corner(1, 0))
    return (np.sqrt(2) * (top + v * (bottom - top))).astype(np.float32)


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, scales: tuple[int, ...] = (1, 2, 3, 4, 5),
                threshold: float = 0.5, tries: int = 20) -> np.ndarray:
    """HxW float32 {0,1} blobs: Perlin noise on a 2^s x 2^t grid (s, t from `scales`), randomly rotated,
    above `threshold`. Never empty: after `tries` empty draws the top 3% of the last noise is used."""
    h, w = shape
    side = int(np.ceil(np.hypot(h, w)))  # rotate a larger square so no corner is left without noise
    for _ in range(tries):
        sy, sx = rng.choice(scales, 2)
        noise = perlin_noise((side, side), (2 ** int(sy), 2 ** int(sx)), rng)
        rot = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-90, 90), 1.0)
        rot[:, 2] -= [(side - w) / 2, (side - h) / 2]
        noise = cv2.warpAffine(noise, rot, (w, h), flags=cv2.INTER_LINEAR)
        mask = noise > threshold
        if mask.any():
            return mask.astype(np.float32)
    return (noise >= np.quantile(noise, 0.97)).astype(np.float32)
