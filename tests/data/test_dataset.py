"""load_category on the demo (MVTec layout) and on a handcrafted generic layout, and its error messages."""
import json
import shutil

import numpy as np
import pytest

from prn_edge.data.dataset import load_category, load_pair
from prn_edge.data.demo import SEEN, UNSEEN, make_dataset
from prn_edge.data.images import write_image, write_mask
from prn_edge.errors import ConfigError, DataError

N_TRAIN, N_GOOD, N_DEFECT, N_SHOTS = 6, 3, 2, 4


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_dataset(root, categories=["gravel", "coin"], n_train=N_TRAIN, n_test_good=N_GOOD, n_test_defect=N_DEFECT,
                 n_shots=N_SHOTS, size=64, progress=False)
    return root


@pytest.fixture
def demo_copy(demo, tmp_path):
    """A private copy of one demo category, for tests that break it."""
    return shutil.copytree(demo / "gravel", tmp_path / "gravel")


def _img(path, h=32, w=32, value=100):
    write_image(path, np.full((h, w, 3), value, np.uint8))


def _mask(path, h=32, w=32):
    m = np.zeros((h, w), np.uint8)
    m[4:9, 4:9] = 1
    write_mask(path, m)


@pytest.fixture
def generic(tmp_path):
    root = tmp_path / "parts"
    for i in range(10):
        _img(root / "good" / f"g{i}.png")
    for t in ("dent", "burr"):
        for i in range(3):
            _img(root / "defect" / t / f"{t}{i}.png", value=50)
            _mask(root / "masks" / t / f"{t}{i}_mask.png")
    return root


def test_demo_category_is_discovered(demo):
    cat = load_category(demo / "gravel")
    assert cat.layout == "mvtec" and cat.name == "gravel" and cat.foreground == "full"
    assert len(cat.train_good) == N_TRAIN and cat.train_size == (64, 64)
    assert len([s for s in cat.test if s.label == 0]) == N_GOOD
    assert cat.defect_types == sorted(SEEN + UNSEEN)
    assert cat.seen_types == sorted(SEEN)
    for s in cat.test:
        assert (s.seen is None) if s.label == 0 else (s.seen == (s.defect in SEEN))
        assert (s.mask is None) == (s.label == 0)
    # shots come from <root>/defects, are stratified over the seen types and are not test images
    assert len(cat.shots) == min(N_SHOTS, 10) and sorted({s.defect for s in cat.shots}) == sorted(SEEN)
    assert not {s.image for s in cat.shots} & {s.image for s in cat.test}
    assert load_category(demo / "coin").foreground == "estimate"


def test_load_pair_reads_image_and_mask(demo):
    cat = load_category(demo / "coin")
    img, mask = load_pair(cat.shots[0], 32)
    assert img.shape == (32, 32, 3) and mask.shape == (32, 32) and mask.max() == 1
    img, mask = load_pair(cat.shots[0], (32, 96), "letterbox")  # a model input of height 32, width 96
    assert img.shape == (32, 96, 3) and mask.shape == (32, 96) and mask.max() == 1
    assert not img[:, :32].any() and not img[:, -32:].any()  # the square image in the middle, black beside it
    good = next(s for s in cat.test if s.label == 0)
    assert load_pair(good)[1].sum() == 0


def test_num_shots_limits_and_zero_disables(demo):
    assert len(load_category(demo / "gravel", num_shots=2).shots) == 2
    assert sorted(s.defect for s in load_category(demo / "gravel", num_shots=2).shots) == sorted(SEEN)
    assert load_category(demo / "gravel", num_shots=0).shots == []


def test_shots_from_test_excludes_exactly_those(demo):
    full = load_category(demo / "gravel", num_shots=0)
    cat = load_category(demo / "gravel", shots_from_test=1, seed=3)
    taken = {s.image for s in cat.shots}
    assert taken == {s.image for s in cat.excluded}
    assert len(taken) == len(full.defect_types)  # one per defect type
    assert {s.image for s in cat.test} == {s.image for s in full.test} - taken
    assert cat.defect_types == full.defect_types  # excluded still count as types of the category
    # meta.json decides what is seen, whatever was taken from test
    assert cat.seen_types == sorted(SEEN)
    again = load_category(demo / "gravel", shots_from_test=1, seed=3)
    assert {s.image for s in again.shots} == taken


def test_shots_from_test_and_folder_conflict(demo):
    with pytest.raises(ConfigError, match="not both"):
        load_category(demo / "gravel", defects_dir=demo / "gravel" / "defects", shots_from_test=1)


def test_generic_layout_split_and_masks(generic):
    cat = load_category(generic, seed=1)
    assert cat.layout == "generic"
    goods = [s for s in cat.test if s.label == 0]
    assert len(cat.train_good) == 8 and len(goods) == 2
    assert not {s.image for s in goods} & set(cat.train_good)
    assert cat.defect_types == ["burr", "dent"]
    assert all(s.mask.name == s.image.stem + "_mask.png" for s in cat.test if s.label)
    assert any("80" in n or "20%" in n for n in cat.notes)
    assert cat.seen_types == [] and all(s.seen is False for s in cat.test if s.label)
    assert load_category(generic, seed=1).train_good == cat.train_good
    assert load_category(generic, seed=2).train_good != cat.train_good


def test_masks_in_upper_case_and_mac_resource_forks(generic):
    """A mask saved as NAME_mask.JPG is found; the `._NAME.png` files a macOS copy leaves are no images."""
    import cv2

    old = generic / "masks" / "dent" / "dent0_mask.png"
    cv2.imwrite(str(generic / "masks" / "dent" / "dent0_mask.JPG"), cv2.imread(str(old)))
    old.unlink()
    (generic / "good" / "._g0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (generic / "defect" / "dent" / "._dent1.png").write_bytes(b"\x00\x05\x16\x07")
    cat = load_category(generic, seed=1)
    dent0 = next(s for s in cat.test if s.image.name == "dent0.png")
    assert dent0.mask.name == "dent0_mask.JPG"
    assert not any(p.name.startswith("._") for p in cat.train_good + [s.image for s in cat.test])


def test_a_turned_mask_is_told_apart_from_a_mask_of_another_size(generic):
    _mask(generic / "masks" / "dent" / "dent0_mask.png", h=32, w=20)
    _img(generic / "defect" / "dent" / "dent0.png", h=20, w=32)
    with pytest.raises(DataError, match=r"is 20x32 \(width x height\) but its image .* is 32x20; it is the image "
                                        r"turned by 90 degrees"):
        load_category(generic)
    _mask(generic / "masks" / "dent" / "dent0_mask.png", h=10, w=16)
    with pytest.raises(DataError, match="is 16x10 .* is 32x20; resize the mask with nearest-neighbour"):
        load_category(generic)


def test_masks_kept_beside_their_images_under_the_same_name_are_refused(generic, tmp_path):
    """The Magnetic Tile Defect dataset keeps name.jpg and its mask name.png side by side: copied as they come, the
    black masks were silently taken as normal training images (and as extra defect test images)."""
    import cv2

    cv2.imwrite(str(generic / "good" / "g3.jpg"), np.full((32, 32), 90, np.uint8))
    with pytest.raises(DataError, match=r"g3\.jpg and g3\.png in .*good share a name.*<name>_mask\.png"):
        load_category(generic)
    (generic / "good" / "g3.jpg").unlink()
    _img(generic / "defect" / "dent" / "dent1.jpg")
    with pytest.raises(DataError, match=r"dent1\.jpg and dent1\.png"):
        load_category(generic)
    (generic / "defect" / "dent" / "dent1.jpg").unlink()
    shots = tmp_path / "shots"
    _img(shots / "s0.png")
    _mask(shots / "s0_mask.png")
    _img(shots / "s0.bmp")
    with pytest.raises(DataError, match=r"s0\.bmp and s0\.png"):
        load_category(generic, defects_dir=shots)
    assert len(load_category(generic).train_good) > 0  # the pairs gone, the category loads


def test_generic_shots_from_folder_without_types(generic, tmp_path):
    shots = tmp_path / "shots"
    for i in range(3):
        _img(shots / f"s{i}.png")
        _mask(shots / f"s{i}_mask.png")
    cat = load_category(generic, defects_dir=shots, num_shots=2)
    assert len(cat.shots) == 2 and cat.seen_types == ["defect"]


def test_meta_json_marks_seen_types(generic):
    (generic / "meta.json").write_text(json.dumps({"seen": ["dent"], "unseen": ["burr"], "foreground": "estimate"}))
    cat = load_category(generic)
    assert cat.foreground == "estimate" and cat.seen_types == ["dent"]
    assert {s.defect for s in cat.test if s.seen} == {"dent"}
    (generic / "meta.json").write_text('{"foreground": "maybe"}')
    with pytest.raises(DataError, match="meta.json"):
        load_category(generic)


def test_missing_folder_says_which_and_layout(tmp_path, demo_copy):
    with pytest.raises(DataError, match="nowhere.*MVTec"):
        load_category(tmp_path / "nowhere")
    (tmp_path / "odd").mkdir()
    with pytest.raises(DataError, match="neither train/ nor good/"):
        load_category(tmp_path / "odd")
    shutil.rmtree(demo_copy / "test")
    with pytest.raises(DataError, match=r"missing folder .*test"):
        load_category(demo_copy)


def test_no_normal_training_images(demo_copy):
    for p in (demo_copy / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"train/good holds no images"):
        load_category(demo_copy)


def test_test_defect_without_mask_counts_for_images_only_and_is_never_a_shot(demo_copy):
    # Datasets labelled per image have no masks: such a test image is kept (image metrics), noted, and never
    # taken as a training shot (training draws the defect from its mask).
    (demo_copy / "ground_truth" / "hole" / "001_mask.png").unlink()
    cat = load_category(demo_copy)
    hole = {s.image.name: s for s in cat.test if s.defect == "hole"}
    assert hole["001.png"].mask is None and hole["000.png"].mask is not None
    assert any("1 defect test images have no mask ({'hole': 1})" in n for n in cat.notes)
    img, mask = load_pair(hole["001.png"], 32)
    assert img.shape == (32, 32, 3) and mask is None  # unknown, not all-normal
    for seed in range(4):
        cat = load_category(demo_copy, shots_from_test=5, seed=seed)
        shots = [s for s in cat.shots if s.defect == "hole"]
        assert [s.image.name for s in shots] == ["000.png"]  # the masked one; the other stays in test
        assert [s.image.name for s in cat.test if s.defect == "hole"] == ["001.png"]


def test_mask_size_mismatch_names_files(demo_copy):
    _mask(demo_copy / "ground_truth" / "crack" / "000_mask.png", 40, 40)
    with pytest.raises(DataError,
                       match=r"crack/000_mask.png is 40x40 \(width x height\) but its image .*crack/000.png is 64x64"):
        load_category(demo_copy)


def test_shot_without_mask(demo_copy):
    (demo_copy / "defects" / "stain" / "000_mask.png").unlink()
    with pytest.raises(DataError, match=r"defects/stain/000.png has no mask"):
        load_category(demo_copy)


def test_mixed_training_sizes_and_modes_are_loaded_and_noted(demo_copy):
    # Real data does not come in one size: odd sizes and a grey image are taken, and the spread is noted.
    from PIL import Image

    _img(demo_copy / "train" / "good" / "002.png", 48, 64)
    Image.fromarray(np.zeros((30, 90), np.uint8)).save(demo_copy / "train" / "good" / "003.png")
    cat = load_category(demo_copy)
    assert len(cat.train_good) == N_TRAIN and cat.train_size == (64, 64)
    note = next(n for n in cat.notes if "sizes" in n)
    assert "3 sizes" in note and "width 64..90" in note and "height 30..64" in note and "'L'" in note


def test_broken_training_image_is_named(demo_copy):
    (demo_copy / "train" / "good" / "002.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"002.png: cannot read the image header"):
        load_category(demo_copy)
