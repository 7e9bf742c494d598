"""numpy in, numpy out: the glue every consumer of a PyTorch PRN uses (training validation, eval, demo)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..tiling import DEFAULT_OVERLAP, predict_in_tiles
from .prn import PRN


def to_tensor(images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    arr = np.ascontiguousarray(np.stack(images) if not isinstance(images, np.ndarray) else images)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def predict(model: PRN, images: Sequence[np.ndarray], batch: int = 8,
            progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly probability maps (N, H, W) float32 and image scores (N,); `progress`: a bar over the images."""
    was_training = model.training
    model.eval()
    maps, scores = [], []
    bar = tqdm(total=len(images), desc="predict", unit="img", leave=False, disable=not progress)
    for i in range(0, len(images), batch):
        prob, score = model.predict(to_tensor(images[i:i + batch]))
        bar.update(prob.shape[0])
        maps.append(prob[:, 0].numpy())
        scores.append(score.numpy())
    bar.close()
    model.train(was_training)
    if not maps:
        return np.zeros((0, 0, 0), np.float32), np.zeros((0,), np.float32)
    return np.concatenate(maps).astype(np.float32), np.concatenate(scores).astype(np.float32)


def predict_tiled(model: PRN, images: Sequence[np.ndarray], overlap: int = DEFAULT_OVERLAP,
                  batch: int = 8) -> tuple[list[np.ndarray], np.ndarray]:
    """Input policy "tiles": each uint8 RGB image (any size) split into overlapping tiles of the model input, their
    maps blended back at the image's own resolution, the highest tile score its score (tiling.predict_in_tiles)."""
    return predict_in_tiles(lambda tiles: predict(model, tiles, batch), images, model.cfg.hw, overlap)
