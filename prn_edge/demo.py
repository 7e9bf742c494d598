"""`prn-edge demo`: the whole chain on embedded defaults.

Today: build the demo dataset from real offline photos, train (or reuse) the default PRN on one category,
evaluate it on seen and unseen defect types and write the pictures. The line runtime joins here as it lands.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .config import make_config


def run_demo(workdir: Path, category: str = "brick", steps: int | None = None, seed: int = 0,
             variant: str = "prn-edge", log=print) -> dict:
    from .data.demo import make_dataset
    from .evaluate.checkpoint_eval import evaluate_checkpoint
    from .train.trainer import train

    t0 = time.time()
    workdir = Path(workdir)
    data_root = workdir / "data"
    cat_dir = data_root / category
    if not (cat_dir / "meta.json").is_file():
        log(f"[1/3] building the demo dataset in {data_root}")
        make_dataset(data_root, seed=seed, categories=[category])
    else:
        log(f"[1/3] reusing the demo dataset in {data_root}")
    overrides = {"train": {"seed": seed, **({"steps": steps} if steps else {})}}
    cfg = make_config(variant, overrides)
    ckpt = workdir / f"{category}-{variant}.pt"
    stamp = ckpt.with_suffix(".config.json")
    if ckpt.is_file() and stamp.is_file() and stamp.read_text() == json.dumps(cfg.to_dict()):
        log(f"[2/3] reusing {ckpt} (same configuration)")
    else:
        log(f"[2/3] training {variant} on {category} ({cfg.train.steps} steps)")
        train(cfg, cat_dir, ckpt, defects_dir=cat_dir / "defects", log=log)
        stamp.write_text(json.dumps(cfg.to_dict()))
    log("[3/3] evaluating on the test set (seen and unseen defect types)")
    out = workdir / "eval"
    res = evaluate_checkpoint(ckpt, cat_dir, json_out=out / f"{category}.json", overlays=out / "overlays",
                              save_maps=out / "maps", log=log)
    log(f"\nmetrics: {out / (category + '.json')}  table: {out / (category + '.md')}\n"
        f"heat-map overlays: {out / 'overlays'}  TIFF maps: {out / 'maps'}\n"
        f"total {time.time() - t0:.0f}s")
    return res
