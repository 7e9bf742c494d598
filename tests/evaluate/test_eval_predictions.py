"""evaluate_predictions: per-type subsets use all normal images, seen/unseen means, None for undefined."""
import time

import numpy as np
import pytest

from prn_edge.errors import DataError
from prn_edge.evaluate.metrics import (MEAN_KEYS, METRIC_KEYS, aupro, auroc, average_precision,
                                       evaluate_predictions, pixel_auroc)


def make_set(seed=0, h=16, w=16):
    rng = np.random.default_rng(seed)
    types = ["good"] * 6 + ["crack"] * 3 + ["scratch"] * 2
    labels = np.array([t != "good" for t in types], int)
    masks, maps = [], []
    for t in types:
        g = np.zeros((h, w), np.uint8)
        if t == "crack":
            g[3:8, 4:9] = 255
        elif t == "scratch":
            g[10, 2:14] = 255
        m = rng.random((h, w)).astype(np.float32) + (0.8 if t == "crack" else 0.3) * (g > 0)
        masks.append(g)
        maps.append(m)
    scores = np.array([m.max() for m in maps]) + 0.2 * labels
    return scores, maps, labels, masks, types


def test_per_type_uses_all_normals_and_marks_seen():
    scores, maps, labels, masks, types = make_set()
    r = evaluate_predictions(scores, maps, labels, masks, types, seen={"crack": True})
    assert set(r["per_type"]) == {"crack", "scratch"}
    assert r["per_type"]["crack"]["seen"] is True
    assert r["per_type"]["scratch"]["seen"] is False  # missing from `seen` = unseen
    assert (r["per_type"]["crack"]["n"], r["per_type"]["scratch"]["n"]) == (3, 2)
    for t in ("crack", "scratch"):
        idx = [i for i, x in enumerate(types) if x in ("good", t)]
        e = r["per_type"][t]
        assert e["image_auroc"] == pytest.approx(auroc(scores[idx], labels[idx]))
        assert e["image_ap"] == pytest.approx(average_precision(scores[idx], labels[idx]))
        assert e["pixel_auroc"] == pytest.approx(pixel_auroc([maps[i] for i in idx], [masks[i] for i in idx]))
        assert e["aupro"] == pytest.approx(aupro([maps[i] for i in idx], [masks[i] for i in idx]))
        assert set(METRIC_KEYS) <= set(e)
    o = r["overall"]
    assert (o["n_images"], o["n_normal"], o["n_anomalous"]) == (11, 6, 5)
    assert o["aupro"] == pytest.approx(aupro(maps, masks))
    m = r["means"]
    assert m["seen"]["n_types"] == 1 and m["unseen"]["n_types"] == 1 and m["all"]["n_types"] == 2
    assert m["seen"]["pixel_auroc"] == pytest.approx(r["per_type"]["crack"]["pixel_auroc"])
    assert m["all"]["aupro"] == pytest.approx((r["per_type"]["crack"]["aupro"] + r["per_type"]["scratch"]["aupro"]) / 2)
    assert set(MEAN_KEYS) <= set(m["all"]) and "image_f1_threshold" not in m["all"]


def test_seen_none_marks_unknown():
    r = evaluate_predictions(*make_set())
    assert all(e["seen"] is None for e in r["per_type"].values())
    assert r["means"]["seen"]["n_types"] == 0 and r["means"]["seen"]["aupro"] is None
    assert r["means"]["all"]["n_types"] == 2


def test_undefined_metrics_become_none():
    scores, maps, labels, masks, types = make_set()
    keep = [i for i, t in enumerate(types) if t == "good"]
    r = evaluate_predictions(scores[keep], [maps[i] for i in keep], labels[keep],
                             [masks[i] for i in keep], [types[i] for i in keep])
    assert r["per_type"] == {}
    assert all(r["overall"][k] is None for k in METRIC_KEYS)
    # Image-only evaluation: no maps, so every pixel metric is None.
    r = evaluate_predictions(scores, None, labels, None, types)
    assert r["overall"]["image_auroc"] is not None and r["overall"]["aupro"] is None


def test_defect_image_without_gt_region_still_counts_for_images():
    scores, maps, labels, masks, types = make_set()
    masks[-1] = None  # a scratch image whose mask is missing: image metrics only
    r = evaluate_predictions(scores, maps, labels, masks, types)
    assert r["per_type"]["scratch"]["n"] == 2 and r["per_type"]["scratch"]["aupro"] is not None
    assert r["overall"]["n_anomalous_without_mask"] == 1
    idx = [i for i, t in enumerate(types) if t in ("good", "scratch")]
    assert r["per_type"]["scratch"]["image_auroc"] == pytest.approx(auroc(scores[idx], labels[idx]))
    # its pixels are unknown, not normal: left out of the pixel metrics instead of counted as normal pixels
    known = idx[:-1]
    assert r["per_type"]["scratch"]["pixel_auroc"] == pytest.approx(
        pixel_auroc([maps[i] for i in known], [masks[i] for i in known]))
    assert r["per_type"]["scratch"]["pixel_auroc"] != pytest.approx(
        pixel_auroc([maps[i] for i in idx], [np.zeros((16, 16)) if masks[i] is None else masks[i] for i in idx]))


def test_a_type_none_of_whose_images_has_a_mask_gets_image_metrics_only():
    scores, maps, labels, masks, types = make_set()
    masks = [None if t == "scratch" else m for t, m in zip(types, masks)]  # labelled per image, for this type
    r = evaluate_predictions(scores, maps, labels, masks, types)
    s = r["per_type"]["scratch"]
    assert s["image_auroc"] is not None and s["pixel_auroc"] is None and s["aupro"] is None
    assert r["per_type"]["crack"]["pixel_auroc"] is not None and r["overall"]["n_anomalous_without_mask"] == 2
    nothing = evaluate_predictions(scores, maps, labels, [None if y else m for y, m in zip(labels, masks)], types)
    assert nothing["overall"]["pixel_auroc"] is None and nothing["overall"]["image_auroc"] is not None
    defects = [i for i, y in enumerate(labels) if y]  # defect images only, none with a mask
    alone = evaluate_predictions(scores[defects], [maps[i] for i in defects], labels[defects], [None] * len(defects),
                                 [types[i] for i in defects])
    assert alone["overall"]["pixel_auroc"] is None and alone["overall"]["n_anomalous_without_mask"] == len(defects)


def test_inconsistent_input_is_rejected():
    scores, maps, labels, masks, types = make_set()
    with pytest.raises(DataError, match="one per test image"):
        evaluate_predictions(scores[:-1], maps, labels, masks, types)
    with pytest.raises(DataError, match="one per test image"):
        evaluate_predictions(scores, maps, labels, masks[:-1], types)
    bad = list(masks)
    bad[0] = masks[7]
    with pytest.raises(DataError, match="labeled normal"):
        evaluate_predictions(scores, maps, labels, bad, types)
    bad_types = list(types)
    bad_types[7] = "good"
    with pytest.raises(DataError, match="typed 'good'"):
        evaluate_predictions(scores, maps, labels, masks, bad_types)


def test_full_size_test_set_is_fast():
    # ~300 maps of 256x256 with five defect types: one overall + five per-type sweeps.
    rng = np.random.default_rng(0)
    n = 300
    maps = rng.random((n, 256, 256), dtype=np.float32)
    masks = np.zeros((n, 256, 256), np.uint8)
    labels = np.zeros(n, int)
    types = ["good"] * n
    for i in range(150, n):
        labels[i], types[i] = 1, "abcde"[i % 5]
        masks[i, 50:90, 60:120] = 255
        maps[i, 50:90, 60:120] += 0.5
    t0 = time.perf_counter()
    r = evaluate_predictions(maps.max(axis=(1, 2)), maps, labels, masks, types)
    assert time.perf_counter() - t0 < 10.0
    assert 0.5 < r["overall"]["aupro"] < 1.0 and len(r["per_type"]) == 5
