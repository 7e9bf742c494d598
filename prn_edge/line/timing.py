"""Latency budget and the reject scheduler.

A part imaged at t_capture reaches the ejector after distance / speed; the command must go out an actuator lead
earlier (t_fire), and a model verdict must be in an output margin before that (t_ready). Without a conveyor
model a plain deadline gives t_fire = t_capture + deadline.

The scheduler holds one slot per part from capture on and fires it at t_fire with whatever was decided; a slot
without a verdict fires fail-safe ("late_verdict"). A verdict that comes after t_ready is never actuated.
"""
from __future__ import annotations

import bisect
import heapq
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from .decision import MODEL, Decision, Part
from .errors import LineConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    fire_delay_s: float  # capture -> command out
    margin_s: float  # verdict in -> command out (dispatch, output round trip, scheduler jitter)

    @classmethod
    def from_line(cls, speed_m_s: float = 0.0, distance_m: float = 0.0, actuator_lead_s: float = 0.0,
                  deadline_s: float = 0.0, margin_s: float = 0.005) -> "Budget":
        conveyor = speed_m_s > 0 or distance_m > 0
        if conveyor and deadline_s > 0:
            raise LineConfigError("timing: give either speed_m_s + distance_m (+ actuator_lead_s) or deadline_s, not both")
        if conveyor:
            if speed_m_s <= 0 or distance_m <= 0:
                raise LineConfigError(f"timing.speed_m_s={speed_m_s} and timing.distance_m={distance_m}: "
                                      "both must be > 0 (conveyor speed, camera-to-ejector distance)")
            delay = distance_m / speed_m_s - actuator_lead_s
            what = (f"distance_m / speed_m_s - actuator_lead_s = {distance_m} / {speed_m_s} - {actuator_lead_s}")
        else:
            if deadline_s <= 0:
                raise LineConfigError("timing: set deadline_s > 0, or speed_m_s and distance_m")
            delay, what = deadline_s, f"deadline_s = {deadline_s}"
        if margin_s < 0:
            raise LineConfigError(f"timing.margin_s={margin_s} must be >= 0")
        if delay <= margin_s:
            raise LineConfigError(f"timing: {what} = {delay:.4f} s leaves no time to decide (margin_s = {margin_s}); "
                                  "move the ejector further away, slow the conveyor or shorten the actuator lead")
        return cls(delay, margin_s)

    def part(self, seq: int, t_capture: float) -> Part:
        t_fire = t_capture + self.fire_delay_s
        return Part(seq, t_capture, t_fire - self.margin_s, t_fire)

    # The budget contract the line uses, shared with encoder.EncoderBudget (which has a tracker to run): a
    # context manager for the line's run, a health check for the watchdog, and the scheduler's re-timing hook
    # (None: a time-based fire time is final).
    retime = None
    recheck_s = 0.02

    def __enter__(self) -> "Budget":
        return self

    def __exit__(self, *exc) -> None:
        pass

    @property
    def healthy(self) -> bool:
        return True


class RollingQuantile:
    """Quantiles of the last `window` samples that are at most max_age_s old (0 = no age limit).

    The samples are also kept sorted, so a quantile is an index lookup (a few microseconds; np.quantile costs
    ~0.1 ms, and the line asks on every part's critical path)."""

    def __init__(self, window: int = 200, max_age_s: float = 0.0):
        self._x: deque[tuple[float, float]] = deque()
        self._sorted: list[float] = []
        self.window = max(1, window)
        self.max_age_s = max_age_s

    def _drop_oldest(self) -> None:
        _, v = self._x.popleft()
        del self._sorted[bisect.bisect_left(self._sorted, v)]

    def add(self, v: float, now: Optional[float] = None) -> None:
        v = float(v)
        self._x.append((time.monotonic() if now is None else now, v))
        bisect.insort(self._sorted, v)
        if len(self._x) > self.window:
            self._drop_oldest()

    def _expire(self, now: float) -> None:
        if self.max_age_s > 0:
            while self._x and now - self._x[0][0] > self.max_age_s:
                self._drop_oldest()

    def __len__(self) -> int:
        return len(self._x)

    def quantile(self, q: float, default: float = 0.0, now: Optional[float] = None) -> float:
        """Linear interpolation between order statistics (numpy's default method)."""
        self._expire(time.monotonic() if now is None else now)
        s = self._sorted
        if not s:
            return default
        pos = q * (len(s) - 1)
        i = int(pos)
        if i + 1 >= len(s):
            return s[-1]
        return s[i] + (s[i + 1] - s[i]) * (pos - i)


class EngineTimer:
    """Recent engine call durations by batch size, for 'can this verdict still arrive in time?'.

    Samples expire after max_age_s, so one slow spell does not keep the line fail-safe for long; when all have
    expired, the last known value stands (never 0 after the warm-up)."""

    def __init__(self, window: int = 200, q: float = 0.99, max_age_s: float = 1.0):
        self.q = q
        self.window = window
        self.max_age_s = max_age_s
        self._by_n: dict[int, RollingQuantile] = {}
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()

    def add(self, n: int, seconds: float) -> None:
        with self._lock:
            self._by_n.setdefault(n, RollingQuantile(self.window, self.max_age_s)).add(seconds)
            self._last[n] = seconds

    def _of(self, n: int) -> float:
        return self._by_n[n].quantile(self.q, default=self._last[n])

    def estimate(self, n: int) -> float:
        """p-quantile of a call with n frames; from the nearest measured size, scaled linearly when larger."""
        with self._lock:
            if not self._by_n:
                return 0.0
            if n in self._by_n:
                return self._of(n)
            m = max((k for k in self._by_n if k <= n), default=min(self._by_n))
            return self._of(m) * max(1.0, n / m)


class Watchdog:
    """Liveness of the loop's threads; the PLC heartbeat only advances while every one of them is alive."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._beats: dict[str, float] = {}
        self.extra: list[Callable[[], bool]] = []  # other health checks (camera connected...)

    def beat(self, name: str) -> None:
        self._beats[name] = time.monotonic()

    def forget(self, name: str) -> None:
        self._beats.pop(name, None)

    def stale(self, now: Optional[float] = None) -> list[str]:
        now = time.monotonic() if now is None else now
        out = [n for n, t in list(self._beats.items()) if now - t > self.timeout_s]
        return out + [f"check{i}" for i, ok in enumerate(self.extra) if not ok()]

    def healthy(self, now: Optional[float] = None) -> bool:
        return not self.stale(now)


class RejectScheduler:
    """Fires each part's decision at its t_fire, from its own thread; also sends the heartbeat.

    dispatch(part, when) is called with when="decision" as soon as a part is decided and when="eject" at t_fire,
    or lead_s before it: then the decision is final already (a model verdict after t_ready is never used, and
    lead_s is at most the budget's margin), and the receiver waits for part.t_fire itself (OutputSet does), so
    the scheduler's own wake-up jitter is spent before the fire time instead of after it.
    on_final(part) is called once per part after its eject dispatch.
    retime(part, now, lead_s) (optional, encoder-timed lines) is asked when a part with an eject position comes
    due: None fires it (at part.t_fire, which retime may refine), a time puts it back until then.
    idle() (optional) is called when nothing is due for at least idle_min_s, at most every idle_every_s: the
    moment for housekeeping that holds the GIL (garbage collection).
    """

    def __init__(self, fail_safe_verdict: str, dispatch: Callable[[Part, str], None],
                 on_final: Callable[[Part], None], heartbeat: Optional[Callable[[], None]] = None,
                 heartbeat_s: float = 0.1, lead_s: float = 0.0, idle: Optional[Callable[[], None]] = None,
                 idle_min_s: float = 0.002, idle_every_s: float = 0.02,
                 retime: Optional[Callable[[Part, float, float], Optional[float]]] = None, recheck_s: float = 0.02):
        self.fail_safe_verdict = fail_safe_verdict
        self._dispatch = dispatch
        self._on_final = on_final
        self._heartbeat = heartbeat
        self._heartbeat_s = heartbeat_s
        self.lead_s = max(0.0, lead_s)
        self._idle = idle
        self._idle_min_s = idle_min_s
        self._idle_every_s = idle_every_s
        self._retime = retime  # encoder-timed parts: fire by belt position (EncoderBudget.retime) ...
        self._recheck_s = recheck_s  # ... looked at at least this often (the belt may speed up)
        self._heap: list[tuple[float, int]] = []
        self._slots: dict[int, Part] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread: Optional[threading.Thread] = None
        self.late_results = 0  # model results that came for a part already decided (discarded)

    # ---------------------------------------------------------------- parts
    def _release_time(self, part: Part) -> float:
        """When the part is handed to the outputs: lead_s before t_fire, never before t_ready."""
        return max(part.t_ready, part.t_fire - self.lead_s)

    def _due_time(self, part: Part, now: float) -> float:
        """When the scheduler looks at the part next: its release, or sooner for an encoder-timed part."""
        t = self._release_time(part)
        if self._retime is not None and part.eject_position is not None:
            t = min(t, now + self._recheck_s)
        return t

    def register(self, part: Part) -> None:
        with self._cond:
            if part.seq in self._slots:
                raise ValueError(f"part {part.seq} registered twice")
            self._slots[part.seq] = part
            heapq.heappush(self._heap, (self._due_time(part, time.monotonic()), part.seq))
            if self._heap[0][1] == part.seq:
                self._cond.notify()

    def decide(self, seq: int, verdict: str, cause: str = MODEL, score: float = math.nan,
               normalized: float = math.nan) -> bool:
        """Set the part's decision once. A model verdict after t_ready becomes fail-safe 'late_verdict' at once.
        Returns whether the given verdict was taken."""
        now = time.monotonic()
        with self._cond:
            part = self._slots.get(seq)
            if part is None or part.decision is not None:
                self.late_results += 1
                return False
            taken = cause != MODEL or now <= part.t_ready
            if taken:
                part.decision = Decision(seq, verdict, cause, now, score, normalized)
            else:
                part.decision = Decision(seq, self.fail_safe_verdict, "late_verdict", now, score, normalized)
        self._dispatch(part, "decision")
        return taken

    def fail_safe(self, seq: int, cause: str) -> bool:
        return self.decide(seq, self.fail_safe_verdict, cause)

    def pending(self) -> int:
        with self._cond:
            return len(self._slots)

    def overdue(self, tolerance_s: float) -> bool:
        """Whether the oldest part waiting is more than tolerance_s past its fire time (or has none that can be
        compared, e.g. NaN): a line that stops deciding must stop its heartbeat, whatever the cause."""
        with self._cond:
            oldest = next(iter(self._slots.values()), None)
        return oldest is not None and not time.monotonic() <= oldest.t_fire + tolerance_s

    # ---------------------------------------------------------------- thread
    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="line-scheduler", daemon=True)
        self._thread.start()

    def drain(self, timeout: float) -> bool:
        """Wait until every registered part has fired (each at its own time); False on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._slots and time.monotonic() < end:
                self._cond.wait(min(0.05, max(0.0, end - time.monotonic())))
            return not self._slots

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _run(self) -> None:
        monotonic = time.monotonic
        next_beat = monotonic()
        last_idle = 0.0
        last_release = 0.0  # t_fire of the last part handed over: the outputs are busy around it
        while True:
            due: list[Part] = []
            idle = False
            with self._cond:
                if self._stop:
                    return
                now = monotonic()
                later = []
                while self._heap and self._heap[0][0] <= now:
                    _, seq = heapq.heappop(self._heap)
                    part = self._slots[seq]
                    if self._retime is not None and part.eject_position is not None:
                        t_next = self._retime(part, now, self.lead_s)
                        if t_next is not None:  # not at its eject position yet: look again then
                            part.t_fire = t_next
                            later.append(part)
                            continue
                    due.append(part)
                for part in later:
                    heapq.heappush(self._heap, (self._due_time(part, now), part.seq))
                if not due:
                    wake = self._heap[0][0] if self._heap else now + 1.0
                    if self._heartbeat is not None:
                        wake = min(wake, next_beat)
                    if self._idle is not None:
                        t_idle = max(last_idle + self._idle_every_s, last_release + 0.0005)
                        if t_idle <= now and wake - now >= self._idle_min_s:
                            idle = True  # run it outside the lock, then look again
                        elif t_idle < wake - self._idle_min_s:
                            wake = t_idle
                    if not idle and wake > now:
                        self._cond.wait(wake - now)
            for part in due:
                self._fire(part)
                last_release = max(last_release, part.t_fire)
            if idle:
                last_idle = monotonic()
                try:
                    self._idle()
                except Exception:
                    log.exception("idle housekeeping failed")
                continue
            if self._heartbeat is not None and monotonic() >= next_beat:
                next_beat = monotonic() + self._heartbeat_s
                try:
                    self._heartbeat()
                except Exception:  # the heartbeat must never stop the scheduler
                    log.exception("heartbeat failed")

    def _fire(self, part: Part) -> None:
        now = time.monotonic()
        with self._cond:
            if part.decision is None:
                part.decision = Decision(part.seq, self.fail_safe_verdict, "late_verdict", now)
                undecided = True
            else:
                undecided = False
            part.t_released = now
        try:
            if undecided:
                self._dispatch(part, "decision")
            self._dispatch(part, "eject")
            self._on_final(part)
        except Exception:  # bookkeeping must never stop the firing of later parts
            log.exception("part %d: dispatch or bookkeeping failed", part.seq)
        finally:
            with self._cond:
                del self._slots[part.seq]
                self._cond.notify_all()
