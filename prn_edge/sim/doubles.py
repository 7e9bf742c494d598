"""Test doubles for the line: engines with scripted verdicts and outputs that only record.

They exist for tests and the loop benchmark (a null engine measures the loop, not a model); never configure
them on a production line.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from ..artefact import InputSpec
from ..line.decision import Part
from ..line.errors import OutputError
from ..line.outputs.base import RejectOutput
from ..runtime.base import Engine


class ScriptedEngine(Engine):
    """TEST DOUBLE of the runtime's Engine contract (it is one: activation, frame checks, batching, the decision
    from its metadata all come from prn_edge.runtime.Engine). Scores come from score_fn(frame) (default 0: all
    good), each call sleeps delay_s (a number or a function of the call index), calls whose index is in fail_on
    raise."""

    backend = "scripted"

    def __init__(self, height: int, width: int, channels: int = 3, score_fn: Optional[Callable[[np.ndarray], float]] = None,
                 delay_s: float | Callable[[int], float] = 0.0, fail_on: Iterable[int] | Callable[[int], bool] = (),
                 threshold: float = 0.5, spread: float = 1.0, maps: bool = True):
        spec = InputSpec(name="frames", format="uint8", layout="NHWC", batch=None, height=height, width=width,
                         channels=channels, channel_order="mono" if channels == 1 else "rgb",
                         model_height=height, model_width=width, value_range=(0.0, 255.0))
        super().__init__(Path(type(self).__name__), {"image_threshold": threshold, "score_spread": spread}, spec)
        self.score_fn = score_fn
        self.delay_s = delay_s
        self._fail = fail_on if callable(fail_on) else set(fail_on).__contains__
        self._maps = maps
        self.calls = 0
        self.frames_seen = 0
        self._lock = threading.Lock()

    def _activate(self) -> None:
        pass

    def _release(self) -> None:
        pass

    def _run(self, frames: np.ndarray, timings: dict) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        with self._lock:
            i = self.calls
            self.calls += 1
            self.frames_seen += len(frames)
        delay = self.delay_s(i) if callable(self.delay_s) else self.delay_s
        if delay > 0:
            time.sleep(delay)
        if self._fail(i):
            raise RuntimeError(f"ScriptedEngine: scripted failure of call {i}")
        n = len(frames)
        scores = np.array([self.score_fn(f) if self.score_fn else 0.0 for f in frames], np.float32)
        s = self.input_spec
        maps = (np.broadcast_to(scores[:, None, None], (n, s.height, s.width)) if self._maps
                else np.zeros((n, 1, 1), np.float32))
        timings["compute"] += time.perf_counter() - t0
        return maps, scores


class NullEngine(ScriptedEngine):
    """TEST DOUBLE: every frame good at once, no maps; measures the loop without a model."""

    def __init__(self, height: int, width: int, channels: int = 3):
        super().__init__(height, width, channels, maps=False)


class RecordingOutput(RejectOutput):
    """TEST DOUBLE output: keeps every part it is given and every heartbeat; `fail` makes it raise like a dead
    device. By default it records like the decisions CSV (an audit output: every part, after the actuators,
    never dropped); audit=False makes it an actuator (a command that cannot be in time is dropped as stale)."""

    def __init__(self, name: str = "recorder", at: str = "eject", audit: bool = True):
        self.name, self.at, self.audit = name, at, audit
        self.parts: list[Part] = []
        self.times: list[float] = []
        self.heartbeats: list[int] = []
        self.fail = False

    def actuate(self, part: Part) -> None:
        if self.fail:
            raise OutputError(f"{self.name}: scripted failure")
        self.parts.append(part)
        self.times.append(time.monotonic())

    def heartbeat(self, counter: int) -> None:
        if not self.fail:
            self.heartbeats.append(counter)


class FakeGpioChip:
    """FAKE of a libgpiod line request (no GPIO hardware here): records (time, offset, level) writes.
    Pass `FakeGpioChip().factory` as GpioOutput(chip_factory=...)."""

    def __init__(self):
        self.writes: list[tuple[float, int, bool]] = []
        self.requested: list[int] = []
        self.released = False

    def factory(self, chip: str, offsets: list[int], consumer: str) -> "FakeGpioChip":
        self.chip, self.requested = chip, list(offsets)
        return self

    def set_value(self, offset: int, level: bool) -> None:
        if offset not in self.requested:
            raise ValueError(f"line {offset} was not requested")
        self.writes.append((time.monotonic(), offset, level))

    def release(self) -> None:
        self.released = True
