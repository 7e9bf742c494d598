"""A simulated conveyor: parts from a dataset category pass the camera at a set rate, with known ground truth.

Each part is one test image (good or a defect type, in a seeded shuffled order). Faults can be injected per part
(explicit part ids or probabilities): `drop` loses the frame silently (the next frame id shows the gap),
`timeout` makes the grab time out for that part, `corrupt` delivers a truncated frame.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Tuple

import numpy as np

from ...data.dataset import load_category
from ...data.images import read_image, resize
from .. import registry
from ..errors import CameraTimeout, LineConfigError, SourceExhausted
from .base import Frame, FrameSource, Pacer

log = logging.getLogger(__name__)

FAULTS = ("drop", "timeout", "corrupt")


class SyntheticConveyor(FrameSource):
    name = "conveyor"
    counts_parts = True

    def __init__(self, dataset: str | Path, rate_hz: float = 20.0, parts: int = 100, seed: int = 0, size: int = 0,
                 max_images: int = 64, faults: Optional[dict[str, Iterable[int]]] = None,
                 fault_rates: Optional[dict[str, float]] = None):
        """dataset: a category folder (MVTec AD layout, e.g. a demo category); parts: how many (0 = endless);
        size: resize images to size x size (0 = as stored); max_images: test images held in memory."""
        if rate_hz <= 0:
            raise LineConfigError(f"source.conveyor.rate_hz={rate_hz}: must be > 0 (parts per second)")
        if parts < 0 or max_images < 1:
            raise LineConfigError(f"source.conveyor.parts={parts} must be >= 0 (0 = endless) and "
                                  f"source.conveyor.max_images={max_images} >= 1")
        unknown = set(faults or {}) | set(fault_rates or {})
        if unknown - set(FAULTS):
            raise LineConfigError(f"conveyor faults {sorted(unknown - set(FAULTS))} are unknown; choose from {FAULTS}")
        self.dataset = Path(dataset)
        self.rate_hz = float(rate_hz)
        self.parts = int(parts)
        self.seed = seed
        self.size = size or None
        self.max_images = max_images
        self._faults = {k: set(int(i) for i in v) for k, v in (faults or {}).items()}
        self._rates = dict(fault_rates or {})
        self._samples: list[tuple[np.ndarray, int, str]] = []
        self._pacer: Optional[Pacer] = None
        self._next = 0

    def open(self) -> None:
        category = load_category(self.dataset, num_shots=0)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(category.test))[: self.max_images]
        self._samples = [(read_image(category.test[i].image, self.size), category.test[i].label,
                          category.test[i].defect) for i in order]
        # one camera's frames have one size, the most common one: real datasets come in several (BSData's two
        # crops were fail-safe parts as "corrupt frames" otherwise)
        sizes = Counter(img.shape[:2] for img, _, _ in self._samples)
        (h, w), _ = sizes.most_common(1)[0] if sizes else ((0, 0), 0)
        odd = sum(img.shape[:2] != (h, w) for img, _, _ in self._samples)
        if odd:
            log.warning("conveyor: %d of %d images are not %dx%d (height x width) like most: resized to it as one "
                        "camera's frames; set source.conveyor.size for squares of your choice", odd,
                        len(self._samples), h, w)
            self._samples = [(img if img.shape[:2] == (h, w) else resize(img, w, h), label, defect)
                             for img, label, defect in self._samples]
        for img, _, _ in self._samples:
            img.setflags(write=False)  # shared by every part showing it: nobody may draw on it
        self._rng = np.random.default_rng([self.seed, 1])
        self._pacer = Pacer(self.rate_hz)
        self._next = 0

    def close(self) -> None:
        self._samples = []

    def geometry(self) -> tuple[int, int, int]:
        h, w, c = self._samples[0][0].shape
        return h, w, c

    def fault_for(self, part: int) -> Optional[str]:
        for kind in FAULTS:
            if part in self._faults.get(kind, ()):
                return kind
        for kind in FAULTS:  # one draw per kind and part keeps the sequence reproducible for a seed
            if self._rates.get(kind, 0.0) > 0 and self._rng.random() < self._rates[kind]:
                return kind
        return None

    def grab(self, timeout: float) -> Frame:
        while True:
            if self.parts and self._next >= self.parts:
                raise SourceExhausted(f"conveyor: all {self.parts} parts have passed", frame_id=self.parts - 1)
            t = self._pacer.wait_next(timeout)
            if t is None:
                raise CameraTimeout(f"conveyor: no part within {timeout:.3f} s")
            k = self._next
            self._next += 1
            fault = self.fault_for(k)
            if fault == "drop":
                continue
            if fault == "timeout":
                time.sleep(min(timeout, self._pacer.period))
                raise CameraTimeout(f"conveyor: the frame of part {k} did not arrive", frame_id=k,
                                    part_expected=True, t_expected=t)
            image, label, defect = self._samples[k % len(self._samples)]
            if fault == "corrupt":
                image = image[: image.shape[0] // 2]  # a truncated transfer
            return Frame(image, k, host_ts=time.monotonic(), trigger_ts=t, part_id=k, label=label, defect=defect)


@dataclass
class ConveyorOptions:
    """source.conveyor: a simulated conveyor serving a dataset's test images as parts, with scripted faults."""
    dataset: str = ""  # a category folder (MVTec AD layout), e.g. a demo dataset category
    rate_hz: float = 20.0
    parts: int = 100  # 0 = endless
    seed: int = 0
    size: int = 0
    max_images: int = 64
    drop: Tuple[int, ...] = ()  # part ids whose frame is lost
    timeout: Tuple[int, ...] = ()  # part ids whose grab times out
    corrupt: Tuple[int, ...] = ()  # part ids whose frame arrives truncated
    p_drop: float = 0.0
    p_timeout: float = 0.0
    p_corrupt: float = 0.0


def _conveyor(o: ConveyorOptions, ctx: dict) -> SyntheticConveyor:
    return SyntheticConveyor(o.dataset, o.rate_hz, o.parts, o.seed, o.size, o.max_images,
                             faults={"drop": o.drop, "timeout": o.timeout, "corrupt": o.corrupt},
                             fault_rates={"drop": o.p_drop, "timeout": o.p_timeout, "corrupt": o.p_corrupt})


registry.source("conveyor", ConveyorOptions, _conveyor, paths=("dataset",), needs=("dataset",))
