"""The demo dataset: deterministic bytes, honest masks, sensible defect sizes, the MVTec layout."""
import json

import numpy as np
import pytest

from prn_edge.data.blend import VISIBLE_TOL, changed_pixels, composite
from prn_edge.data.defects import DEFECTS
from prn_edge.data.demo import AREA_RANGE, SCENES, SEEN, UNSEEN, make_dataset, render_image
from prn_edge.data.images import read_image, read_mask
from prn_edge.errors import ConfigError, DataError

TINY = dict(n_train=3, n_test_good=2, n_test_defect=1, n_shots=2, size=64, progress=False)


def _generate(root, seed):
    """All files of a tiny demo dataset: relative path -> bytes."""
    make_dataset(root, seed=seed, **TINY)
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = _generate(tmp_path / "a", 5), _generate(tmp_path / "b", 5), _generate(tmp_path / "c", 6)
    assert a == b
    assert a.keys() == c.keys()
    pngs = [k for k in a if k.suffix == ".png"]
    assert sum(a[k] != c[k] for k in pngs) > 0.9 * len(pngs)


def test_layout_meta_and_summary(tmp_path):
    summary = make_dataset(tmp_path, categories=["brick", "coin"], **TINY)
    assert set(summary["categories"]) == {"brick", "coin"}
    for cat in ("brick", "coin"):
        root = tmp_path / cat
        assert len(list((root / "train/good").glob("*.png"))) == 3
        assert len(list((root / "test/good").glob("*.png"))) == 2
        for d in SEEN + UNSEEN:
            assert (root / "test" / d / "000.png").is_file() and (root / "ground_truth" / d / "000_mask.png").is_file()
        shots = sorted(p.relative_to(root).as_posix() for p in (root / "defects").rglob("*.png"))
        assert shots == ["defects/scratch/000.png", "defects/scratch/000_mask.png",
                         "defects/stain/000.png", "defects/stain/000_mask.png"]
        meta = json.loads((root / "meta.json").read_text())
        assert meta["seen"] == list(SEEN) and meta["unseen"] == list(UNSEEN)
        assert meta["foreground"] == SCENES[cat].foreground and "skimage.data" in meta["source"]
    assert read_image(tmp_path / "brick/train/good/000.png").shape == (64, 64, 3)


def test_regenerating_replaces_own_output_but_never_foreign_data(tmp_path):
    make_dataset(tmp_path, categories=["grass"], **dict(TINY, n_train=5))
    make_dataset(tmp_path, categories=["grass"], **TINY)
    assert len(list((tmp_path / "grass/train/good").iterdir())) == 3  # no stale files
    (tmp_path / "mine" / "grass").mkdir(parents=True)
    (tmp_path / "mine" / "grass" / "precious.txt").write_text("x")
    with pytest.raises(DataError, match="not a demo dataset"):
        make_dataset(tmp_path / "mine", categories=["grass"], **TINY)
    with pytest.raises(ConfigError, match="unknown"):
        make_dataset(tmp_path, categories=["cloud"], **TINY)


@pytest.mark.parametrize("category", sorted(SCENES))
@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_mask_is_exactly_the_changed_pixels(category, defect):
    for index in range(2):
        clean, image, mask = render_image(category, "test", index, seed=1, defect=defect, size=128)
        changed = changed_pixels(clean, image, VISIBLE_TOL)
        assert np.array_equal(mask > 0, changed)
        assert np.array_equal(image[~changed], clean[~changed])  # outside the mask: untouched
        assert AREA_RANGE[0] <= mask.mean() <= AREA_RANGE[1]


def test_object_defects_stay_on_the_object():
    from prn_edge.data.synth import estimate_foreground

    for defect in DEFECTS:
        clean, _, mask = render_image("coin", "test", 0, seed=2, defect=defect, size=128)
        assert not (mask.astype(bool) & ~estimate_foreground(clean)).any(), defect


def test_written_files_are_the_rendered_images(tmp_path):
    make_dataset(tmp_path, categories=["gravel"], seed=3, **TINY)
    _, image, mask = render_image("gravel", "test", 0, seed=3, defect="crack", size=64)
    assert np.array_equal(read_image(tmp_path / "gravel/test/crack/000.png"), image)
    assert np.array_equal(read_mask(tmp_path / "gravel/ground_truth/crack/000_mask.png", (64, 64)), mask)
    clean, good, _ = render_image("gravel", "train", 1, seed=3, size=64)
    assert np.array_equal(read_image(tmp_path / "gravel/train/good/001.png"), good)
    assert np.array_equal(clean, good)


def test_test_normals_are_not_training_images():
    train = [render_image("brick", "train", i, size=64)[1] for i in range(6)]
    test = [render_image("brick", "test", i, size=64)[1] for i in range(6)]
    for t in test:
        assert min(np.abs(t.astype(int) - x).mean() for x in train) > 10


def test_composite_solid_masks_nudge_invisible_pixels():
    base = np.full((8, 8, 3), 100, np.uint8)
    effect = base.astype(np.float32)  # an effect identical to the base would be invisible
    alpha = np.zeros((8, 8), np.float32)
    alpha[2:5, 2:5] = 1
    out, mask = composite(base, effect, alpha, solid_above=0.2)
    assert mask.sum() == 9 and np.array_equal(changed_pixels(base, out), mask > 0)
    out, mask = composite(base, effect, alpha)  # training mode: nothing visible, nothing labelled
    assert mask.sum() == 0 and np.array_equal(out, base)
