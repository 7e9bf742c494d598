"""One engine for several cameras: micro-batching across lines.

Each camera runs its own Line (source, budget, scheduler, outputs); their inference threads call one
SharedEngine. Calls that arrive within `wait_s` of the first one are stacked into a single engine call of at
most `max_batch` frames, and each caller gets its own slice of the result (an engine error reaches every
caller, whose parts are then decided fail-safe by their own line). On a GPU one batch of N frames costs much
less than N calls; the wait is bounded, and each line's budget counts it (the line times its whole call).

    shared = SharedEngine(open_engine("model.onnx"), max_batch=8, wait_s=0.002)
    lines = [Line(cam, shared.client(), ...) for cam in cameras]   # then run them on their own threads
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..runtime.base import Engine
from .engine import Verdicts, run_engine
from .errors import LineConfigError


@dataclass
class _Request:
    frames: np.ndarray
    done: threading.Event
    result: Any = None
    error: Optional[BaseException] = None


class SharedEngine:
    """Batches concurrent infer() calls of several lines into one call of the wrapped engine."""

    def __init__(self, engine: Any, max_batch: int = 8, wait_s: float = 0.002):
        if max_batch < 1 or wait_s < 0:
            raise LineConfigError(f"shared engine: max_batch={max_batch} must be >= 1 and wait_s={wait_s} >= 0")
        self.engine = engine
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._pending: list[_Request] = []
        self._cond = threading.Condition()
        self._users = 0
        self._thread: Optional[threading.Thread] = None
        self._stop = False
        self._engine_lock = threading.Lock()  # held by each engine call; a hot swap waits for the one in flight
        self.calls: list[int] = []  # frames per engine call (for reports and tests)

    # the engine itself is opened by the first line that enters and closed by the last that leaves
    def _enter(self) -> None:
        with self._cond:
            self._users += 1
            if self._users > 1:
                return
            opened = self.engine.__enter__()
            self.engine = opened or self.engine
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="line-shared-engine", daemon=True)
            self._thread.start()

    def _exit(self) -> None:
        with self._cond:
            self._users -= 1
            if self._users > 0:
                return
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self.engine.__exit__(None, None, None)

    def take_over(self, opened: Any) -> None:
        """Hot swap for every line sharing this engine (see Line.swap_engine): `opened` (opened, checked and warmed
        up by the swapping line's EngineSlot) answers from the next call on; the old engine is closed."""
        with self._engine_lock:
            old, self.engine = self.engine, opened
        old.__exit__(None, None, None)

    def client(self) -> "SharedEngineClient":
        """The engine object one Line gets (a context manager like any engine)."""
        return SharedEngineClient(self)

    def infer(self, frames: np.ndarray) -> Verdicts:
        req = _Request(np.asarray(frames), threading.Event())
        with self._cond:
            if self._stop or self._thread is None:
                raise RuntimeError("shared engine is not open")
            self._pending.append(req)
            self._cond.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        return req.result

    def _take(self) -> list[_Request]:
        with self._cond:
            while not self._pending and not self._stop:
                self._cond.wait(0.1)
            if not self._pending:
                return []
            end = time.monotonic() + self.wait_s
            while (sum(len(r.frames) for r in self._pending) < self.max_batch and not self._stop
                   and time.monotonic() < end):
                self._cond.wait(max(0.0, end - time.monotonic()))
            batch, n = [], 0
            while self._pending and (not batch or n + len(self._pending[0].frames) <= self.max_batch):
                r = self._pending.pop(0)
                batch.append(r)
                n += len(r.frames)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                if self._stop:
                    return
                continue
            x = np.concatenate([r.frames for r in batch]) if len(batch) > 1 else batch[0].frames
            self.calls.append(len(x))
            try:
                with self._engine_lock:
                    v = run_engine(self.engine, x)  # checked: one finite result per frame
                i = 0
                for r in batch:
                    s = slice(i, i + len(r.frames))
                    r.result = Verdicts(v.maps[s], v.scores[s], v.normalized[s], v.decisions[s])
                    i += len(r.frames)
            except BaseException as e:  # every caller of this batch sees the error
                for r in batch:
                    r.error = e
            for r in batch:
                r.done.set()


class SharedEngineClient(Engine):
    """One line's handle on a SharedEngine, itself an Engine: activation opens the shared engine (the first line
    to enter opens it, the last to leave closes it); metadata and input spec are the shared engine's current
    ones (a hot swap changes them for every line)."""

    backend = "shared"

    def __init__(self, shared: SharedEngine):
        self._shared = shared
        super().__init__(getattr(shared.engine, "path", "shared"), shared.engine.metadata, shared.engine.input_spec)

    @property
    def metadata(self) -> dict:
        return self._shared.engine.metadata

    @property
    def input_spec(self) -> Any:
        return self._shared.engine.input_spec

    def _activate(self) -> None:
        self._shared._enter()

    def _release(self) -> None:
        self._shared._exit()

    def _run(self, frames: np.ndarray, timings: dict) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        v = self._shared.infer(frames)
        timings["compute"] += time.perf_counter() - t0
        return v.maps, v.scores
