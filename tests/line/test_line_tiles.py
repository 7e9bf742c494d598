"""Regions, tiles, channel order, and the 'camera cannot give the model input' errors raised before a line starts
(the tile geometry itself: tests/test_tiling.py)."""
from __future__ import annotations

import numpy as np
import pytest

from prn_edge.line import LineConfigError
from prn_edge.line.engine import EngineInput
from prn_edge.line.tiles import Preprocessor, Region, convert_channels


def test_region_checks():
    assert Region.of((), (40, 60)) == Region(0, 0, 60, 40)
    with pytest.raises(LineConfigError, match=r"does not fit the 60x40 camera frame"):
        Region.of((10, 0, 60, 40), (40, 60))
    with pytest.raises(LineConfigError, match=r"give \[x, y, width, height\]"):
        Region.of((0, 0, 10), (40, 60))


def test_channel_conversion():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255
    assert convert_channels(rgb, "bgr")[0, 0].tolist() == [0, 0, 255]
    assert convert_channels(rgb, "mono").shape == (2, 2, 1)
    mono = np.full((2, 2, 1), 9, np.uint8)
    assert convert_channels(mono, "rgb").shape == (2, 2, 3) and convert_channels(mono, "mono") is mono


def test_preprocessor_geometry_errors_before_the_line_starts():
    spec = EngineInput(64, 64, 3, "rgb")
    with pytest.raises(LineConfigError, match=r"model takes 64x64 frames \(width x height\) but the camera region is 128x96.*tiles"):
        Preprocessor((96, 128, 3), spec)
    with pytest.raises(LineConfigError, match="smaller than the model input 64x64"):
        Preprocessor((48, 128, 3), spec, tiles=True)
    with pytest.raises(LineConfigError, match="4-channel"):
        Preprocessor((64, 64, 4), spec)


def test_preprocessor_roi_resize_tiles_and_combine():
    frame = np.arange(96 * 128 * 3, dtype=np.uint32).reshape(96, 128, 3).astype(np.uint8)
    p = Preprocessor((96, 128, 3), EngineInput(32, 32, 3, "bgr"), roi=(16, 8, 32, 32))
    x = p.prepare(frame)
    assert x.shape == (1, 32, 32, 3) and np.array_equal(x[0], frame[8:40, 16:48, ::-1])
    r = Preprocessor((96, 128, 3), EngineInput(32, 32, 1, "mono"), resize=True)
    assert r.prepare(frame).shape == (1, 32, 32, 1)
    t = Preprocessor((96, 128, 3), EngineInput(32, 32, 3, "rgb"), tiles=True, overlap=0)
    assert t.frames_per_part == 12 and t.prepare(frame).shape == (12, 32, 32, 3)
    scores = np.linspace(0, 1, 12).astype(np.float32)
    decisions = scores >= 0.95
    score, norm, defective, amap = t.combine(scores, scores, decisions, np.ones((12, 8, 8), np.float32))
    assert (score, norm, defective) == (1.0, 1.0, True) and amap.shape == (96, 128)
    assert t.combine(scores[:11], scores[:11], decisions[:11], None)[2] is False


def test_a_resized_region_reaches_the_engine_as_training_images_reached_the_model():
    """region.resize uses training's resampling (data.fit.fit_image): cv2's INTER_AREA differs from it where an
    axis is enlarged (raw MTD tiles narrower than the model input), which moved a crack's score by 0.01-0.02."""
    from prn_edge.data.fit import fit_image

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (40, 150, 3), dtype=np.uint8)  # rows enlarged, columns shrunk
    r = Preprocessor((40, 150, 3), EngineInput(64, 64, 3, "rgb"), resize=True)
    assert np.array_equal(r.prepare(frame)[0], fit_image(frame, (64, 64), "stretch")[0])
    grey = Preprocessor((40, 150, 3), EngineInput(48, 96, 1, "mono"), resize=True)
    mono = convert_channels(frame, "mono")
    assert np.array_equal(grey.prepare(frame)[0], fit_image(mono, (48, 96), "stretch")[0].reshape(48, 96, 1))


def test_tiles_of_a_non_square_letterbox_model_are_stitched_without_its_padding():
    # 64x64 tiles into a 64x128 letterbox model: each tile fills the middle 64 columns of the map, the padding on
    # either side (here 9.0, which no stitched pixel may show) is no part of the frame
    engine = EngineInput(64, 64, 3, "rgb", "letterbox")
    t = Preprocessor((64, 192, 3), engine, tiles=True, overlap=0)
    assert t.frames_per_part == 3 and t.prepare(np.zeros((64, 192, 3), np.uint8)).shape == (3, 64, 64, 3)
    maps = np.full((3, 64, 128), 9.0, np.float32)
    maps[:, :, 32:96] = np.arange(3, dtype=np.float32)[:, None, None]
    maps[1, 10:20, 40:50] = 5.0  # a defect in the middle tile, 8 px from its frame's left edge
    *_, amap = t.combine(np.zeros(3), np.zeros(3), np.zeros(3, bool), maps)
    assert amap.shape == (64, 192) and amap.max() == pytest.approx(5.0) and amap.min() >= 0
    assert np.allclose(amap[:, 128:], 2.0) and np.allclose(amap[:, :64], 0.0)
    ys, xs = np.nonzero(amap > 4.9)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 19, 64 + 8, 64 + 17)  # the middle tile starts at x 64
    whole = Preprocessor((64, 64, 3), engine)
    assert whole.combine(np.zeros(1), np.zeros(1), np.zeros(1, bool), maps[:1])[3].shape == (64, 64)


def test_a_tiles_artefact_tiles_regions_and_never_resizes_them():
    spec = EngineInput(64, 64, 3, "rgb", fit="tiles")
    for resize in (False, True):
        with pytest.raises(LineConfigError, match=r"64x64 tiles cut at native resolution.*region is 200x100.*"
                                                  r"region.tiles: true.*never resized"):
            Preprocessor((100, 200, 3), spec, resize=resize)
    with pytest.raises(LineConfigError, match="smaller than the model input 64x64"):
        Preprocessor((48, 200, 3), spec, tiles=True)
    with pytest.raises(LineConfigError, match=r"region.overlap=64 must be >= 0 and smaller than the tile"):
        Preprocessor((100, 200, 3), spec, tiles=True, overlap=64)
    frame = np.random.default_rng(0).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    t = Preprocessor((100, 200, 3), spec, tiles=True, overlap=16)
    tiles = t.prepare(frame)
    assert tiles.shape == (len(t.grid), 64, 64, 3)
    assert all(np.array_equal(tile, frame[y:y + 64, x:x + 64]) for tile, (y, x) in zip(tiles, t.grid.boxes))
    assert Preprocessor((64, 64, 3), spec).prepare(frame[:64, :64]).shape == (1, 64, 64, 3)  # one tile: as it is
    maps = np.ones((len(t.grid), 64, 64), np.float32)
    assert t.combine(np.zeros(len(t.grid)), np.zeros(len(t.grid)), np.zeros(len(t.grid), bool), maps)[3].shape == (100, 200)
