"""Shared helpers for export and runtime tests: a fitted tiny checkpoint and real-photo frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from prn_edge.config import make_config
from prn_edge.model.prn import build_prn
from prn_edge.model.checkpoint import save_checkpoint


def real_images(n: int = 6, size: int | tuple[int, int] = 96) -> list[np.ndarray]:
    """RGB uint8 crops (size: one side, or (height, width)) of scikit-image's photos (coffee; brick, gravel, grass
    tinted to colour)."""
    import skimage.data as data

    from prn_edge.input_policy import as_hw

    h, w = as_hw(size)
    coffee = data.coffee()
    gray = [data.brick(), data.gravel(), data.grass()]
    out = []
    for i in range(n):
        if i % 2 == 0:
            y, x = (20 + 37 * i) % (coffee.shape[0] - h), (40 + 53 * i) % (coffee.shape[1] - w)
            out.append(np.ascontiguousarray(coffee[y:y + h, x:x + w]))
        else:
            src = gray[(i // 2) % 3]
            y, x = (11 * i) % (src.shape[0] - h), (13 * i) % (src.shape[1] - w)
            g = src[y:y + h, x:x + w].astype(np.float32)
            tint = np.array([1.0, 0.85, 0.7], np.float32) if i % 4 == 1 else np.array([0.75, 0.9, 1.0], np.float32)
            out.append(np.clip(g[..., None] * tint, 0, 255).astype(np.uint8))
    return out


def make_checkpoint(path: Path, variant: str = "prn-tiny", overrides: dict | None = None,
                    with_thresholds: bool = True) -> Path:
    """A PRN with prototypes fitted on real crops; thresholds put between the scores of those crops so that
    decisions are mixed (never right at a score)."""
    torch.manual_seed(0)
    cfg = make_config(variant, overrides or {})
    model, info = build_prn(cfg.model, num_images=20)
    imgs = real_images(12, cfg.model.hw)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
    model.fit_prototypes(x)
    model.eval()
    if model.cfg.distance_fusion != "none":  # artefacts carry the fused map, as trained ones do
        model.calibrate_distance([x[6:]])
    meta = {"category": "photos", "train_images_sha256": "0" * 64, "backbone": info,
            "prototypes_sha256": "1" * 64}
    if with_thresholds:
        # between the scores of the tests' photos (real_images(6, 96), the `photos` fixture) as the model sees them
        from prn_edge.input_policy import resample

        shown = np.stack([np.clip(np.rint(resample(img, cfg.model.hw)), 0, 255) for img in real_images(6, 96)])
        with torch.no_grad():
            _, scores = model.predict(torch.from_numpy(shown).permute(0, 3, 1, 2).float() / 255.0)
        s = np.sort(scores.numpy().astype(np.float64))
        gaps = np.diff(s)
        i = int(np.argmax(gaps))  # the widest gap between two scores
        meta.update({"image_threshold": float((s[i] + s[i + 1]) / 2), "pixel_threshold": 0.5,
                     "score_spread": float(max(s[-1] - s[0], 1e-3))})
    save_checkpoint(path, model, cfg, meta)
    return path


def torch_predict(ckpt: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: the checkpoint's PRN on a float32 (N, 3, H, W) RGB [0, 1] tensor at its model input."""
    from prn_edge.model.checkpoint import load_model

    model, _, _ = load_model(ckpt)
    with torch.no_grad():
        prob, score = model.predict(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return prob.numpy(), score.numpy()


def ort_run(onnx_path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    maps, scores = sess.run(["anomaly_map", "score"], {name: x})
    return maps, scores
