"""A contact sheet of training samples, to see what the model will be taught before training it."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ...config import SynthConfig
from ...errors import DataError
from ...input_policy import as_hw
from ..dataset import Category, load_fitted, load_pair
from ..fit import defect_tile, random_tile
from ..images import read_image, write_image
from .anomalies import AnomalyGenerator

CAPTION = 18  # pixels of caption strip above each tile
OUTLINE = (255, 40, 40)


def _tile(image: np.ndarray, mask: np.ndarray, caption: str) -> np.ndarray:
    tile = image.copy()
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(tile, contours, -1, OUTLINE, 1)
    strip = np.full((CAPTION, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, caption, (4, CAPTION - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, tile])


def synth_preview(category: Category, cfg: SynthConfig, out_png: str | Path, n: int = 16, seed: int = 0,
                  image_size: int | tuple[int, int] = 256, policy: str = "stretch") -> Path:
    """Write a grid of n generated training samples (defects outlined in red, kind as caption) to out_png;
    images come to the model input `image_size` (one side, or (height, width)) by the input policy, as in training."""
    if not category.train_good:
        raise DataError(f"category {category.root} has no normal training images to preview")
    rng = np.random.default_rng(seed)
    if policy == "tiles":  # as training takes them: tiles cut at native resolution
        shots = [defect_tile(*load_pair(s), as_hw(image_size), rng)[:2] for s in category.shots]
    else:
        shots = [load_pair(s, image_size, policy) for s in category.shots]
    gen = AnomalyGenerator(cfg, image_size, shots, foreground=category.foreground)
    picks = rng.choice(len(category.train_good), size=n, replace=len(category.train_good) < n)
    tiles = []
    for i in picks:
        if policy == "tiles":
            normal, _, region = random_tile(read_image(category.train_good[i]), as_hw(image_size), rng)
        else:
            normal, where = load_fitted(category.train_good[i], image_size, policy)
            region = where.valid()
        image, mask, kind = gen.sample(normal, rng, region)  # anomalies on the image, not its padding
        tiles.append(_tile(image, mask, f"{kind}  {100 * mask.mean():.1f}%"))
    cols = int(np.ceil(np.sqrt(n)))
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % cols)
    rows = [np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)]
    out_png = Path(out_png)
    write_image(out_png, np.vstack(rows))
    return out_png
