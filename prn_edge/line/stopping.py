"""When and why a line stops, and the drain that decides and fires every part already seen.

A line stops taking frames on stop() (from outside: a signal, the service, a reload), at the source's end, at
max_parts or duration_s, or when one of its threads crashes; the first reason is the one reported (the
summary's stopped_by). Parts already registered still fire at their own time, and a crash is raised once the
line has drained.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Sequence

from .errors import LineError
from .timing import RejectScheduler

log = logging.getLogger(__name__)

DRAIN_SLACK_S = 5.0  # beyond the furthest fire time, for the scheduler to fire the last part


class Stopping:
    def __init__(self, line: str):
        self.line = line
        self.reason = ""
        self.acquisition_done = threading.Event()  # the acquisition thread has ended: nothing new will come
        self._stop = threading.Event()
        self._errors: list[BaseException] = []

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def guard(self, fn: Callable[[], None]) -> None:
        """Run a line thread's body; a crash stops the line (the parts in flight fire fail-safe on their own)."""
        try:
            fn()
        except BaseException as e:
            log.exception("line thread %s crashed", threading.current_thread().name)
            self._errors.append(e)
            self.stop("error")
            self.acquisition_done.set()

    def wait(self, duration_s: Optional[float], t_start: float, tick: Callable[[], None]) -> None:
        """Until acquisition ends, calling `tick` every 0.25 s; stops the line after duration_s, or on Ctrl-C."""
        try:
            while not self.acquisition_done.wait(0.25):
                if duration_s is not None and time.monotonic() - t_start >= duration_s:
                    self.stop("duration")
                tick()
        except KeyboardInterrupt:
            log.warning("interrupted: deciding the parts already seen, then stopping")
            self.stop("SIGINT")

    def drain(self, threads: Sequence[threading.Thread], scheduler: RejectScheduler, fire_delay_s: float) -> None:
        """Join the line's threads, then let the scheduler fire every part registered, each at its own time:
        the furthest is one fire delay away."""
        for t in threads:
            t.join()
        if not scheduler.drain(fire_delay_s + DRAIN_SLACK_S):
            log.error("scheduler did not fire every part in time")

    def raise_error(self) -> None:
        """After the drain: a crashed thread's error, as LineError."""
        if self._errors:
            raise LineError(f"line {self.line} stopped on an internal error: {self._errors[0]!r}") from self._errors[0]
