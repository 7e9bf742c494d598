"""`prn-edge eval`: a trained checkpoint on a category's test set -> metrics JSON, markdown, pictures, TIFF maps."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from tqdm import tqdm

from ..artefact import decide
from ..data.dataset import Sample, load_category, load_pair
from ..data.fit import fit_image
from ..data.images import read_image
from ..model.inference import predict
from ..model.checkpoint import load_model
from ..tiling import predict_in_tiles
from .metrics import evaluate_predictions
from .report import markdown_table, save_maps_tiff, save_overlays, write_json


def load_test(samples: list[Sample], hw: tuple[int, int], policy: str, progress: bool = False):
    """Test images fitted to the model input, their placements (to bring maps back), and the ground-truth masks
    at each image's own resolution (as the MVTec AD evaluation script compares them)."""
    images, placements, masks = [], [], []
    for s in tqdm(samples, desc="load test", disable=not progress, leave=False):
        img, mask = load_pair(s)
        masks.append(mask)
        fitted, where = fit_image(img, hw, policy)
        images.append(fitted)
        placements.append(where)
    return images, placements, masks


def predict_test(model, cfg, samples: list[Sample], progress: bool = False):
    """(maps at each image's own resolution, image scores, ground-truth masks) of the test samples, by the model's
    input policy (predict_samples)."""
    return predict_samples(lambda images: predict(model, images, progress=progress), cfg, samples, progress)


def predict_samples(run, cfg, samples: list[Sample], progress: bool = False):
    """predict_test for any `run` (model-input uint8 RGB images -> (maps, scores)) under the input policy of `cfg`:
    fitted to the model input and the maps brought back (stretch, letterbox), or split into tiles at native
    resolution and the tile maps blended back (tiles; the score is the highest tile score)."""
    if cfg.model.input_policy != "tiles":
        images, placements, masks = load_test(samples, cfg.model.hw, cfg.model.input_policy, progress)
        maps, scores = run(images)
        return [p.unfit(m) for p, m in zip(placements, maps)], scores, masks
    pairs = [load_pair(s) for s in tqdm(samples, desc="load test", disable=not progress, leave=False)]
    maps, scores = predict_in_tiles(lambda tiles: run(list(tiles)), [img for img, _ in pairs], cfg.model.hw)
    return maps, scores, [mask for _, mask in pairs]


def validation_gap(meta: dict, results: dict) -> dict | None:
    """What the training validation promised against what the test set shows: the gap that flatters when
    validation had generated anomalies only."""
    best = next((h for h in meta.get("history", []) if h.get("step") == meta.get("best_step")), None)
    if best is None or "source" not in best or results["overall"].get("image_auroc") is None:
        return None
    source = meta.get("validation", "synthetic-only")
    val = {name: best[name]["image_auroc"] for name in ("synthetic", "real") if name in best}
    test = results["overall"]["image_auroc"]
    chosen = val[best["source"]]
    summary = (f"validation ({source}) image AUROC at the chosen step: "
               + ", ".join(f"{k} {100 * v:.1f}" for k, v in val.items())
               + f"; test {100 * test:.1f} (gap {100 * (test - chosen):+.1f} pt)")
    if source == "synthetic-only":
        summary += ("; validation saw generated anomalies only: thresholds and this number may not hold for real "
                    "defects - give a few real defect shots (--defects) so some are held out")
    return {"validation": source, "val_image_auroc": val, "test_image_auroc": test,
            "gap": test - chosen, "summary": summary}


def check_training_normals(ckpt: Path, cat, meta: dict, force: bool, log: Callable[[str], None]) -> None:
    """The category's training normals must be the ones the checkpoint trained on (its data hash). In the generic
    layout good/ is split by seed: a folder with images added or removed splits otherwise, and training images land
    in the test set, which flatters every metric without a word; in the MVTec layout another copy or category is
    not what the model learned. Refused unless forced."""
    from ..artefact.files import files_sha256
    from ..errors import DataError

    recorded = meta.get("train_images_sha256")
    if not recorded or files_sha256(cat.train_good) == recorded:
        return
    why = ("good/ is split into training and test images by seed, so with images added or removed the split moves "
           "and training images can be in the test set (metrics too good)" if cat.layout == "generic" else
           "another category or another copy of it is not what the model learned")
    if not force:
        raise DataError(f"{cat.root}: its training normals are not the ones {ckpt} was trained on (data hash "
                        f"differs): {why}. Evaluate on the data as it was at training, or pass --force-data")
    log(f"WARNING: {cat.root}: training normals differ from the checkpoint's ({why}); evaluating anyway "
        "(--force-data)")


def evaluate_checkpoint(ckpt: Path, data: Path, json_out: Optional[Path] = None, overlays: Optional[Path] = None,
                        save_maps: Optional[Path] = None, max_overlays: int = 40, progress: bool = True,
                        log: Callable[[str], None] = print, force_data: bool = False) -> dict:
    model, cfg, meta = load_model(ckpt)
    # the shots are training's: a checkpoint that names its seen types (none, zero-shot) needs none of them read
    # (a broken shot mask is no reason to refuse an evaluation); older ones take the seen types from the shots
    recorded = meta.get("seen_types")
    cat = load_category(Path(data), seed=meta.get("data_seed", 0), **({"num_shots": 0} if recorded is not None else {}))
    for note in cat.notes:
        log(note)
    check_training_normals(ckpt, cat, meta, force_data, log)
    excluded = {str(Path(p).resolve()) for p in meta.get("excluded_from_test", [])}
    samples = [s for s in cat.test if str(Path(s.image).resolve()) not in excluded]
    seen_types = set(cat.seen_types if recorded is None else recorded)
    t0 = time.time()
    maps, scores, masks = predict_test(model, cfg, samples, progress)  # metrics at the images' own resolution
    seconds = time.time() - t0
    labels = np.array([s.label for s in samples])
    types = [s.defect for s in samples]
    seen = {t: (t in seen_types) for t in set(types) if t != "good"}
    results = evaluate_predictions(scores, maps, labels, masks, types, seen)
    anomalous = decide(scores, meta) if "image_threshold" in meta else None  # the rule the engines apply
    results.update({
        "checkpoint": str(ckpt), "category": cat.name, "variant": cfg.variant, "n_test": len(samples),
        "excluded_from_test": sorted(excluded), "image_threshold": meta.get("image_threshold"),
        "pixel_threshold": meta.get("pixel_threshold"), "inference_seconds": round(seconds, 2),
        "decisions": {
            "true_rejects": int((anomalous & (labels == 1)).sum()),
            "false_rejects": int((anomalous & (labels == 0)).sum()),
            "missed": int((~anomalous & (labels == 1)).sum()),
        } if anomalous is not None else None,
    })
    results["validation_gap"] = validation_gap(meta, results)
    table = markdown_table(results)
    if results["decisions"]:  # what the line would do with these parts, not only how well they rank
        d, n_bad = results["decisions"], int((labels == 1).sum())
        table += (f"\nAt the checkpoint's image threshold ({results['image_threshold']:.4g}): {d['true_rejects']} of "
                  f"{n_bad} defective parts rejected, {d['missed']} missed; {d['false_rejects']} of "
                  f"{len(labels) - n_bad} good parts rejected (false rejects)\n")
    if results["validation_gap"]:
        table += "\n" + results["validation_gap"]["summary"] + "\n"
    results["markdown"] = table
    if json_out:
        write_json(Path(json_out), results)
        Path(json_out).with_suffix(".md").write_text(f"# {cat.name}: {cfg.variant}\n\n{table}\n")
    if overlays:
        verdicts = [None] * len(samples) if anomalous is None else [bool(x) for x in anomalous]
        items = [(s, read_image(s.image), m, gt, float(sc), v)
                 for s, m, gt, sc, v in zip(samples, maps, masks, scores, verdicts)]
        save_overlays(Path(overlays), items, threshold=meta.get("pixel_threshold"), max_images=max_overlays)
    if save_maps:
        # The official MVTec AD script compares maps with ground truth at the original image size.
        save_maps_tiff(Path(save_maps), cat.name, samples, maps, size=[m.shape for m in maps])
        if excluded:
            note = Path(save_maps) / cat.name / "excluded_from_metrics.txt"
            note.write_text("# used as training shots: remove from the dataset copy given to the official script\n"
                            + "\n".join(sorted(excluded)) + "\n")
    log(table)
    return results
