"""Foreign textures for simulated anomalies: real photos bundled offline, or a folder of your own."""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from ...errors import DataError
from ...input_policy import as_hw
from ..images import is_image_file, read_image
from ..photos import load_photo

# Bundled scikit-image photos. brick, grass, gravel and coins are left out: the demo dataset is made
# of them, and a "foreign" texture taken from the very surface under inspection would not be foreign.
BUILTIN_PHOTOS = ("coffee", "chelsea", "rocket", "astronaut", "immunohistochemistry", "moon", "camera", "cell",
                  "hubble_deep_field", "page")
MIN_STD = 8.0  # tiles flatter than this (sky, blank paper) teach nothing


def _square(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(img[y0:y0 + s, x0:x0 + s]), (size, size), interpolation=interp)


@functools.lru_cache(maxsize=4)
def _builtin(size: int) -> tuple[np.ndarray, ...]:
    tiles = []
    for name in BUILTIN_PHOTOS:
        try:
            photo = load_photo(name)
        except DataError:
            continue  # an older scikit-image may lack one; the others suffice
        h, w = photo.shape[:2]
        s = min(h, w) // 2  # four-ish tiles per photo give more variety than one resized photo
        for y in range(0, h - s + 1, s):
            for x in range(0, w - s + 1, s):
                tile = _square(photo[y:y + s, x:x + s], size)
                if tile.std() >= MIN_STD:
                    tile.setflags(write=False)
                    tiles.append(tile)
    if not tiles:
        raise DataError("no built-in texture photos are available (scikit-image sample data missing); "
                        "set synth.texture_dir to a folder of texture images")
    return tuple(tiles)


def tile_side(size: int | tuple[int, int]) -> int:
    """The side of the square texture tiles for a model input of `size` (one side, or (height, width)): its
    longer side, so a tile turned either way covers the whole input."""
    return max(as_hw(size))


def builtin_textures(size: int | tuple[int, int]) -> list[np.ndarray]:
    """Square uint8 tiles (tile_side(size), 3 channels) of real photos shipped with scikit-image (read-only)."""
    return list(_builtin(tile_side(size)))


def load_texture_dir(path: str | Path, size: int | tuple[int, int]) -> list[np.ndarray]:
    """Every image under `path` (recursively), centre-cropped to a square and resized to tile_side(size)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"texture folder {path} does not exist; give a folder of images (e.g. DTD) or leave it empty")
    files = sorted(p for p in path.rglob("*") if is_image_file(p))
    if not files:
        raise DataError(f"texture folder {path} holds no images (.png, .jpg, .bmp, .tif)")
    return [_square(read_image(p), tile_side(size)) for p in files]
