"""Tile geometry shared by evaluation, validation, training crops and the line: coverage, padding of short sides,
stitching back."""
from __future__ import annotations

import numpy as np
import pytest

from prn_edge.errors import ConfigError
from prn_edge.input_policy import placement
from prn_edge.tiling import TileGrid, axis_starts, cut, random_start


@pytest.mark.parametrize("length, tile, overlap", [(64, 64, 0), (100, 32, 8), (256, 64, 16), (65, 64, 0),
                                                   (1250, 256, 32)])
def test_axis_starts_cover_everything_with_at_least_the_overlap(length, tile, overlap):
    starts = axis_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_a_short_side_gets_one_tile_centred_as_a_placement_at_scale_one():
    assert axis_starts(30, 64, 16) == [-17]
    p = placement((30, 64), (64, 64), "tiles")
    assert (p.y0, p.h) == (17, 30) and p.pads == (17, 17, 0, 0)
    assert random_start(30, 64, np.random.default_rng(0)) == -17


def test_tile_errors():
    with pytest.raises(ConfigError, match="overlap 32 must be >= 0 and smaller than the tile"):
        axis_starts(64, 32, 32)
    with pytest.raises(ConfigError, match="larger than the 64x64 tile.*never resized"):
        placement((65, 64), (64, 64), "tiles")


@pytest.mark.parametrize("h, w", [(100, 150), (37, 150), (100, 41), (20, 20), (64, 48)])
def test_a_constant_map_per_tile_stitches_back_exactly(h, w):
    grid = TileGrid(h, w, 64, 48, overlap=16)
    assert grid.split(np.zeros((h, w, 3), np.uint8)).shape == (len(grid), 64, 48, 3)
    for value in (0.0, 0.37, 1.0):
        out = grid.stitch([np.full((64, 48), value, np.float32)] * len(grid))
        assert out.shape == (h, w) and np.allclose(out, value, atol=1e-6)


def test_split_and_stitch_round_trip_with_padding():
    yy, xx = np.mgrid[:90, :170].astype(np.float32)
    smooth = np.sin(yy / 17) + np.cos(xx / 23)
    for h, w in ((90, 170), (40, 170), (90, 30)):
        grid = TileGrid(h, w, 64, 64, overlap=16)
        tiles = grid.split(smooth[:h, :w, None])
        # the padding of a short side is PAD_VALUE and the image sits where the boxes say
        y, x = grid.boxes[0]
        assert np.array_equal(tiles[0, max(-y, 0):, max(-x, 0):][:h, :w, 0], smooth[max(y, 0):h, max(x, 0):w][:64, :64])
        assert np.allclose(grid.stitch(tiles[..., 0]), smooth[:h, :w], atol=1e-5)


def test_a_defect_on_a_tile_border_is_kept():
    """A 3-px line along the border between two tiles: each tile sees part of it, the stitched map keeps it whole
    and at full strength where the tile that holds it says so."""
    h, w = 64, 200
    grid = TileGrid(h, w, 64, 64, overlap=16)
    image = np.zeros((h, w), np.float32)
    border = grid.boxes[1][1]  # first column of the second tile: the first tile's overlap starts here
    image[:, border - 1:border + 2] = 1.0  # 3 px on both sides of that column
    tiles = grid.split(image[..., None])[..., 0]
    stitched = grid.stitch(tiles)  # a perfect detector: each tile's map is what it sees
    assert np.allclose(stitched[:, border - 1:border + 2], 1.0) and np.allclose(stitched.sum(), image.sum())
    # a detector that finds the defect in one tile only still marks it (the blend never drops it to zero)
    only_first = [t if i == 0 else np.zeros_like(t) for i, t in enumerate(tiles)]
    assert (grid.stitch(only_first)[:, border - 1:border + 2] > 0.01).all()


def test_cut_pads_masks_and_regions_like_images():
    mask = np.ones((10, 10), np.float32)
    assert cut(mask, -3, 2, 16, 8).sum() == 10 * 8
    assert cut(np.ones((10, 10), bool), -3, 0, 16, 16).sum() == 100
