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
from ..data.dataset import Category, Sample, load_fitted, load_pair
from ..data.fit import tile_at
from ..data.images import read_image, read_mask
from ..data.synth.anomalies import AnomalyGenerator
from ..errors import DataError
from ..model.inference import predict, predict_tiled
from ..model.prn import PRN
from ..tiling import TileGrid, paste, random_start
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


def load_held_out_shots(val_shots: list[Sample], cfg: Config) -> tuple[list[tuple[Sample, np.ndarray, np.ndarray]],
                                                                       list[Sample]]:
    """The held-out real shots as validation sees them ((shot, image, mask), load_shot), and the shots left out: a
    defect too small to survive the resize to the model input says nothing about the model. Training and
    calibration both validate on these."""
    loaded = [(s, *load_shot(s, cfg)) for s in val_shots]
    return [x for x in loaded if x[2].any()], [s for s, _, m in loaded if not m.any()]


def load_normals(paths: list[Path], cfg: Config, progress: bool = False) -> tuple[list[np.ndarray], list]:
    """Normal images fitted to the model input, and where each may hold a generated anomaly (None = anywhere;
    with letterboxing, the image and not its padding). With input policy tiles, the images as they are (tiles are
    cut where they are used; regions None)."""
    hw, policy = cfg.model.hw, cfg.model.input_policy
    load = tqdm if progress else (lambda x, **_: x)
    if policy == "tiles":
        return [read_image(p) for p in load(paths, desc="load normals", leave=False)], [None] * len(paths)
    imgs, regions = [], []
    for p in load(paths, desc="load normals", leave=False):
        img, where = load_fitted(p, hw, policy)
        imgs.append(img)
        regions.append(None if (where.h, where.w) == hw else where.valid())
    return imgs, regions


def _anomalies(synth: SynthConfig, hw: tuple[int, int], shots, textures, foreground, seed: int):
    """The generator of validation anomalies (every sample an anomaly) and its own seeded stream."""
    only_anomalies = SynthConfig(**{**synth.__dict__, "p_normal": 0.0})
    return AnomalyGenerator(only_anomalies, hw, shots, textures, foreground), np.random.default_rng(seed + 7919)


def validation_set(normals: list[np.ndarray], regions: list, synth: SynthConfig, hw: tuple[int, int], shots,
                   textures, foreground, seed: int):
    """Held-out normals, and each one again with one generated anomaly (the mix of anomaly kinds); hw is the
    model input (height, width)."""
    gen, rng = _anomalies(synth, hw, shots, textures, foreground, seed)
    images, masks = list(normals), [np.zeros(normals[0].shape[:2], np.float32) for _ in normals]
    for img, region in zip(normals, regions):
        a, m, _ = gen.sample(img, rng, region)
        images.append(a)
        masks.append(m.astype(np.float32))
    labels = np.array([0] * len(normals) + [1] * len(normals))
    return images, np.stack(masks), labels


def tiled_validation_set(normals: list[np.ndarray], synth: SynthConfig, hw: tuple[int, int], shots, textures,
                         foreground, seed: int):
    """validation_set for input policy tiles: held-out normals at their own resolution, and each one again with
    one generated anomaly drawn on a random tile of it (as training draws them), at image resolution."""
    gen, rng = _anomalies(synth, hw, shots, textures, foreground, seed)
    images, masks = list(normals), [np.zeros(n.shape[:2], np.float32) for n in normals]
    for img in normals:
        y, x = random_start(img.shape[0], hw[0], rng), random_start(img.shape[1], hw[1], rng)
        tile, _, region = tile_at(img, None, y, x, hw)
        a, m, _ = gen.sample(tile, rng, region)
        images.append(paste(img.copy(), a, y, x))
        masks.append(paste(np.zeros(img.shape[:2], np.float32), m.astype(np.float32), y, x))
    return images, masks, np.array([0] * len(normals) + [1] * len(normals))


def load_shot(sample: Sample, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """A real shot (image, mask) as validation and evaluation see it: fitted to the model input, or at its own
    resolution with input policy tiles (split into tiles when predicted)."""
    if cfg.model.input_policy == "tiles":
        return load_pair(sample)
    return load_pair(sample, cfg.model.hw, cfg.model.input_policy)


def model_inputs(images: list[np.ndarray], cfg: Config) -> list[np.ndarray]:
    """What the model sees of whole images (prototype fit, distance calibration): the fitted images themselves,
    or with input policy tiles every tile of each image's grid, so every part of the normals is covered."""
    if cfg.model.input_policy != "tiles":
        return images
    th, tw = cfg.model.hw
    return [t for img in images for t in TileGrid(img.shape[0], img.shape[1], th, tw).split(img)]


def real_validation_set(normals: list[np.ndarray], defects: list[tuple[np.ndarray, np.ndarray]]):
    """Held-out normals and held-out real defect shots: the validation that says how real defects are found.
    Masks are a list (with input policy tiles each is at its image's own size)."""
    images = list(normals) + [img for img, _ in defects]
    masks = [np.zeros(n.shape[:2], np.float32) for n in normals] + [m for _, m in defects]
    return images, masks, np.array([0] * len(normals) + [1] * len(defects))


def pixels(maps) -> np.ndarray:
    """Every pixel of a stack or a list of maps (images of different sizes), in one vector."""
    return np.concatenate([np.ravel(m) for m in maps]) if len(maps) else np.zeros(0, np.float32)


def validate(model: PRN, images, masks, labels: np.ndarray) -> dict:
    """Image and pixel metrics and the decision parameters; with input policy tiles, every image is tiled, its
    map blended back at its own resolution and its score the highest tile score (prn_edge.model.inference)."""
    tiles = model.cfg.input_policy == "tiles"
    maps, scores = predict_tiled(model, images) if tiles else predict(model, images)
    maps, truth = pixels(maps), pixels(masks) > 0.5
    return {"image_auroc": auroc(scores, labels),
            "n_normal": int((labels == 0).sum()), "n_anomalous": int((labels == 1).sum()),
            "pixel_ap": average_precision(maps, truth),
            "pixel_auroc": auroc(maps, truth),
            **decision_params(maps, scores, truth, labels)}


def validate_all(model: PRN, sets: dict) -> dict:
    """{"synthetic": metrics[, "real": metrics], "source": the set that selects the step and sets thresholds}."""
    out = {name: validate(model, *data) for name, data in sets.items()}
    out["source"] = "real" if "real" in sets else "synthetic"
    return out


def selection_metric(v: dict) -> float:
    chosen = v[v["source"]]
    return 0.5 * (chosen["image_auroc"] + chosen["pixel_ap"])


def auroc_standard_error(a: float, n_pos: int, n_neg: int) -> float:
    """The standard error of an image AUROC `a` measured on n_pos anomalous and n_neg normal images (Hanley and
    McNeil, Radiology 1982): on six held-out shots it is several points, on a hundred generated anomalies a few
    tenths."""
    if n_pos < 1 or n_neg < 1:
        return 0.0
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def selection_tolerance(v: dict) -> float:
    """How far below the best selection_metric a later step may be and still be chosen: the noise of its image
    AUROC half (the metric is the mean of it and pixel AP), one standard error. Measured on few real shots, a
    step that is better by less than that is better by chance, and the later step has trained longer
    (docs/real-data.md: an undertrained step 100 won by 0.001 on six shots and lost 3 points of test AUROC).
    Validations without the image counts (written before they were recorded) get no tolerance."""
    chosen = v[v["source"]]
    if "n_anomalous" not in chosen:
        return 0.0
    return 0.5 * auroc_standard_error(chosen["image_auroc"], chosen["n_anomalous"], chosen["n_normal"])


class StepSelection:
    """Which validated step training keeps: offered each validation in order, it keeps a step when its
    selection_metric is within selection_tolerance of the best so far (the best's tolerance), so the last step
    kept is the latest one that was not worse than the best by more than the noise when it was validated.
    Rebuilt from a run's history when training resumes."""

    def __init__(self, history: list[dict] = ()):
        self.best, self.tolerance, self.kept = -np.inf, 0.0, None
        for h in history:
            self.offer(h["step"], h)

    def offer(self, step: int, v: dict) -> bool:
        """True when `step` is kept (the checkpoint is to be written)."""
        metric = selection_metric(v)
        if metric > self.best:
            self.best, self.tolerance = metric, selection_tolerance(v)
        if metric >= self.best - self.tolerance:
            self.kept = step
            return True
        return False
