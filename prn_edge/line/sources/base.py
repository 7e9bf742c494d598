"""The frame-source contract and the bounded, age-limited frame queue the sources share.

    with source:                      # opens the camera / file / dataset, closes it on exit
        frame = source.grab(timeout)  # Frame, or raises CameraTimeout / CorruptFrame / SourceExhausted
"""
from __future__ import annotations

import abc
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import CameraTimeout


@dataclass
class Frame:
    image: np.ndarray  # uint8 (H, W, C), C = 1 (mono) or 3 (RGB)
    frame_id: int  # the source's frame counter (camera frame id, part index, file index)
    host_ts: float  # time.monotonic() when the frame reached the host
    camera_ts: int = 0  # device timestamp as the camera gives it (informational: units and epoch vary)
    trigger_ts: Optional[float] = None  # time.monotonic() of the trigger / exposure when the source knows it
    part_id: Optional[int] = None  # ground truth, where the source knows it (synthetic conveyor, labelled folder)
    label: Optional[int] = None  # 0 good, 1 defective
    defect: Optional[str] = None  # defect type, "good" for normals
    origin: str = ""  # where the frame came from when a source knows more than its id (the folder source: the file)

    @property
    def t_capture(self) -> float:
        """Best known time the part was imaged: the trigger when known, else host arrival."""
        return self.host_ts if self.trigger_ts is None else self.trigger_ts


class FrameSource(abc.ABC):
    """One contract for cameras, files and simulators. Subclasses implement `open`, `close`, `grab`."""

    name = "source"
    # True when consecutive frame ids are consecutive parts, so a gap in the ids is a part without a frame.
    counts_parts = False

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abc.abstractmethod
    def open(self) -> None:
        ...

    @abc.abstractmethod
    def close(self) -> None:
        ...

    @abc.abstractmethod
    def grab(self, timeout: float) -> Frame:
        """The next frame; raises CameraTimeout after `timeout` s, CorruptFrame, or SourceExhausted at the end."""

    def geometry(self) -> tuple[int, int, int]:
        """(height, width, channels) of the frames `grab` will return; valid after `open`."""
        raise NotImplementedError

    @property
    def healthy(self) -> bool:
        """False while the source is disconnected (the watchdog then stops the PLC heartbeat)."""
        return True

    @property
    def dropped(self) -> int:
        """Frames the source discarded (queue overflow, too old); the loop reports them."""
        return 0


class FrameQueue:
    """A bounded FIFO of frames that drops the oldest when full and discards frames older than max_age_s.

    maxlen=1 is NewestOnly. `dropped` counts both kinds of discard.
    """

    def __init__(self, maxlen: int, max_age_s: float = 0.0):
        self._items: deque[Frame] = deque()
        self._maxlen = max(1, int(maxlen))
        self._max_age = float(max_age_s)
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            while len(self._items) >= self._maxlen:
                self._items.popleft()
                self.dropped += 1
            self._items.append(frame)
            self._cond.notify()

    def clear(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self.dropped += n
            return n

    def __len__(self) -> int:
        return len(self._items)

    def get(self, timeout: float) -> Frame:
        """The oldest frame that is not too old; raises CameraTimeout when none arrives in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                while self._items and self._max_age > 0 and now - self._items[0].host_ts > self._max_age:
                    self._items.popleft()
                    self.dropped += 1
                if self._items:
                    return self._items.popleft()
                if now >= deadline:
                    raise CameraTimeout(f"no frame within {timeout:.3f} s")
                self._cond.wait(deadline - now)


class Pacer:
    """A fixed-rate schedule t_k = start + k / rate that never drifts: a late consumer gets past ticks at once
    (as parts on a belt keep coming whether the inspection keeps up or not). The schedule starts at the first
    wait_next (or at `start`), so a line that is still warming up does not find parts already overdue.
    rate 0 = no pacing."""

    def __init__(self, rate_hz: float, start: Optional[float] = None):
        self.period = 1.0 / rate_hz if rate_hz > 0 else 0.0
        self.start = start
        self.index = 0

    def wait_next(self, timeout: float) -> Optional[float]:
        """Sleep until the next tick and return its time, or None (after sleeping `timeout`) if it is further."""
        if self.start is None:
            self.start = time.monotonic()
        t = self.start + self.index * self.period if self.period else time.monotonic()
        wait = t - time.monotonic()
        if wait > timeout:
            time.sleep(max(0.0, timeout))
            return None
        if wait > 0:
            time.sleep(wait)
        self.index += 1
        return t
