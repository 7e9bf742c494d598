"""The training loop: prototypes from normal images, then the head on normals, real shots and generated anomalies.

The best step and the thresholds are chosen on a validation split of the *training* normals (plus anomalies
generated on them, and held-out real shots), never on the test set: the protocol is prn_edge.evaluate.validation.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..config import Config, ModelConfig, make_config
from ..data.dataset import Category, load_category
from ..data.fit import defect_tile, random_tile
from ..data.images import image_header
from ..data.synth.anomalies import AnomalyGenerator
from ..data.synth.textures import load_texture_dir
from ..errors import CheckpointError, ConfigError
from ..evaluate.thresholds import checkpoint_decision
from ..evaluate.validation import (StepSelection, load_held_out_shots, load_normals, load_shot, model_inputs,
                                   real_validation_set, selection_metric, split_normals, split_shots,
                                   synth_foreground, tiled_validation_set, validate, validate_all, validation_set)
from ..artefact.files import files_sha256
from ..model.checkpoint import read_checkpoint, save_checkpoint, stored_config
from ..model.inference import to_tensor
from ..model.memory import check_memory
from ..model.prn import PRN, build_prn
from ..tiling import TileGrid
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


def resume_state(last_path: Path) -> dict:
    """The state of an interrupted run, or CheckpointError saying why it cannot go on (before any data is read)."""
    if not last_path.is_file():
        raise CheckpointError(f"--resume: {last_path} does not exist (training writes it beside the checkpoint at "
                              "each validation); drop --resume to start from the beginning")
    return read_checkpoint(last_path)


def check_resume_config(state: dict, cfg: Config, last_path: Path) -> None:
    """An interrupted run goes on only with this very config (its image size chosen, when "auto"); keys added to
    the config since the run was written count with the values of its time (model.checkpoint.stored_config: a run
    from before model.distance_features measured per scale, whatever the default is now)."""
    saved = state["config"]
    with contextlib.suppress(ConfigError):
        saved = stored_config(state).to_dict()
    if saved != cfg.to_dict():
        differs = _differing_keys(saved, cfg.to_dict())
        raise CheckpointError(f"{last_path} was trained with another configuration ("
                              + ", ".join(differs[:5]) + (", ..." if len(differs) > 5 else "")
                              + "); drop --resume or use the same config")


def _differing_keys(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """'key: <saved> in the run, <now> now' for every leaf that differs between two config dicts."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differing_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the run, {b!r} now")
    return out


def squeeze_note(model_cfg, cat: Category) -> Optional[str]:
    """A hint when stretching squeezes the training images by more than 1.5x along one axis: thin defects along
    the squeezed axis get thinner than a pixel."""
    if model_cfg.input_policy != "stretch":
        return None
    h, w = model_cfg.hw
    squeeze = cat.train_aspect / (h / w)
    if 1 / 1.5 <= squeeze <= 1.5:
        return None
    return (f"the training images are {cat.train_aspect:.2f} times as high as wide (median), the model input "
            f"{h}x{w}: stretching squeezes them {max(squeeze, 1 / squeeze):.1f}-fold along one axis; "
            "model.image_size=auto keeps their aspect ratio (or give [height, width], or input_policy tiles)")


def count_inputs(paths: list[Path], cfg: Config) -> int:
    """How many model inputs the normals make: one per image, or with input policy tiles one per tile of each
    image's grid (read from the headers, before any image is loaded)."""
    if cfg.model.input_policy != "tiles":
        return len(paths)
    th, tw = cfg.model.hw
    return sum(len(TileGrid(h, w, th, tw)) for w, h, _ in map(image_header, paths))


def train(cfg: Config, data: Path, out: Path, defects_dir: Optional[Path] = None, shots_from_test: int = 0,
          backbone_weights: Optional[str] = None, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    t0 = time.time()
    cfg = copy.deepcopy(cfg)  # the caller's config stays as given: an image_size "auto" is chosen on this copy
    tc = cfg.train
    last_path = Path(out).with_suffix(".last.pt")
    state = resume_state(last_path) if resume else None  # refused before any data is read
    # image headers only; the model size "auto" is chosen from them, before a resume compares the configs
    cat: Category = load_category(Path(data), defects_dir=defects_dir, shots_from_test=shots_from_test,
                                  num_shots=tc.num_shots, seed=tc.seed)
    # "auto" becomes the size (the checkpoint records it); a given size gets the squeeze hint instead
    note = cfg.model.resolve_image_size(cat.train_aspect) or squeeze_note(cfg.model, cat)
    # topk 0 becomes the k of that size, map_decoder and map_contrast auto a choice (the checkpoint records them)
    notes = [note, cfg.model.resolve_topk(), cfg.model.resolve_map(len(cat.shots))]
    for line in cat.notes + [n for n in notes if n]:  # what loading decided (sizes, split, masks, shots)
        log(line)
    hw = cfg.model.hw
    if state is not None:
        check_resume_config(state, cfg, last_path)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    fit_paths, val_paths = split_normals(cat, tc)
    tiles = cfg.model.input_policy == "tiles"  # tiles cut at native resolution (prn_edge.tiling)
    check_memory(cfg.model, tc.batch_size, count_inputs(fit_paths + val_paths, cfg))
    fit_imgs, fit_regions = load_normals(fit_paths, cfg, progress)
    val_imgs, val_regions = load_normals(val_paths, cfg)
    train_shots, val_shots = split_shots(cat.shots, tc)
    real_val, dropped = load_held_out_shots(val_shots, cfg)
    if dropped:
        log(f"validation: {len(dropped)} held-out shots have no defect pixel at the model size and are not used: "
            + ", ".join(Path(s.image).name for s in dropped[:5]))
    val_shots = [s for s, _, _ in real_val]
    shots = [load_shot(s, cfg) for s in train_shots]
    if tiles:  # each shot enters as one tile that holds its defect, drawn once (the generator keeps its shots)
        shot_rng = np.random.default_rng(tc.seed + 31)
        shots = [defect_tile(img, m, hw, shot_rng)[:2] for img, m in shots]
    textures = load_texture_dir(cfg.synth.texture_dir, hw) if cfg.synth.texture_dir else None
    foreground = synth_foreground(cfg, cat)
    if val_shots:
        log(f"validation: {len(val_shots)} real defect shots held out "
            f"({', '.join(sorted({s.defect for s in val_shots}))}) + generated anomalies; the real ones choose the "
            f"step and the thresholds")
    else:
        log("validation: generated anomalies only (no real defect shots to hold out); thresholds may not "
            "transfer to real defects")

    model, backbone_info = build_prn(cfg.model, count_inputs(fit_paths, cfg), backbone_weights)
    opt = torch.optim.AdamW(model.head_parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start, history, selection = 0, [], StepSelection()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
        selection = StepSelection(history)
        torch.set_rng_state(state["torch_rng"])
        rng = np.random.default_rng(tc.seed + start)
        log(f"resumed from {last_path} at step {start}")
    fused = cfg.model.distance_fusion != "none"
    val_batches = list(to_tensor(model_inputs(val_imgs, cfg)).split(16)) if fused else []
    if state is None:
        t = time.time()
        fit_inputs = model_inputs(fit_imgs, cfg)
        model.fit_prototypes(to_tensor(fit_inputs), seed=tc.seed)
        log(f"prototypes: {model.prototypes[0].protos.shape[0]} per scale ({cfg.model.prototype_mode}) "
            f"from {len(fit_imgs)} normal images" + (f" ({len(fit_inputs)} tiles)" if tiles else "")
            + f" in {time.time() - t:.1f}s")
        if fused:
            cal = model.calibrate_distance(val_batches)
            joint = f" (per scale; {cal['joint']['loc']:.3g} joint)" if "joint" in cal else ""
            border = (f"; near the border up to {max(cal['border']['profile']):.2g} logits louder, corrected within "
                      f"{cal['border']['px']} px" if "border" in cal else "")
            log(f"distance map calibrated on {len(val_imgs)} held-out normals: p = 0.5 at {cal['loc']:.3g}{joint}"
                + border)

    gen = AnomalyGenerator(cfg.synth, hw, shots, textures, foreground)
    if tiles:
        synthetic = tiled_validation_set(val_imgs, cfg.synth, hw, shots, textures, foreground, tc.seed)
    else:
        synthetic = validation_set(val_imgs, val_regions, cfg.synth, hw, shots, textures, foreground, tc.seed)
    val_sets = {"synthetic": synthetic}
    if val_shots:
        val_sets["real"] = real_validation_set(val_imgs, [(img, m) for _, img, m in real_val])
    meta = {
        "category": cat.name, "data_root": str(cat.root), "image_size": cfg.model.image_size,
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
        batch = []
        for i in picks:
            img, region = fit_imgs[i], fit_regions[i]
            if tiles:  # a random tile at native resolution; its region is where it shows the image
                img, _, region = random_tile(img, hw, rng)
            batch.append(gen.sample(img, rng, region))
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
            if fused:  # the fused map weighs the decoder as calibrated now, on the same held-out normals
                model.calibrate_decoder(val_batches)
            v = validate_all(model, val_sets)
            model.train()
            history.append({"step": done, "loss": float(loss.item()), **v})
            keep = selection.offer(done, v)
            with tqdm.external_write_mode(file=sys.stderr):  # the bar steps aside for the log line
                log(f"step {done}: " + ", ".join(f"{name} val image AUROC {v[name]['image_auroc']:.4f}, pixel AP "
                                                       f"{v[name]['pixel_ap']:.4f}" for name in val_sets)
                    + f"; selection {selection_metric(v):.4f} (best {selection.best:.4f} +- "
                      f"{selection.tolerance:.4f}): " + ("kept" if keep else "not kept"))
            if keep:
                save_checkpoint(Path(out), model, cfg,
                                {**meta, **checkpoint_decision(v), "best_step": done, "history": history})
            save_checkpoint(last_path, model, cfg, meta, extra={
                # the kept step is not stored: resume replays the history through StepSelection
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": done, "history": history,
                "torch_rng": torch.get_rng_state()})
    bar.close()
    if "real" in val_sets and fused:
        choose_fusion(model, Path(out), val_sets["real"], log)
    seconds = time.time() - t0
    best_v = next(h for h in history if h["step"] == selection.kept)
    return TrainResult(Path(out), selection.kept, best_v, seconds, tc.steps, cat.name)


DEFAULT_FUSION = ModelConfig.distance_fusion


def choose_fusion(model: PRN, ckpt: Path, real_val, log: Callable[[str], None] = print) -> dict:
    """With held-out real defects, keep the fusion of the distance map that finds them best.

    The distance map is there for appearances the decoder never learned; when real defects were shown in
    training, the decoder may already know them better, and "max" then keeps the image score the decoder's
    while the configured fusion ("logit" or "mean") lets the distance into it. Real validation decides between
    the configured fusion and "max" by the mean of image AUROC, pixel AUROC and pixel AP; a tie keeps the
    configured one. The distance is never dropped here: held-out
    shots are of the seen types, where the decoder is strongest, and on Magnetic Tile Defect they chose the
    decoder alone while the distance still helped the unseen types (docs/real-data.md). The checkpoint is
    re-written with the choice and the thresholds of the chosen map. Without real defects (zero-shot) the
    configured fusion stays.
    """
    state = read_checkpoint(ckpt)
    model.load_state_dict(state["model"], strict=False)
    model.cfg = dataclasses.replace(model.cfg)  # the caller's config stays as it was
    cfg = make_config(state["config"]["variant"], {k: v for k, v in state["config"].items() if k != "variant"})
    configured = cfg.model.distance_fusion
    scores = {}
    # The configured fusion against the decoder's score ("max"); more candidates on a handful of held-out shots
    # would choose by noise.
    for mode in dict.fromkeys((configured, "max" if configured != "max" else DEFAULT_FUSION)):
        model.cfg.distance_fusion = mode
        v = validate(model, *real_val)
        scores[mode] = ((v["image_auroc"] + v["pixel_auroc"] + v["pixel_ap"]) / 3, v)
    chosen = max(scores, key=lambda m: (round(scores[m][0], 6), m == configured))
    model.cfg.distance_fusion = chosen
    meta = dict(state["meta"])
    meta["fusion_choice"] = {"chosen": chosen, **{m: {"selection_metric": s, "image_auroc": v["image_auroc"],
                                                       "pixel_auroc": v["pixel_auroc"], "pixel_ap": v["pixel_ap"],
                                                       "image_threshold": v["image_threshold"]}
                                                   for m, (s, v) in scores.items()}}
    log("fusion of the distance map on held-out real defects: "
        + ", ".join(f"{m} {s:.4f}" for m, (s, _) in scores.items()) + f" -> {chosen}")
    if chosen != cfg.model.distance_fusion:
        was = {"map_decoder": cfg.model.map_decoder, "map_contrast": cfg.model.contrast}
        if cfg.model.map_gated or cfg.model.contrast:  # of the "logit" fusion's map: "max" has none
            log(f"model.map_decoder {was['map_decoder']} -> weighted, model.map_contrast {was['map_contrast']:g} -> "
                f"0: the {chosen} fusion's map has neither")
            meta["fusion_choice"]["map_was"] = was
        cfg.model.distance_fusion = chosen
        cfg.model.map_decoder, cfg.model.map_contrast = "weighted", 0.0
        meta.update(checkpoint_decision({"source": "real", "real": scores[chosen][1]}))
    save_checkpoint(ckpt, model, cfg, meta)
    return meta["fusion_choice"]

