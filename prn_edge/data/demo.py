"""A realistic demo dataset in the MVTec AD layout, built offline from real photos.

Normal images are views of real photos (scikit-image sample data): three textures (brick, grass,
gravel), tinted to colour, and one object (a coin on a plain cloth). Defects are procedural
(`defects.py`) with exact masks. Test normals of textures come from a part of the photo that no
training view touches, so they are not copies of training images. Every image has its own random
stream keyed by (seed, category, split, index, defect), so the output is byte-identical for a seed
and a smaller dataset is a prefix of a larger one.
"""
from __future__ import annotations

import functools
import json
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from ..errors import ConfigError, DataError
from .blend import composite
from .defects import DEFECTS
from .images import write_image, write_mask
from .photos import load_photo

GENERATOR = "prn_edge.data.demo"
SEEN = ("scratch", "stain")  # have training shots in defects/
UNSEEN = ("crack", "hole", "contamination")  # only in test/: does the model generalise?
SPLITS = ("train", "test", "shot")
AREA_RANGE = (0.002, 0.05)  # defect area as a fraction of the image: visible, not trivial
SOLID_ALPHA = 0.2  # ground-truth masks are alpha > this (see blend.composite)


@dataclass(frozen=True)
class Scene:
    photo: str  # skimage.data name
    foreground: str  # "full" (texture) or "estimate" (object)
    dark: tuple[int, int, int] = (0, 0, 0)  # RGB the photo's black maps to (textures are tinted)
    light: tuple[int, int, int] = (255, 255, 255)
    rotate90: bool = True  # textures without a direction may be seen in any 90-degree orientation


SCENES: dict[str, Scene] = {
    "brick": Scene("brick", "full", (52, 30, 24), (232, 158, 126), rotate90=False),  # perspective: keep upright
    "grass": Scene("grass", "full", (16, 38, 8), (178, 218, 104)),
    "gravel": Scene("gravel", "full", (40, 37, 33), (236, 228, 210)),
    "coin": Scene("coins", "estimate"),
}
TEST_STRIP = 0.39  # textures: the right 39% of the photo is reserved for test normals and test defects


def _rng(seed: int, category: str, split: str, index: int, defect: str | None) -> np.random.Generator:
    key = [seed, zlib.crc32(category.encode()), SPLITS.index(split), index, zlib.crc32((defect or "good").encode())]
    return np.random.default_rng(key)


def _texture_view(scene: Scene, split: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A randomly placed, scaled, rotated and flipped window of the photo, tinted and relit."""
    grey = load_photo(scene.photo)[:, :, 0].astype(np.float32) / 255.0
    h, w = grey.shape
    cut = int(w * (1 - TEST_STRIP))
    x_lo, x_hi = (cut, w) if split == "test" else (0, cut)
    side = rng.uniform(0.29, 0.35) * h  # window side in photo pixels (about 150-180 for 512)
    tilt = np.radians(rng.uniform(-5, 5))
    footprint = side * (abs(np.cos(tilt)) + abs(np.sin(tilt)))  # the window's bounding box in the photo
    cx = rng.uniform(x_lo + footprint / 2, x_hi - footprint / 2)
    cy = rng.uniform(footprint / 2, h - footprint / 2)
    turn = tilt + (np.pi / 2 * rng.integers(4) if scene.rotate90 else 0.0)
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    flip = np.diag([rng.choice([-1, 1]), rng.choice([-1, 1]) if scene.rotate90 else 1])
    a = rot @ flip * (side / size)  # output pixel offset -> photo offset
    t = np.array([cx, cy]) - a @ np.array([size / 2, size / 2])
    view = cv2.warpAffine(grey, np.hstack([a, t[:, None]]), (size, size),
                          flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    view = np.clip(view * rng.uniform(0.9, 1.1) + rng.uniform(-0.04, 0.04), 0, 1)
    dark, light = np.array(scene.dark, np.float32), np.array(scene.light, np.float32)
    rgb = dark + (light - dark) * view[..., None]
    return _finish(rgb, rng)


def _finish(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise and rounding to uint8."""
    return np.clip(np.round(rgb + rng.normal(0, 1.2, rgb.shape)), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _coin_sprite() -> tuple[np.ndarray, np.ndarray]:
    """The largest coin of skimage.data.coins, cut out: (grey float32 in [0, 1], alpha float32)."""
    grey = load_photo("coins")[:, :, 0]
    cx, cy, r = 348, 186, 44  # where that coin lies in the photo
    crop = grey[cy - r:cy + r, cx - r:min(cx + r, grey.shape[1])]
    _, binary = cv2.threshold(crop, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, disk)
    _, labels = cv2.connectedComponents(binary)
    coin = ndi.binary_fill_holes(labels == labels[r, r]).astype(np.uint8)
    coin = cv2.morphologyEx(coin, cv2.MORPH_OPEN, disk[1:-1, 1:-1])
    alpha = cv2.GaussianBlur(cv2.erode(coin, np.ones((3, 3), np.uint8)).astype(np.float32), (0, 0), 0.8)
    return crop.astype(np.float32) / 255.0, alpha


def _coin_view(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The coin on grey-blue cloth with a small shift, turn and lighting change; also its foreground."""
    sprite, sprite_alpha = _coin_sprite()
    ys, xs = np.nonzero(sprite_alpha > 0.5)
    centre = np.array([xs.mean(), ys.mean()])
    diameter = max(np.ptp(xs), np.ptp(ys)) + 1
    scale = 0.56 * size / diameter
    m = cv2.getRotationMatrix2D(tuple(centre), rng.uniform(-15, 15), scale)
    m[:, 2] += np.array([size / 2, size / 2]) + rng.uniform(-0.04, 0.04, 2) * size - centre
    coin = cv2.warpAffine(sprite, m, (size, size), flags=cv2.INTER_CUBIC)
    alpha = cv2.warpAffine(sprite_alpha, m, (size, size), flags=cv2.INTER_LINEAR)[..., None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    ramp = 1 + 0.08 * (np.cos(rng.uniform(0, 2 * np.pi)) * xx + np.sin(rng.uniform(0, 2 * np.pi)) * yy)[..., None]
    cloth = np.array([62, 70, 84], np.float32) * ramp * rng.uniform(0.95, 1.05)
    shadow = cv2.GaussianBlur(np.roll(alpha[..., 0], (int(0.02 * size), int(0.015 * size)), (0, 1)), (0, 0), 0.02 * size)
    cloth *= 1 - 0.45 * shadow[..., None]
    metal = np.clip(coin * rng.uniform(0.92, 1.08), 0, 1)[..., None] * np.array([255, 246, 228], np.float32) * ramp
    rgb = cloth * (1 - alpha) + metal * alpha
    inside = cv2.erode((alpha[..., 0] > 0.5).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    return _finish(rgb, rng), inside


def render_image(category: str, split: str, index: int, seed: int = 0, defect: str | None = None,
                 size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean, image, mask) of one demo image; image == clean and mask == 0 when defect is None.

    The mask is exactly where image differs from clean by more than blend.VISIBLE_TOL.
    """
    if category not in SCENES:
        raise ConfigError(f"demo category {category!r} is unknown; choose from {sorted(SCENES)}")
    if defect is not None and defect not in DEFECTS:
        raise ConfigError(f"demo defect {defect!r} is unknown; choose from {sorted(DEFECTS)}")
    scene = SCENES[category]
    rng = _rng(seed, category, split, index, defect)
    if scene.foreground == "full":
        clean = _texture_view(scene, split, rng, size)
        allowed = np.zeros((size, size), bool)
        allowed[4:-4, 4:-4] = True  # keep defects whole, not cut by the border
    else:
        clean, allowed = _coin_view(rng, size)
    if defect is None:
        return clean, clean.copy(), np.zeros((size, size), np.float32)
    lo, hi = (f * size * size for f in AREA_RANGE)
    for _ in range(50):  # redraw until the area is in range; the rng stream makes this deterministic
        effect, alpha = DEFECTS[defect](clean, rng, allowed)
        image, mask = composite(clean, effect, alpha * allowed, solid_above=SOLID_ALPHA)
        if lo <= mask.sum() <= hi:
            return clean, image, mask
    raise RuntimeError(f"demo: could not draw a {defect} of {AREA_RANGE} of the image on {category}; "
                       f"the defect sizes do not fit image size {size}")


def _prepare(folder: Path) -> None:
    """Empty a folder we generated before; refuse to touch anything else."""
    if not folder.exists():
        return
    meta = folder / "meta.json"
    try:
        ours = json.loads(meta.read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours and any(folder.iterdir()):
        raise DataError(f"{folder} exists and is not a demo dataset made by prn-edge; choose an empty or new folder")
    shutil.rmtree(folder)


def make_dataset(out: str | Path, seed: int = 0, categories: list[str] | None = None, n_train: int = 120,
                 n_test_good: int = 30, n_test_defect: int = 12, n_shots: int = 12, size: int = 256,
                 progress: bool = True) -> dict:
    """Write the demo dataset under `out` (one folder per category); returns a summary dict.

    Per category: train/good (n_train), test/good (n_test_good), test/<type> (n_test_defect each,
    masks in ground_truth/<type>/<name>_mask.png), defects/<seen type>/<name>.png + <name>_mask.png
    (n_shots training shots split over the seen types) and meta.json.
    """
    categories = list(SCENES) if categories is None else list(categories)
    unknown = [c for c in categories if c not in SCENES]
    if unknown:
        raise ConfigError(f"demo categories {unknown} are unknown; choose from {sorted(SCENES)}")
    if min(n_train, n_test_good, n_test_defect, n_shots) < 0 or n_train < 1 or size < 32:
        raise ConfigError("demo sizes: n_train >= 1, other counts >= 0 and size >= 32")
    out = Path(out)
    start = time.perf_counter()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # images are small; threads would only compete with other work on the machine
    summary: dict = {"root": str(out), "seed": seed, "size": size, "seen": list(SEEN), "unseen": list(UNSEEN),
                     "categories": {}}
    try:
        for cat in categories:
            summary["categories"][cat] = _write_category(out / cat, cat, seed, n_train, n_test_good, n_test_defect,
                                                         n_shots, size, progress)
    finally:
        cv2.setNumThreads(threads)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary


def _write_category(root: Path, cat: str, seed: int, n_train: int, n_test_good: int, n_test_defect: int,
                    n_shots: int, size: int, progress: bool) -> dict:
    _prepare(root)
    shots_per_type = [n_shots // len(SEEN) + (i < n_shots % len(SEEN)) for i in range(len(SEEN))]
    jobs = ([("train", i, None, root / "train/good" / f"{i:03d}.png", None) for i in range(n_train)]
            + [("test", i, None, root / "test/good" / f"{i:03d}.png", None) for i in range(n_test_good)]
            + [("test", i, d, root / "test" / d / f"{i:03d}.png", root / "ground_truth" / d / f"{i:03d}_mask.png")
               for d in SEEN + UNSEEN for i in range(n_test_defect)]
            + [("shot", i, d, root / "defects" / d / f"{i:03d}.png", root / "defects" / d / f"{i:03d}_mask.png")
               for d, k in zip(SEEN, shots_per_type) for i in range(k)])
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc=f"demo {cat}", unit="img", leave=False)
    for split, i, defect, img_path, mask_path in jobs:
        _, image, mask = render_image(cat, split, i, seed, defect, size)
        write_image(img_path, image)
        if mask_path is not None:
            write_mask(mask_path, mask)
    scene = SCENES[cat]
    counts = {"train_good": n_train, "test_good": n_test_good, "test_defect": {d: n_test_defect for d in SEEN + UNSEEN},
              "shots": dict(zip(SEEN, shots_per_type))}
    meta = {"generator": GENERATOR, "seen": list(SEEN), "unseen": list(UNSEEN), "foreground": scene.foreground,
            "seed": seed, "image_size": size, "counts": counts,
            "source": f"skimage.data.{scene.photo} (scikit-image sample photo), procedural defects"}
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return counts
