"""Sources that replay recorded frames: a folder of images and a video file (cv2.VideoCapture), at a set rate."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ...data.dataset import GOOD
from ...data.fit import fit_image
from ...data.images import list_images, read_image
from ...errors import DataError
from .. import registry
from ..errors import CameraTimeout, CorruptFrame, LineConfigError, SourceExhausted
from .base import Frame, FrameSource, Pacer

log = logging.getLogger(__name__)


def _label_of(path: Path) -> tuple[Optional[int], Optional[str]]:
    """Ground truth from an MVTec-style folder name: .../good/x.png is good, .../test/<type>/x.png a defect."""
    parent = path.parent.name
    if parent == GOOD:
        return 0, GOOD
    if path.parent.parent.name == "test":
        return 1, parent
    return None, None


class ImageFolderSource(FrameSource):
    name = "folder"

    def __init__(self, folder: str | Path, rate_hz: float = 10.0, loop: bool = False, size: int = 0):
        """folder: images replayed as parts at rate_hz (size: resized to size x size, 0 = as stored). Resizing is
        training's (data.fit.fit_image, stretched), so a replayed image reaches the model as it did in training."""
        self.folder = Path(folder)
        self.rate_hz = rate_hz
        self.loop = loop
        self.size = size or None
        self._files: list[Path] = []
        self._i = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise LineConfigError(f"source.folder.path={str(self.folder)!r} is not a folder of images")
        try:
            self._files = list_images(self.folder, where=f"source.folder.path={str(self.folder)!r}")
        except DataError as e:
            raise LineConfigError(str(e)) from None
        if not self._files:
            raise LineConfigError(f"source.folder.path={str(self.folder)!r} holds no images (png, jpg, bmp, tif)")
        self._pacer = Pacer(self.rate_hz)
        self._i = 0
        self._resized = False
        for path in self._files:  # the frame size is the first readable image's
            try:
                self._shape = self._read(path).shape
                break
            except DataError:
                continue
        else:
            raise LineConfigError(f"source.folder.path={str(self.folder)!r}: none of its images can be read")

    def _read(self, path: Path) -> np.ndarray:
        image = read_image(path)
        return image if self.size is None else fit_image(image, (self.size, self.size), "stretch")[0]

    def close(self) -> None:
        self._files = []

    def geometry(self) -> tuple[int, int, int]:
        return self._shape

    def grab(self, timeout: float) -> Frame:
        if self._i >= len(self._files) and not self.loop:
            raise SourceExhausted(f"folder {self.folder}: all {len(self._files)} images were shown")
        t = self._pacer.wait_next(timeout)
        if t is None:
            raise CameraTimeout(f"folder source: next image is more than {timeout:.3f} s away")
        k = self._i
        self._i += 1
        path = self._files[k % len(self._files)]
        try:
            image = self._read(path)
        except Exception as e:  # a damaged file is a corrupt frame for this part, not the end of the line
            raise CorruptFrame(f"{path}: {e}", frame_id=k, part_expected=True, t_expected=t) from None
        if image.shape != self._shape:  # one camera's frames have one size: the first image's
            if not self._resized:
                log.warning("folder source: %s is %dx%d, resized to the first image's %dx%d (height x width) as one "
                            "camera's frames; set source.folder.size for squares of your choice", path.name,
                            image.shape[0], image.shape[1], self._shape[0], self._shape[1])
                self._resized = True
            image = fit_image(image, self._shape[:2], "stretch")[0]
        label, defect = _label_of(path)
        return Frame(image, k, host_ts=time.monotonic(), trigger_ts=t, part_id=k, label=label, defect=defect,
                     origin=str(path.relative_to(self.folder)))


class VideoFileSource(FrameSource):
    name = "video"

    def __init__(self, path: str | Path, rate_hz: float = 0.0, loop: bool = False):
        """rate_hz 0: the file's own frame rate (or 25 when the file does not say)."""
        self.path = Path(path)
        self.rate_hz = rate_hz
        self.loop = loop
        self._cap = None
        self._i = 0

    def open(self) -> None:
        if not self.path.is_file():
            raise LineConfigError(f"source.video.path={str(self.path)!r} does not exist")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise LineConfigError(f"source.video.path={str(self.path)!r}: OpenCV cannot open it; "
                                  "convert it to an MJPEG .avi or H.264 .mp4")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        self._pacer = Pacer(self.rate_hz or (fps if 0 < fps < 1000 else 25.0))
        self._shape = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), 3)
        self._i = 0

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def geometry(self) -> tuple[int, int, int]:
        return self._shape

    def grab(self, timeout: float) -> Frame:
        t = self._pacer.wait_next(timeout)
        if t is None:
            raise CameraTimeout(f"video source: next frame is more than {timeout:.3f} s away")
        ok, bgr = self._cap.read()
        if not ok and self.loop and self._i > 0:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        if not ok:
            raise SourceExhausted(f"video {self.path}: end after {self._i} frames")
        k = self._i
        self._i += 1
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return Frame(rgb, k, host_ts=time.monotonic(), trigger_ts=t, part_id=k)


@dataclass
class FolderOptions:
    """source.folder: the images of a folder, replayed as parts."""
    path: str = ""
    rate_hz: float = 10.0
    loop: bool = False
    size: int = 0


@dataclass
class VideoOptions:
    """source.video: the frames of a video file."""
    path: str = ""
    rate_hz: float = 0.0  # 0 = the file's frame rate
    loop: bool = False


registry.source("folder", FolderOptions, lambda o, ctx: ImageFolderSource(o.path, o.rate_hz, o.loop, o.size),
                paths=("path",), needs=("path",))
registry.source("video", VideoOptions, lambda o, ctx: VideoFileSource(o.path, o.rate_hz, o.loop),
                paths=("path",), needs=("path",))
