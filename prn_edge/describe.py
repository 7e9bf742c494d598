"""What a file is, for `prn-edge info FILE`: a training checkpoint (.pt), an exported or calibrated artefact
(.onnx, OpenVINO .xml) or a TensorRT engine (.engine / .plan with its manifest), summed up from what the file
records about itself: the model input and policy, the thresholds, the validation it was chosen on, the
calibration gate, and the hashes that tie an artefact to its checkpoint. Nothing is run or activated.

It reads the model layer (checkpoints) and the artefact layer; only the CLI imports it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import PrnEdgeError

ARTEFACTS = (".onnx", ".xml", ".engine", ".plan")


def describe_file(path: str | Path) -> dict[str, Any]:
    """A flat-ish dict of what `path` records about itself; raises PrnEdgeError for a file it cannot read."""
    path = Path(path)
    give = "give a checkpoint (.pt), an artefact (.onnx, .xml) or an engine (.engine with its .json manifest)"
    if path.is_dir():
        raise PrnEdgeError(f"{path} is a folder; {give}")
    if not path.is_file():
        raise PrnEdgeError(f"{path} does not exist; {give}")
    suffix = path.suffix.lower()
    if suffix == ".bin":
        raise PrnEdgeError(f"{path} holds the weights of an OpenVINO IR; give its {path.with_suffix('.xml').name}")
    if suffix in ARTEFACTS:
        return _artefact(path, suffix)
    if suffix not in (".pt", ".pth"):
        raise PrnEdgeError(f"{path}: not a file prn_edge writes ({suffix or 'no suffix'}); {give}")
    return _checkpoint(path)


def _hash(sha: Any) -> str:
    """A hash as recorded (JSON compares it with others); as_text shortens it."""
    return str(sha) if sha else ""


def _size(hw: Any) -> str:
    if isinstance(hw, (list, tuple)):
        return f"{hw[0]}x{hw[1]} (height x width)"
    return f"{hw}x{hw}"


def _checkpoint(path: Path) -> dict[str, Any]:
    from .artefact.files import sha256_file
    from .model.checkpoint import checkpoint_config, read_checkpoint

    state = read_checkpoint(path)
    cfg, num_prototypes = checkpoint_config(path, state)
    meta, model, train = state.get("meta", {}), cfg.model, cfg.train
    if "step" in state:  # NAME.last.pt: where an interrupted training goes on from (train --resume)
        return {"file": str(path), "kind": f"training resume state at step {state['step']} of {train.steps} (not "
                "a model to deploy: `prn-edge train ... --resume` goes on from it; the kept model is "
                f"{path.name.replace('.last.pt', '.pt')})", "sha256": _hash(sha256_file(path)),
                "variant": state.get("variant"), "category": meta.get("category"),
                "model_input": _size(meta.get("image_size", model.image_size))}
    history = meta.get("history") or []
    best = next((h for h in history if h.get("step") == meta.get("best_step")), {})
    fusion = (meta.get("fusion_choice") or {}).get("chosen") or model.distance_fusion
    out: dict[str, Any] = {
        "file": str(path),
        "kind": "training checkpoint",
        "sha256": _hash(sha256_file(path)),
        "toolkit_version": state.get("toolkit_version"),
        "torch_version": state.get("torch_version"),
        "variant": state.get("variant"),
        "category": meta.get("category"),
        "data": meta.get("data_root"),
        "model_input": _size(meta.get("image_size", model.image_size)),
        "input_policy": model.input_policy,
        "backbone": f"{model.backbone} (weights {(meta.get('backbone') or {}).get('source', '?')})",
        "prototypes": f"{num_prototypes} per scale ({model.prototype_mode})",
        "map": ("the decoder alone" if fusion == "none" else f"{fusion} fusion of decoder and prototype distance")
               + (f", decoder weight {model.decoder_weight}" if fusion == "logit" else "")
               + (", in the map gated by the distance" if fusion == "logit" and model.map_gated else "")
               + (f", the map's contrast {model.contrast:g} around each image's mean" if fusion == "logit"
                  and model.contrast else "")
               + ("" if fusion == "none" else
                  f"; distance to {_distance_text(model.distance_scales, model.memory_size, model.distance_features)}")
               + (f", corrected within {model.border_px} px of the border" if fusion != "none"
                  and model.border_correction else ""),
        "image_score": _score_text(model.score_k, fusion != "logit" or not (model.map_gated or model.contrast)),
        "training": f"{meta.get('best_step')} of {train.steps} steps kept (batch {train.batch_size}, seed {train.seed})",
        "real_shots": f"{len(meta.get('shots') or [])} for training, {len(meta.get('validation_shots') or [])} held "
                      f"out; seen types {', '.join(meta.get('seen_types') or []) or 'none'}",
        "validation": meta.get("validation", "synthetic-only"),
    }
    for name in ("real", "synthetic"):
        m = best.get(name)
        if m:
            out[f"validation_{name}"] = (f"image AUROC {100 * m['image_auroc']:.1f}, pixel AUROC "
                                         f"{100 * m['pixel_auroc']:.1f} ({m.get('n_anomalous')} anomalous, "
                                         f"{m.get('n_normal')} normal)" + (" <- chose the step and thresholds"
                                                                           if best.get("source") == name else ""))
    if out["validation"] == "synthetic-only":
        out["warning"] = ("validation saw generated anomalies only: the thresholds may not hold for real defects; "
                          "`prn-edge eval` on a test set shows the gap")
    out.update(_thresholds(meta))
    out["train_images_sha256"] = _hash(meta.get("train_images_sha256"))
    return out


def _distance_text(scales: Any, memory_size: int, features: str) -> str:
    """What the distance map measures against: the distance scales (head scale indices), the memory's centres
    (model.distance_memory as it applies, ModelConfig.memory_size) and model.distance_features (per scale, one
    memory joining the scales, or both)."""
    strides = "+".join(str(4 << i) for i in sorted(scales))  # head scale 0, 1, 2: stride 4, 8, 16
    joined = " joined" if len(scales) > 1 else " (3x3-averaged)"
    if memory_size and features == "joint":
        return f"{memory_size} centres of the stride {strides} features{joined} (model.distance_features joint)"
    if memory_size and features == "both":
        return (f"{memory_size} centres per scale, strides {strides}, and {memory_size} of those features{joined}, "
                "the mean of the two (model.distance_features both)")
    if memory_size:
        return f"{memory_size} centres per scale, strides {strides} (model.distance_features per_scale)"
    return f"the prototypes, strides {strides}"


def _score_text(k: int, plain: bool = True) -> str:
    """The image score; `plain` False when the output map is gated or contrasted (the score pools the plain
    fusion's map, not the one output)."""
    return (f"mean of the top {k} map probabilities (model.topk)" if plain else
            f"mean of the top {k} probabilities of the plain fused map (model.topk; the output map is gated or "
            "contrasted, the score is not)")


def _thresholds(meta: dict) -> dict[str, Any]:
    def num(k: str) -> Any:
        v = meta.get(k)
        return round(float(v), 4) if isinstance(v, (int, float)) else v

    return {"image_threshold": num("image_threshold"), "pixel_threshold": num("pixel_threshold"),
            "score_spread": num("score_spread")}


def _artefact(path: Path, suffix: str) -> dict[str, Any]:
    from .artefact import read_metadata
    from .artefact.files import sha256_file
    from .bench.throughput import precision_of

    manifest = None
    if suffix in (".engine", ".plan"):
        from .artefact.manifest import read_engine_manifest
        from .artefact.metadata import decode_metadata

        manifest = read_engine_manifest(path)
        if not isinstance(manifest.get("metadata"), dict) or not manifest["metadata"]:
            raise PrnEdgeError(f"{path}: its manifest carries no prn_edge metadata of the ONNX it was built from; "
                               "rebuild the engine with `prn-edge build MODEL.onnx` (the manifest comes with it)")
        meta = decode_metadata(manifest["metadata"], str(path))
        kind = "TensorRT engine"
    elif suffix == ".xml":
        from .artefact.openvino_ir import read_ir_metadata

        meta, kind = read_ir_metadata(path), "OpenVINO IR"
    else:
        meta, kind = read_metadata(path), "ONNX model"
    spec = meta.get("input") or {}
    out: dict[str, Any] = {
        "file": str(path),
        "kind": kind,
        "sha256": _hash(sha256_file(path)),
        "precision": precision_of(meta, path),
        "toolkit_version": meta.get("toolkit_version"),
        "variant": meta.get("variant"),
        "category": meta.get("category"),
        "input": (f"{spec.get('name')}: {spec.get('format')} {spec.get('layout')}, {spec.get('height')}x"
                  f"{spec.get('width')}x{spec.get('channels')} {spec.get('channel_order')}, batch "
                  f"{spec.get('batch') or 'dynamic'}"),
        "model_input": _size([spec.get("model_height", spec.get("model_size")),
                              spec.get("model_width", spec.get("model_size"))]),
        "input_policy": spec.get("fit"),
        "checkpoint_sha256": _hash(meta.get("checkpoint_sha256")),
        "exporter": meta.get("exporter"),
    }
    described = meta.get("model") or {}
    k = described.get("topk")
    if k:
        out["image_score"] = _score_text(k)
    if described.get("distance_features"):  # artefacts exported before it was recorded do not say
        out["distance"] = ("not fused (the decoder's map alone)" if described.get("distance_fusion") == "none" else
                           _distance_text(described["distance_scales"], described["distance_memory"],
                                          described["distance_features"]))
    if described.get("border_correction") and described.get("distance_fusion") != "none":
        out["border_correction"] = (f"{described['border_correction']} px (at most a quarter of the input's short "
                                    "side): the held-out normals' excess of distance near the border removed")
    if described.get("map_decoder"):
        out["map_decoder"] = (f"{described['map_decoder']} (decoder weight {described['decoder_weight']:g}"
                              + (", gated by the distance in the map; the image score is not gated)"
                                 if described["map_decoder"] == "gated" else ")"))
    if isinstance(described.get("map_contrast"), (int, float)) and described["map_contrast"]:
        out["map_contrast"] = (f"{described['map_contrast']:g} (each image's map pushed away from its mean logit; "
                               "the image score is not)")
    out.update(_thresholds(meta))
    if meta.get("calibration_run"):
        out["calibration_run"] = meta["calibration_run"]
        out["accuracy_gate"] = meta.get("accuracy_gate")
        if meta.get("accuracy_gate") == "failed":
            out["warning"] = ("the calibration run's accuracy gate failed: run, bench and build refuse this artefact "
                              "unless told otherwise")
        if meta.get("cascade_margin") is not None:
            out["cascade_margin"] = round(float(meta["cascade_margin"]), 4)
        run = _calibration_manifest(path)
        if run:
            speed = run.get("speed_here") or {}
            out["calibration"] = (f"run {run.get('run')}: {'passed' if run.get('passed') else 'FAILED'}, attempt "
                                  f"{run.get('chosen_attempt')} kept" + (f", x{speed['speedup']:.2f} over FP32 where it "
                                                                        "was calibrated" if speed.get("speedup") else ""))
    if manifest:
        out["tensorrt_version"] = manifest.get("tensorrt_version")
        out["gpu"] = f"{manifest.get('gpu_name')} (compute capability {manifest.get('compute_capability')})"
        out["precision"] = manifest.get("precision", out["precision"])
        out["max_batch"] = manifest.get("max_batch")
    return out


def _calibration_manifest(path: Path) -> dict | None:
    """The calibration run's manifest when the artefact still sits in its run folder."""
    from .artefact.manifest import read_calibration_manifest

    try:
        run = read_calibration_manifest(path.parent)
    except PrnEdgeError:
        return None
    names = (run.get("artefacts") or {}).values()
    return run if path.name in names else None


def as_text(info: dict[str, Any]) -> str:
    """One `key: value` line each, for people: hashes shortened to 12 characters (--json has them whole)."""
    width = max(len(k) for k in info)
    return "\n".join(f"{k:>{width}}: {str(v)[:12] if k.endswith('sha256') else v}" for k, v in info.items()
                     if v not in (None, ""))
