"""The step training keeps: the latest one within the noise of the best (prn_edge.evaluate.validation)."""
import numpy as np
import pytest

from prn_edge.evaluate.metrics import auroc
from prn_edge.evaluate.validation import StepSelection, auroc_standard_error, selection_tolerance


def _v(auroc_value, pixel_ap, n_pos, n_neg, source="real"):
    return {"source": source, source: {"image_auroc": auroc_value, "pixel_ap": pixel_ap,
                                       "n_anomalous": n_pos, "n_normal": n_neg}}


@pytest.mark.parametrize("n_pos,n_neg", [(6, 20), (40, 40)])
def test_standard_error_matches_the_spread_of_simulated_aurocs(n_pos, n_neg):
    # binormal scores with a true AUROC near 0.86: the spread of 2000 measured AUROCs against the formula
    rng = np.random.default_rng(0)
    labels = np.array([0] * n_neg + [1] * n_pos)
    measured = [auroc(np.concatenate([rng.normal(0, 1, n_neg), rng.normal(1.5, 1, n_pos)]), labels)
                for _ in range(2000)]
    se = auroc_standard_error(float(np.mean(measured)), n_pos, n_neg)
    assert se == pytest.approx(np.std(measured), rel=0.3)  # an approximation (exponential scores); a bit high here
    assert auroc_standard_error(0.9, 6, 20) > 3 * auroc_standard_error(0.9, 200, 200)
    assert auroc_standard_error(1.0, 6, 20) == 0.0 and auroc_standard_error(0.9, 0, 20) == 0.0


def test_a_later_step_within_the_noise_of_few_shots_is_kept():
    # what happened on MTD (docs/real-data.md): step 100 beat step 400 by 0.001 on 6 held-out shots
    sel = StepSelection()
    for step, (a, ap) in zip((100, 200, 300, 400), ((0.86, 0.50), (0.82, 0.45), (0.84, 0.50), (0.85, 0.509))):
        sel.offer(step, _v(a, ap, 6, 20))
    assert sel.kept == 400 and sel.best == pytest.approx(0.68)
    assert selection_tolerance(_v(0.86, 0.5, 6, 20)) > 0.02


def test_a_clear_drop_or_a_large_set_keeps_the_earlier_step():
    dropped = StepSelection()
    for step, a in ((100, 0.95), (200, 0.70)):
        dropped.offer(step, _v(a, 0.5, 6, 20))
    assert dropped.kept == 100
    large = StepSelection()  # 200 generated anomalies: 0.01 is more than their noise
    for step, a in ((100, 0.95), (200, 0.93)):
        large.offer(step, _v(a, 0.5, 200, 200, source="synthetic"))
    assert large.kept == 100


def test_selection_rebuilt_from_history_agrees_with_the_run_and_old_histories_get_no_tolerance():
    history = [{"step": s, **_v(a, 0.5, 6, 20)} for s, a in ((10, 0.9), (20, 0.88), (30, 0.6))]
    live = StepSelection()
    for h in history:
        live.offer(h["step"], h)
    assert StepSelection(history).kept == live.kept == 20
    old = {"source": "real", "real": {"image_auroc": 0.9, "pixel_ap": 0.5}}  # written before the counts
    assert selection_tolerance(old) == 0.0
