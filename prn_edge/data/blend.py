"""Alpha compositing that keeps labels honest: the mask is exactly where the image changed.

Both the demo dataset and the training-time synthesis draw defects as (effect image, soft alpha);
this turns them into the final uint8 image and its {0,1} mask.
"""
from __future__ import annotations

import numpy as np

# Smallest change (grey levels, any channel) that counts as a visible change.
VISIBLE_TOL = 2


def changed_pixels(a: np.ndarray, b: np.ndarray, tol: int = VISIBLE_TOL) -> np.ndarray:
    """HxW bool: where any channel differs by more than `tol` grey levels."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return (diff.max(axis=2) if diff.ndim == 3 else diff) > tol


def composite(base: np.ndarray, effect: np.ndarray, alpha: np.ndarray, solid_above: float | None = None,
              tol: int = VISIBLE_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Blend `effect` over `base` with `alpha` (HxW in [0, 1]); return (uint8 image, float32 {0,1} mask).

    Outside the mask the result equals `base` exactly; inside it every pixel differs by more than `tol`.
    - solid_above=None (training): the mask is the pixels that changed by more than `tol`;
      pixels the blend barely touched are reverted, so no invisible pixel is labelled defect.
    - solid_above=t (ground truth): the mask is alpha > t, a solid region like a hand-drawn label;
      pixels inside it that the blend left (nearly) unchanged are nudged just past `tol`.
    """
    base_f = base.astype(np.float32)
    a = np.clip(alpha, 0.0, 1.0).astype(np.float32)[..., None]
    out = np.clip(np.round(base_f + a * (effect.astype(np.float32) - base_f)), 0, 255).astype(np.uint8)
    changed = changed_pixels(out, base, tol)
    if solid_above is None:
        mask = changed
    else:
        mask = alpha > solid_above
        _nudge(out, base, effect, mask & ~changed, tol)
    out[~mask] = base[~mask]
    return out, mask.astype(np.float32)


def _nudge(out: np.ndarray, base: np.ndarray, effect: np.ndarray, where: np.ndarray, tol: int) -> None:
    """Move `out` at `where` by tol+1 levels, in the direction the effect points (away from clipping)."""
    if not where.any():
        return
    b = base[where].astype(np.int16)
    direction = np.sign(effect[where].astype(np.float32).mean(axis=1) - b.mean(axis=1))
    direction[direction == 0] = -1
    step = (tol + 1) * direction[:, None].astype(np.int16)
    moved = b + step
    clipped = (moved < 0) | (moved > 255)
    moved = np.where(clipped, b - step, moved)  # at the ends of the range go the other way
    out[where] = np.clip(moved, 0, 255).astype(np.uint8)
