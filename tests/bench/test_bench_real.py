"""tools/bench_real.py: KolektorSDD and BSData turned into MVTec AD categories, on tiny fake copies of their published
layouts (kosNN/PartK.jpg + PartK_label.bmp, black labels for good parts; data/*.jpg + label/*.json polygons)."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from prn_edge.data.dataset import load_category
from tests.helpers.tools import load_tool

bench_real = load_tool("bench_real.py")


def _fake_ksdd(root: Path, commutators: int = 50, hw: tuple[int, int] = (25, 10)) -> Path:
    """50 commutators of 8 parts (tiny images); every 3rd has a cracked part, every 9th two: so few that the
    shots, not the normals, decide how many commutators training takes."""
    rng = np.random.default_rng(1)
    for k in range(1, commutators + 1):
        cracked = set() if k % 3 else {k % 8, (k + 3) % 8} if k % 9 == 0 else {k % 8}
        for part in range(8):
            folder = root / f"kos{k:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"Part{part}.jpg"), rng.integers(0, 255, hw, dtype=np.uint8))
            label = np.zeros(hw, np.uint8)
            if part in cracked:
                label[10:13, 2:8] = 255
            cv2.imwrite(str(folder / f"Part{part}_label.bmp"), label)
    return root


def _listing(root: Path) -> dict[str, set[str]]:
    """folder (relative to the category) -> names of the links in it."""
    return {str(d.relative_to(root)): {p.name for p in d.iterdir()} for d in root.glob("*/*") if d.is_dir()}


def _commutator(name: str) -> str:
    return name.split("_")[0]


def _source(src: Path, name: str) -> Path:
    """The dataset file a link of that name stands for: kos01_Part3.jpg -> kos01/Part3.jpg, and
    kos01_Part3_mask.bmp -> kos01/Part3_label.bmp."""
    kos, part = name.removesuffix("_mask.bmp").removesuffix(".jpg").split("_")
    return src / kos / (f"{part}_label.bmp" if name.endswith("_mask.bmp") else f"{part}.jpg")


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return _fake_ksdd(tmp_path_factory.mktemp("ksdd") / "KolektorSDD")


def test_ksdd_split_keeps_commutators_whole_and_pairs_masks(src, tmp_path):
    root = bench_real.prepare_ksdd(src, tmp_path, seed=0, zero_shot=False)
    d = _listing(root)
    assert set(d) == {"train/good", "test/good", "test/crack", "ground_truth/crack", "defects/crack"}
    shots = {n for n in d["defects/crack"] if not n.endswith("_mask.bmp")}
    train, test = d["train/good"] | shots, d["test/good"] | d["test/crack"]
    assert not train & test  # no image on both sides, no shot tested
    assert not {_commutator(n) for n in train} & {_commutator(n) for n in test}  # a commutator on one side only
    assert len(d["train/good"]) >= bench_real.KSDD_TRAIN_NORMALS and len(shots) == bench_real.SHOTS
    # every link is the dataset's own file (images to PartK.jpg, masks to their PartK_label.bmp), masks paired
    assert all((root / f / n).resolve() == _source(src, n) for f, names in d.items() for n in names)
    assert d["ground_truth/crack"] == {n.replace(".jpg", "_mask.bmp") for n in d["test/crack"]}
    assert d["defects/crack"] == shots | {n.replace(".jpg", "_mask.bmp") for n in shots}
    # good parts have black labels, cracked ones do not; every part of a test commutator is tested
    cracked = {n for n in train | test if cv2.imread(str(_source(src, n.replace(".jpg", "_mask.bmp"))), 0).any()}
    assert cracked == shots | d["test/crack"]
    assert len(test) == 8 * len({_commutator(n) for n in test})
    meta = json.loads((root / "meta.json").read_text())
    assert meta["seen"] == ["crack"] and meta["train_commutators"] == sorted({_commutator(n) for n in train})

    cat = load_category(root, num_shots=20)  # what the benchmark loads: masks found, the shots seen
    assert len(cat.shots) == bench_real.SHOTS and cat.seen_types == ["crack"]
    assert sum(s.label for s in cat.test) == len(d["test/crack"]) and all(s.mask for s in cat.test if s.label)


def test_ksdd_split_is_seeded_and_zero_shot_measures_the_same_test(src, tmp_path):
    a = _listing(bench_real.prepare_ksdd(src, tmp_path / "a", seed=0, zero_shot=False))
    assert _listing(bench_real.prepare_ksdd(src, tmp_path / "b", seed=0, zero_shot=False)) == a
    other = _listing(bench_real.prepare_ksdd(src, tmp_path / "c", seed=1, zero_shot=False))
    assert other["test/crack"] != a["test/crack"]
    zero_root = bench_real.prepare_ksdd(src, tmp_path / "a", seed=0, zero_shot=True)
    zero = _listing(zero_root)
    assert zero_root.name == "ksdd-zeroshot" and "defects/crack" not in zero
    assert {k: v for k, v in a.items() if k != "defects/crack"} == zero
    assert json.loads((zero_root / "meta.json").read_text())["seen"] == []


def test_ksdd_refuses_an_image_without_its_label(tmp_path):
    src = _fake_ksdd(tmp_path / "KolektorSDD", commutators=2)
    (src / "kos02" / "Part3_label.bmp").unlink()
    with pytest.raises(SystemExit, match="Part3.jpg: no Part3_label.bmp"):
        bench_real.prepare_ksdd(src, tmp_path / "out", seed=0, zero_shot=False)


def _fake_bsd(root: Path, spots: int = 15, per_spot: int = 24) -> Path:
    """BSData's published layout, tiny: data/01_<time>_<position>_<angle>_crop_2.jpg, label/<stem>.json (labelme
    polygons) for the pitted ones, image_data.json; each spot pits from its 17th photo on, and its 20th is
    unannotated (after the pitting began: not a clean normal). A type-1 image (no normals of its kind) is ignored."""
    rows = []
    (root / "data").mkdir(parents=True)
    (root / "label").mkdir()
    for k in range(spots):
        for t in range(per_spot):
            stem = f"01_2009{t:02d}{k:02d}0000_{300000 + 2500 * k}_090_crop_2"
            cv2.imwrite(str(root / "data" / f"{stem}.jpg"), np.full((12, 30, 3), 100 + t, np.uint8))
            pitted = t >= 16 and t != 19
            if pitted:
                (root / "label" / f"{stem}.json").write_text(json.dumps({
                    "imageHeight": 12, "imageWidth": 30,
                    "shapes": [{"label": "Pitting", "points": [[3, 2], [8, 2], [8, 6], [3, 6]]}]}))
            rows.append({"filename": f"{stem}.jpg", "type": 2, "annotations": f"{stem}.json" if pitted else None})
    rows.append({"filename": "KGT1-S-060-A02_crop_0.jpg", "type": 1, "annotations": "KGT1-S-060-A02_crop_0.json"})
    (root / "image_data.json").write_text(json.dumps({"images": rows}))
    return root


def test_bsd_split_keeps_spots_whole_fills_the_polygons_and_drops_doubtful_normals(tmp_path):
    src = _fake_bsd(tmp_path / "BSData")
    root = bench_real.prepare_bsd(src, tmp_path / "out", seed=0, zero_shot=False)
    d = _listing(root)
    spot = lambda n: n.split("_")[2]  # noqa: E731
    shots = {n for n in d["defects/pitting"] if n.endswith(".jpg")}
    train, test = d["train/good"] | shots, d["test/good"] | d["test/pitting"]
    assert not {spot(n) for n in train} & {spot(n) for n in test}  # a spot's photos on one side only
    assert len(d["train/good"]) >= bench_real.BSD_TRAIN_NORMALS and len(shots) == bench_real.SHOTS
    # the 20th photo of a spot carries no annotation but comes after its pitting began: neither normal nor tested
    assert not any(n.split("_")[1].startswith("200919") for n in train | test)
    assert len(d["test/good"]) == 16 * len({spot(n) for n in test})
    mask = cv2.imread(str(root / "ground_truth" / "pitting" / sorted(d["ground_truth/pitting"])[0]), 0)
    assert mask.shape == (12, 30) and (mask > 0).sum() == 6 * 5 and mask[2:7, 3:9].all()  # the polygon, filled
    cat = load_category(root, num_shots=20)
    assert cat.seen_types == ["pitting"] and len(cat.shots) == bench_real.SHOTS
    assert sum(s.label for s in cat.test) == len(d["test/pitting"]) and all(s.mask for s in cat.test if s.label)
    zero = _listing(bench_real.prepare_bsd(src, tmp_path / "out", seed=0, zero_shot=True))
    assert {k: v for k, v in d.items() if k != "defects/pitting"} == zero  # the same test set zero-shot


@pytest.mark.parametrize("policy", ["stretch", "tiles"])
def test_a_run_measures_prn_and_the_knn_reference_under_the_input_policy(tmp_path, policy):
    """The whole benchmark on a tiny model: both methods scored on the same test set at the images' own size,
    the table and the overlay picture written; under tiles (64 px) both split the 100x40 images into the same
    tiles."""
    src, out = _fake_ksdd(tmp_path / "KolektorSDD", commutators=40, hw=(100, 40)), tmp_path / "out"
    rc = bench_real.main(["--ksdd", str(src), "--out", str(out), "--variant", "prn-tiny", "--steps", "2", "--quiet",
                          "--set", f"model.input_policy={policy}"])
    assert rc == 0
    entry = json.loads((out / "bench_real.json").read_text())["categories"]["ksdd"]
    assert entry["input_policy"] == policy
    for method in ("prn", "knn"):
        crack = entry[method]["per_type"]["crack"]
        assert crack["n"] > 0 and 0 <= crack["image_auroc"] <= 1 and 0 <= crack["pixel_auroc"] <= 1
    assert entry["prn"]["train_cpu_seconds"] > 0
    assert "| crack | seen |" in (out / "bench_real.md").read_text()
    assert (out / "ksdd" / "overlays.png").stat().st_size > 0


def test_the_knn_bank_is_a_quarter_of_the_patches_up_to_its_cap(monkeypatch):
    """Tiles of large images give millions of patch vectors: the bank stops at KNN_BANK_MAX, so the exhaustive
    search stays within a benchmark's time."""
    import numpy as np

    images = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(4)]
    knn = bench_real.KnnReference("tiny", seed=0, pretrained=False).fit(images)
    assert len(knn.bank) == 4 * 8 * 8 // 4  # stride-8 positions of 4 images, a quarter of them
    monkeypatch.setattr(bench_real, "KNN_BANK_MAX", 50)
    capped = bench_real.KnnReference("tiny", seed=0, pretrained=False).fit(images)
    assert len(capped.bank) == 50
    maps, scores = capped.predict(images[:2])
    assert maps.shape == (2, 64, 64) and np.isfinite(scores).all()


def _report(tmp_path: Path, name: str, seed: int, prn: float, knn: float, **model) -> Path:
    """A bench_real.json as a run writes it, reduced to what --summarize reads."""
    def means(img):
        return {"seen": {"n_types": 0}, "unseen": {"n_types": 3, "image_auroc": img, "pixel_auroc": 0.9, "aupro": 0.8}}
    entry = {"image_size": [256, 256], "prn": {"means": means(prn)}, "knn": {"means": means(knn)},
             "prn_minus_knn_unseen": {"image_auroc": prn - knn}}
    report = {"variant": "prn-edge", "zero_shot": False, "seed": seed, "categories": {"mtd": entry},
              "config": {"model": {"distance_fusion": "logit", **model}, "train": {"seed": seed, "steps": 400}}}
    (tmp_path / name).mkdir()
    (tmp_path / name / "bench_real.json").write_text(json.dumps(report))
    return tmp_path / name


def test_summarize_gives_mean_and_spread_over_repeats_and_refuses_what_is_not_one(tmp_path):
    a = _report(tmp_path, "a", 0, 0.88, 0.76)
    b = _report(tmp_path, "b", 1, 0.84, 0.74, auto_side=256)  # a setting the older run lacks is no difference
    s = bench_real.summarize([a, b])["mtd (shots)"]
    img = s["metrics"]["prn/unseen/image_auroc"]
    assert s["seeds"] == [0, 1] and img["values"] == [0.88, 0.84]
    assert img["mean"] == pytest.approx(0.86) and img["std"] == pytest.approx(np.std([0.88, 0.84], ddof=1))
    assert s["prn_minus_knn_unseen_image_auroc"]["min"] == pytest.approx(0.10)
    assert "prn/seen/image_auroc" not in s["metrics"]  # no seen types: nothing to average
    assert "86.0 +- 2.8" in bench_real.summary_table({"mtd (shots)": s})
    out = tmp_path / "sum"
    assert bench_real.main(["--summarize", str(a), str(b), "--out", str(out)]) == 0
    assert json.loads((out / "bench_real_summary.json").read_text())["mtd (shots)"]["seeds"] == [0, 1]
    c = _report(tmp_path, "c", 2, 0.8, 0.7, distance_fusion="mean")
    with pytest.raises(SystemExit, match="model.distance_fusion logit / mean"):
        bench_real.summarize([a, c])
    with pytest.raises(SystemExit, match="same seed"):
        bench_real.summarize([a, _report(tmp_path, "d", 0, 0.8, 0.7)])
    with pytest.raises(SystemExit, match="does not exist"):
        bench_real.summarize([tmp_path / "missing"])


def test_segmentation_pairs_become_a_generic_category(tmp_path):
    """images/ + masks/ of one name (black mask = good part), in several split folders, duplicates dropped; a
    mask missing is refused by name."""
    src = tmp_path / "metal_plate"
    rng = np.random.default_rng(0)
    images = {}
    for split, n in (("train", 6), ("test", 4)):
        for i in range(n):
            img = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            mask = np.zeros((20, 24), np.uint8)
            if i % 2:
                mask[5:9, 3:12] = 255
            for folder, data in (("images", img), ("masks", mask)):
                (src / split / folder).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(src / split / folder / f"{split}_{i}.png"), data)
            images[f"{split}_{i}"] = img
    (src / "test" / "images" / "test_9.png").write_bytes((src / "train" / "images" / "train_0.png").read_bytes())
    cv2.imwrite(str(src / "test" / "masks" / "test_9.png"), np.zeros((20, 24), np.uint8))  # a duplicate image
    root = bench_real.prepare_pairs(src, tmp_path / "out", seed=0, zero_shot=True)
    # the first of two identical images (in the folders' order) is kept
    assert sorted(p.name for p in (root / "good").iterdir()) == [
        "test_test_0.png", "test_test_2.png", "test_test_9.png", "train_train_2.png", "train_train_4.png"]
    assert sorted(p.name for p in (root / "masks").iterdir()) == [
        f"{s}_{s}_{i}_mask.png" for s, i in (("test", 1), ("test", 3), ("train", 1), ("train", 3), ("train", 5))]
    assert json.loads((root / "meta.json").read_text())["duplicates_dropped"] == 1
    cat = load_category(root, seed=0, num_shots=0)
    assert len(cat.train_good) + sum(s.label == 0 for s in cat.test) == 5
    assert sorted(s.defect for s in cat.test if s.label) == ["defect"] * 5 and cat.seen_types == []
    (src / "train" / "masks" / "train_5.png").unlink()
    with pytest.raises(SystemExit, match="train_5.png: expected one mask"):
        bench_real.prepare_pairs(src, tmp_path / "out2", seed=0, zero_shot=True)
