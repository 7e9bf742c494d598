"""File names for per-image outputs: (defect type, stem) of a test sample, safe as path parts."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Tuple

from ..errors import DataError


def sample_id(s: Any) -> Tuple[str, str]:
    """(defect type, stem) of a sample.

    Accepts a (defect_type, stem) pair, or a mapping / object with `defect_type` or `defect`, and
    `stem` or an image path in `path`, `image_path` or `image` (data.dataset.Sample has
    `defect` and `image`).
    """
    if isinstance(s, (tuple, list)) and len(s) == 2:
        defect, stem = s
    else:
        get = s.get if isinstance(s, dict) else (lambda k: getattr(s, k, None))
        defect = _first(get, "defect_type", "defect")
        stem = get("stem")
        if stem is None:
            path = next((p for p in map(get, ("path", "image_path", "image"))
                         if isinstance(p, (str, os.PathLike))), None)
            stem = Path(path).stem if path is not None else None
        if defect is None or stem is None:
            raise DataError(f"sample {s!r}: need a defect type (defect_type or defect) and a stem "
                            "(stem, or an image path in path / image_path / image)")
    return component(defect, "defect type"), component(stem, "stem")


def _first(get, *keys):
    return next((v for v in map(get, keys) if v is not None), None)


def component(name: Any, what: str) -> str:
    """One path component, and nothing that would escape the output folder."""
    name = str(name)
    if not name or name in (".", "..") or re.search(r"[\\/\x00]", name):
        raise DataError(f"{what} {name!r} cannot be used as a folder or file name")
    return name


def safe_filename(name: str) -> str:
    # Only portable characters: user-supplied type names end up in file names.
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip(".") or "_"
