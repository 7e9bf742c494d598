"""Real photos that ship inside installed packages (scikit-image's sample data), usable offline."""
from __future__ import annotations

import functools

import numpy as np

from ..errors import DataError


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    try:
        import skimage.data as sk_data

        img = np.asarray(getattr(sk_data, name)())
    except Exception as e:  # missing attribute, or a photo that would need a download
        raise DataError(f"photo skimage.data.{name} is not available offline ({type(e).__name__}: {e}); "
                        f"install scikit-image>=0.22 or give your own texture folder") from None
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float32), 0, 1) * 255).round().astype(np.uint8) if img.dtype != bool \
            else img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = np.ascontiguousarray(img[:, :, :3])
    img.setflags(write=False)  # cached and shared: nobody may change it
    return img


def load_photo(name: str) -> np.ndarray:
    """HxWx3 uint8 RGB photo `skimage.data.<name>` (read-only array; copy before editing)."""
    return _photo(name)
