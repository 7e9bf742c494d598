"""The training loop: prototypes from normal images, then the head on normals, real shots and generated anomalies.

The best step and the thresholds are chosen on a validation split of the *training* normals (plus anomalies
generated on them), never on the test set.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..config import Config, SynthConfig, make_config
from ..data.dataset import Category, Sample, load_category, load_fitted, load_pair
from ..data.images import read_mask
from ..data.synth.anomalies import AnomalyGenerator
from ..data.synth.textures import load_texture_dir
from ..errors import CheckpointError, DataError
from ..evaluate.metrics import auroc, average_precision, f1_max
from ..model.inference import predict, to_tensor
from ..model.memory import check_memory
from ..model.prn import PRN, build_prn
from .checkpoint import read_checkpoint, save_checkpoint
from .losses import segmentation_loss


@dataclass
class TrainResult:
    checkpoint: Path
    best_step: int
    val: dict
    seconds: float
    steps: int
    category: str

    def to_dict(self) -> dict:
        return {"checkpoint": str(self.checkpoint), "best_step": self.best_step, "val": self.val,
                "seconds": round(self.seconds, 1), "steps": self.steps, "category": self.category}


def files_sha256(paths: list[Path]) -> str:
    """One hash over names and bytes of a file set: identifies the training data in the checkpoint."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def synth_foreground(cfg: Config, cat: Category):
    """Where generated anomalies may go: the user's mask if configured, else the category's rule."""
    size = cfg.model.image_size
    return read_mask(cfg.synth.foreground_mask, (size, size)) if cfg.synth.foreground_mask else cat.foreground


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
    size, policy = cfg.model.image_size, cfg.model.input_policy
    load = tqdm if progress else (lambda x, **_: x)
    imgs, regions = [], []
    for p in load(paths, desc="load normals", leave=False):
        img, where = load_fitted(p, size, policy)
        imgs.append(img)
        regions.append(None if (where.h, where.w) == (size, size) else where.valid())
    return imgs, regions


def validation_set(normals: list[np.ndarray], regions: list, synth: SynthConfig, size: int, shots, textures,
                   foreground, seed: int):
    """Held-out normals, and each one again with one generated anomaly (the mix of anomaly kinds)."""
    only_anomalies = SynthConfig(**{**synth.__dict__, "p_normal": 0.0})
    gen = AnomalyGenerator(only_anomalies, size, shots, textures, foreground)
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


def decision_params(maps: np.ndarray, scores: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> dict:
    """Thresholds (image and pixel F1-max) and score normalization from validation predictions: the rule every
    artefact's decision comes from, for the trained model and for its INT8 derivatives alike."""
    pix_labels = (masks > 0.5).ravel()
    img_f1, img_thr = f1_max(scores, labels)
    # F1-max returns the lowest anomalous score it keeps: a defect a hair weaker than every validation defect
    # would pass. Move down to the middle of the gap to the highest normal score below it; the validation
    # decisions stay the same, and both sides get a margin (with few real defects this matters most).
    below = scores[(labels == 0) & (scores < img_thr)]
    if below.size:
        img_thr = float((below.max() + img_thr) / 2)
    pix_f1, pix_thr = f1_max(maps.ravel(), pix_labels)
    normal_scores = scores[labels == 0]
    return {
        "image_f1": img_f1, "image_threshold": float(img_thr),
        "pixel_f1": pix_f1, "pixel_threshold": float(pix_thr),
        # Score normalization travels with the model: (score - threshold) / spread + 0.5 maps thr -> 0.5.
        "score_spread": float(max(np.percentile(scores, 99) - np.percentile(normal_scores, 1), 1e-6)),
    }


def validate(model: PRN, images, masks: np.ndarray, labels: np.ndarray) -> dict:
    maps, scores = predict(model, images)
    return {"image_auroc": auroc(scores, labels),
            "pixel_ap": average_precision(maps.ravel(), (masks > 0.5).ravel()),
            **decision_params(maps, scores, masks, labels)}


def validate_all(model: PRN, sets: dict) -> dict:
    """{"synthetic": metrics[, "real": metrics], "source": the set that selects the step and sets thresholds}."""
    out = {name: validate(model, *data) for name, data in sets.items()}
    out["source"] = "real" if "real" in sets else "synthetic"
    return out


def _selection_metric(v: dict) -> float:
    chosen = v[v["source"]]
    return 0.5 * (chosen["image_auroc"] + chosen["pixel_ap"])


def resume_state(last_path: Path, cfg: Config) -> dict:
    """The state of an interrupted run of this very config, or CheckpointError saying why it cannot go on."""
    if not last_path.is_file():
        raise CheckpointError(f"--resume: {last_path} does not exist (training writes it beside the checkpoint at "
                              "each validation); drop --resume to start from the beginning")
    state = read_checkpoint(last_path)
    if state["config"] != cfg.to_dict():
        raise CheckpointError(f"{last_path} was trained with another configuration; drop --resume or "
                              "use the same config")
    return state


def train(cfg: Config, data: Path, out: Path, defects_dir: Optional[Path] = None, shots_from_test: int = 0,
          backbone_weights: Optional[str] = None, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    t0 = time.time()
    tc, size = cfg.train, cfg.model.image_size
    last_path = Path(out).with_suffix(".last.pt")
    state = resume_state(last_path, cfg) if resume else None  # refused before any data is read
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    cat: Category = load_category(Path(data), defects_dir=defects_dir, shots_from_test=shots_from_test,
                                  num_shots=tc.num_shots, seed=tc.seed)
    rng = np.random.default_rng(tc.seed)
    fit_paths, val_paths = split_normals(cat, tc)
    check_memory(cfg.model, tc.batch_size, len(fit_paths) + len(val_paths))
    fit_imgs, fit_regions = load_normals(fit_paths, cfg, progress)
    val_imgs, val_regions = load_normals(val_paths, cfg)
    train_shots, val_shots = split_shots(cat.shots, tc)
    real_val = [(s, *load_pair(s, size, cfg.model.input_policy)) for s in val_shots]
    dropped = [s for s, _, m in real_val if not m.any()]
    if dropped:  # a defect too small to survive the resize to the model input says nothing about the model
        log(f"validation: {len(dropped)} held-out shots have no defect pixel at the model size and are not used: "
            + ", ".join(Path(s.image).name for s in dropped[:5]))
    real_val = [(s, img, m) for s, img, m in real_val if m.any()]
    val_shots = [s for s, _, _ in real_val]
    shots = [load_pair(s, size, cfg.model.input_policy) for s in train_shots]
    textures = load_texture_dir(cfg.synth.texture_dir, size) if cfg.synth.texture_dir else None
    foreground = synth_foreground(cfg, cat)
    if val_shots:
        log(f"validation: {len(val_shots)} real defect shots held out "
            f"({', '.join(sorted({s.defect for s in val_shots}))}) + generated anomalies; the real ones choose the "
            f"step and the thresholds")
    else:
        log("validation: generated anomalies only (no real defect shots to hold out); thresholds may not "
            "transfer to real defects")

    model, backbone_info = build_prn(cfg.model, len(fit_imgs), backbone_weights)
    opt = torch.optim.AdamW(model.head_parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start, best, history = 0, (-math.inf, 0, None), []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
        best = (state["best_metric"], state["best_step"], None)
        torch.set_rng_state(state["torch_rng"])
        rng = np.random.default_rng(tc.seed + start)
        log(f"resumed from {last_path} at step {start}")
    else:
        t = time.time()
        model.fit_prototypes(to_tensor(fit_imgs), seed=tc.seed)
        log(f"prototypes: {model.prototypes[0].protos.shape[0]} per scale ({cfg.model.prototype_mode}) "
            f"from {len(fit_imgs)} normal images in {time.time() - t:.1f}s")
        if cfg.model.distance_fusion != "none":
            cal = model.calibrate_distance(list(to_tensor(val_imgs).split(16)))
            log(f"distance map calibrated on {len(val_imgs)} held-out normals: p = 0.5 at {cal['loc']:.3g}")

    gen = AnomalyGenerator(cfg.synth, size, shots, textures, foreground)
    val_sets = {"synthetic": validation_set(val_imgs, val_regions, cfg.synth, size, shots, textures, foreground,
                                            tc.seed)}
    if val_shots:
        val_sets["real"] = real_validation_set(val_imgs, [(img, m) for _, img, m in real_val])
    meta = {
        "category": cat.name, "data_root": str(cat.root), "image_size": size,
        "train_images_sha256": files_sha256(fit_paths + val_paths),
        "data_seed": tc.seed,  # the generic layout splits good/ by seed: eval must split the same way
        "shots": [str(Path(s.image).resolve()) for s in train_shots],
        "validation_shots": [str(Path(s.image).resolve()) for s in val_shots],
        "validation": "real+synthetic" if val_shots else "synthetic-only",
        "excluded_from_test": [str(Path(s.image).resolve()) for s in cat.excluded],
        "seen_types": list(cat.seen_types), "backbone": backbone_info, "toolkit_version": __version__,
        "prototypes_sha256": hashlib.sha256(b"".join(
            p.protos.numpy().tobytes() for p in model.prototypes)).hexdigest(),
    }
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, tc.steps) / tc.steps)))
    if start:
        sched.load_state_dict(state["scheduler"])
    model.train()
    bar = tqdm(range(start, tc.steps), desc=f"train {cat.name}", initial=start, total=tc.steps,
               disable=not progress, dynamic_ncols=True)
    for step in bar:
        picks = (rng.integers(len(fit_imgs)) for _ in range(tc.batch_size))  # drawn in turn with the anomalies
        batch = [gen.sample(fit_imgs[i], rng, fit_regions[i]) for i in picks]
        x = to_tensor([b[0] for b in batch])
        y = torch.from_numpy(np.stack([b[1] for b in batch]).astype(np.float32)).unsqueeze(1)
        loss = segmentation_loss(tc.loss, model(x), y, tc.focal_gamma, tc.focal_alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done % tc.val_every == 0 or done == tc.steps:
            v = validate_all(model, val_sets)
            model.train()
            history.append({"step": done, "loss": float(loss.item()), **v})
            metric = _selection_metric(v)
            bar.write(f"step {done}: " + ", ".join(f"{name} val image AUROC {v[name]['image_auroc']:.4f}, pixel AP "
                                                   f"{v[name]['pixel_ap']:.4f}" for name in val_sets))
            if metric > best[0]:
                best = (metric, done, v)
                save_checkpoint(Path(out), model, cfg, {**meta, **_decision(v), "best_step": done, "history": history})
            save_checkpoint(last_path, model, cfg, meta, extra={
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": done, "history": history, "best_metric": best[0],
                "best_step": best[1], "torch_rng": torch.get_rng_state()})
    bar.close()
    if "real" in val_sets and cfg.model.distance_fusion != "none":
        choose_fusion(model, Path(out), val_sets["real"], log)
    seconds = time.time() - t0
    best_v = best[2] if best[2] is not None else next(h for h in history if h["step"] == best[1])
    return TrainResult(Path(out), best[1], best_v, seconds, tc.steps, cat.name)


def choose_fusion(model: PRN, ckpt: Path, real_val, log: Callable[[str], None] = print) -> dict:
    """With held-out real defects, keep the distance map only if it finds them better than the decoder alone.

    The distance map is there for appearances the decoder never learned; when real defects were shown in
    training, the decoder may already know them better, and the distance then only adds the normal variation
    of the material to every score. Real validation decides; the checkpoint is re-written with the choice and
    the thresholds of the chosen map. Without real defects (zero-shot) the fusion stays.
    """
    state = read_checkpoint(ckpt)
    model.load_state_dict(state["model"], strict=False)
    model.cfg = dataclasses.replace(model.cfg)  # the caller's config stays as it was
    cfg = make_config(state["config"]["variant"], {k: v for k, v in state["config"].items() if k != "variant"})
    scores = {}
    for mode in ("max", "none"):
        model.cfg.distance_fusion = mode
        v = validate(model, *real_val)
        scores[mode] = (0.5 * (v["image_auroc"] + v["pixel_ap"]), v)
    chosen = max(scores, key=lambda m: (scores[m][0], m == "max"))  # a tie keeps the fusion
    model.cfg.distance_fusion = chosen
    meta = dict(state["meta"])
    meta["fusion_choice"] = {"chosen": chosen, **{m: {"selection_metric": s, "image_auroc": v["image_auroc"],
                                                       "pixel_ap": v["pixel_ap"], "image_threshold": v["image_threshold"]}
                                                   for m, (s, v) in scores.items()}}
    log(f"distance map on held-out real defects: fused {scores['max'][0]:.4f}, decoder alone {scores['none'][0]:.4f} "
        f"-> {'kept' if chosen == 'max' else 'left out'}")
    if chosen != cfg.model.distance_fusion:
        cfg.model.distance_fusion = chosen
        meta.update(_decision({"source": "real", "real": scores[chosen][1]}))
    save_checkpoint(ckpt, model, cfg, meta)
    return meta["fusion_choice"]


def _decision(v: dict) -> dict:
    """What travels with the model so every backend decides the same way (from the selecting validation set)."""
    v = v[v["source"]]
    return {"image_threshold": v["image_threshold"], "pixel_threshold": v["pixel_threshold"],
            "score_spread": v["score_spread"]}


def normalize_score(score: np.ndarray | float, meta: dict) -> np.ndarray:
    """Map raw image scores so that the decision threshold sits at 0.5."""
    return np.clip((np.asarray(score) - meta["image_threshold"]) / meta["score_spread"] + 0.5, 0.0, 1.0)
