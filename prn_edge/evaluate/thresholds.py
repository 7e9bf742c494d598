"""The decision parameters of a model, chosen on its validation predictions: image and pixel thresholds
(F1-max) and the score spread that normalizes scores. One rule for the trained model and its INT8 derivatives."""
from __future__ import annotations

import numpy as np

from .metrics import f1_max


def decision_params(maps: np.ndarray, scores: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> dict:
    """Thresholds (image and pixel F1-max) and score normalization from validation predictions: the rule every
    artefact's decision comes from, for the trained model and for its INT8 derivatives alike."""
    pix_labels = (masks > 0.5).ravel()
    img_f1, img_thr = f1_max(scores, labels)
    # F1-max returns the lowest anomalous score it keeps: a defect a hair weaker than every validation defect
    # would pass. Move down to the middle of the gap to the highest normal score below it; the validation
    # decisions stay the same, and both sides get a margin (with few real defects this matters most).
    below = scores[(labels == 0) & (scores < img_thr)]
    if below.size:
        img_thr = float((below.max() + img_thr) / 2)
    pix_f1, pix_thr = f1_max(maps.ravel(), pix_labels)
    normal_scores = scores[labels == 0]
    return {
        "image_f1": img_f1, "image_threshold": float(img_thr),
        "pixel_f1": pix_f1, "pixel_threshold": float(pix_thr),
        # Score normalization travels with the model: (score - threshold) / spread + 0.5 maps thr -> 0.5.
        "score_spread": float(max(np.percentile(scores, 99) - np.percentile(normal_scores, 1), 1e-6)),
    }


def checkpoint_decision(v: dict) -> dict:
    """What travels with the model so every backend decides the same way (from the selecting validation set of
    `validation.validate_all`)."""
    v = v[v["source"]]
    return {"image_threshold": v["image_threshold"], "pixel_threshold": v["pixel_threshold"],
            "score_spread": v["score_spread"]}


def shift_matched_threshold(ref_scores, scores, ref_threshold: float) -> float:
    """The threshold on `scores` for the operating point `ref_threshold` has on `ref_scores` (the same images scored
    by a reference model, e.g. FP32 for its INT8 copy): the reference threshold moved by the median change of the
    images' scores (score - reference score). Unlike rank matching it uses every image's change, not the two scores
    that happen to neighbour the threshold: on a few dozen images those can be far apart, and the midpoint between
    them is then far from where the quantized scores moved (docs/openvino-int8.md: a rank-matched INT8 threshold
    on 46 images sat 0.03 above the shifted test scores' and flipped 5% of the test decisions)."""
    ref, s = np.asarray(ref_scores, np.float64).ravel(), np.asarray(scores, np.float64).ravel()
    if ref.shape != s.shape or not len(s):
        raise ValueError("shift_matched_threshold needs the same images scored by both models")
    return float(ref_threshold + np.median(s - ref))


def rank_matched_threshold(ref_scores: np.ndarray, ref_threshold: float, scores: np.ndarray) -> float:
    """The threshold on `scores` at the operating point `ref_threshold` has on `ref_scores` (the same images scored
    by a reference model, e.g. FP32 for its INT8 copy): as many images fall below it. A quantized model shifts and
    squeezes scores; re-deriving its threshold from a few dozen validation images with the training rule can land
    in another gap of the distribution and move decisions that the map did not move. Between the two neighbouring
    scores, like the training rule's midpoints."""
    ref, s = np.asarray(ref_scores, np.float64), np.sort(np.asarray(scores, np.float64))
    if ref.shape != s.shape or not len(s):
        raise ValueError("rank_matched_threshold needs the same images scored by both models")
    k = int((ref < float(ref_threshold)).sum())  # images decided normal by the reference
    if k == 0:
        return float(s[0])
    if k == len(s):
        return float(np.nextafter(s[-1], np.inf))
    return float((s[k - 1] + s[k]) / 2)
