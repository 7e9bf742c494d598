"""Choosing and recording the images a calibration run uses, so the run can be repeated and audited."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artefact import sha256_file
from ..data.dataset import Sample
from ..data.images import read_image
from ..errors import DataError

MIN_IMAGES = 8


def select_calibration_set(normals: list[Path], n: int, seed: int = 0, shots: list[Sample] | None = None,
                           n_defects: int = 0) -> list[Path]:
    """`n` training normals stratified by brightness (quantile bins, one pick per bin) plus `n_defects` real
    defect shots stratified by type. Deterministic for the same files and seed."""
    if n < MIN_IMAGES:
        raise DataError(f"a calibration set of {n} images is too small to estimate ranges; use at least {MIN_IMAGES}")
    if len(normals) < n:
        raise DataError(f"calibration asks for {n} normal images but the training split has {len(normals)}; "
                        f"lower --size or add images to train/good")
    normals = sorted(normals)
    brightness = np.array([float(read_image(p, 64).mean()) for p in normals])
    order = np.argsort(brightness, kind="stable")
    rng = np.random.default_rng(seed)
    picks = [int(b[rng.integers(len(b))]) for b in np.array_split(order, n)]
    chosen = [normals[i] for i in picks]
    if n_defects:
        by_type: dict[str, list[Path]] = {}
        for s in sorted(shots or [], key=lambda s: str(s.image)):
            by_type.setdefault(s.defect, []).append(Path(s.image))
        if not by_type:
            raise DataError("calibration asked for defect images but the category has no defect shots")
        types = sorted(by_type)
        for i in range(n_defects):
            pool = by_type[types[i % len(types)]]
            if i // len(types) < len(pool):
                chosen.append(pool[i // len(types)])
    return chosen


def describe_files(paths: list[Path]) -> list[dict]:
    """Name, size and sha256 per file: what the manifest records."""
    out = []
    for p in paths:
        try:
            out.append({"path": str(Path(p).resolve()), "bytes": Path(p).stat().st_size, "sha256": sha256_file(Path(p))})
        except OSError as e:
            raise DataError(f"calibration image {p} is unreadable ({e}); remove it or fix its permissions") from None
    return out
