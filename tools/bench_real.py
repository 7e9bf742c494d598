#!/usr/bin/env python
"""Real-data benchmark: PRN against a training-free kNN reference over the same frozen encoder, on real photos.

    python tools/bench_real.py [--mtd DIR] [--ksdd DIR] [--bsd DIR] [--pairs DIR] --out runs/bench_real
        [--data CATEGORY_DIR ...] [--zero-shot]
        [--seed 0] [--steps N] [--set k=v ...] [--skip-prn]
    python tools/bench_real.py --summarize RUN [RUN ...] --out runs/bench_real_seeds

--mtd: the Magnetic Tile Defect dataset as published (folders MT_Blowhole, MT_Break, MT_Crack, MT_Fray, MT_Free,
MT_Uneven with <name>.jpg + <name>.png masks; fetch the public repository abin24/Magnetic-tile-defect-datasets.).
It is turned into a category in the MVTec AD layout (symbolic links) with a seeded, group-aware split: the six
lighting views of one tile (exp1..exp6 with nearby numbers) stay on one side. 10 real shots each of blowhole and
crack are training defects; break, fray and uneven are never seen.
--ksdd: the Kolektor Surface-Defect Dataset (KolektorSDD, CC BY-NC-SA 4.0) as published: folders kos01..kos50, one
per commutator, each with its surface images PartK.jpg (grey, 500 x ~1250) and PartK_label.bmp masks (black when
the part is good; www.vicos.si/resources/kolektorsdd, or the 259 labelled ones flattened to kosNN_PartK.* in the
public repository seanXYZ/SegDecNet, commit 172b47c, put back into kosNN/). Whole commutators go to one side: to
training until it has 100 normals and 10 defective images, the rest to test. Its one defect type (crack) is seen
through 10 real shots taken from the training commutators; with --zero-shot the same split runs without them (the
unseen measurement, on the same test set).
--bsd: BSData (ball screw drive spindles with pitting, CC BY-SA 4.0, public repository 2Obe/BSData: data/*.jpg,
label/*.json labelme polygons, image_data.json): the type-2 images (two crops, 1130x460 and 1540x645), 15 spots on
the spindle photographed over weeks of wear. Whole spots go to one side: to training until it has 200 normals and
10 defective images, the rest to test. An unannotated image counts as normal only if taken before its spot's first
annotated one (later ones may hold pitting nobody outlined). Its one defect type (pitting, small: a median 0.26% of
the image) is seen through 10 shots from the training spots, or unseen with --zero-shot (same test set).
--pairs: a dataset as segmentation pairs, the way many are published: <DIR>/**/images/<name>.<ext> beside
<DIR>/**/masks/<name>.<ext> (the same name; an all-black mask is a good part), e.g. the MPDD metal plates
(Metal Parts Defect Detection, Jezek et al. 2021) as re-split into data_supervised/metal_plate/{train,val,test} by
the public repository BupeshKumarR/defect-segmentation-for-mpdd (512x512 colour). Turned into the generic layout
(good/, defect/, masks/<name>_mask.png) with byte-identical duplicates dropped; the generic layout's seeded split
takes 80% of the good parts for training. It has no shots: every type is unseen.
--data adds categories already in the MVTec AD or generic layout (their defects/ folder gives the shots).
--zero-shot trains without any real defect.

The kNN reference (PatchCore-style, part of this benchmark only): locally averaged (3x3) encoder features at
strides 8 and 16, a memory bank of a random 25% of the training normals' patch vectors, the distance to the
nearest one as the map (bilinear up, Gaussian sigma 4), its maximum as the image score. It trains nothing. The
bank is capped at 32768 vectors (tiles of large images would otherwise make its exhaustive search take hours).

Writes <out>/bench_real.json, <out>/bench_real.md (tables per defect type, seen/unseen) and
<out>/<category>/overlays.png (image | ground truth | PRN | kNN for a few defects of each type).
--summarize reads earlier runs of the same configuration (e.g. one per --seed: another split and training seed) and
writes the mean +- standard deviation of every method's seen / unseen means to <out>/bench_real_summary.{json,md}.
Targets (issue 8): PRN >= kNN + 5 pt image AUROC on unseen types, never below it zero-shot; pixel AUROC >= 0.95
on Magnetic Tile unseen; training <= 20 min per category on 2 cores.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

SEEN_MTD = ("blowhole", "crack")
SHOTS = 10
TRAIN_NORMALS = 200  # training normals drawn (by tile group) from MT_Free; a budget for 2 cores
TEST_NORMALS = 200
KSDD_DEFECT = "crack"  # KolektorSDD's only defect type
KSDD_TRAIN_NORMALS = 100  # KolektorSDD has ~350 normals in all: the rest are the test's
BSD_DEFECT = "pitting"  # BSData's only defect type
BSD_TRAIN_NORMALS = 200  # whole spots (~45 clean normals each) to training until it has these
TRAIN_BUDGET_S = 20 * 60
KNN_BANK_FRACTION = 0.25
# At most this many bank vectors: under input policy tiles the training normals give ~18 tiles each (KolektorSDD),
# and a 25% bank of 1.8M vectors made the exhaustive search of the test tiles take hours on 2 cores.
KNN_BANK_MAX = 32_768
METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")


# --- Magnetic Tile Defect -> MVTec AD layout ------------------------------------------------------------------

def _tile_groups(names: list[str]) -> list[list[str]]:
    """Views of one tile: exp<k>_num_<n> with k rising and n close; a new tile starts when k stops rising."""
    parsed = []
    for name in names:
        m = re.fullmatch(r"exp(\d+)_num_(\d+)", name)
        if not m:
            raise SystemExit(f"unexpected Magnetic Tile file name {name!r} (expected exp<k>_num_<n>)")
        parsed.append((int(m.group(2)), int(m.group(1)), name))
    groups: list[list[str]] = []
    prev = None
    for num, exp, name in sorted(parsed):
        if prev is None or exp <= prev[1] or num - prev[0] > 1000:
            groups.append([])
        groups[-1].append(name)
        prev = (num, exp)
    return groups


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src.resolve())


def prepare_mtd(src: Path, out: Path, seed: int, zero_shot: bool) -> Path:
    """MVTec AD layout under out/mtd: train/good, test/<type>, ground_truth/<type>/<name>_mask.png, defects/."""
    root = out / ("mtd-zeroshot" if zero_shot else "mtd")
    if (root / "meta.json").is_file():
        return root
    rng = np.random.default_rng(seed)
    folders = {p.name[3:].lower(): p / "Imgs" for p in sorted(src.glob("MT_*")) if (p / "Imgs").is_dir()}
    if "free" not in folders or len(folders) < 3:
        raise SystemExit(f"{src}: expected MT_Free/Imgs and defect folders MT_<Type>/Imgs (the published layout)")
    free = _tile_groups(sorted(p.stem for p in folders.pop("free").glob("*.jpg")))
    order = rng.permutation(len(free))
    train, test = [], []
    for i in order:  # whole tiles to one side until each side has its budget
        (train if len(train) < TRAIN_NORMALS else test).extend(free[i])
        if len(test) >= TEST_NORMALS:
            break
    free_dir = src / "MT_Free" / "Imgs"
    for name in train:
        _link(free_dir / f"{name}.jpg", root / "train" / "good" / f"{name}.jpg")
    for name in test:
        _link(free_dir / f"{name}.jpg", root / "test" / "good" / f"{name}.jpg")
    seen = [] if zero_shot else [t for t in SEEN_MTD if t in folders]
    for defect, folder in sorted(folders.items()):
        groups = _tile_groups(sorted(p.stem for p in folder.glob("*.jpg")))
        shots: list[str] = []
        used = set()
        if defect in seen:  # whole tiles become shots (extra views of a shot tile are dropped, never tested)
            for i in rng.permutation(len(groups)):
                if len(shots) >= SHOTS:
                    break
                used.add(int(i))
                shots += groups[i][: SHOTS - len(shots)]
        for name in shots:
            _link(folder / f"{name}.jpg", root / "defects" / defect / f"{name}.jpg")
            _link(folder / f"{name}.png", root / "defects" / defect / f"{name}_mask.png")
        for i, group in enumerate(groups):
            if i in used:
                continue
            for name in group:
                _link(folder / f"{name}.jpg", root / "test" / defect / f"{name}.jpg")
                _link(folder / f"{name}.png", root / "ground_truth" / defect / f"{name}_mask.png")
    (root / "meta.json").write_text(json.dumps({"seen": seen, "foreground": "full", "source": str(src),
                                                "split_seed": seed, "group_aware": True}))
    return root


# --- KolektorSDD -> MVTec AD layout ------------------------------------------------------------------------------

def _ksdd_commutators(src: Path) -> dict[str, list[tuple[Path, Path, bool]]]:
    """kosNN -> its surface images as (image, label, defective); defective as the evaluation reads the label."""
    from prn_edge.data.images import image_header, read_mask

    groups = {}
    for folder in sorted(p for p in src.glob("kos*") if p.is_dir() and re.fullmatch(r"kos\d+", p.name)):
        parts = []
        for image in sorted(folder.glob("Part*.jpg")):
            label = image.with_name(f"{image.stem}_label.bmp")
            if not label.is_file():
                raise SystemExit(f"{image}: no {label.name} beside it (the published layout labels every image)")
            w, h, _ = image_header(label)
            parts.append((image, label, bool(read_mask(label, (h, w)).any())))
        if parts:
            groups[folder.name] = parts
    if not groups:
        raise SystemExit(f"{src}: expected folders kos01..kos50 of PartK.jpg + PartK_label.bmp (the published layout)")
    return groups


def _group_split(counts: dict[str, tuple[int, int]], rng: np.random.Generator,
                 min_normals: int) -> tuple[list[str], list[str]]:
    """Groups (name -> (normals, defects)) in a seeded order: to training until it has min_normals normals and SHOTS
    defects (the shots' pool), the rest to test."""
    names = sorted(counts)
    train, test, normals, defects = [], [], 0, 0
    for name in (names[i] for i in rng.permutation(len(names))):
        if normals < min_normals or defects < SHOTS:
            train.append(name)
            normals, defects = normals + counts[name][0], defects + counts[name][1]
        else:
            test.append(name)
    return train, test


def prepare_ksdd(src: Path, out: Path, seed: int, zero_shot: bool) -> Path:
    """MVTec AD layout under out/ksdd: train/good, test/<good|crack>, ground_truth/crack/<name>_mask.bmp, defects/.
    The split does not depend on zero_shot, so both modes measure the same test set."""
    root = out / ("ksdd-zeroshot" if zero_shot else "ksdd")
    if (root / "meta.json").is_file():
        return root
    groups = _ksdd_commutators(src)
    rng = np.random.default_rng(seed)
    # whole commutators to training (its parts look alike) until it has its normals and the shots' pool
    train, test = _group_split({name: (sum(not bad for _, _, bad in parts), sum(bad for _, _, bad in parts))
                                for name, parts in groups.items()}, rng, KSDD_TRAIN_NORMALS)
    if not test:
        raise SystemExit(f"{src}: {len(groups)} commutators leave none for the test after "
                         f"{KSDD_TRAIN_NORMALS} training normals and {SHOTS} shots")
    pool = [(image, label) for name in train for image, label, bad in groups[name] if bad]
    # training's defective parts not drawn as shots (all of them zero-shot) are used nowhere: never tested
    shots = [] if zero_shot else [pool[i] for i in sorted(rng.permutation(len(pool))[:SHOTS])]
    for name in train:
        for image, _, bad in groups[name]:
            if not bad:
                _link(image, root / "train" / "good" / f"{name}_{image.name}")
    for image, label in shots:
        name = f"{image.parent.name}_{image.stem}"
        _link(image, root / "defects" / KSDD_DEFECT / f"{name}.jpg")
        _link(label, root / "defects" / KSDD_DEFECT / f"{name}_mask.bmp")
    for name in test:
        for image, label, bad in groups[name]:
            _link(image, root / "test" / (KSDD_DEFECT if bad else "good") / f"{name}_{image.name}")
            if bad:
                _link(label, root / "ground_truth" / KSDD_DEFECT / f"{name}_{image.stem}_mask.bmp")
    (root / "meta.json").write_text(json.dumps({"seen": [] if zero_shot else [KSDD_DEFECT], "foreground": "full",
                                                "source": str(src), "split_seed": seed, "group_aware": True,
                                                "train_commutators": sorted(train)}))
    return root


# --- segmentation pairs (images/ + masks/) -> generic layout -----------------------------------------------------

def prepare_pairs(src: Path, out: Path, seed: int, zero_shot: bool) -> Path:
    """Generic layout under out/<src name>: good/ (all-black masks), defect/ and masks/<name>_mask.png (binarized
    at half range). Images named by their folder path below src (train_images_000 -> train_000), duplicates (the
    same bytes) dropped. No shots either way; seed and zero_shot are the generic split's and the caller's."""
    import hashlib

    import cv2

    root = out / src.name
    if (root / "meta.json").is_file():
        return root
    from prn_edge.data.images import image_header, list_images, read_mask

    pairs = []
    for images in sorted(p for p in src.rglob("images") if p.is_dir()):
        masks = images.parent / "masks"
        by_stem: dict[str, list[Path]] = {}
        for m in list_images(masks) if masks.is_dir() else []:  # listed once per folder, not once per image
            by_stem.setdefault(m.stem, []).append(m)
        for image in list_images(images):
            found = by_stem.get(image.stem, [])
            if len(found) != 1:
                raise SystemExit(f"{image}: expected one mask of that name in {masks}, found {len(found)}")
            pairs.append((image, found[0], f"{images.parent.relative_to(src).as_posix().replace('/', '_')}_{image.stem}"))
    if not pairs:
        raise SystemExit(f"{src}: no images/ folder with a masks/ folder beside it below it")
    seen, dropped = set(), 0
    for image, mask, name in pairs:
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
        if digest in seen:
            dropped += 1
            continue
        seen.add(digest)
        w, h, _ = image_header(image)
        m = read_mask(mask, (h, w))
        if m.any():
            _link(image, root / "defect" / f"{name}{image.suffix}")
            (root / "masks").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "masks" / f"{name}_mask.png"), (m > 0).astype(np.uint8) * 255)
        else:
            _link(image, root / "good" / f"{name}{image.suffix}")
    (root / "meta.json").write_text(json.dumps({"seen": [], "foreground": "full", "source": str(src),
                                                "duplicates_dropped": dropped, "pairs": len(pairs)}))
    return root


# --- BSData (ball screw drives) -> MVTec AD layout --------------------------------------------------------------

def _bsd_spots(src: Path) -> dict[str, dict[str, list]]:
    """Spot (position_angle on the spindle) -> {"normal": [...], "defect": [(image, labelme json)...]} of the
    type-2 images. A spot is photographed over weeks while it wears: an image without an annotation counts as
    normal only when it was taken before the first annotated image of its spot (later ones may hold pitting nobody
    outlined: 28 images, left out)."""
    index = src / "image_data.json"
    if not index.is_file() or not (src / "data").is_dir():
        raise SystemExit(f"{src}: expected image_data.json, data/*.jpg and label/*.json (the published layout of "
                         "github.com/2Obe/BSData)")
    rows = [r for r in json.loads(index.read_text())["images"] if r.get("type") == 2]
    spots: dict[str, list] = {}
    for r in rows:
        parts = Path(r["filename"]).stem.split("_")  # 01_<yymmddhhmmss>_<position>_<angle>_crop_<k>
        if len(parts) < 6:
            raise SystemExit(f"unexpected BSData file name {r['filename']!r}")
        spots.setdefault(f"{parts[2]}_{parts[3]}", []).append((parts[1], r))
    out = {}
    for spot, items in sorted(spots.items()):
        items.sort(key=lambda x: x[0])  # in the order they were taken
        onset = min((ts for ts, r in items if r["annotations"]), default="z")
        out[spot] = {"normal": [src / "data" / r["filename"] for ts, r in items if not r["annotations"] and ts < onset],
                     "defect": [(src / "data" / r["filename"], src / "label" / r["annotations"])
                                for ts, r in items if r["annotations"]]}
    return out


def _polygon_mask(label: Path, dst: Path) -> None:
    """The labelme file's polygons filled at its image size, written as a PNG mask."""
    import cv2

    doc = json.loads(label.read_text())
    mask = np.zeros((int(doc["imageHeight"]), int(doc["imageWidth"])), np.uint8)
    for shape in doc["shapes"]:
        cv2.fillPoly(mask, [np.round(np.asarray(shape["points"], np.float64)).astype(np.int32)], 255)
    dst.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst), mask)


def prepare_bsd(src: Path, out: Path, seed: int, zero_shot: bool) -> Path:
    """MVTec AD layout under out/bsd: whole spots go to training until it has BSD_TRAIN_NORMALS normals and the
    shots' pool, the other spots to test (a spot's images are near-duplicates over time). The split does not depend
    on zero_shot."""
    root = out / ("bsd-zeroshot" if zero_shot else "bsd")
    if (root / "meta.json").is_file():
        return root
    spots = _bsd_spots(src)
    rng = np.random.default_rng(seed)
    train, test = _group_split({name: (len(g["normal"]), len(g["defect"])) for name, g in spots.items()}, rng,
                               BSD_TRAIN_NORMALS)
    pool = [d for name in train for d in spots[name]["defect"]]
    shots = [] if zero_shot else [pool[i] for i in sorted(rng.permutation(len(pool))[:SHOTS])]
    for name in train:
        for image in spots[name]["normal"]:
            _link(image, root / "train" / "good" / image.name)
    for image, label in shots:
        _link(image, root / "defects" / BSD_DEFECT / image.name)
        _polygon_mask(label, root / "defects" / BSD_DEFECT / f"{image.stem}_mask.png")
    for name in test:
        for image in spots[name]["normal"]:
            _link(image, root / "test" / "good" / image.name)
        for image, label in spots[name]["defect"]:
            _link(image, root / "test" / BSD_DEFECT / image.name)
            _polygon_mask(label, root / "ground_truth" / BSD_DEFECT / f"{image.stem}_mask.png")
    (root / "meta.json").write_text(json.dumps({"seen": [] if zero_shot else [BSD_DEFECT], "foreground": "full",
                                                "source": str(src), "split_seed": seed, "group_aware": True,
                                                "train_spots": sorted(train)}))
    return root


# --- kNN reference -----------------------------------------------------------------------------------------------

class KnnReference:
    """PatchCore-style nearest-neighbour distance over the frozen encoder: trains nothing."""

    def __init__(self, backbone: str = "efficientnet_lite0", seed: int = 0, pretrained: bool = True):
        import torch

        from prn_edge.model.backbones import create_backbone

        self.torch = torch
        self.encoder, _ = create_backbone(backbone, pretrained, None)
        self.encoder.eval()
        self.seed = seed
        self.bank = None

    def _features(self, images: list[np.ndarray]):
        import torch.nn.functional as F

        from prn_edge.model.inference import to_tensor

        out = []
        with self.torch.no_grad():
            for i in range(0, len(images), 16):
                feats = self.encoder(to_tensor(images[i:i + 16]))
                f8, f16 = feats[2], feats[3]
                f16 = F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)
                f = F.avg_pool2d(self.torch.cat([f8, f16], 1), 3, 1, 1, count_include_pad=False)
                out.append(f)
        return self.torch.cat(out)

    def fit(self, images: list[np.ndarray]) -> "KnnReference":
        f = self._features(images)
        vecs = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
        g = self.torch.Generator().manual_seed(self.seed)
        keep = self.torch.randperm(len(vecs), generator=g)[: min(int(KNN_BANK_FRACTION * len(vecs)), KNN_BANK_MAX)]
        self.bank = vecs[keep].contiguous()
        self.bank_sq = (self.bank * self.bank).sum(1)
        return self

    def predict(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        import cv2
        import torch.nn.functional as F

        f = self._features(images)
        n, c, h, w = f.shape
        size = images[0].shape[:2]
        maps, scores = [], []
        with self.torch.no_grad():
            for i in range(n):
                q = f[i].permute(1, 2, 0).reshape(-1, c)
                q_sq = (q * q).sum(1, keepdim=True)
                d2 = None
                for j in range(0, len(self.bank), 8192):  # bank chunks: a running minimum, no N x bank matrix
                    part = (q_sq - 2 * q @ self.bank[j:j + 8192].T + self.bank_sq[j:j + 8192]).min(1).values
                    d2 = part if d2 is None else self.torch.minimum(d2, part)
                d = d2.clamp_min(0).sqrt().reshape(1, 1, h, w)
                m = F.interpolate(d, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
                m = cv2.GaussianBlur(m, (0, 0), 4)
                maps.append(m.astype(np.float32))
                scores.append(float(d.max()))
        return np.stack(maps), np.array(scores, np.float32)


# --- one category ------------------------------------------------------------------------------------------------

def _panel(out: Path, samples, maps_by_method: dict, masks, per_type: int = 2) -> None:
    """overlays.png: for a few defects of every type, image | ground truth | each method's map (own scale).
    Reads only the images it draws."""
    import cv2

    from prn_edge.data.images import read_image
    from prn_edge.evaluate.overlay import overlay

    rows, chosen = [], {}
    for i, s in enumerate(samples):
        if s.label and len(chosen.setdefault(s.defect, [])) < per_type:
            chosen[s.defect].append(i)
    for i in [i for idx in chosen.values() for i in idx] + [i for i, s in enumerate(samples) if not s.label][:1]:
        tiles, image = [], read_image(samples[i].image)
        for name, maps in maps_by_method.items():
            panel = overlay(image, maps[i], masks[i], None,
                            value_range=(float(np.percentile(maps[i], 1)), float(maps[i].max()) + 1e-6))
            w = panel.shape[1] // 4
            part = panel[:, 2 * w:3 * w] if tiles else panel[:, :3 * w]  # image, gt, map; then map only
            part = part.copy()
            cv2.putText(part, f"{name} ({samples[i].defect})", (4, part.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(part)
        row = np.concatenate(tiles, 1)
        rows.append(cv2.resize(row, (1024, max(1, int(row.shape[0] * 1024 / row.shape[1])))))
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(rows, 0)[..., ::-1])


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_category(root: Path, out: Path, cfg, seed: int, skip_prn: bool, quiet: bool) -> dict:
    from prn_edge.data.dataset import load_category
    from prn_edge.evaluate.checkpoint_eval import evaluate_checkpoint, predict_samples, predict_test
    from prn_edge.evaluate.metrics import evaluate_predictions
    from prn_edge.evaluate.validation import load_normals, model_inputs
    from prn_edge.train.trainer import train

    cat = load_category(root, seed=seed, num_shots=cfg.train.num_shots)
    note = cfg.model.resolve_image_size(cat.train_aspect)  # "auto": the size PRN's training would choose
    if note and not quiet:
        print(note, file=sys.stderr)
    entry: dict = {"category": cat.name, "n_train_normals": len(cat.train_good), "n_shots": len(cat.shots),
                   "seen_types": cat.seen_types, "defect_types": cat.defect_types, "notes": cat.notes,
                   "input_policy": cfg.model.input_policy, "image_size": list(cfg.model.hw)}
    samples = cat.test
    labels = np.array([s.label for s in samples])
    types = [s.defect for s in samples]
    seen = {t: t in cat.seen_types for t in set(types) if t != "good"}

    t = time.time()
    # the training normals as the model input sees them: fitted images, or every grid tile of them (tiles)
    knn = KnnReference(cfg.model.backbone, seed, cfg.model.pretrained).fit(
        model_inputs(load_normals(cat.train_good, cfg)[0], cfg))
    fit_s = time.time() - t
    kmaps, kscores, masks = predict_samples(knn.predict, cfg, samples)  # PRN's input policy: fitted, or its tiles
    entry["knn"] = {**evaluate_predictions(kscores, kmaps, labels, masks, types, seen), "train_seconds": round(fit_s, 1),
                    "bank_vectors": len(knn.bank)}
    maps_by_method = {"kNN": kmaps}

    if not skip_prn:
        ckpt = out / f"{cat.name}.pt"
        t, cpu = time.time(), _cpu_seconds()
        res = train(cfg, root, ckpt, progress=not quiet, log=lambda m: print(m, file=sys.stderr))
        train_s, train_cpu = time.time() - t, _cpu_seconds() - cpu
        ev = evaluate_checkpoint(ckpt, root, progress=False, log=lambda m: None)
        entry["prn"] = {k: ev[k] for k in ("overall", "per_type", "means", "decisions", "validation_gap") if k in ev}
        # CPU seconds / cores bounds the wall time on a quiet machine when other jobs share the cores
        entry["prn"].update({"train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu, 1),
                             "best_step": res.best_step, "validation": res.val})
        from prn_edge.model.checkpoint import load_model

        model, mcfg, _ = load_model(ckpt)
        maps_by_method = {"PRN": predict_test(model, mcfg, samples)[0], **maps_by_method}
        if model.fuses_distance and model.distance.border_px:  # ablation: no border correction, same checkpoint
            entry["prn_no_border"] = no_border_ablation(model, mcfg, samples, labels, masks, types, seen)
            entry["prn_no_border"]["train_seconds"] = entry["prn"]["train_seconds"]
        if model.fuses_distance:  # ablation: the decoder alone (the paper's PRN), same checkpoint
            model.cfg.distance_fusion = "none"
            dmaps, dscores, _ = predict_test(model, mcfg, samples)
            entry["prn_decoder_only"] = evaluate_predictions(dscores, dmaps, labels, masks, types, seen)
            entry["prn_decoder_only"]["train_seconds"] = entry["prn"]["train_seconds"]
            maps_by_method["PRN decoder"] = dmaps
    _panel(out / cat.name / "overlays.png", samples, maps_by_method, masks)
    return entry


def no_border_ablation(model, mcfg, samples, labels, masks, types, seen) -> dict:
    """The checkpoint's metrics with its distance map's border correction taken off (model.border_correction 0 at
    prediction; the distance keeps its calibration from before the correction); the model is left as it was."""
    from prn_edge.evaluate.checkpoint_eval import predict_test
    from prn_edge.evaluate.metrics import evaluate_predictions

    d = model.distance
    kept = d.border.clone(), d.border_gain.clone()
    d.border.zero_()
    d.border_gain.fill_(1.0)
    try:
        maps, scores, _ = predict_test(model, mcfg, samples)
    finally:
        d.border.copy_(kept[0])
        d.border_gain.copy_(kept[1])
    return evaluate_predictions(scores, maps, labels, masks, types, seen)


def _table(entry: dict) -> str:
    methods = [m for m in ("prn", "prn_no_border", "prn_decoder_only", "knn") if m in entry]
    head = ["defect type", "seen", "n"] + [f"{m} {k}" for k in METRICS for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    ref = entry[methods[0]]
    rows = [(t, "seen" if e["seen"] else "unseen", e["n"], {m: entry[m]["per_type"][t] for m in methods})
            for t, e in ref["per_type"].items()]
    rows += [(f"mean {g}", g, "", {m: entry[m]["means"][g] for m in methods}) for g in ("seen", "unseen")
             if ref["means"][g]["n_types"]]
    for name, s, n, vals in rows:
        lines.append(f"| {name} | {s} | {n} | " + " | ".join(pct(vals[m].get(k)) for k in METRICS for m in methods)
                     + " |")
    secs = ", ".join(f"{m} {entry[m]['train_seconds']:.0f} s" for m in methods)
    if "train_cpu_seconds" in entry.get("prn", {}):
        secs += f" (PRN process CPU {entry['prn']['train_cpu_seconds']:.0f} s)"
    return "\n".join(lines) + f"\n\ntraining: {secs}\n"


SUMMARY_METHODS = ("prn", "prn_no_border", "prn_decoder_only", "knn")
SUMMARY_METRICS = ("image_auroc", "pixel_auroc", "aupro")


def _config_differences(report_a: dict, entry_a: dict, report_b: dict, entry_b: dict) -> list[str]:
    """What makes two runs of a category other than repeats: the variant, the model input the category got, any
    setting both configs have with different values (the seed aside; a setting only one has is a toolkit version
    apart, at its default)."""
    out = [f"{k} {a[k]} / {b[k]}" for a, b, k in ((report_a, report_b, "variant"), (entry_a, entry_b, "image_size"))
           if a.get(k) != b.get(k)]
    for section, values in report_a["config"].items():
        other = report_b["config"].get(section)
        if not isinstance(values, dict) or not isinstance(other, dict):
            continue
        out += [f"{section}.{k} {v} / {other[k]}" for k, v in values.items()
                if k in other and other[k] != v and (section, k) not in (("train", "seed"), ("model", "image_size"))]
    return out


def summarize(runs: list[Path]) -> dict:
    """Several runs of this benchmark (their bench_real.json, e.g. one per --seed) as mean, standard deviation and
    per-run values of each method's seen / unseen means, per category and setting (10-shot or zero-shot). Runs of
    another variant or configuration than the first of their category are refused: they would not be repeats."""
    groups: dict = {}
    for run in runs:
        path = run / "bench_real.json" if run.is_dir() else run
        if not path.is_file():
            raise SystemExit(f"--summarize: {path} does not exist; give the --out folders of earlier runs")
        report = json.loads(path.read_text())
        for name, entry in report["categories"].items():
            key = f"{name} ({'zero-shot' if report['zero_shot'] else 'shots'})"
            g = groups.setdefault(key, {"report": report, "entry": entry, "runs": []})
            differ = _config_differences(g["report"], g["entry"], report, entry)
            if differ:
                raise SystemExit(f"--summarize: {path} ran {name} with another configuration than "
                                 f"{g['runs'][0]['path']} ({'; '.join(differ)}): not a repeat of it")
            g["runs"].append({"path": str(path), "seed": report["seed"], "entry": entry})
    out: dict = {}
    for key, g in groups.items():
        seeds = [r["seed"] for r in g["runs"]]
        if len(set(seeds)) < len(seeds):
            raise SystemExit(f"--summarize: {key} has two runs with the same seed ({seeds}): the same run twice")
        table: dict = {}
        for m in SUMMARY_METHODS:
            for grp in ("seen", "unseen"):
                for k in SUMMARY_METRICS:
                    vals = [r["entry"][m]["means"][grp].get(k) for r in g["runs"] if m in r["entry"]
                            and r["entry"][m]["means"][grp].get("n_types")]
                    if vals and None not in vals:
                        table[f"{m}/{grp}/{k}"] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1))
                                                   if len(vals) > 1 else None, "values": vals}
        margins = [r["entry"]["prn_minus_knn_unseen"]["image_auroc"] for r in g["runs"]
                   if r["entry"].get("prn_minus_knn_unseen")]
        out[key] = {"seeds": seeds, "metrics": table,
                    "prn_minus_knn_unseen_image_auroc": {"min": min(margins), "values": margins} if margins else None}
    return out


def summary_table(summary: dict) -> str:
    """Markdown: per category, method x (seen, unseen) x metric as mean +- std over the runs (n runs)."""
    lines = []
    for key, s in summary.items():
        lines += [f"## {key}: {len(s['seeds'])} runs (seeds {', '.join(map(str, s['seeds']))})", "",
                  "| method | types | " + " | ".join(SUMMARY_METRICS) + " |", "|---|---|" + "---:|" * len(SUMMARY_METRICS)]
        for m in SUMMARY_METHODS:
            for grp in ("unseen", "seen"):
                cells = [s["metrics"].get(f"{m}/{grp}/{k}") for k in SUMMARY_METRICS]
                if any(cells):
                    lines.append(f"| {m} | {grp} | " + " | ".join(
                        "-" if c is None else f"{100 * c['mean']:.1f}" + ("" if c["std"] is None
                                                                         else f" +- {100 * c['std']:.1f}")
                        for c in cells) + " |")
        margin = s["prn_minus_knn_unseen_image_auroc"]
        if margin:
            lines.append(f"\nPRN - kNN, unseen image AUROC: smallest {100 * margin['min']:+.1f} pt over the runs "
                         f"({', '.join(f'{100 * v:+.1f}' for v in margin['values'])})")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    from prn_edge.bench.machine import machine_info
    from prn_edge.config import _merge, make_config, parse_override
    from prn_edge.artefact import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mtd", type=Path, help="the Magnetic Tile Defect dataset folder (MT_* subfolders)")
    ap.add_argument("--ksdd", type=Path, help="the KolektorSDD dataset folder (kos* subfolders)")
    ap.add_argument("--bsd", type=Path, help="the BSData folder (image_data.json, data/, label/)")
    ap.add_argument("--pairs", type=Path, help="a dataset of images/ + masks/ folders (black mask = good part)")
    ap.add_argument("--data", type=Path, nargs="*", default=[], help="more categories (MVTec AD or generic layout)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_real"))
    ap.add_argument("--zero-shot", action="store_true", help="no real defects in training: every type unseen")
    ap.add_argument("--variant", default="prn-edge")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--skip-prn", action="store_true", help="the kNN reference only (quick look at a dataset)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--summarize", type=Path, nargs="+", metavar="RUN",
                    help="instead of running: the mean and spread over earlier runs (their --out folders, e.g. one "
                         "per --seed), written to --out as bench_real_summary.json and .md")
    args = ap.parse_args(argv)
    if args.summarize:
        summary = summarize(args.summarize)
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "bench_real_summary.json", summary)
        md = summary_table(summary)
        (args.out / "bench_real_summary.md").write_text(md)
        print(md)
        return 0
    if not args.mtd and not args.ksdd and not args.bsd and not args.pairs and not args.data:
        ap.error("give --mtd DIR, --ksdd DIR, --bsd DIR, --pairs DIR and/or --data DIR")

    overrides: dict = {"train": {"seed": args.seed, "num_shots": 0 if args.zero_shot else 2 * SHOTS,
                                 **({"steps": args.steps} if args.steps else {})}}
    for s in args.set:
        overrides = _merge(overrides, parse_override(s))
    cfg = make_config(args.variant, overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    prepared = [prepare(src, args.out / "data", args.seed, args.zero_shot)
                for prepare, src in ((prepare_mtd, args.mtd), (prepare_ksdd, args.ksdd), (prepare_bsd, args.bsd),
                                     (prepare_pairs, args.pairs))
                if src]
    roots = prepared + args.data
    report = {"machine": machine_info(), "variant": args.variant, "config": cfg.to_dict(), "zero_shot": args.zero_shot,
              "seed": args.seed, "train_budget_s": TRAIN_BUDGET_S, "categories": {}}
    tables = []
    for root in roots:
        # each category its own copy: model.image_size "auto" is resolved per category's images
        entry = bench_category(Path(root), args.out, copy.deepcopy(cfg), args.seed, args.skip_prn, args.quiet)
        entry["load_average_after"] = os.getloadavg()
        if "prn" in entry:
            u = entry["prn"]["means"]["unseen"], entry["knn"]["means"]["unseen"]
            entry["prn_minus_knn_unseen"] = {k: (None if u[0][k] is None or u[1][k] is None else u[0][k] - u[1][k])
                                             for k in METRICS}
        report["categories"][entry["category"]] = entry
        tables.append(f"## {entry['category']}{' (zero-shot)' if args.zero_shot else ''}\n\n{_table(entry)}")
        write_json(args.out / "bench_real.json", report)  # after each category: a long run leaves partial results
    md = "\n".join(tables)
    (args.out / "bench_real.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
