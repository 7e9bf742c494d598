"""The decision rule's thresholds, chosen on validation predictions (prn_edge.evaluate.thresholds)."""
import numpy as np
import pytest

from prn_edge.evaluate.thresholds import decision_params


def test_image_threshold_sits_in_the_middle_of_the_gap_with_the_same_validation_decisions():
    masks = np.zeros((5, 4, 4), np.float32)
    masks[3:, 0, 0] = 1
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7])
    maps = np.zeros((5, 4, 4), np.float32) + scores[:, None, None]
    p = decision_params(maps, scores, masks, labels)
    assert p["image_threshold"] == pytest.approx(0.45)  # F1-max alone said 0.6: a defect at 0.59 would pass
    scores = np.array([0.1, 0.5, 0.3, 0.4, 0.6])  # overlapping: F1-max keeps 0.4 (one false reject at 0.5)
    p = decision_params(maps, scores, masks, labels)
    assert p["image_threshold"] == pytest.approx(0.35)
    assert ((scores >= p["image_threshold"]) == (scores >= 0.4)).all()  # same decisions on validation


def test_a_rank_matched_threshold_keeps_the_decisions_of_a_shifted_squeezed_copy():
    """INT8 scores that are a monotone distortion of FP32's (shifted, squeezed, bent) decide every image alike at
    the matched threshold; the training rule re-run on them need not."""
    from prn_edge.evaluate.thresholds import rank_matched_threshold

    rng = np.random.default_rng(3)
    ref = np.concatenate([rng.normal(0.3, 0.05, 60), rng.normal(0.6, 0.1, 12)])
    ref_thr = 0.42
    distorted = 0.2 + 0.5 * ref ** 1.7
    thr = rank_matched_threshold(ref, ref_thr, distorted)
    assert np.array_equal(distorted >= thr, ref >= ref_thr)
    assert rank_matched_threshold(ref, ref.min() - 1, distorted) <= distorted.min()  # everything anomalous
    assert (distorted < rank_matched_threshold(ref, ref.max() + 1, distorted)).all()  # nothing anomalous
    with pytest.raises(ValueError):
        rank_matched_threshold(ref, ref_thr, distorted[:-1])


def test_a_shift_matched_threshold_transfers_from_few_noisy_images_better_than_the_rank():
    """INT8 scores = FP32 scores shifted by -0.013 plus noise (what MTD's encoder quantization did): the threshold
    moved by the median change on a small validation set lands near the true shift; the rank-matched one lands in
    the gap between the two neighbouring noisy scores. Judged by agreement on a large test set crowded at the
    threshold."""
    from prn_edge.evaluate.thresholds import rank_matched_threshold, shift_matched_threshold

    t, shift, noise = 0.5, -0.013, 0.04
    rng = np.random.default_rng(5)
    errors_shift, errors_rank = [], []
    for _ in range(200):
        val = np.concatenate([rng.uniform(0.1, 0.45, 40), rng.uniform(0.6, 0.95, 6)])  # a gap at the threshold
        val_q = val + shift + rng.normal(0, noise, len(val))
        errors_shift.append(abs(shift_matched_threshold(val, val_q, t) - (t + shift)))
        errors_rank.append(abs(rank_matched_threshold(val, t, val_q) - (t + shift)))
    assert np.mean(errors_shift) < 0.5 * np.mean(errors_rank)
    assert shift_matched_threshold([0.1, 0.2, 0.9], [0.2, 0.3, 1.0], 0.5) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        shift_matched_threshold([0.1, 0.2], [0.1], 0.5)
