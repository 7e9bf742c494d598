"""The reject-output contract and the worker thread that keeps a slow or dead output from delaying the others.

    with output:                       # connect / open files / configure camera lines
        output.wants(part)             # whether this part needs a command at all (e.g. not for good parts)
        output.actuate(part)           # part.decision is final; may raise OutputError
        output.heartbeat(counter)      # 1..65535, never 0 (0 = appliance dead, the PLC rejects)

Every command a part needs gets exactly one outcome per output, recorded in part.commands and counted:
delivered (done before the part's t_valid), late (started in time, finished after: must stay 0), stale
(could not start before t_valid: dropped, never sent late), failed (the call raised), unknown (the run ended
first), none (the output had nothing to send). Audit outputs (the decisions CSV) write a part only once every
other output has its outcome, so the audit trail says whether the PLC got the command.
"""
from __future__ import annotations

import abc
import logging
import threading
import time
from collections import deque
from typing import Callable, Optional

from ..decision import Part
from ..errors import OutputError

log = logging.getLogger(__name__)

WHEN = ("eject", "decision")  # actuate at the part's fire time, or as soon as it is decided (PLC owns timing)


OUTCOMES = ("delivered", "late", "stale", "failed", "unknown", "none")
LOST = ("late", "stale", "failed", "unknown")  # a command the part needed that did not arrive in time


class RejectOutput(abc.ABC):
    name = "output"
    at = "eject"
    audit = False  # records the outcomes of the other outputs (called after them, never dropped as stale)

    def __enter__(self) -> "RejectOutput":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def wants(self, part: Part) -> bool:
        """Whether the part needs a call to actuate at all (False: outcome "none", no call)."""
        return True

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

    A command that cannot start before the part's t_valid (a PLC that was down or stalled) is dropped (stale):
    the part has passed the ejector, and a command delivered late would act on the wrong part. Each command's
    outcome goes to on_outcome(output name, part, outcome).
    """

    def __init__(self, output: RejectOutput, on_error: Callable[[str, str, Exception], None],
                 on_done: Callable[[str, Part, float, float], None],
                 on_outcome: Optional[Callable[[str, Part, str], None]] = None, spin_s: float = 0.0003):
        self.output = output
        self._on_error = on_error
        self._on_done = on_done
        self._outcome_cb = on_outcome
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

    def _on_outcome(self, name: str, part: Part, outcome: str) -> None:
        if self._outcome_cb is not None:
            try:
                self._outcome_cb(name, part, outcome)
            except Exception:  # bookkeeping must never stop the output's thread
                log.exception("output %s: recording the outcome of part %s failed", name, part.seq)

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
            command = kind == "actuate" and not self.output.audit
            if command:
                try:
                    wanted = self.output.wants(payload)
                except Exception:  # a broken wants() errs on the side of sending
                    wanted = True
                if not wanted:
                    self._on_outcome(self.output.name, payload, "none")
                    continue
                if payload.t_valid is not None and not t0 <= payload.t_valid:
                    self.stale += 1
                    self._on_outcome(self.output.name, payload, "stale")
                    continue
            try:
                if kind in ("actuate", "audit"):
                    if kind == "actuate" and not_before > 0 and payload.t_fired is None:
                        payload.t_fired = t0  # the eject actuation itself (the CSV row records this)
                    self.output.actuate(payload)
                else:
                    self.output.heartbeat(payload)
            except Exception as e:  # OutputError expected; anything else is an output bug, still not fatal
                self.errors += 1
                if not self._failing:
                    log.warning("ALARM output %s failed: %s", self.output.name, e)
                call = "actuate" if kind == "audit" else kind
                self._failing.add(call)
                self._on_error(self.output.name, call, e)
                if kind != "heartbeat":
                    self._on_outcome(self.output.name, payload, "failed")
                continue
            t1 = monotonic()
            if command:
                late = payload.t_valid is not None and not t1 <= payload.t_valid
                self._on_outcome(self.output.name, payload, "late" if late else "delivered")
            elif self.output.audit and kind != "heartbeat":
                self._on_outcome(self.output.name, payload, "delivered")
            call = "actuate" if kind == "audit" else kind
            if call in self._failing:
                # Only the kind of call that failed tells it works again: a dead actuator whose heartbeat
                # still goes through is failing, not flapping.
                self._failing.discard(call)
                if not self._failing:
                    log.warning("output %s works again", self.output.name)
            if kind == "actuate":  # an actuation at its fire time (audit outputs after the others: not timed)
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
    """All outputs of a line: opens them, routes each part to those that act at that moment, and hands it to the
    audit outputs (the decisions CSV) once every other output has an outcome for it (not before its fire time).

    A command that cannot be delivered by t_fire + stale_after_s is dropped as stale; on_outcome(output, part,
    outcome) sees every outcome (metrics)."""

    def __init__(self, outputs: list[RejectOutput], on_error: Callable[[str, str, Exception], None],
                 on_done: Callable[[str, Part, float, float], None], stale_after_s: float = 0.05,
                 spin_s: float = 0.0003, on_outcome: Optional[Callable[[str, Part, str], None]] = None):
        names = [o.name for o in outputs]
        if len(set(names)) != len(names):
            raise OutputError(f"output names {names} repeat; give each output its own name")
        self.outputs = outputs
        self.stale_after_s = stale_after_s
        self._on_outcome_cb = on_outcome
        self._workers = [OutputWorker(o, on_error, on_done, self._outcome, spin_s) for o in outputs]
        self._actuators = [w for w in self._workers if not w.output.audit]
        self._auditors = [w for w in self._workers if w.output.audit]
        self._pending: dict[int, tuple[Part, set]] = {}  # id(part) -> (part, outputs still to report)
        self._lock = threading.Lock()
        self._opened: list[RejectOutput] = []
        self.outcomes: dict[str, dict[str, int]] = {o.name: {k: 0 for k in OUTCOMES} for o in outputs}

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
        for w in self._actuators:
            w.stop()
        with self._lock:  # an output that did not finish in time: its commands' fate is unknown
            left = list(self._pending.values())
        for part, waiting in left:
            for name in sorted(waiting):
                self._outcome(name, part, "unknown")
        for w in self._auditors:
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
        part.t_valid = part.t_fire + self.stale_after_s  # at "eject" t_fire is final (an encoder line retimes it)
        if when == "decision" and self._actuators and self._auditors:
            with self._lock:
                self._pending[id(part)] = (part, {w.output.name for w in self._actuators})
        not_before = part.t_fire if when == "eject" else 0.0
        for w in self._actuators if self._actuators else self._workers:
            if w.output.at == when:
                w.submit("actuate", part, not_before)

    def _outcome(self, name: str, part: Part, outcome: str) -> None:
        part.commands.setdefault(name, outcome)
        counts = self.outcomes.get(name)
        if counts is not None:
            counts[outcome] = counts.get(outcome, 0) + 1
        if self._on_outcome_cb is not None:
            self._on_outcome_cb(name, part, outcome)
        if not self._auditors or not self._actuators:
            return
        with self._lock:
            entry = self._pending.get(id(part))
            if entry is None or name not in entry[1]:
                return
            entry[1].discard(name)
            if entry[1]:
                return
            del self._pending[id(part)]
        for w in self._auditors:
            w.submit("audit", part, part.t_fire)

    def lost(self) -> dict[str, dict[str, int]]:
        """Per output, the commands that did not arrive in time, by outcome (only outcomes that happened)."""
        return {name: {k: n for k, n in counts.items() if k in LOST and n}
                for name, counts in self.outcomes.items() if any(counts.get(k) for k in LOST)}

    def heartbeat(self, counter: int) -> None:
        for w in self._workers:
            w.submit("heartbeat", counter)

    @property
    def failing(self) -> list[str]:
        return [w.output.name for w in self._workers if w.failing]
