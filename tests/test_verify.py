"""The one comparator: the fields every check (parity, bench agreement, calibration gate, gpu_check) reports."""
from types import SimpleNamespace

import numpy as np
import pytest

from prn_edge.verify import FIELDS, compare


def result(maps, scores, thr=0.5):
    scores = np.asarray(scores, np.float32)
    return SimpleNamespace(maps=np.asarray(maps, np.float32), scores=scores, decisions=scores >= thr)


def test_identical_results_compare_as_identical():
    rng = np.random.default_rng(0)
    a = result(rng.random((4, 8, 8)), [0.1, 0.4, 0.6, 0.9])
    c = compare(a, a, threshold=0.5)
    assert set(FIELDS) <= set(c)
    assert c["max_abs_map_diff"] == 0 and c["map_correlation"] == pytest.approx(1.0) and c["decisions_identical"]
    assert c["decision_agreement"] == 1.0 and c["anomalous_reference"] == 2
    assert c["min_margin_to_threshold"] == pytest.approx(0.1)


def test_a_candidate_that_drifts_is_measured():
    rng = np.random.default_rng(1)
    maps = rng.random((4, 8, 8))
    a = result(maps, [0.1, 0.45, 0.6, 0.9])
    b = result(maps + 0.01, [0.12, 0.55, 0.6, 0.9])  # one decision flips
    c = compare(a, b)
    assert c["max_abs_map_diff"] == pytest.approx(0.01, abs=1e-6) and c["mean_abs_map_diff"] == pytest.approx(0.01, abs=1e-6)
    assert c["max_abs_score_diff"] == pytest.approx(0.1, abs=1e-6) and c["decision_agreement"] == 0.75
    assert not c["decisions_identical"] and c["anomalous_candidate"] == 3
    assert compare(result(np.zeros((1, 2, 2)), [0.0]), result(np.ones((1, 2, 2)), [0.0]))["map_correlation"] == 0.0
    with pytest.raises(ValueError, match="different shapes"):
        compare(a, result(np.zeros((4, 4, 4)), [0, 0, 0, 0]))
