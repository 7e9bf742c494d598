"""The validation protocol: which training normals are held out, which anomalies (generated, and real shots held
out) they are shown with, and how a model is scored on them.

Training chooses its best step and thresholds with it; calibration judges INT8 models on the same split. Never
the test set.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import Config, SynthConfig
from ..data.dataset import Category, Sample, load_fitted
from ..data.images import read_mask
from ..data.synth.anomalies import AnomalyGenerator
from ..errors import DataError
from ..model.inference import predict
from ..model.prn import PRN
from .metrics import auroc, average_precision
from .thresholds import decision_params


def synth_foreground(cfg: Config, cat: Category):
    """Where generated anomalies may go: the user's mask if configured, else the category's rule."""
    return read_mask(cfg.synth.foreground_mask, cfg.model.hw) if cfg.synth.foreground_mask else cat.foreground


def split_normals(cat: Category, tc) -> tuple[list[Path], list[Path]]:
    """Training normals split into (prototype/fit, validation); deterministic by the training seed."""
    order = np.random.default_rng(tc.seed).permutation(len(cat.train_good))
    n_val = max(2, int(round(tc.val_fraction * len(order))))
    if len(order) - n_val < 2:
        raise DataError(f"{cat.root}: only {len(order)} normal training images; need at least {n_val + 2} "
                        f"(add images to train/good or lower train.val_fraction)")
    return [cat.train_good[i] for i in order[n_val:]], [cat.train_good[i] for i in order[:n_val]]


def split_shots(shots: list[Sample], tc) -> tuple[list[Sample], list[Sample]]:
    """Real defect shots split into (training, validation): `train.val_shots` of each type's shots are held out
    (at least one per type that has three or more), so validation tells how real defects are found, not only
    generated ones. Deterministic by the training seed."""
    rng = np.random.default_rng(tc.seed + 104729)
    train_shots, val_shots = [], []
    for defect in sorted({s.defect for s in shots}):
        group = [s for s in shots if s.defect == defect]
        n_val = 0 if tc.val_shots <= 0 or len(group) < 3 else min(len(group) - 1,
                                                                  max(1, int(round(tc.val_shots * len(group)))))
        held = set(rng.permutation(len(group))[:n_val].tolist())
        train_shots += [s for i, s in enumerate(group) if i not in held]
        val_shots += [s for i, s in enumerate(group) if i in held]
    return train_shots, val_shots


def load_normals(paths: list[Path], cfg: Config, progress: bool = False) -> tuple[list[np.ndarray], list]:
    """Normal images fitted to the model input, and where each may hold a generated anomaly (None = anywhere;
    with letterboxing, the image and not its padding)."""
    hw, policy = cfg.model.hw, cfg.model.input_policy
    load = tqdm if progress else (lambda x, **_: x)
    imgs, regions = [], []
    for p in load(paths, desc="load normals", leave=False):
        img, where = load_fitted(p, hw, policy)
        imgs.append(img)
        regions.append(None if (where.h, where.w) == hw else where.valid())
    return imgs, regions


def validation_set(normals: list[np.ndarray], regions: list, synth: SynthConfig, hw: tuple[int, int], shots,
                   textures, foreground, seed: int):
    """Held-out normals, and each one again with one generated anomaly (the mix of anomaly kinds); hw is the
    model input (height, width)."""
    only_anomalies = SynthConfig(**{**synth.__dict__, "p_normal": 0.0})
    gen = AnomalyGenerator(only_anomalies, hw, shots, textures, foreground)
    rng = np.random.default_rng(seed + 7919)
    images, masks = list(normals), [np.zeros(normals[0].shape[:2], np.float32) for _ in normals]
    for img, region in zip(normals, regions):
        a, m, _ = gen.sample(img, rng, region)
        images.append(a)
        masks.append(m.astype(np.float32))
    labels = np.array([0] * len(normals) + [1] * len(normals))
    return images, np.stack(masks), labels


def real_validation_set(normals: list[np.ndarray], defects: list[tuple[np.ndarray, np.ndarray]]):
    """Held-out normals and held-out real defect shots: the validation that says how real defects are found."""
    images = list(normals) + [img for img, _ in defects]
    masks = [np.zeros(normals[0].shape[:2], np.float32) for _ in normals] + [m for _, m in defects]
    return images, np.stack(masks), np.array([0] * len(normals) + [1] * len(defects))


def validate(model: PRN, images, masks: np.ndarray, labels: np.ndarray) -> dict:
    maps, scores = predict(model, images)
    return {"image_auroc": auroc(scores, labels),
            "pixel_ap": average_precision(maps.ravel(), (masks > 0.5).ravel()),
            "pixel_auroc": auroc(maps.ravel(), (masks > 0.5).ravel()),
            **decision_params(maps, scores, masks, labels)}


def validate_all(model: PRN, sets: dict) -> dict:
    """{"synthetic": metrics[, "real": metrics], "source": the set that selects the step and sets thresholds}."""
    out = {name: validate(model, *data) for name, data in sets.items()}
    out["source"] = "real" if "real" in sets else "synthetic"
    return out


def selection_metric(v: dict) -> float:
    chosen = v[v["source"]]
    return 0.5 * (chosen["image_auroc"] + chosen["pixel_ap"])
