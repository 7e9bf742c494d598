#!/usr/bin/env python
"""Do the INT8 and OpenVINO artefacts of a calibration run decide as ONNX Runtime FP32 does on a category's test set?

    python tools/int8_agreement.py calibration/coin-ov --data data/demo/coin [--threads 2] [--json runs/agree.json]

Runs every test image of the category through ONNX Runtime FP32 (the reference: model.fp32.onnx), OpenVINO FP32
(the same ONNX, backend openvino) and the run's INT8 artefact (model.int8.onnx on ONNX Runtime or model.int8.xml on
OpenVINO); each decides with the threshold its artefact carries. Prints, per artefact, the fraction of images
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


def agreement(run: Path, data: Path, threads: int = 2, allow_failed_gate: bool = True) -> dict:
    from prn_edge.artefact import read_calibration_manifest
    from prn_edge.evaluate.metrics import auroc
    from prn_edge.runtime import open_engine
    from prn_edge.runtime.preprocess import rgb_to_frames
    from prn_edge.verify import compare

    manifest = read_calibration_manifest(run)
    images, labels = test_images(data)
    arts = {"ort-fp32": (run / "model.fp32.onnx", "onnxruntime"), "ov-fp32": (run / "model.fp32.onnx", "openvino"),
            "int8": (run / manifest["artefacts"]["int8"], "auto")}
    out, ref = {}, None
    for label, (path, backend) in arts.items():
        with open_engine(path, backend=backend, threads=threads, allow_failed_gate=allow_failed_gate) as eng:
            frames = rgb_to_frames(images, eng.input_spec)
            r = eng.infer(frames)
            ref = ref or r
            c = compare(ref, r)
            out[label] = {"backend": eng.backend, "images": len(labels), "image_auroc": auroc(r.scores, labels),
                          "decision_agreement": c["decision_agreement"], "map_correlation": c["map_correlation"],
                          "anomalous": c["anomalous_candidate"], "accuracy_gate": eng.metadata.get("accuracy_gate"),
                          "image_threshold": float(eng.metadata["image_threshold"]),
                          "scores": [round(float(x), 6) for x in r.scores]}  # to try other thresholds on
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = agreement(args.run, args.data, args.threads)
    print("| artefact | backend | images | test image AUROC | decisions as ORT FP32 | map corr | gate |")
    print("|---|---|---:|---:|---:|---:|---|")
    for label, r in out.items():
        print(f"| {label} | {r['backend']} | {r['images']} | {100 * r['image_auroc']:.2f} | "
              f"{r['decision_agreement']:.3f} | {r['map_correlation']:.4f} | {r['accuracy_gate'] or ''} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
