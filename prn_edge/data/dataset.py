"""Finding a category's images, masks and few-shot defects on disk, with checks that say what to fix.

Two layouts are understood:
  MVTec AD:  train/good/*, test/<good|type>/*, ground_truth/<type>/<name>_mask.png
  generic:   good/*, defect/* or defect/<type>/*, masks/<relative path without suffix>_mask.png
             (good/ is split 80/20 into train/test with the seed).
Few-shot real defects come from a folder of images with <name>_mask.png beside them (optionally one
subfolder per type; <root>/defects is used when present) or are taken out of test/. A defect test image
without a mask is kept for image metrics (datasets labelled per image have none).
"""
from __future__ import annotations

import glob
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..input_policy import Placement, as_hw
from .fit import fit_image, fit_mask
from .images import IMAGE_EXTS, MASK_SUFFIX, image_header, is_image_file, list_images, read_image, read_mask

GOOD = "good"
FLAT_TYPE = "defect"  # type name of defect images that are not sorted into subfolders
GENERIC_TEST_FRACTION = 0.2
MVTEC_LAYOUT = "MVTec AD layout: train/good/*.png, test/<good|defect type>/*.png, ground_truth/<type>/<name>_mask.png"
GENERIC_LAYOUT = "generic layout: good/*.png, defect/[<type>/]*.png, masks/[<type>/]<name>_mask.png"
# Without meta.json, MVTec AD / VisA category names tell textures (whole image is surface) from objects.
TEXTURES = {"carpet", "grid", "leather", "tile", "wood"}
OBJECTS = {"bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush", "transistor",
           "zipper", "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1",
           "pcb2", "pcb3", "pcb4", "pipe_fryum"}


@dataclass
class Sample:
    image: Path
    label: int  # 0 good, 1 defect
    defect: str  # "good" for normals
    mask: Path | None = None
    seen: bool | None = None  # defect type available for training; None for normals


@dataclass
class Category:
    name: str
    root: Path
    train_good: list[Path]
    test: list[Sample]
    shots: list[Sample]  # real defects used for training, with masks
    excluded: list[Sample]  # test images taken as shots; not in `test`, kept out of metrics
    seen_types: list[str]
    foreground: str  # "full" (textures) or "estimate" (objects)
    layout: str = "mvtec"  # or "generic"
    train_size: tuple[int, int] = (0, 0)  # the most common (width, height) of the train_good images
    train_aspect: float = 1.0  # the median height / width of the train_good images (model.image_size "auto")
    notes: list[str] = field(default_factory=list)  # decisions made while loading, for logs and reports

    @property
    def defect_types(self) -> list[str]:
        return sorted({s.defect for s in self.test + self.excluded if s.label})


def load_pair(sample: Sample, size: int | tuple[int, int] | None = None,
              policy: str = "stretch") -> tuple[np.ndarray, np.ndarray | None]:
    """(HxWx3 uint8 image, HxW float32 mask) of a sample, fitted to the model input `size` (one side, or
    (height, width)) by the input policy when a size is given (see data.fit); an all-zero mask for normals, None
    for a defect test image that has no mask (its pixels are unknown, not normal)."""
    img = read_image(sample.image)
    if sample.mask is None and sample.label:
        mask = None
    else:
        mask = read_mask(sample.mask, img.shape[:2]) if sample.mask is not None else np.zeros(img.shape[:2], np.float32)
    if size is None:
        return img, mask
    fitted, where = fit_image(img, as_hw(size), policy)
    return fitted, None if mask is None else fit_mask(mask, where)


def load_fitted(path: Path, size: int | tuple[int, int], policy: str) -> tuple[np.ndarray, Placement]:
    """An image fitted to the model input `size` (one side, or (height, width)) by the input policy, and where
    it sits there."""
    return fit_image(read_image(path), as_hw(size), policy)


def _require_images(folder: Path, layout: str, recursive: bool = False) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"missing folder {folder}; expected the {layout}")
    files = list_images(folder, recursive)
    if not files:
        raise DataError(f"folder {folder} holds no images ({', '.join(IMAGE_EXTS)}); expected the {layout}")
    return files


def _find_mask(stem_path: Path) -> Path | None:
    """<stem>_mask with any image extension in any case (.png, .PNG, .JPG...), PNG first."""
    name = stem_path.name + MASK_SUFFIX
    found = {p.suffix.lower(): p for p in sorted(stem_path.parent.glob(glob.escape(name) + ".*"))
             if p.stem == name and is_image_file(p)} if stem_path.parent.is_dir() else {}
    order = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
    return next((found[ext] for ext in order if ext in found), None)


def _defect_sample(image: Path, defect: str, mask_stem: Path, required: bool = True) -> Sample:
    """A defect sample whose mask is <mask_stem>_mask.<ext>; checks that it exists (unless not `required`: a test
    image without one counts in image metrics only) and fits the image."""
    mask = _find_mask(mask_stem)
    if mask is None and not required:
        return Sample(image, 1, defect, None)
    if mask is None:
        raise DataError(f"defect image {image} has no mask; expected {mask_stem.parent / (mask_stem.name + MASK_SUFFIX)}.png "
                        f"(white = defect, black = good, same size as the image)")
    iw, ih, _ = image_header(image)
    mw, mh, _ = image_header(mask)
    if (iw, ih) != (mw, mh):
        fix = ("it is the image turned by 90 degrees: save the mask in the image's orientation (a resize would "
               "distort it)" if (iw, ih) == (mh, mw) else
               "resize the mask with nearest-neighbour interpolation to the image size")
        raise DataError(f"mask {mask} is {mw}x{mh} (width x height) but its image {image} is {iw}x{ih}; {fix}")
    return Sample(image, 1, defect, mask)


def _size_note(files: list[Path], notes: list[str]) -> tuple[tuple[int, int], float]:
    """Training images may differ in size and colour mode (real data does): every image is brought to the model
    input by the input policy. Reads headers only (a broken file fails here, by name); returns the most common
    (width, height) and the median height / width, and notes the spread."""
    headers = [image_header(p) for p in files]
    aspect = float(np.median([h / w for w, h, _ in headers]))
    sizes = Counter((w, h) for w, h, _ in headers)
    modes = Counter(m for _, _, m in headers)
    if len(sizes) > 1 or len(modes) > 1:
        ws, hs = [w for w, _, _ in headers], [h for _, h, _ in headers]
        notes.append(f"training images come in {len(sizes)} sizes (width {min(ws)}..{max(ws)}, height "
                     f"{min(hs)}..{max(hs)}) and modes {dict(modes)}: each is fitted to the model input by "
                     f"model.input_policy (stretch, letterbox or tiles)")
    return sizes.most_common(1)[0][0], aspect


def _load_mvtec(root: Path) -> tuple[list[Path], list[Sample]]:
    train = _require_images(root / "train" / GOOD, MVTEC_LAYOUT)
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise DataError(f"missing folder {test_dir}; expected the {MVTEC_LAYOUT}")
    test: list[Sample] = []
    for sub in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for img in _require_images(sub, MVTEC_LAYOUT):
            if sub.name == GOOD:
                test.append(Sample(img, 0, GOOD))
            else:
                test.append(_defect_sample(img, sub.name, root / "ground_truth" / sub.name / img.stem, False))
    if not test:
        raise DataError(f"folder {test_dir} has no subfolders of images; expected the {MVTEC_LAYOUT}")
    return train, test


def _load_generic(root: Path, seed: int, notes: list[str]) -> tuple[list[Path], list[Sample]]:
    good = _require_images(root / GOOD, GENERIC_LAYOUT)
    defect_dir = root / "defect"
    defects = _require_images(defect_dir, GENERIC_LAYOUT, recursive=True)
    order = np.random.default_rng(seed).permutation(len(good))
    n_test = min(int(round(GENERIC_TEST_FRACTION * len(good))), len(good) - 1)
    test_idx = set(order[:n_test].tolist())
    train = [p for i, p in enumerate(good) if i not in test_idx]
    test = [Sample(p, 0, GOOD) for i, p in enumerate(good) if i in test_idx]
    for img in defects:
        rel = img.relative_to(defect_dir)
        defect = rel.parts[0] if len(rel.parts) > 1 else FLAT_TYPE
        test.append(_defect_sample(img, defect, root / "masks" / rel.with_suffix(""), False))
    notes.append(f"generic layout: {len(good)} images in good/ split by seed {seed} into "
                 f"{len(train)} for training and {n_test} for testing ({GENERIC_TEST_FRACTION:.0%})")
    return train, test


def _load_defects_dir(folder: Path) -> list[Sample]:
    """Shots from a folder: <name>.png + <name>_mask.png, optionally one subfolder per defect type."""
    layout = "few-shot defect folder: [<type>/]<name>.png with <name>_mask.png beside it"
    shots = []
    for img in _require_images(folder, layout, recursive=True):
        rel = img.relative_to(folder)
        defect = rel.parts[0] if len(rel.parts) > 1 else FLAT_TYPE
        shots.append(_defect_sample(img, defect, img.with_suffix("")))
    return shots


def _stratified(samples: list[Sample], k: int, rng: np.random.Generator) -> list[Sample]:
    """Up to k samples, taking types in turn (each type shuffled) so every type is represented."""
    by_type: dict[str, list[Sample]] = {}
    for s in samples:
        by_type.setdefault(s.defect, []).append(s)
    queues = [[group[i] for i in rng.permutation(len(group))] for _, group in sorted(by_type.items())]
    chosen: list[Sample] = []
    while len(chosen) < k and any(queues):
        for q in queues:
            if q and len(chosen) < k:
                chosen.append(q.pop(0))
    return chosen


def _take_from_test(test: list[Sample], k: int, rng: np.random.Generator, notes: list[str]) -> list[Sample]:
    """k shots per defect type out of test (at least one image of each type stays for testing); only images with
    a mask can be shots (training draws the defect from it)."""
    shots = []
    for defect in sorted({s.defect for s in test if s.label}):
        group = [s for s in test if s.defect == defect]
        masked = [s for s in group if s.mask is not None]
        n = min(k, len(masked), len(group) - 1)
        if n < k:
            notes.append(f"shots_from_test: only {n} of {k} shots taken from {defect} so {len(group) - n} stay in test"
                         + (f" ({len(group) - len(masked)} of its images have no mask)" if len(masked) < len(group)
                            else ""))
        shots += [masked[i] for i in sorted(rng.permutation(len(masked))[:n])]
    return shots


def _note_unmasked(test: list[Sample], notes: list[str]) -> None:
    unmasked = Counter(s.defect for s in test if s.label and s.mask is None)
    if unmasked:
        notes.append(f"{sum(unmasked.values())} defect test images have no mask ({dict(sorted(unmasked.items()))}): "
                     "they count in image metrics only (pixel metrics and AUPRO leave them out) and are not taken "
                     "as training shots")


def _read_meta(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e}); fix it or delete it") from None
    if not isinstance(meta, dict):
        raise DataError(f'{path}: expected an object like {{"seen": [...], "unseen": [...], "foreground": "full"}}')
    seen, fg = meta.get("seen"), meta.get("foreground")
    if seen is not None and not (isinstance(seen, list) and all(isinstance(s, str) for s in seen)):
        raise DataError(f'{path}: "seen" must be a list of defect type names, e.g. {{"seen": ["scratch"]}}')
    if fg is not None and fg not in ("full", "estimate"):
        raise DataError(f'{path}: "foreground" must be "full" (textures) or "estimate" (objects), got {fg!r}')
    return meta


def load_category(root: str | Path, defects_dir: str | Path | None = None, shots_from_test: int = 0,
                  num_shots: int = 10, seed: int = 0) -> Category:
    """Load and check one category folder (MVTec AD or generic layout, see the module doc).

    Shots: from `defects_dir` (at most `num_shots`, stratified by type; `<root>/defects` when not given),
    or `shots_from_test` per type moved out of test/ into `shots` and `excluded`. num_shots=0: no shots.
    """
    root = Path(root)
    if defects_dir is not None and shots_from_test > 0:
        raise ConfigError("give either a few-shot defect folder or shots_from_test, not both")
    if shots_from_test < 0 or num_shots < 0:
        raise ConfigError("shots_from_test and num_shots must be >= 0")
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; expected the {MVTEC_LAYOUT}, or the {GENERIC_LAYOUT}")
    notes: list[str] = []
    if (root / "train").is_dir():
        layout = "mvtec"
        train, test = _load_mvtec(root)
    elif (root / GOOD).is_dir():
        layout = "generic"
        train, test = _load_generic(root, seed, notes)
    else:
        raise DataError(f"{root} has neither train/ nor good/; expected the {MVTEC_LAYOUT}, or the {GENERIC_LAYOUT}")
    train_size, train_aspect = _size_note(train, notes)
    _note_unmasked(test, notes)

    rng = np.random.default_rng(seed)
    excluded: list[Sample] = []
    shots: list[Sample] = []
    if shots_from_test > 0:
        if (root / "defects").is_dir():
            notes.append(f"shots_from_test={shots_from_test}: {root / 'defects'} is not used")
        shots = _take_from_test(test, shots_from_test, rng, notes)
        excluded = list(shots)
        taken = {id(s) for s in shots}
        test = [s for s in test if id(s) not in taken]
    elif num_shots > 0:
        if defects_dir is None and (root / "defects").is_dir():
            defects_dir = root / "defects"
            notes.append(f"few-shot defects from {defects_dir}")
        if defects_dir is not None:
            shots = _stratified(_load_defects_dir(Path(defects_dir)), num_shots, rng)

    meta = _read_meta(root / "meta.json")
    seen_types = sorted(meta["seen"]) if "seen" in meta else sorted({s.defect for s in shots})
    foreground = meta.get("foreground") or _guess_foreground(root.name, notes)
    for s in test + excluded + shots:
        s.seen = (s.defect in seen_types) if s.label else None
    return Category(root.name, root, train, test, shots, excluded, seen_types, foreground, layout, train_size,
                    train_aspect, notes)


def _guess_foreground(name: str, notes: list[str]) -> str:
    if name.lower() in OBJECTS:
        return "estimate"
    if name.lower() not in TEXTURES:
        notes.append(f'no meta.json: category {name!r} treated as a texture (foreground "full"); '
                     f'write {{"foreground": "estimate"}} to meta.json for an object on a background')
    return "full"
