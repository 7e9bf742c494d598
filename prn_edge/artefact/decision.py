"""The decision rule every backend, the evaluation and the line share: one implementation, read from the artefact.

`meta` is an artefact's metadata (or anything with its "image_threshold" and "score_spread"); the rules are also
written into the metadata as text, so a reader of the ONNX alone knows them.
"""
from __future__ import annotations

import numpy as np

SCORE_NORMALIZATION = "normalized = clip((score - image_threshold) / score_spread + 0.5, 0, 1)"
DECISION_RULE = "anomalous = score >= image_threshold"


def normalize_scores(scores, meta: dict) -> np.ndarray:
    """clip((score - image_threshold) / score_spread + 0.5, 0, 1), as float32 (the threshold maps to 0.5)."""
    s = np.asarray(scores, dtype=np.float64)
    out = np.clip((s - float(meta["image_threshold"])) / float(meta["score_spread"]) + 0.5, 0.0, 1.0)
    return out.astype(np.float32)


def decide(scores, meta: dict) -> np.ndarray:
    """True = anomalous (score >= image_threshold), compared in float64 whatever precision made the score."""
    return np.asarray(scores, dtype=np.float64) >= float(meta["image_threshold"])
