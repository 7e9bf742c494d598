"""AUPRO against hand values and a slow, literal implementation of the MVTec AD protocol."""
import numpy as np
import pytest
from scipy import ndimage

from prn_edge.errors import ConfigError, DataError
from prn_edge.evaluate.metrics import UndefinedMetricError, aupro, pro_curve


def brute_aupro(maps, masks, limit=0.3):
    """Literal protocol: every distinct score a threshold, PRO per 8-connected region, trapezoid."""
    maps = [np.asarray(m, float) for m in maps]
    regions, normal = [], []
    for m, g in zip(maps, masks):
        lab, n = ndimage.label(np.asarray(g) > 0, structure=np.ones((3, 3)))
        regions += [m[lab == k] for k in range(1, n + 1)]
        normal.append(m[lab == 0])
    normal = np.concatenate(normal)
    xs, ys = [0.0], [0.0]
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        xs.append(np.mean(normal >= t))
        ys.append(np.mean([np.mean(r >= t) for r in regions]))
    xs.append(1.0)
    ys.append(1.0)
    area = 0.0
    for i in range(1, len(xs)):
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        if x1 <= limit:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        else:
            if x0 < limit:
                y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
                area += 0.5 * (y0 + y_lim) * (limit - x0)
            break
    return area / limit


def two_region_case():
    masks = [np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)]
    masks[1][1:3, 1:3] = 255  # region A, 4 px
    masks[1][6, 4:7] = 255  # region B, 3 px
    maps = [np.zeros((10, 10)), np.zeros((10, 10))]
    maps[1][1:3, 1:3] = 0.9
    maps[1][6, 4:7] = 0.5
    maps[0][0, :10] = 0.7  # 10 false positives, between the two regions' scores
    return maps, masks


def test_two_regions_hand_value():
    # Curve: (0,.5) -> (f,.5) -> (f,1) with f = 10/193 normal pixels; area to .3 = .3 - f/2.
    maps, masks = two_region_case()
    f = 10 / 193
    assert aupro(maps, masks) == pytest.approx((0.3 - 0.5 * f) / 0.3, abs=1e-12)
    assert aupro(maps, masks) == pytest.approx(brute_aupro(maps, masks), abs=1e-12)


def test_perfect_constant_and_inverted_maps():
    rng = np.random.default_rng(0)
    masks = [np.zeros((32, 32), bool) for _ in range(4)]
    masks[2][4:10, 5:12] = True
    masks[3][20:30, 1:4] = True
    masks[3][2, 2] = True
    perfect = [g.astype(float) + 0.01 * rng.random(g.shape) for g in masks]
    assert aupro(perfect, masks) == pytest.approx(1.0)
    # All pixels tie: one step from (0, 0) to (1, 1), the diagonal -> limit / 2 / limit.
    assert aupro([np.full((32, 32), 0.3)] * 4, masks) == pytest.approx(0.15)
    assert aupro([1.0 - p for p in perfect], masks) == pytest.approx(0.0, abs=1e-12)


def test_regions_use_8_connectivity_like_the_official_script():
    g = np.zeros((8, 8), bool)
    g[2, 2] = g[3, 3] = True  # diagonal neighbours: one region with 8-connectivity
    g[6, 6] = True
    m = np.zeros((8, 8))
    m[2, 2] = 1.0
    # 8-conn: PRO jumps to (0.5 + 0) / 2 = .25 at FPR 0, then straight to (1, 1).
    # (4-connectivity would give 1/3 and 0.4333.)
    assert aupro([m], [g]) == pytest.approx(0.25 + 0.15 * 0.75)


@pytest.mark.parametrize("seed", range(4))
def test_random_maps_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, h, w = 5, 24, 24
    masks = [np.zeros((h, w), bool) for _ in range(n)]
    for g in masks[2:]:
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, h - 6, 2)
            g[y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] = True
    maps = [rng.random((h, w)) + 0.6 * g for g in masks]
    if seed % 2:
        maps = [np.round(m * 6) / 6 for m in maps]  # heavy ties
    for limit in (0.3, 0.05, 1.0):
        assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(brute_aupro(maps, masks, limit), abs=1e-9)


def test_pro_curve_shape():
    maps, masks = two_region_case()
    fpr, pro = pro_curve(maps, masks)
    assert (fpr[0], pro[0], fpr[-1], pro[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12)


def test_undefined_and_bad_input():
    with pytest.raises(UndefinedMetricError, match="region"):
        aupro([np.ones((4, 4))], [np.zeros((4, 4))])
    with pytest.raises(UndefinedMetricError, match="normal pixels"):
        aupro([np.ones((4, 4))], [np.ones((4, 4))])
    with pytest.raises(DataError, match="differs"):
        aupro([np.ones((4, 4))], [np.zeros((4, 5))])
    with pytest.raises(ConfigError):
        aupro([np.ones((4, 4))], [np.eye(4)], fpr_limit=0)
