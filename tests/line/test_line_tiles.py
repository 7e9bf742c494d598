"""Regions, tiles and stitching: coverage, blended maps, channel order, and the 'camera cannot give the model
input' errors raised before a line starts."""
from __future__ import annotations

import numpy as np
import pytest

from prn_edge.line import LineConfigError
from prn_edge.line.engine import EngineInput
from prn_edge.line.tiles import Preprocessor, Region, TileGrid, axis_starts, convert_channels


@pytest.mark.parametrize("length, tile, overlap", [(64, 64, 0), (100, 32, 8), (256, 64, 16), (65, 64, 0)])
def test_axis_starts_cover_everything_with_at_least_the_overlap(length, tile, overlap):
    starts = axis_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_tile_errors():
    with pytest.raises(LineConfigError, match="cannot hold"):
        axis_starts(30, 32, 0)
    with pytest.raises(LineConfigError, match="overlap=32 must be >= 0 and smaller"):
        axis_starts(64, 32, 32)


def test_split_and_stitch_round_trip():
    grid = TileGrid(100, 150, 32, 48, overlap=8)
    yy, xx = np.mgrid[:100, :150].astype(np.float32)
    smooth = np.sin(yy / 17) + np.cos(xx / 23)
    tiles = grid.split(smooth[..., None])
    assert tiles.shape == (len(grid), 32, 48, 1)
    assert np.allclose(grid.stitch(tiles[..., 0]), smooth, atol=1e-5)  # same values everywhere: exact
    small = np.stack([np.full((8, 12), float(i)) for i in range(len(grid))])  # maps at 1/4 resolution
    out = grid.stitch(small)
    assert out.shape == (100, 150) and out.min() >= 0 and out.max() <= len(grid) - 1 + 1e-4
    # the blend is smooth where tiles overlap: no jump larger than the step between tile values
    assert np.abs(np.diff(out, axis=1)).max() < len(grid)


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
    with pytest.raises(LineConfigError, match="model takes 64x64 frames but the camera region is 128x96.*tiles"):
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
