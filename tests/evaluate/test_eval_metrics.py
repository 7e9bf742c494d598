"""Scalar metrics: hand-computed cases and agreement with scikit-learn, ties included."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from prn_edge.errors import DataError
from prn_edge.evaluate.metrics import (UndefinedMetricError, auroc, average_precision, f1_max,
                                       pixel_auroc, roc_curve)


def test_auroc_hand_cases():
    y = [0, 0, 1, 1]
    assert auroc([0.1, 0.2, 0.8, 0.9], y) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], y) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], y) == 0.5
    # One positive tied with one negative: that pair counts half -> (3 + 0.5) / 4.
    assert auroc([0.1, 0.5, 0.5, 0.9], y) == pytest.approx(0.875)


def test_auroc_one_class_is_a_clear_error():
    with pytest.raises(UndefinedMetricError, match="no normal"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(UndefinedMetricError, match="no anomalous"):
        auroc([0.1, 0.2], [0, 0])
    assert issubclass(UndefinedMetricError, DataError)


def test_bad_input_is_rejected():
    with pytest.raises(DataError, match="pair up"):
        auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(DataError, match="0/1"):
        auroc([0.1, 0.2], [0, 2])
    with pytest.raises(DataError, match="NaN"):
        auroc([0.1, float("nan")], [0, 1])


def test_average_precision_hand_case():
    # Ranked: 0.8 (pos, P=1, R=.5), 0.4 (neg), 0.35 (pos, P=2/3, R=1) -> .5 * 1 + .5 * 2/3.
    assert average_precision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(5 / 6)


def test_f1_max_hand_case_and_threshold():
    # Thresholds .9 .8 .7 .6 .5 give F1 2/3, 1/2, 4/5, 2/3, 4/7: best 0.8 at score >= 0.7.
    f1, thr = f1_max([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 0])
    assert f1 == pytest.approx(0.8)
    assert thr == 0.7


def test_f1_max_threshold_includes_ties():
    # At 0.5 a positive and a negative tie: both are predicted anomalous together.
    f1, thr = f1_max([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    assert (f1, thr) == (pytest.approx(max(2 / 3, 4 / 5)), 0.5)


def _f1_brute(s, y):
    s, y = np.asarray(s, float), np.asarray(y, bool)
    best = (-1.0, None)
    for t in np.unique(s)[::-1]:
        pred = s >= t
        tp = np.sum(pred & y)
        f1 = 2 * tp / (pred.sum() + y.sum())
        if f1 > best[0]:
            best = (f1, t)
    return best


labelled = st.integers(2, 60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 6), min_size=n, max_size=n),  # few values: many ties
    st.lists(st.integers(0, 1), min_size=n, max_size=n)))


# no deadline and no too_slow health check: both time the machine, and a shared CI machine is busy at times
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labelled)
def test_agrees_with_sklearn_on_tied_data(data):
    s, y = np.asarray(data[0], float) / 3.0, np.asarray(data[1])
    if y.min() == y.max():
        return
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    f1, thr = f1_max(s, y)
    ref_f1, ref_thr = _f1_brute(s, y)
    assert f1 == pytest.approx(ref_f1, abs=1e-12)
    assert thr == ref_thr


def test_agrees_with_sklearn_on_float32_data():
    rng = np.random.default_rng(0)
    s = rng.normal(size=5000).astype(np.float32)
    y = rng.random(5000) < 0.2
    s[y] += 0.7
    s[::7] = 0.25  # a big tie group across both classes
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-10)
    assert average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-10)


def test_roc_curve_ends():
    fpr, tpr = roc_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_pixel_auroc_matches_sklearn():
    rng = np.random.default_rng(1)
    maps = (rng.random((6, 16, 20)) * 8).round() / 8  # quantized: ties inside and across images
    masks = [None, None] + [rng.random((16, 20)) < 0.2 for _ in range(4)]
    flat_y = np.concatenate([np.zeros(320 * 2, bool)] + [m.ravel() for m in masks[2:]])
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(flat_y, maps.ravel()), abs=1e-12)
