"""`prn-edge <verb>`: one entry point, each verb a thin function over the library."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import VARIANTS, load_config_file, make_config, parse_override, _merge
from .errors import PrnEdgeError


def _config(args) -> "Config":  # noqa: F821
    data: dict = load_config_file(args.config) if getattr(args, "config", None) else {}
    variant = data.pop("variant", None) or args.variant
    for text in getattr(args, "set", None) or []:
        data = _merge(data, parse_override(text))
    return make_config(variant, data)


def cmd_info(args) -> int:
    from .model.prn import model_info

    info = {"variant": args.variant, **model_info(_config(args).model, batch=1)}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>18}: {v:.3f}" if isinstance(v, float) else f"{k:>18}: {v}")
    return 0


def cmd_make_dataset(args) -> int:
    from .data.demo import make_dataset

    summary = make_dataset(Path(args.out), seed=args.seed, **({"categories": args.categories} if args.categories else {}))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_synth(args) -> int:
    from .data.dataset import load_category
    from .data.synth.preview import synth_preview

    cfg = _config(args)
    cat = load_category(Path(args.data), defects_dir=Path(args.defects) if args.defects else None,
                        num_shots=cfg.train.num_shots, seed=args.seed)
    synth_preview(cat, cfg.synth, Path(args.preview), n=args.n, seed=args.seed, image_size=cfg.model.image_size)
    print(f"preview written to {args.preview}")
    return 0


def cmd_train(args) -> int:
    from .train.trainer import train

    cfg = _config(args)
    res = train(cfg, Path(args.data), Path(args.out), defects_dir=Path(args.defects) if args.defects else None,
                shots_from_test=args.shots_from_test, backbone_weights=args.backbone_weights, resume=args.resume,
                progress=not args.quiet)
    print(json.dumps(res.to_dict(), indent=2))
    return 0


def cmd_eval(args) -> int:
    from .evaluate.checkpoint_eval import evaluate_checkpoint

    evaluate_checkpoint(Path(args.checkpoint), Path(args.data), json_out=Path(args.json) if args.json else None,
                        overlays=Path(args.overlays) if args.overlays else None,
                        save_maps=Path(args.save_maps) if args.save_maps else None, progress=not args.quiet)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.workdir), category=args.category, steps=args.steps, seed=args.seed)
    return 0


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="prn-edge", choices=sorted(VARIANTS), help="named preset (default prn-edge)")
    p.add_argument("--config", help="YAML file with model/synth/train sections (overrides the variant)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set train.steps=500")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="prn-edge", description="PRN anomaly detection: train, evaluate, convert, run.")
    sub = ap.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("info", help="parameters and GFLOPs of a variant")
    _add_config_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("make-dataset", help="build the demo dataset (MVTec layout) from real offline photos")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--categories", nargs="+")
    p.set_defaults(func=cmd_make_dataset)

    p = sub.add_parser("synth", help="preview generated training anomalies")
    _add_config_args(p)
    p.add_argument("--data", required=True)
    p.add_argument("--defects")
    p.add_argument("--preview", required=True, help="PNG to write")
    p.add_argument("-n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train PRN on one category")
    _add_config_args(p)
    p.add_argument("--data", required=True, help="category folder (MVTec or generic layout)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--defects", help="folder of real defect shots (<name>.png + <name>_mask.png)")
    p.add_argument("--shots-from-test", type=int, default=0, help="MVTec AD: take K defects per type out of test/")
    p.add_argument("--backbone-weights", help="local state-dict file for resnet18 / wide_resnet50_2")
    p.add_argument("--resume", action="store_true", help="continue from OUT's .last.pt")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a category's test set")
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--json", help="metrics JSON to write (a .md table is written beside it)")
    p.add_argument("--overlays", help="folder for heat-map overlay PNGs")
    p.add_argument("--save-maps", help="folder for float32 TIFF maps in the MVTec AD evaluation layout")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="the whole chain on embedded defaults")
    p.add_argument("--workdir", default="runs/demo")
    p.add_argument("--category", default="brick")
    p.add_argument("--steps", type=int, default=300, help="training steps (the demo trains briefly; prn-edge train uses the variant default)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PrnEdgeError as e:
        print(f"prn-edge {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
