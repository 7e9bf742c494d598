"""The reject-output contract and the worker thread that keeps a slow or dead output from delaying the others.

    with output:                       # connect / open files / configure camera lines
        output.actuate(part)           # part.decision is final; may raise OutputError
        output.heartbeat(counter)      # 1..65535, never 0 (0 = appliance dead, the PLC rejects)
"""
from __future__ import annotations

import abc
import logging
import threading
import time
from collections import deque
from typing import Callable

from ..decision import Part
from ..errors import OutputError

log = logging.getLogger(__name__)

WHEN = ("eject", "decision")  # actuate at the part's fire time, or as soon as it is decided (PLC owns timing)


class RejectOutput(abc.ABC):
    name = "output"
    at = "eject"

    def __enter__(self) -> "RejectOutput":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    @abc.abstractmethod
    def actuate(self, part: Part) -> None:
        """Act on the part's final decision (most outputs do nothing for good parts)."""

    def heartbeat(self, counter: int) -> None:
        pass


class OutputWorker:
    """Runs one output's calls in order on its own thread; failures are counted, alarmed and never raised.

    An "actuate" may come with a not-before time (the part's fire time): the scheduler hands eject commands over
    a little ahead of time, and the worker times the call itself: it sleeps until spin_s before, then spins for
    the rest, so neither the scheduler's wake-up nor the hand-over between threads lands on the fire time.

    Commands older than stale_after_s (a PLC that was down) are dropped: the part has passed, and while the
    appliance could not reach the PLC the heartbeat stopped, so the PLC diverted on its own.
    """

    def __init__(self, output: RejectOutput, on_error: Callable[[str, str, Exception], None],
                 on_done: Callable[[str, Part, float, float], None], stale_after_s: float = 1.0,
                 spin_s: float = 0.0003):
        self.output = output
        self._on_error = on_error
        self._on_done = on_done
        self._stale = stale_after_s
        self._spin = max(0.0, spin_s)
        self._q: deque = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"line-out-{output.name}", daemon=True)
        self.errors = 0
        self.stale = 0
        self._failing: set[str] = set()  # call kinds ("actuate", "heartbeat") whose last call failed

    @property
    def failing(self) -> bool:
        return bool(self._failing)

    def start(self) -> None:
        self._thread.start()

    def submit(self, kind: str, payload, not_before: float = 0.0) -> None:
        """Queue a call; not_before (time.monotonic()) holds it, and the calls queued after it, until then."""
        with self._cond:
            self._q.append((kind, payload, time.monotonic(), not_before))
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what is queued (bounded by timeout), then stop."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    def _wait_until(self, t: float) -> None:
        """Sleep until spin_s before t, then spin: the OS wakes a sleeper late by its timer slack and the wait
        for the GIL; the spin absorbs both when they are shorter than it."""
        monotonic = time.monotonic
        rest = t - monotonic() - self._spin
        if rest > 0:
            time.sleep(rest)
        while monotonic() < t:
            pass

    def _run(self) -> None:
        _set_timer_slack()
        monotonic = time.monotonic
        while True:
            with self._cond:
                while not self._q and not self._stop:
                    self._cond.wait()
                if not self._q:
                    return
                kind, payload, t_sub, not_before = self._q.popleft()
            if not_before > 0:
                self._wait_until(not_before)
            t0 = monotonic()
            if kind == "actuate" and self._stale > 0 and t0 - max(t_sub, not_before) > self._stale:
                self.stale += 1
                continue
            try:
                if kind == "actuate":
                    if not_before > 0 and payload.t_fired is None:
                        payload.t_fired = t0  # the eject actuation itself (the CSV row records this)
                    self.output.actuate(payload)
                else:
                    self.output.heartbeat(payload)
            except Exception as e:  # OutputError expected; anything else is an output bug, still not fatal
                self.errors += 1
                if not self._failing:
                    log.warning("ALARM output %s failed: %s", self.output.name, e)
                self._failing.add(kind)
                self._on_error(self.output.name, kind, e)
                continue
            if kind == "actuate":
                t1 = monotonic()
            if kind in self._failing:
                # Only the kind of call that failed tells it works again: a dead actuator whose heartbeat
                # still goes through is failing, not flapping.
                self._failing.discard(kind)
                if not self._failing:
                    log.warning("output %s works again", self.output.name)
            if kind == "actuate":
                self._on_done(self.output.name, payload, t0, t1)


def _set_timer_slack(ns: int = 1000) -> None:
    """Linux lets a sleeping thread wake up to 50 us late by default (timer slack); ask for less (this thread)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(29, ns, 0, 0, 0)  # PR_SET_TIMERSLACK
    except Exception:  # not Linux: nothing to tune
        pass


class OutputSet:
    """All outputs of a line: opens them, routes each part to those that act at that moment."""

    def __init__(self, outputs: list[RejectOutput], on_error: Callable[[str, str, Exception], None],
                 on_done: Callable[[str, Part, float, float], None], stale_after_s: float = 1.0,
                 spin_s: float = 0.0003):
        names = [o.name for o in outputs]
        if len(set(names)) != len(names):
            raise OutputError(f"output names {names} repeat; give each output its own name")
        self.outputs = outputs
        self._workers = [OutputWorker(o, on_error, on_done, stale_after_s, spin_s) for o in outputs]
        self._opened: list[RejectOutput] = []

    def __enter__(self) -> "OutputSet":
        try:
            for o in self.outputs:
                o.open()
                self._opened.append(o)
        except BaseException:
            self._close_opened()
            raise
        for w in self._workers:
            w.start()
        return self

    def __exit__(self, *exc) -> None:
        for w in self._workers:
            w.stop()
        self._close_opened()

    def _close_opened(self) -> None:
        while self._opened:
            o = self._opened.pop()
            try:
                o.close()
            except Exception as e:
                log.warning("closing output %s: %s", o.name, e)

    def dispatch(self, part: Part, when: str) -> None:
        """Hand the part to the outputs that act now ("decision") or at its fire time ("eject"; the scheduler
        may call this up to its fire lead early, each worker waits for part.t_fire itself)."""
        not_before = part.t_fire if when == "eject" else 0.0
        for w in self._workers:
            if w.output.at == when:
                w.submit("actuate", part, not_before)

    def heartbeat(self, counter: int) -> None:
        for w in self._workers:
            w.submit("heartbeat", counter)

    @property
    def failing(self) -> list[str]:
        return [w.output.name for w in self._workers if w.failing]
