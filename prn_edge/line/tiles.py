"""Regions, tiles and line-scan assembly: from camera frames to the model's input and back to one map per part.

A region (ROI) is cut from each frame; it is given to the model whole (its size must be the engine's frame, or
resized when allowed) or split into tiles of the engine's frame size (height x width, the model's H x W for an
artefact exported at the model size) that overlap. Tile maps, their letterbox padding dropped, are blended back
into one map per part with a weight window (high in a tile's centre, low at its border), and the part is defective
when any tile is (its score is the highest tile score). The tile geometry is prn_edge.tiling's, the one evaluation
uses too. An artefact of input policy "tiles" takes tiles cut at native resolution: its regions are tiled, never
resized.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from ..data.fit import fit_image
from ..input_policy import placement
from ..tiling import DEFAULT_OVERLAP, TileGrid
from .engine import EngineInput
from .errors import LineConfigError, SourceExhausted
from .sources.base import Frame, FrameSource


@dataclass(frozen=True)
class Region:
    x: int
    y: int
    width: int
    height: int

    @classmethod
    def of(cls, roi: Sequence[int], frame_hw: tuple[int, int]) -> "Region":
        """From config (x, y, width, height); empty = the whole frame. Checked against the frame size."""
        fh, fw = frame_hw
        if not roi:
            return cls(0, 0, fw, fh)
        if len(roi) != 4 or any(int(v) != v or v < 0 for v in roi):
            raise LineConfigError(f"region.roi={list(roi)}: give [x, y, width, height] in pixels, or [] for the whole frame")
        x, y, w, h = (int(v) for v in roi)
        if w <= 0 or h <= 0 or x + w > fw or y + h > fh:
            raise LineConfigError(f"region.roi={list(roi)} does not fit the {fw}x{fh} camera frame "
                                  f"(need x + width <= {fw}, y + height <= {fh})")
        return cls(x, y, w, h)

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y:self.y + self.height, self.x:self.x + self.width]


def convert_channels(image: np.ndarray, order: str) -> np.ndarray:
    """An (H, W, 1|3) RGB/mono frame in the channel order the engine takes (rgb, bgr or mono)."""
    c = image.shape[2]
    if order == "mono":
        return image if c == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    rgb = np.repeat(image, 3, axis=2) if c == 1 else image
    return rgb[..., ::-1] if order == "bgr" else rgb


class Preprocessor:
    """Frame -> engine input for one part (ROI, channels, resize or tiles), and engine output -> part verdict.

    Built once before the line starts; raises LineConfigError when the camera cannot give what the model takes.
    """

    def __init__(self, frame_shape: tuple[int, int, int], engine: EngineInput, roi: Sequence[int] = (),
                 tiles: bool = False, overlap: int = DEFAULT_OVERLAP, resize: bool = False):
        fh, fw, fc = frame_shape
        self.frame_shape = tuple(frame_shape)
        self.engine = engine
        self.region = Region.of(roi, (fh, fw))
        r = self.region
        self.resize = False
        self.grid: Optional[TileGrid] = None
        if fc not in (1, 3):
            raise LineConfigError(f"the camera gives {fc}-channel frames; the line takes mono (1) or RGB (3)")
        if tiles:
            if not 0 <= overlap < min(engine.height, engine.width):
                raise LineConfigError(f"region.overlap={overlap} must be >= 0 and smaller than the tile "
                                      f"({engine.width}x{engine.height} px)")
            if r.height < engine.height or r.width < engine.width:
                raise LineConfigError(
                    f"region {r.width}x{r.height} is smaller than the model input {engine.width}x{engine.height}: "
                    "enlarge region.roi or the camera Width/Height, or export the model for a smaller input")
            self.grid = TileGrid(r.height, r.width, engine.height, engine.width, overlap)
        elif (r.height, r.width) != (engine.height, engine.width):
            if engine.fit == "tiles":
                raise LineConfigError(
                    f"the model was trained on {engine.width}x{engine.height} tiles cut at native resolution (width x "
                    f"height; input policy tiles) but the camera region is {r.width}x{r.height}: set region.tiles: "
                    f"true to split it into tiles (a region at least {engine.width}x{engine.height}), or set region.roi to a "
                    f"{engine.width}x{engine.height} window; it is never resized (region.resize does not apply)")
            if not resize:
                raise LineConfigError(
                    f"the model takes {engine.width}x{engine.height} frames (width x height) but the camera region "
                    f"is {r.width}x{r.height}: set region.roi to a {engine.width}x{engine.height} window, set "
                    "region.tiles: true to split it into model-size tiles, set region.resize: true, or set the "
                    "camera's width/height")
            if engine.fit == "letterbox" and abs((r.width / r.height) / (engine.width / engine.height) - 1) > 0.01:
                raise LineConfigError(
                    f"the model keeps the aspect ratio (input policy letterbox) but region.resize would stretch the "
                    f"{r.width}x{r.height} region to its {engine.width}x{engine.height} frames; export the model "
                    f"with --input-size {r.height}x{r.width} (it letterboxes inside the graph) and drop region.resize")
            self.resize = True

    @property
    def frames_per_part(self) -> int:
        return len(self.grid) if self.grid is not None else 1

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """(frames_per_part, H, W, C) uint8 for the engine."""
        roi = convert_channels(self.region.crop(image), self.engine.channel_order)
        if self.grid is not None:
            return self.grid.split(roi)
        if self.resize:
            # training's resampling (area down, linear up, per axis), not cv2's INTER_AREA: a resized frame must
            # reach the engine as the training images reached the model
            roi = fit_image(roi, (self.engine.height, self.engine.width), "stretch")[0]  # keeps a mono channel axis
        return np.ascontiguousarray(roi)[None]

    def frame_map(self, amap: np.ndarray) -> np.ndarray:
        """An engine map (model resolution, any shape) without the letterbox padding the model added around the
        engine's frame: the part that shows the frame, which a tile or the region is stitched or drawn from."""
        fit = "stretch" if self.engine.fit == "tiles" else self.engine.fit  # a tile frame is all model input
        return placement((self.engine.height, self.engine.width), amap.shape, fit).crop(amap)

    def combine(self, scores: np.ndarray, normalized: np.ndarray, decisions: np.ndarray,
                maps: Optional[np.ndarray]) -> tuple[float, float, bool, Optional[np.ndarray]]:
        """(score, normalized, defective, map over the region) of one part from its tiles' results."""
        amap = None
        if maps is not None:
            maps = [self.frame_map(m) for m in maps]
            amap = self.grid.stitch(maps) if self.grid is not None else maps[0]
        return float(scores.max()), float(normalized.max()), bool(decisions.any()), amap


class LineScanAssembler(FrameSource):
    """Assembles a line-scan camera's line blocks (h x W x C, h >= 1) into part frames of `frame_height` lines.

    mode "length": every frame_height lines are one part. mode "trigger": a part runs from one trigger to the
    next, where a trigger is a change of the block's part_id (latched from the trigger input); its lines are
    resized to frame_height, so parts of varying length (speed jitter) reach the model alike.
    """

    counts_parts = False

    def __init__(self, source: FrameSource, frame_height: int, mode: str = "length"):
        if mode not in ("length", "trigger"):
            raise LineConfigError(f"source.linescan.mode={mode!r} is not allowed; choose one of ['length', 'trigger']")
        if frame_height < 1:
            raise LineConfigError("source.linescan.frame_height must be >= 1")
        self.source, self.frame_height, self.mode = source, frame_height, mode
        self.name = f"linescan({source.name})"
        self._rows: list[np.ndarray] = []
        self._first: Optional[Frame] = None
        self._count = 0
        self._pending: Optional[Frame] = None

    def open(self) -> None:
        self.source.open()

    def close(self) -> None:
        self.source.close()

    def geometry(self) -> tuple[int, int, int]:
        _, w, c = self.source.geometry()
        return self.frame_height, w, c

    @property
    def healthy(self) -> bool:
        return self.source.healthy

    def _emit(self) -> Frame:
        rows = np.concatenate(self._rows, axis=0)
        first = self._first
        if self.mode == "length":
            image, rest = rows[: self.frame_height], rows[self.frame_height:]
            self._rows = [rest] if len(rest) else []
        else:
            image = rows
            if len(rows) != self.frame_height:
                image = cv2.resize(rows, (rows.shape[1], self.frame_height), interpolation=cv2.INTER_AREA)
                image = image.reshape(self.frame_height, rows.shape[1], -1)
            self._rows = []
        frame = Frame(np.ascontiguousarray(image), self._count, host_ts=time.monotonic(), camera_ts=first.camera_ts,
                      trigger_ts=first.t_capture, part_id=first.part_id, label=first.label, defect=first.defect,
                      origin=first.origin)
        self._count += 1
        self._first = self._last if self._rows else None  # leftover lines belong to the block that brought them
        return frame

    def grab(self, timeout: float) -> Frame:
        while True:
            if self.mode == "length" and sum(len(r) for r in self._rows) >= self.frame_height:
                return self._emit()
            try:
                block = self._pending or self.source.grab(timeout)
            except SourceExhausted:
                if self.mode == "trigger" and self._rows:
                    return self._emit()  # the last part ends with the stream
                raise
            self._pending = None
            if self.mode == "trigger" and self._rows and block.part_id != self._first.part_id:
                self._pending = block  # first block of the next part
                return self._emit()
            if self._first is None:
                self._first = block
            self._last = block
            self._rows.append(block.image)
