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
