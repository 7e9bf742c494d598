"""The parts waiting for the engine, and which of them get engine time.

A part is worth the engine only while its verdict can still be in by its ready time; the engine-time estimate
(EngineTimer) says when that is over. Parts past it are decided fail-safe at once and cost no engine time, so
a slow engine call does not make the parts behind it late too.
"""
from __future__ import annotations

import contextlib
import queue
import time
from typing import Iterator

from .decision import Part
from .monitor import LineMetrics
from .timing import EngineTimer, RejectScheduler

PROBE_AFTER_S = 0.25  # engine idle this long because every part was over budget: run one anyway to re-measure


class EngineQueue:
    def __init__(self, frames_per_part: int, size: int, max_batch: int, batch_wait_s: float, timer: EngineTimer,
                 scheduler: RejectScheduler, metrics: LineMetrics):
        self.frames_per_part = frames_per_part  # engine frames per part (tiles)
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_s  # parts per engine call, wait for them
        self._timer, self._scheduler, self._metrics = timer, scheduler, metrics
        self._queue: queue.Queue[Part] = queue.Queue(maxsize=size)
        self._busy_until = 0.0  # when the engine call running now should end (0: none runs)
        self._last_call = 0.0

    def qsize(self) -> int:
        return self._queue.qsize()

    def empty(self) -> bool:
        return self._queue.empty()

    def admit(self, part: Part, host_ts: float) -> None:
        """Queue a part whose frame the host got at host_ts; one that cannot be decided in time is decided
        fail-safe now (and queued only for an idle engine to probe with), one that finds the queue full too."""
        now = time.monotonic()
        part.times["capture_to_queue"] = now - host_ts
        part.t_enqueued = now
        if now + self._wait(now) + self._timer.estimate(self.frames_per_part) > part.t_ready:
            self._scheduler.fail_safe(part.seq, "over_budget")
            if not self._queue.empty():
                return
            # else queue it anyway: an idle engine probes with it, so the estimate can recover
        try:
            self._queue.put_nowait(part)
        except queue.Full:
            self._scheduler.fail_safe(part.seq, "queue_full")
        self._metrics.queue_depth.set(self._queue.qsize())

    def _wait(self, now: float) -> float:
        """Expected wait before a part queued now reaches the engine: the running call's rest plus the batches
        queued ahead of it."""
        rest = max(0.0, self._busy_until - now)
        batches = -(-self._queue.qsize() // self.max_batch)
        return rest + batches * self._timer.estimate(self.max_batch * self.frames_per_part)

    def take(self) -> list[Part]:
        """The next batch worth the engine ([] when none came within 0.1 s, or none is in time): up to max_batch
        parts, waiting batch_wait_s for the batch to fill."""
        try:
            batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        end = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch:
            try:
                wait = end - time.monotonic()
                batch.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        self._metrics.queue_depth.set(self._queue.qsize())
        return self._in_time(batch)

    def _in_time(self, batch: list[Part]) -> list[Part]:
        """The parts of a batch the engine can still decide in time; the others are decided fail-safe now."""
        now = time.monotonic()
        keep = []
        for part in batch:
            part.times["queue_wait"] = now - part.t_enqueued
            if part.decision is not None:  # fired fail-safe while it waited
                continue
            if now + self._timer.estimate(self.frames_per_part * (len(keep) + 1)) > part.t_ready:
                self._scheduler.fail_safe(part.seq, "over_budget")
            else:
                keep.append(part)
        if not keep and now - self._last_call > PROBE_AFTER_S:
            # Without calls the estimate would not follow an engine that got fast again: probe with a
            # part that is decided fail-safe already (its verdict is discarded) to measure it.
            keep = [p for p in batch if p.frame is not None and p.frame.image is not None][-1:]
        if keep:
            self._last_call = now
        return keep

    @contextlib.contextmanager
    def engine_call(self, frames: int) -> Iterator[None]:
        """An engine call of `frames` frames runs: parts admitted meanwhile count its rest as waiting time."""
        self._busy_until = time.monotonic() + self._timer.estimate(frames)
        try:
            yield
        finally:
            self._busy_until = 0.0
