#!/usr/bin/env python
"""Do the INT8 and OpenVINO artefacts of a calibration run decide as ONNX Runtime FP32 does on a category's test set?

    python tools/int8_agreement.py calibration/coin-ov --data data/demo/coin [--threads 2] [--json runs/agree.json]

Runs every test image of the category through ONNX Runtime FP32 (the reference: model.fp32.onnx), OpenVINO FP32
(the same ONNX, backend openvino), the run's INT8 artefact (model.int8.onnx on ONNX Runtime or model.int8.xml on
OpenVINO) and, when the INT8 artefact records a cascade margin or --margin is given, the cascade of the two (INT8
screening, FP32 deciding the parts near the threshold: runtime.cascade; for an IR the FP32 model runs on OpenVINO,
and "cascade-ort" runs it on ONNX Runtime); each decides with the threshold its
artefact carries. Prints, per artefact, the fraction of images
decided as the reference decides (prn_edge.verify.compare), the image AUROC on the test set and the map correlation.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_images(data: Path) -> tuple[list, np.ndarray]:
    """The category's test images (any layout prn_edge reads) and their labels (True = defective)."""
    from prn_edge.data.dataset import load_category
    from prn_edge.data.images import read_image

    samples = load_category(data, num_shots=0).test
    return [read_image(s.image) for s in samples], np.array([bool(s.label) for s in samples])


def agreement(run: Path, data: Path, threads: int = 2, allow_failed_gate: bool = True,
              margin: float | None = None) -> dict:
    from prn_edge.artefact import read_calibration_manifest
    from prn_edge.evaluate.metrics import auroc
    from prn_edge.runtime import open_engine
    from prn_edge.runtime.preprocess import rgb_to_frames
    from prn_edge.verify import compare

    manifest = read_calibration_manifest(run)
    images, labels = test_images(data)
    int8 = run / manifest["artefacts"]["int8"]
    fp32 = run / "model.fp32.onnx"
    arts = {"ort-fp32": (fp32, "onnxruntime", {}), "ov-fp32": (fp32, "openvino", {}), "int8": (int8, "auto", {})}
    recorded = open_engine(int8, allow_failed_gate=True).metadata.get("cascade_margin")  # read, not activated
    if recorded is not None or margin is not None:  # INT8 screening, FP32 deciding the parts near the threshold
        arts["cascade"] = (int8, "cascade", {"margin": margin})  # an IR's reference runs on OpenVINO
        if int8.suffix == ".xml":  # and the same on ONNX Runtime, the agreement reference itself
            arts["cascade-ort"] = (int8, "cascade", {"margin": margin, "reference_backend": "onnxruntime"})
    out, ref = {}, None
    for label, (path, backend, opts) in arts.items():
        with open_engine(path, backend=backend, threads=threads, allow_failed_gate=allow_failed_gate, **opts) as eng:
            frames = rgb_to_frames(images, eng.input_spec)
            r, rerun = eng.infer(frames), getattr(eng, "last_rerun", None)
            ref = ref or r
            c = compare(ref, r)
            out[label] = {"backend": eng.backend, "images": len(labels), "image_auroc": auroc(r.scores, labels),
                          "decision_agreement": c["decision_agreement"], "map_correlation": c["map_correlation"],
                          "anomalous": c["anomalous_candidate"], "accuracy_gate": eng.metadata.get("accuracy_gate"),
                          "image_threshold": float(eng.metadata["image_threshold"]),
                          "scores": [round(float(x), 6) for x in r.scores]}  # to try other thresholds on
            if rerun is not None:
                out[label].update(margin=eng.margin, reference_runs=rerun / len(labels))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--margin", type=float, help="the cascade's margin (default: the one the INT8 artefact records)")
    args = ap.parse_args()
    if args.margin is not None and not 0 <= args.margin < 1:
        ap.error(f"--margin {args.margin}: must be in [0, 1), a distance in image score")
    out = agreement(args.run, args.data, args.threads, margin=args.margin)
    if "cascade" not in out:
        print(f"(no cascade row: {args.run} records no cascade_margin, a run from before the cascade; give --margin)")
    print("| artefact | backend | images | test image AUROC | decisions as ORT FP32 | map corr | gate | FP32 runs |")
    print("|---|---|---:|---:|---:|---:|---|---:|")
    for label, r in out.items():
        runs = f"{100 * r['reference_runs']:.1f}% (margin {r['margin']:.3f})" if "margin" in r else ""
        print(f"| {label} | {r['backend']} | {r['images']} | {100 * r['image_auroc']:.2f} | "
              f"{r['decision_agreement']:.3f} | {r['map_correlation']:.4f} | {r['accuracy_gate'] or ''} | {runs} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
