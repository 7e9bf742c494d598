"""Every part gets a sequence number at capture and exactly one decision: the line's part ledger.

It numbers the parts and registers each with the reject scheduler, makes the parts a frame-counting camera
missed (their capture times interpolated between the frames around them) and decides them fail-safe, and
keeps the records of decided parts (without pixels or maps).
"""
from __future__ import annotations

import dataclasses
import time
from collections import deque
from typing import Optional

import numpy as np

from .decision import Part
from .errors import CameraError, SourceExhausted
from .monitor import LineMetrics
from .sources.base import Frame
from .timing import Budget, RejectScheduler


class PartLedger:
    def __init__(self, budget: Budget, scheduler: RejectScheduler, metrics: LineMetrics, keep_records: int):
        self._budget, self._scheduler, self._metrics = budget, scheduler, metrics
        self.seq = 0  # parts seen: the next part's number
        self.finals = 0  # parts decided and fired
        self.records: deque[Part] = deque(maxlen=keep_records)
        self.counting = False  # the source numbers its frames, one per part (set once the source is open)
        self._expected: Optional[int] = None  # the frame id the next part should come with
        self._t_prev: Optional[float] = None  # capture time of the previous part

    # ------------------------------------------------------------------ capture
    def new(self, t_capture: float, frame: Optional[Frame] = None, frame_id: Optional[int] = None) -> Part:
        part = self._budget.part(self.seq, t_capture)
        part.frame = frame
        part.frame_id = frame.frame_id if frame is not None else frame_id
        self.seq += 1
        self._metrics.parts.inc()
        self._scheduler.register(part)
        return part

    def captured(self, frame: Frame) -> Optional[Part]:
        """The part of a grabbed frame, after the parts missed since the last one; None for a stale frame (older
        than one seen already), which belongs to no new part."""
        if self.counting:
            if self._expected is not None and frame.frame_id < self._expected:
                return None
            if self._expected is not None and frame.frame_id > self._expected:
                self._missing(self._expected, frame.frame_id - 1, frame.t_capture)
            self._expected = frame.frame_id + 1
        self._t_prev = frame.t_capture
        return self.new(frame.t_capture, frame)

    def camera_error(self, e: CameraError, cause: str) -> None:
        """A frame lost or corrupted by the camera: a part it expected is decided fail-safe for `cause`."""
        if not e.part_expected:
            return
        t = e.t_expected if e.t_expected is not None else time.monotonic()
        if self.counting and e.frame_id is not None:
            if self._expected is not None and e.frame_id > self._expected:
                self._missing(self._expected, e.frame_id - 1, t)
            self._expected = e.frame_id + 1
        self._scheduler.fail_safe(self.new(t, frame_id=e.frame_id).seq, cause)
        self._t_prev = t

    def source_ended(self, e: SourceExhausted) -> None:
        """The source ended; when it says how many frames it had, the ones never seen were missed."""
        if self.counting and self._expected is not None and e.frame_id is not None and e.frame_id >= self._expected:
            self._missing(self._expected, e.frame_id, time.monotonic())

    def _missing(self, first_id: int, last_id: int, t_next: float) -> None:
        """Parts first_id..last_id passed without a frame; their capture times are interpolated."""
        n = last_id - first_id + 1
        t0 = t_next if self._t_prev is None else self._t_prev
        for i in range(n):
            t = t0 + (t_next - t0) * (i + 1) / (n + 1)
            self._scheduler.fail_safe(self.new(t, frame_id=first_id + i).seq, "missing_frame")

    # ------------------------------------------------------------------ decided
    def record(self, part: Part) -> None:
        """A part decided and fired; its record stays small: no pixels, no map."""
        self.finals += 1
        if part.frame is not None:
            part.frame = dataclasses.replace(part.frame, image=None)
        part.amap = None
        self.records.append(part)

    def decide_p99_ms(self) -> float:
        """p99 of capture -> decision over the last 500 parts (for the status line)."""
        lat = [p.decision.t_decided - p.t_capture for p in list(self.records)[-500:] if p.decision is not None]
        return float(np.quantile(lat, 0.99) * 1000) if lat else 0.0

    @property
    def undecided(self) -> int:
        return self.seq - self.finals
