"""Report outputs: Markdown rows, JSON, official-layout TIFF maps, overlay panels, plots."""
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import tifffile

from prn_edge.errors import DataError
from prn_edge.evaluate.metrics import evaluate_predictions, pro_curve, roc_curve
from prn_edge.evaluate.overlay import CAPTION_H, GAP, MIN_TILE, _item
from prn_edge.evaluate.report import (OverlayItem, markdown_table, overlay, pro_plot, roc_plot,
                                      save_maps_tiff, save_overlays, write_json)


def results():
    rng = np.random.default_rng(0)
    types = ["good"] * 4 + ["crack"] * 2 + ["hole"] * 2
    labels = np.array([t != "good" for t in types], int)
    masks = [np.zeros((8, 8), bool) for _ in types]
    for g in masks[4:]:
        g[2:5, 2:5] = True
    maps = [rng.random((8, 8)) + g for g in masks]
    return evaluate_predictions([m.max() for m in maps], maps, labels, masks, types, seen={"crack": True})


def test_markdown_has_type_and_mean_rows():
    r = results()
    md = markdown_table(r)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| defect type | seen | n | image AUROC | pixel AUROC | AUPRO | pixel AP")
    crack = next(line for line in lines if line.startswith("| crack "))
    assert "| seen | 2 |" in crack
    assert f"{100 * r['per_type']['crack']['pixel_auroc']:.1f}" in crack
    hole = next(line for line in lines if line.startswith("| hole "))
    assert "| unseen | 2 |" in hole
    for name in ("mean (seen, 1 types)", "mean (unseen, 1 types)", "mean (all, 2 types)", "overall (pooled)"):
        assert any(line.startswith(f"| {name} ") for line in lines), name


def test_markdown_dash_for_undefined():
    r = {"per_type": {"a|b": {"seen": None, "n": 0, "image_auroc": None, "pixel_auroc": 0.5,
                              "aupro": None, "pixel_ap": float("nan")}}}
    row = markdown_table(r).splitlines()[2]
    assert row == "| a\\|b | - | 0 | - | 50.0 | - | - |"


def test_write_json_handles_numpy(tmp_path):
    obj = {"a": np.float32(0.5), "b": np.arange(3), "c": [np.int64(2), float("nan")],
           "d": Path("x/y"), 3: (np.bool_(True),)}
    p = write_json(tmp_path / "sub" / "r.json", obj)
    assert json.loads(p.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": [2, None], "d": "x/y", "3": [True]}
    write_json(tmp_path / "r2.json", results())  # the real thing serializes
    assert not list(tmp_path.glob("*.tmp")) and not list((tmp_path / "sub").glob("*.tmp"))


def test_tiff_layout_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    maps = [rng.random((16, 16)).astype(np.float32) for _ in range(4)]
    maps[3] = maps[3][None]  # 1 x H x W straight from a model
    samples = [("good", "000"), {"defect_type": "crack", "stem": "001"},
               SimpleNamespace(defect_type="crack", path="/data/bottle/test/crack/002.png"),
               {"defect_type": "broken_large", "image_path": "x/003.png"}]
    # Shaped like data.dataset.Sample: `defect` and the image path in `image`.
    samples.append(SimpleNamespace(image=Path("/d/test/hole/004.png"), label=1, defect="hole", mask=None))
    maps.append(rng.random((16, 16)).astype(np.float32))
    paths = save_maps_tiff(tmp_path, "bottle", samples, maps)
    rel = [p.relative_to(tmp_path).as_posix() for p in paths]
    assert rel == ["bottle/test/good/000.tiff", "bottle/test/crack/001.tiff",
                   "bottle/test/crack/002.tiff", "bottle/test/broken_large/003.tiff",
                   "bottle/test/hole/004.tiff"]
    for p, m in zip(paths, maps):
        back = tifffile.imread(p)
        assert back.dtype == np.float32
        np.testing.assert_array_equal(back, np.squeeze(m))


def test_tiff_resize_and_errors(tmp_path):
    (p,) = save_maps_tiff(tmp_path, "bottle", [("good", "000")], [np.ones((8, 8))], size=(20, 30))
    assert tifffile.imread(p).shape == (20, 30)
    paths = save_maps_tiff(tmp_path, "b", [("good", "1"), ("good", "2")], [np.ones((8, 8))] * 2,
                           size=[(8, 8), (16, 12)])  # one size per image
    assert [tifffile.imread(p).shape for p in paths] == [(8, 8), (16, 12)]
    with pytest.raises(DataError, match="unique"):
        save_maps_tiff(tmp_path, "bottle", [("good", "0"), ("good", "0")], [np.ones((2, 2))] * 2)
    with pytest.raises(DataError, match="folder or file name"):
        save_maps_tiff(tmp_path, "bottle", [("..", "0")], [np.ones((2, 2))])
    with pytest.raises(DataError, match="need a defect type"):
        save_maps_tiff(tmp_path, "bottle", [{"stem": "0"}], [np.ones((2, 2))])


def test_overlay_panel_shape_and_dtype():
    img = np.full((256, 256, 3), 120, np.uint8)
    amap = np.zeros((64, 64), np.float32)  # smaller than the image: resized to it
    amap[10:20, 10:20] = 0.9
    gt = np.zeros((256, 256), np.uint8)
    gt[40:80, 40:80] = 255
    panel = overlay(img, amap, gt, 0.5)
    assert panel.dtype == np.uint8
    assert panel.shape == (256 + CAPTION_H, 4 * 256 + 3 * GAP, 3)
    # The gt outline is green in tile 2 and the prediction outline red in tile 4.
    tile2 = panel[CAPTION_H:, 256 + GAP:2 * 256 + GAP]
    tile4 = panel[CAPTION_H:, 3 * (256 + GAP):]
    assert (tile2 == [0, 255, 0]).all(axis=2).any() and (tile4 == [255, 0, 0]).all(axis=2).any()
    small = overlay(np.zeros((64, 64), np.uint8), np.zeros((64, 64)), None, None)  # grey, tiny
    assert small.shape == (MIN_TILE + CAPTION_H, 4 * MIN_TILE + 3 * GAP, 3)
    with pytest.raises(DataError, match="uint8"):
        overlay(np.zeros((8, 8, 3)), np.zeros((8, 8)), None, None)


def test_overlay_caption_carries_score_and_decision():
    img, amap = np.full((64, 64, 3), 120, np.uint8), np.zeros((64, 64), np.float32)
    caption = lambda **kw: overlay(img, amap, None, None, **kw)[:CAPTION_H, :MIN_TILE]  # noqa: E731
    plain, scored = caption(), caption(score=0.61)
    rejected, passed = caption(score=0.61, decision=True), caption(score=0.61, decision=False)
    assert not np.array_equal(plain, scored)
    assert not np.array_equal(scored, rejected) and not np.array_equal(rejected, passed)


def test_save_overlays_names_and_round_robin(tmp_path):
    rng = np.random.default_rng(0)
    items = [OverlayItem(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), rng.random((32, 32)),
                         None, t, f"{i:03d}") for i, t in enumerate(["good"] * 5 + ["crack"] * 2)]
    items.append({"image": items[0].image, "map": items[0].amap, "mask": np.eye(32), "defect_type": "hole",
                  "stem": "007", "score": 0.7})
    # (sample, image, map, mask) as the checkpoint evaluation passes them
    sample = SimpleNamespace(image=Path("/d/test/scratch/008.png"), label=1, defect="scratch", mask=None)
    items.append((sample, items[0].image, items[0].amap, np.eye(32, dtype=np.float32), 0.8, True))
    assert _item(items[-1]).score == 0.8 and _item(items[-1]).decision is True
    paths = save_overlays(tmp_path, items, max_images=5, threshold=0.9)
    assert sorted(p.name for p in paths) == ["crack_005.png", "good_000.png", "good_001.png", "hole_007.png",
                                             "scratch_008.png"]
    img = cv2.imread(str(paths[0]))
    assert img is not None and img.shape[1] == 4 * MIN_TILE + 3 * GAP


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.random(50) < 0.3
    s = rng.random(50) + y
    roc = roc_plot(tmp_path / "roc.png", *roc_curve(s, y), title="roc")
    masks = [np.zeros((8, 8), bool), np.eye(8, dtype=bool)]
    maps = [rng.random((8, 8)) + g for g in masks]
    pro = pro_plot(tmp_path / "pro.png", *pro_curve(maps, masks))
    assert roc.stat().st_size > 1000 and pro.stat().st_size > 1000
