"""Reading and writing images and masks: one place that turns any file into HxWx3 uint8 RGB."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTS


def check_no_twins(files: list[Path], where: str | Path) -> None:
    """DataError when two image files in one folder share a name (exp0.jpg and exp0.png): raw datasets such as the
    Magnetic Tile Defect dataset keep each mask beside its image under the image's own name, and taken as images the
    masks would silently become normal training images or extra test parts."""
    seen: dict[tuple[Path, str], Path] = {}
    for f in files:
        other = seen.setdefault((f.parent, f.stem), f)
        if other is not f:
            raise DataError(f"{where}: {other.name} and {f.name} in {f.parent} share a name; if one of each such pair "
                            f"is a mask (as in the Magnetic Tile Defect dataset's Imgs folders), rename the masks "
                            "<name>_mask.png (or move them to the layout's mask folder), otherwise rename one "
                            "of the two")


MASK_SUFFIX = "_mask"  # <name>_mask.<ext>: the mask of <name>.<ext> (MVTec AD's ground_truth, shot folders)
MASK_FOLDERS = frozenset({"ground_truth", "masks"})


def list_images(folder: str | Path, recursive: bool = True, where: str | None = None) -> list[Path]:
    """The images of a folder (and below it when `recursive`), sorted: what every command takes as a folder of
    parts (datasets, shot folders, `threshold`, `predict`, `bench --images`, the line's folder source). Skipped:
    masks (`<name>_mask.*`, anything in a ground_truth/ or masks/ folder below) and hidden files (a Mac copy's
    `._name.jpg`). DataError when two images in one folder share a name (a raw dataset's mask beside its image
    under the image's own name); `where` names the folder in that message. An empty list when there are none."""
    root = Path(folder)
    found = root.rglob("*") if recursive else root.iterdir()
    files = sorted(p for p in found if is_image_file(p) and not p.name.startswith(".")
                   and not p.stem.endswith(MASK_SUFFIX) and not MASK_FOLDERS & set(p.relative_to(root).parts[:-1]))
    check_no_twins(files, where or root)
    return files


def sample_image_files(folder: str | Path, count: int) -> list[Path]:
    """At most `count` of a folder's images (list_images), spread evenly over the sorted list (a test/ folder with
    one sub-folder per defect type gives some of each, its good parts too). For checks that compare two models on a
    few images and for benchmarks. DataError when there are none."""
    root = Path(folder)
    files = list_images(root)
    if not files:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTS)}) below it; give a folder of the part's images")
    if len(files) <= count:
        return files
    # exactly `count`, evenly spaced (every k-th would give 14 of 28 files for 20, or the first 64 of 65 for 64)
    return [files[i] for i in np.linspace(0, len(files) - 1, max(1, count)).round().astype(int)]


def _load(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist; check the path or the dataset layout")
    _check_complete(path)  # before decoding: libjpeg would print its own warning about a cut file first
    # IMREAD_UNCHANGED keeps 16-bit depth and alpha so we convert them on purpose, not by accident.
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None or data.size == 0:
        raise DataError(f"{path}: cannot be decoded as an image (corrupt or unsupported format); re-save it as PNG")
    return data


def _check_complete(path: Path) -> None:
    """A JPEG or PNG cut short (an interrupted copy) still decodes: OpenCV fills the missing rows with grey and only
    prints a warning. Such a file ends without its end marker (JPEG EOI, PNG IEND): refused, by name."""
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 64))
        tail = f.read().rstrip(b"\x00 \r\n\t")
    cut = (head[:2] == b"\xff\xd8" and not tail.endswith(b"\xff\xd9")) or \
          (head == b"\x89PNG\r\n\x1a\n" and b"IEND" not in tail)
    if cut:
        raise DataError(f"{path}: the file is cut short (no end marker: an interrupted copy or a full disk); copy "
                        "it again, or remove it from the dataset")


def _to_uint8(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype == np.uint8:
        return data
    if data.dtype == np.uint16:
        return np.round(data / 257.0).astype(np.uint8)
    if data.dtype == np.bool_:
        return data.astype(np.uint8) * 255
    if np.issubdtype(data.dtype, np.floating):
        # Float TIFFs are usually in [0, 1]; anything larger is taken as already 0..255.
        scale = 255.0 if np.nanmax(data) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(data) * scale, 0, 255).round().astype(np.uint8)
    raise DataError(f"{path}: pixel type {data.dtype} is not supported; save it as 8- or 16-bit PNG")


def resize(img: np.ndarray, width: int, height: int, interpolation: int | None = None) -> np.ndarray:
    """To width x height: area averaging when shrinking, bilinear when enlarging, unless told otherwise."""
    if img.shape[1] == width and img.shape[0] == height:
        return img
    if interpolation is None:
        shrinking = width * height < img.shape[0] * img.shape[1]
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interpolation)


def read_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB; grey, grey+alpha and RGBA become RGB, 16-bit is scaled to 8-bit.

    With `size`, the image is resized to size x size (area averaging down, bilinear up).
    """
    path = Path(path)
    data = _to_uint8(_load(path), path)
    if data.ndim == 2:
        rgb = cv2.cvtColor(data, cv2.COLOR_GRAY2RGB)
    elif data.ndim == 3 and data.shape[2] in (1, 2):  # grey (+ alpha): alpha is dropped
        rgb = cv2.cvtColor(np.ascontiguousarray(data[:, :, 0]), cv2.COLOR_GRAY2RGB)
    elif data.ndim == 3 and data.shape[2] == 3:
        rgb = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
    elif data.ndim == 3 and data.shape[2] == 4:
        rgb = cv2.cvtColor(data, cv2.COLOR_BGRA2RGB)
    else:
        raise DataError(f"{path}: image has shape {data.shape}; expected a 2-D grey or colour image")
    if size is not None:
        rgb = resize(rgb, size, size)
    return np.ascontiguousarray(rgb)


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """HxW float32 in {0, 1} (see binarize_mask); resized (nearest) to shape = (h, w)."""
    path = Path(path)
    data = _load(path)
    if data.ndim == 3:
        # Colour masks: a defect in any colour channel counts; alpha (4th) would mark everything.
        data = data[:, :, : min(3, data.shape[2])].max(axis=2) if data.shape[2] != 2 else data[:, :, 0]
    mask = binarize_mask(data).astype(np.uint8)
    mask = resize(mask, shape[1], shape[0], cv2.INTER_NEAREST)
    return mask.astype(np.float32)


def binarize_mask(data: np.ndarray) -> np.ndarray:
    """Defect where a mask reaches half of its own largest value: masks of real datasets are often saved with
    JPEG-like faint noise around 0 and 255. Label images (largest value 1..15, e.g. 0/1 masks) count any non-zero."""
    top = float(data.max()) if data.size else 0.0
    if np.issubdtype(data.dtype, np.floating):
        return data >= (0.5 if top <= 1.0 else top / 2)
    if top <= 15:
        return data != 0
    return data >= top / 2  # half of the mask's own white: 0/255 in 16 bits works too


def _write(path: Path, data: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), data):
        raise DataError(f"{path}: could not write the image; check the extension and that the folder is writable")


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write an HxWx3 uint8 RGB (or HxW grey) image; the format follows the extension (PNG advised)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise DataError(f"{path}: write_image expects uint8 pixels, got {rgb.dtype}; "
                        f"convert with np.clip(...).astype(np.uint8)")
    _write(Path(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb)


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a mask as a 0/255 single-channel PNG (any value > 0 is defect)."""
    _write(Path(path), (np.asarray(mask) > 0).astype(np.uint8) * 255)


def image_header(path: str | Path) -> tuple[int, int, str]:
    """(width, height, PIL mode) read from the file header without decoding the pixels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist; check the path or the dataset layout")
    try:
        with Image.open(path) as im:
            return im.width, im.height, im.mode
    except Exception as e:  # PIL raises many types for broken files
        raise DataError(f"{path}: cannot read the image header ({e}); the file is corrupt or not an image") from None
