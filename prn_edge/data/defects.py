"""Procedural surface defects for the demo dataset: each returns (effect image, soft alpha).

A defect is drawn as an effect (what the surface looks like where it is fully defective) and a
soft alpha (how much of it shows); `blend.composite` turns them into the image and its mask.
Thin shapes are anti-aliased like a photo (prn_edge.data.draw).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from .draw import SUPERSAMPLE, canvas_points, curve, jagged, raster, smooth_field
from .photos import load_photo

Defect = Callable[[np.ndarray, np.random.Generator, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _unit(allowed: np.ndarray) -> float:
    """Defect sizes are designed for 256-pixel images and scale with the image."""
    return min(allowed.shape) / 256.0


def _thick(width: float, unit: float) -> float:
    """Scaled line width, but never thinner than one pixel (it would vanish)."""
    return max(1.0, width * unit)


def _pick(allowed: np.ndarray, rng: np.random.Generator, margin: float) -> np.ndarray:
    """A random (x, y) inside `allowed`, preferably `margin` pixels away from its edge."""
    margin = int(round(margin))
    inner = cv2.erode(allowed.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8))
    ys, xs = np.nonzero(inner if inner.any() else allowed)
    i = rng.integers(len(xs))
    return np.array([xs[i], ys[i]], np.float64)


def scratch(clean: np.ndarray, rng: np.random.Generator, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A thin curved line, usually brighter (exposed material), sometimes darker (groove)."""
    u = _unit(allowed)
    pts = curve(_pick(allowed, rng, 10 * u), rng.uniform(70, 150) * u, rng.uniform(0, 2 * np.pi), rng.uniform(-0.3, 0.3))
    width = _thick(rng.uniform(1.4, 3.0), u)
    thickness = max(1, round(width * SUPERSAMPLE))
    alpha = raster(allowed.shape, lambda c: cv2.polylines(c, [canvas_points(pts)], False, 255, thickness, cv2.LINE_8))
    alpha *= 0.65 + 0.35 * smooth_field(allowed.shape, rng)
    base = clean.astype(np.float32)
    effect = base + (255 - base) * rng.uniform(0.55, 0.8) if rng.random() < 0.7 else base * rng.uniform(0.25, 0.45)
    return effect, alpha


STAIN_COLOURS = np.array([(120, 75, 35), (170, 85, 40), (70, 70, 60), (60, 80, 150), (110, 130, 60)], np.float32)


def stain(clean: np.ndarray, rng: np.random.Generator, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A semi-transparent blotch of liquid: blurred union of ellipses, tinting the surface, darker rim."""
    h, w = allowed.shape
    u = _unit(allowed)
    centre = _pick(allowed, rng, 20 * u)
    blob = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(2, 6)):
        c = centre + rng.normal(0, 7 * u, 2)
        axes = (max(1, int(rng.uniform(5, 17) * u)), max(1, int(rng.uniform(4, 14) * u)))
        cv2.ellipse(blob, (int(c[0]), int(c[1])), axes, rng.uniform(0, 180), 0, 360, 255, -1)
    soft = cv2.GaussianBlur(blob.astype(np.float32) / 255, (0, 0), rng.uniform(2.0, 4.5) * u)
    body = np.clip((soft - 0.12) / 0.45, 0, 1)
    rim = np.exp(-(((soft - 0.3) / 0.09) ** 2)) * (soft > 0.05)  # coffee-ring: pigment gathers at the edge
    alpha = np.clip(body * rng.uniform(0.45, 0.8) + rim * rng.uniform(0.1, 0.3), 0, 1)
    colour = STAIN_COLOURS[rng.integers(len(STAIN_COLOURS))]
    effect = np.clip(clean.astype(np.float32) * (colour / 170.0), 0, 255)  # multiply: surface shows through
    return effect, alpha


def hole(clean: np.ndarray, rng: np.random.Generator, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dark pit: shaded elliptic interior (far wall lit) with a bright burr on the near rim."""
    h, w = allowed.shape
    u = _unit(allowed)
    c = _pick(allowed, rng, 16 * u)
    a = rng.uniform(6, 13) * u
    b = a * rng.uniform(0.6, 1.0)
    theta = rng.uniform(0, np.pi)
    light = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xs - c[0], ys - c[1]
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / a
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / b
    r = np.sqrt(u ** 2 + v ** 2)
    facing = (dx * np.cos(light) + dy * np.sin(light)) / a  # +1 on the lit far wall, -1 on the near side
    local = clean[max(0, int(c[1] - a)):int(c[1] + a) + 1, max(0, int(c[0] - a)):int(c[0] + a) + 1].reshape(-1, 3).mean(0)
    depth = np.clip(0.12 + 0.3 * np.clip(facing, 0, 1) + 0.15 * r, 0, 1)[..., None]
    effect = np.broadcast_to(local * depth, clean.shape).copy()
    rim = (r > 0.85) & (facing < -0.2)
    effect[rim] = np.minimum(clean[rim].astype(np.float32) + 70, 255)
    box = (tuple(int(p) for p in canvas_points(c)), (2.3 * a * SUPERSAMPLE, 2.3 * b * SUPERSAMPLE), np.degrees(theta))
    alpha = raster((h, w), lambda cv: cv2.ellipse(cv, box, 255, -1))  # 15% beyond the pit: the rim
    return effect, alpha


def crack(clean: np.ndarray, rng: np.random.Generator, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A jagged dark line that tapers and forks into thinner branches."""
    angle = rng.uniform(0, 2 * np.pi)
    u = _unit(allowed)
    main = jagged(_pick(allowed, rng, 10 * u), rng.uniform(70, 140) * u, angle, rng)
    width = _thick(rng.uniform(1.5, 2.6), u)
    paths = [(main, width)]
    for _ in range(rng.integers(1, 4)):
        start = main[rng.integers(len(main) // 4, len(main))]
        turn = rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
        paths.append((jagged(start, rng.uniform(15, 45) * u, angle + turn, rng), width * rng.uniform(0.5, 0.8)))

    def draw(canvas: np.ndarray) -> None:
        for pts, wd in paths:
            px = canvas_points(pts)
            for i in range(len(px) - 1):  # taper: thinner towards the tip
                t = max(1, round(wd * SUPERSAMPLE * (1 - 0.6 * i / len(px))))
                cv2.line(canvas, tuple(int(v) for v in px[i]), tuple(int(v) for v in px[i + 1]), 255, t)

    effect = clean.astype(np.float32) * rng.uniform(0.12, 0.3)
    return effect, raster(allowed.shape, draw)


def _foreign_patch(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random window of a cat's fur photo: gives foreign material a fine texture of its own."""
    photo = load_photo("chelsea")
    scale = max(shape[0] / photo.shape[0], shape[1] / photo.shape[1], 1.0)
    if scale > 1:
        photo = cv2.resize(photo, (int(np.ceil(photo.shape[1] * scale)), int(np.ceil(photo.shape[0] * scale))))
    y0 = rng.integers(0, photo.shape[0] - shape[0] + 1)
    x0 = rng.integers(0, photo.shape[1] - shape[1] + 1)
    return photo[y0:y0 + shape[0], x0:x0 + shape[1]].astype(np.float32)


FOREIGN_COLOURS = np.array([(30, 25, 22), (40, 70, 170), (175, 40, 40), (235, 232, 222), (150, 152, 165)], np.float32)


def contamination(clean: np.ndarray, rng: np.random.Generator, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A cluster of foreign specks and fibres with their own colour and fine texture."""
    h, w = allowed.shape
    u = _unit(allowed)
    centre = _pick(allowed, rng, 24 * u)
    shapes = []
    for _ in range(rng.integers(5, 11)):
        p = centre + rng.normal(0, rng.uniform(6, 14) * u, 2)
        if rng.random() < 0.5:
            shapes.append(("fibre", curve(p, rng.uniform(8, 28) * u, rng.uniform(0, 2 * np.pi), rng.uniform(-0.5, 0.5), 16),
                           _thick(rng.uniform(1.0, 2.0), u)))
        else:
            shapes.append(("speck", p, _thick(rng.uniform(1.8, 4.5) * u, 1.0)))

    def draw(canvas: np.ndarray) -> None:
        for kind, geo, size in shapes:
            if kind == "fibre":
                cv2.polylines(canvas, [canvas_points(geo)], False, 255, max(1, round(size * SUPERSAMPLE)), cv2.LINE_8)
            else:
                cv2.circle(canvas, tuple(int(v) for v in canvas_points(geo)), int(size * SUPERSAMPLE), 255, -1)

    alpha = raster((h, w), draw)
    patch = _foreign_patch((h, w), rng).mean(2, keepdims=True) / 128.0
    colour = FOREIGN_COLOURS[rng.integers(len(FOREIGN_COLOURS))]
    effect = np.clip(colour * (0.55 + 0.45 * patch), 0, 255)
    return effect, alpha


DEFECTS: dict[str, Defect] = {"scratch": scratch, "stain": stain, "crack": crack, "hole": hole,
                              "contamination": contamination}
