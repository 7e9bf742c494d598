"""Input policy: images of any size and aspect become the model input, maps go back to the image's resolution."""
import numpy as np
import pytest

from prn_edge.data.fit import fit_image, fit_mask
from prn_edge.input_policy import PAD_VALUE, axis_weights, placement, resample
from prn_edge.errors import ConfigError


def test_stretch_fills_the_model_input_whatever_the_aspect():
    p = placement((105, 222), (64, 64), "stretch")
    assert (p.y0, p.x0, p.h, p.w) == (0, 0, 64, 64) and p.pads == (0, 0, 0, 0)
    assert p.valid().all()


@pytest.mark.parametrize("src,box", [((105, 222), (17, 0, 30, 64)), ((632, 222), (0, 21, 64, 22)),
                                     ((50, 50), (0, 0, 64, 64))])
def test_letterbox_keeps_the_aspect_and_centres(src, box):
    p = placement(src, (64, 64), "letterbox")
    assert (p.y0, p.x0, p.h, p.w) == box
    assert abs(p.h * src[1] - p.w * src[0]) <= max(src) / 2  # aspect kept to within half a model pixel
    top, bottom, left, right = p.pads
    assert top + p.h + bottom == 64 and left + p.w + right == 64 and abs(top - bottom) <= 1


def test_fit_image_pads_black_and_unfit_returns_to_the_original_resolution():
    rng = np.random.default_rng(0)
    img = rng.integers(30, 255, (105, 222, 3), dtype=np.uint8)
    out, p = fit_image(img, (64, 64), "letterbox")
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[~p.valid()] == PAD_VALUE).all() and (out[p.valid()] > PAD_VALUE).all()
    amap = np.zeros((64, 64), np.float32)
    amap[p.y0:p.y0 + p.h, p.x0 + p.w // 2:p.x0 + p.w] = 1.0  # right half of the image is anomalous
    back = p.unfit(amap)
    assert back.shape == (105, 222)
    assert back[:, :100].max() < 0.05 and back[:, 120:].min() > 0.95


def test_fit_mask_follows_the_image_and_padding_is_normal():
    mask = np.zeros((100, 300), np.float32)
    mask[40:60, 140:160] = 1
    p = placement(mask.shape, (96, 96), "letterbox")
    m = fit_mask(mask, p)
    assert set(np.unique(m)) == {0.0, 1.0} and not m[~p.valid()].any()
    ys, xs = np.nonzero(m)
    assert abs(ys.mean() - 48) < 2 and abs(xs.mean() - 48) < 2  # the defect stays in the centre


@pytest.mark.parametrize("y, x", [(1000, 1000), (1003, 1005), (7, 2036), (2040, 3)])
def test_a_defect_smaller_than_the_shrink_factor_is_not_lost(y, x):
    """A 7-pixel pit on a 2048-pixel image shrunk to 256 (factor 8): nearest sampling misses it at most positions;
    the mask keeps it where it is."""
    mask = np.zeros((2048, 2048), np.float32)
    mask[y:y + 7, x:x + 7] = 1
    m = fit_mask(mask, placement(mask.shape, (256, 256), "stretch"))
    ys, xs = np.nonzero(m)
    assert 1 <= len(ys) <= 4 and set(np.unique(m)) == {0.0, 1.0}
    assert abs(ys.mean() - (y + 3) / 8) < 1.5 and abs(xs.mean() - (x + 3) / 8) < 1.5
    big = np.zeros((2048, 2048), np.float32)  # a large defect keeps nearest's outline (not dilated)
    big[800:1200, 800:1200] = 1
    assert fit_mask(big, placement(big.shape, (256, 256), "stretch")).sum() == 50 * 50


def test_a_defect_in_pieces_is_inside_its_training_tile():
    """Input policy tiles: a crack in two pieces far apart has its centroid between them; the shot's tile must
    still show defect pixels, every time."""
    from prn_edge.data.fit import defect_tile

    img = np.zeros((600, 240, 3), np.uint8)
    mask = np.zeros((600, 240), np.float32)
    mask[20:120, 30:34] = 1
    mask[480:590, 200:204] = 1
    rng = np.random.default_rng(0)
    for _ in range(30):
        _, m, _ = defect_tile(img, mask, (128, 128), rng)
        assert m.any()


def test_unknown_policy_is_refused():
    with pytest.raises(ConfigError, match="choose one of"):
        placement((10, 10), (64, 64), "crop")


@pytest.mark.parametrize("src,dst", [((389, 236), (256, 192)), ((1250, 500), (256, 256)), ((512, 384), (256, 128)),
                                     ((40, 50), (64, 128)), ((105, 222), (105, 222))])
def test_resample_is_area_averaging_down_and_linear_up_as_opencv(src, dst):
    """Per axis the weights are what cv2 computes for a pure shrink (INTER_AREA, also by non-integer factors) and
    a pure enlargement (INTER_LINEAR); rows sum to 1, so a flat image stays flat."""
    import cv2

    x = np.random.default_rng(1).integers(0, 256, (*src, 3)).astype(np.float32)
    got = resample(x, dst)
    assert got.shape == (*dst, 3)
    shrink, grow = dst[0] <= src[0] and dst[1] <= src[1], dst[0] >= src[0] and dst[1] >= src[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    assert shrink or grow
    assert np.abs(got - cv2.resize(x, dst[::-1], interpolation=interp)).max() < 1e-3
    for s, d in zip(src, dst):
        assert np.allclose(axis_weights(s, d).sum(1), 1.0)


def test_resample_shrinks_one_axis_by_area_while_enlarging_the_other():
    """A 2-pixel stripe pattern along rows is averaged away when rows shrink by 2, whatever the columns do
    (bilinear sampling would keep picking stripes); the enlarged axis interpolates."""
    x = np.zeros((100, 30), np.float32)
    x[::2] = 200
    y = resample(x, (50, 90))
    assert np.allclose(y, 100, atol=1e-3)
    ramp = np.tile(np.arange(30, dtype=np.float32), (100, 1))
    r = resample(ramp, (50, 90))
    assert np.all(np.diff(r[0]) >= 0) and r[0, 0] == 0 and r[0, -1] == 29
