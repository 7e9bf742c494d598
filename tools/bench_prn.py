#!/usr/bin/env python
"""PRN core benchmark: per category of the built-in dataset, train the default variant with 10 real
defect shots (seen types), evaluate on seen and unseen defect types, and time it on this machine.

    python tools/bench_prn.py --out runs/bench_prn [--categories brick coin] [--steps N] [--set k=v ...]

Writes <out>/bench_prn.json (machine-readable) and prints a markdown table. Targets (on unseen types):
image AUROC >= 0.98, pixel AUROC >= 0.97, AUPRO >= 0.90; training <= 20 minutes per category on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

TARGETS = {"image_auroc": 0.98, "pixel_auroc": 0.97, "aupro": 0.90}
TRAIN_BUDGET_S = 20 * 60


def main() -> int:
    from prn_edge.bench.machine import machine_info
    from prn_edge.config import make_config, parse_override, _merge
    from prn_edge.data.demo import SCENES, make_dataset
    from prn_edge.evaluate.checkpoint_eval import evaluate_checkpoint
    from prn_edge.artefact import write_json
    from prn_edge.train.trainer import train

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench_prn")
    ap.add_argument("--categories", nargs="+", default=list(SCENES))
    ap.add_argument("--variant", default="prn-edge")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    out = Path(args.out)
    overrides: dict = {"train": {"seed": args.seed, "num_shots": 10, **({"steps": args.steps} if args.steps else {})}}
    for s in args.set:
        overrides = _merge(overrides, parse_override(s))
    cfg = make_config(args.variant, overrides)
    data = out / "data"
    missing = [c for c in args.categories if not (data / c / "meta.json").is_file()]
    if missing:
        make_dataset(data, seed=args.seed, categories=missing, progress=not args.quiet)

    rows, report = [], {"machine": machine_info(), "variant": args.variant, "config": cfg.to_dict(), "targets": TARGETS,
                        "train_budget_s": TRAIN_BUDGET_S, "categories": {}}
    for cat in args.categories:
        t = time.time()
        res = train(cfg, data / cat, out / f"{cat}.pt", defects_dir=data / cat / "defects",
                    progress=not args.quiet,
                    log=lambda m: print(m, file=sys.stderr))
        train_s = time.time() - t
        ev = evaluate_checkpoint(out / f"{cat}.pt", data / cat, json_out=out / "eval" / f"{cat}.json",
                                 overlays=out / "eval" / "overlays" / cat, max_overlays=12, progress=False,
                                 log=lambda m: None)
        entry = {"train_seconds": round(train_s, 1), "best_step": res.best_step, "val": res.val,
                 "seen": ev["means"]["seen"], "unseen": ev["means"]["unseen"], "overall": ev["overall"],
                 "per_type": ev["per_type"], "decisions": ev["decisions"]}
        report["categories"][cat] = entry
        rows.append((cat, entry))
        entry["load_average_after"] = os.getloadavg()  # training time is only comparable on a quiet machine
        write_json(out / "bench_prn.json", report)  # after each category, so a long run leaves partial results

    keys = ("image_auroc", "pixel_auroc", "aupro")
    mean = {grp: {k: sum(e[grp][k] for _, e in rows) / len(rows) for k in keys} for grp in ("seen", "unseen")}
    report["mean"] = mean
    report["max_train_seconds"] = max(e["train_seconds"] for _, e in rows)
    report["targets_met"] = {**{f"unseen_{k}": mean["unseen"][k] >= v for k, v in TARGETS.items()},
                             "train_time": report["max_train_seconds"] <= TRAIN_BUDGET_S}
    write_json(out / "bench_prn.json", report)

    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["| category | seen img AUROC | seen px AUROC | seen AUPRO | unseen img AUROC | unseen px AUROC | "
             "unseen AUPRO | train s |", "|---|---|---|---|---|---|---|---|"]
    for cat, e in rows + [("**mean** (train s: max)", {**mean, "train_seconds": report["max_train_seconds"]})]:
        lines.append(f"| {cat} | " + " | ".join(pct(e[g][k]) for g in ("seen", "unseen") for k in keys)
                     + f" | {e['train_seconds']:.0f} |")
    table = "\n".join(lines)
    (out / "bench_prn.md").write_text(table + "\n")
    print(table)
    print(json.dumps(report["targets_met"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
