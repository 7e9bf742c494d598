"""The line loop: acquisition thread -> inference thread (micro-batches) -> decision -> reject scheduler.

Every part gets a sequence number at capture and exactly one decision. A missing frame, a camera timeout, a
corrupt frame, a full queue, a verdict that can no longer be in time, an engine error or a late verdict each
decide the part fail-safe (default reject) and are counted by cause. The scheduler fires every decision at
the part's fire time; outputs run on their own threads so a dead PLC delays nobody.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import math
import queue
import sys
import threading
import time
from collections import deque
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .decision import MODEL, RECHECK, REJECT, Part, model_verdict
from ..runtime.base import describe_line
from .engine import EngineLike, engine_description, engine_input, run_engine, served_artefact
from .errors import CameraError, CameraTimeout, LineConfigError, LineError, SourceExhausted
from .monitor import EvidenceStore, LineMetrics, StatusLine
from .outputs.base import OUTCOMES, OutputSet, RejectOutput
from .sources.base import Frame, FrameSource
from .tiles import Preprocessor
from .timing import Budget, EngineTimer, RejectScheduler, Watchdog

log = logging.getLogger(__name__)

YOUNG_GC_MIN = 700  # allocations (CPython's default gen-0 threshold) before an idle-time collection
PROBE_AFTER_S = 0.25  # engine idle this long because every part was over budget: run one anyway to re-measure


@dataclasses.dataclass
class LoopOptions:
    fail_safe: str = REJECT  # reject | recheck
    uncertain_band: Sequence[float] = ()  # (low, high) in normalized score: low <= s < high -> recheck
    roi: Sequence[int] = ()
    tiles: bool = False
    overlap: int = 32  # pixels shared by neighbouring tiles (a defect on a tile border is seen whole once)
    resize: bool = False
    max_batch: int = 1  # parts per engine call
    batch_wait_s: float = 0.0  # wait this long for a batch to fill (0: take what is queued)
    queue_size: int = 64
    grab_timeout_s: float = 0.5
    heartbeat_s: float = 0.1
    watchdog_s: float = 1.0
    fire_tolerance_s: float = 0.01  # an actuation later than this after its fire time counts as late
    stale_after_s: float = 0.05  # a command not delivered this long after the part's fire time is dropped
    p99_window: int = 200  # engine calls in the p99 estimate
    p99_age_s: float = 1.0  # ... at most this old
    warmup: int = 3
    keep_maps: bool = False  # stitch anomaly maps (evidence needs them)
    keep_records: int = 100_000
    switch_interval_s: float = 0.0005  # sys.setswitchinterval while running: the scheduler waits less for the GIL
    freeze_gc: bool = True  # gc.freeze() what exists at start: full collections then skip it (no 100 ms pauses)
    idle_gc: bool = True  # young-generation collections in the scheduler's idle moments, not at a fire time
    gc_backstop: int = 50_000  # ... and automatically only once this many allocations pile up (bounded memory)
    fire_lead_s: float = 0.003  # the scheduler hands a final decision to the outputs this early (<= margin)
    output_spin_s: float = 0.0003  # an output worker sleeps until this long before the fire time, then spins

    def validate(self) -> "LoopOptions":
        if self.fail_safe not in (REJECT, RECHECK):
            raise LineConfigError(f"decision.fail_safe={self.fail_safe!r} is not allowed; choose one of "
                                  f"{[REJECT, RECHECK]}")
        band = tuple(self.uncertain_band)
        if band and (len(band) != 2 or not 0 <= band[0] < band[1] <= 1):
            raise LineConfigError(f"decision.uncertain_band={list(band)}: give [low, high] with 0 <= low < high <= 1 "
                                  "(normalized score, 0.5 = the artefact's threshold), or [] for none")
        for key in ("max_batch", "queue_size", "p99_window"):
            if getattr(self, key) < 1:
                raise LineConfigError(f"{key}={getattr(self, key)} must be >= 1")
        for key in ("grab_timeout_s", "heartbeat_s", "watchdog_s", "stale_after_s"):
            if getattr(self, key) <= 0:
                raise LineConfigError(f"{key}={getattr(self, key)} must be > 0")
        return self


def artefact_label(engine) -> str:
    """Which artefact an engine runs, for the records: file name and the first 12 hex digits of its SHA-256; for an
    engine on a server, the model version it answers with (MODEL/VERSION:FILE@SHA12)."""
    served = served_artefact(engine)
    if served:
        return served
    path = getattr(engine, "path", None)
    if path is None:
        shared = getattr(engine, "_shared", None)  # a SharedEngine client: the shared engine's artefact
        path = getattr(getattr(shared, "engine", None), "path", None)
    if path is None or not Path(path).is_file():  # a test double, a server address
        return type(engine).__name__ if path is None else Path(str(path)).name
    import hashlib

    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return f"{Path(path).name}@{h.hexdigest()[:12]}"
    except OSError:
        return Path(path).name


class Line:
    """One inspection line: a frame source, an engine, reject outputs and a latency budget.

        line = Line(source, engine, [CsvOutput("decisions.csv")], Budget.from_line(deadline_s=0.2))
        summary = line.run()             # until the source ends, or stop() / duration_s / max_parts
    """

    def __init__(self, source: FrameSource, engine: EngineLike, outputs: list[RejectOutput], budget: Budget,
                 options: Optional[LoopOptions] = None, *, name: str = "line", metrics: Optional[LineMetrics] = None,
                 evidence: Optional[EvidenceStore] = None, status: Optional[StatusLine] = None):
        self.source, self.engine, self.budget = source, engine, budget
        self.opt = (options or LoopOptions()).validate()
        self.name = name
        self.metrics = metrics or LineMetrics(name)
        self.evidence = evidence
        self.status = status
        self.outputs = OutputSet(outputs, self._on_output_error, self._on_actuated, self.opt.stale_after_s,
                                 self.opt.output_spin_s, on_outcome=self.metrics.on_command)
        for o in outputs:  # every command outcome series exists at 0 from the start (dashboards, alerts)
            for outcome in OUTCOMES:
                self.metrics.commands.labels(o.name, outcome)
        self.timer = EngineTimer(self.opt.p99_window, max_age_s=self.opt.p99_age_s)
        self.watchdog = Watchdog(self.opt.watchdog_s)
        self.watchdog.extra.append(lambda: self.source.healthy)
        self.watchdog.extra.append(lambda: self.budget.healthy)  # e.g. an encoder-timed line's belt position
        self.watchdog.extra.append(lambda: not self.scheduler.overdue(self.opt.watchdog_s))
        self.scheduler = RejectScheduler(self.opt.fail_safe, self.outputs.dispatch, self._on_final,
                                         self._heartbeat, self.opt.heartbeat_s,
                                         lead_s=min(self.opt.fire_lead_s, budget.margin_s),
                                         idle=self._collect_young if self.opt.idle_gc else None,
                                         retime=budget.retime, recheck_s=budget.recheck_s)
        self.records: deque[Part] = deque(maxlen=self.opt.keep_records)
        self._queue: queue.Queue[Part] = queue.Queue(maxsize=self.opt.queue_size)
        self._stop = threading.Event()
        self._stop_reason = ""
        self._acq_done = threading.Event()
        self._seq = 0
        self._finals = 0
        self._beat = 0
        self._was_healthy = True
        self._errors: list[BaseException] = []
        self._engine_errors_in_row = 0
        self._last_engine_call = 0.0
        self._busy_until = 0.0
        self._source_dropped = 0
        self._ran = False
        self.prep: Optional[Preprocessor] = None
        # The service manager's view (prn_edge.line.service): called once the line runs, and at every heartbeat
        self.on_ready: list[Callable[[], None]] = []
        self.on_health: list[Callable[[bool], None]] = []
        self.config = None  # the LineConfig it was built from, if any (prn_edge.line.factory)
        self._engine_lock = threading.Lock()  # held by each engine call; a hot swap waits for the one in flight
        self.artefact = artefact_label(engine)
        self._running = False

    # ================================================================= running
    def stop(self, reason: str = "stop") -> None:
        """Stop taking frames; parts already seen are still decided and fired. `reason` ends up in the summary's
        stopped_by (the first reason given wins)."""
        self._stop_reason = self._stop_reason or reason
        self._stop.set()

    def run(self, duration_s: Optional[float] = None, max_parts: Optional[int] = None) -> dict:
        """Run until the source ends (or stop(), duration_s, max_parts); a Line runs once."""
        if self._ran:
            raise LineError(f"line {self.name} has run already; build a new Line to run again")
        self._ran = True
        self._max_parts = max_parts
        t_start = time.monotonic()
        with ExitStack() as stack:
            if self.opt.switch_interval_s > 0:
                stack.callback(sys.setswitchinterval, sys.getswitchinterval())
                sys.setswitchinterval(self.opt.switch_interval_s)
            if self.opt.freeze_gc:
                # A full collection walks every object (hundreds of thousands once torch is imported) and stops
                # every thread for up to 100 ms; frozen objects are skipped. Parts themselves make no cycles.
                gc.collect()
                gc.freeze()
                stack.callback(gc.unfreeze)
            if self.opt.idle_gc:
                # Collections of the young generations run in whichever thread allocates, for 0.1-1 ms with the
                # GIL held: at an actuation that is jitter. The scheduler collects when nothing is due instead;
                # the automatic collection stays as a backstop, so memory stays bounded if it never idles.
                stack.callback(gc.set_threshold, *gc.get_threshold())
                t0, t1, t2 = gc.get_threshold()
                gc.set_threshold(max(t0, self.opt.gc_backstop), t1, t2)
            stack.enter_context(self.budget)  # an encoder budget tracks the belt from the start
            stack.enter_context(self.source)
            self.engine = self.engine.__enter__() or self.engine
            stack.callback(self._close_engine)  # whichever engine is current at the end (a hot swap changes it)
            spec = engine_input(self.engine)
            self.prep = Preprocessor(self.source.geometry(), spec, self.opt.roi, self.opt.tiles, self.opt.overlap,
                                     self.opt.resize)
            self._warm_up()
            self.engine_info = {"artefact": self.artefact, **engine_description(self.engine)}
            log.info("line %s: engine %s", self.name, describe_line(self.engine_info))
            stack.enter_context(self.outputs)
            if self.evidence is not None:
                stack.enter_context(self.evidence)
            self.scheduler.start()
            stack.callback(self.scheduler.stop)
            threads = [threading.Thread(target=self._guard, args=(self._acquire,), name="line-acquire", daemon=True),
                       threading.Thread(target=self._guard, args=(self._infer,), name="line-infer", daemon=True)]
            self.watchdog.beat("acquire")
            self.watchdog.beat("infer")
            for t in threads:
                t.start()
            self._running = True
            stack.callback(setattr, self, "_running", False)
            self.metrics.artefact.labels(self.artefact).set(1)
            for fn in self.on_ready:
                fn()
            try:
                while not self._acq_done.wait(0.25):
                    if duration_s is not None and time.monotonic() - t_start >= duration_s:
                        self.stop("duration")
                    self._show_status(t_start)
            except KeyboardInterrupt:
                log.warning("interrupted: deciding the parts already seen, then stopping")
                self.stop("SIGINT")
            for t in threads:
                t.join()
            # Every part registered fires at its own time; the furthest is one fire delay away.
            if not self.scheduler.drain(self.budget.fire_delay_s + 5.0):
                log.error("scheduler did not fire every part in time")
            self._show_status(t_start, final=True)
        if self._errors:
            raise LineError(f"line {self.name} stopped on an internal error: {self._errors[0]!r}") from self._errors[0]
        return self.summary(time.monotonic() - t_start)

    def summary(self, elapsed_s: float = 0.0) -> dict:
        s = self.metrics.summary()
        s.update({"line": self.name, "elapsed_s": round(elapsed_s, 3), "finalized": self._finals,
                  "undecided": self._seq - self._finals, "late_results_discarded": self.scheduler.late_results,
                  "dropped_frames": int(sum(self.metrics.value("prn_line_dropped_frames_total", reason=r)
                                            for r in ("stale", "source"))),
                  "output_failing": self.outputs.failing,
                  "stopped_by": self._stop_reason or None,
                  "commands": {name: {k: n for k, n in c.items() if n} for name, c in self.outputs.outcomes.items()},
                  "commands_lost": self.outputs.lost()})
        if self.evidence is not None:
            s["evidence"] = self.evidence.summary()
        s["engine"] = {**getattr(self, "engine_info", {}), "artefact": self.artefact}
        return s

    def _guard(self, fn) -> None:
        try:
            fn()
        except BaseException as e:  # a crashed thread: the parts in flight fire fail-safe on their own
            log.exception("line thread %s crashed", threading.current_thread().name)
            self._errors.append(e)
            self.stop("error")
            self._acq_done.set()

    def _warm_up(self, engine=None) -> None:
        """First calls are slow (allocation, JIT, autotuning); they also seed the engine-time estimate."""
        engine = engine or self.engine
        shape = (self.prep.frames_per_part * self.opt.max_batch, self.prep.engine.height, self.prep.engine.width,
                 self.prep.engine.channels)
        for n in {self.prep.frames_per_part, shape[0]}:
            x = np.zeros((n,) + shape[1:], np.uint8)
            for _ in range(self.opt.warmup):
                t0 = time.perf_counter()
                try:
                    run_engine(engine, x)
                except Exception as e:
                    raise LineError(f"the engine fails on a warm-up batch of {n} blank frames {x.shape[1:]} "
                                    f"({e.__class__.__name__}: {e}); the line does not start") from e
                self.timer.add(n, time.perf_counter() - t0)

    def note_swap(self, label: str, engine: Optional[EngineLike] = None) -> Optional[EngineLike]:
        """Record that the engine (e.g. a shared one) now runs another artefact; with `engine`, it takes over
        between two engine calls. Returns the engine it replaced (None without one)."""
        with self._engine_lock:
            old = self.engine if engine is not None else None
            if engine is not None:
                self.engine = engine
            self._set_artefact(label)
        self.metrics.engine_swaps.labels("ok").inc()
        return old

    def _set_artefact(self, label: str) -> None:
        """The artefact deciding from the next engine call on, its metric and what the summary says runs (called
        with the engine lock held)."""
        self.metrics.artefact.labels(self.artefact).set(0)
        self.artefact = label
        self.metrics.artefact.labels(label).set(1)
        self.engine_info = {"artefact": label, **engine_description(self.engine)}

    def _close_engine(self) -> None:
        with self._engine_lock:
            self.engine.__exit__(None, None, None)

    # ================================================================= hot swap
    def swap_engine(self, new: EngineLike, artefact: str = "") -> dict:
        """Replace the engine of a running line without stopping capture: the new one is opened, checked to take
        the same frames and warmed up while the old one keeps deciding; then, between two engine calls, it takes
        over (the call in flight finishes on the old engine, which is then closed). A swap that fails anywhere
        before that leaves the old engine running and raises LineError saying why. Every decision records the
        artefact that made it (CSV column `artefact`, metric prn_line_artefact_info)."""
        if not self._running or self.prep is None:
            raise LineError(f"line {self.name} is not running; give the new engine to a new Line instead")
        label = artefact or artefact_label(new)
        if label == self.artefact:  # the same artefact (a reload that changed other keys): nothing to swap
            log.info("line %s: the engine artefact %s is unchanged; no swap", self.name, label)
            return {"from": label, "to": label, "unchanged": True}
        shared = getattr(self.engine, "_shared", None)
        if shared is not None:  # a SharedEngine client: swap the engine every sharing line uses
            try:
                shared.swap(new)
            except LineError:
                self.metrics.engine_swaps.labels("failed").inc()
                raise
            self.note_swap(label)
            return {"from": "shared", "to": label}
        t0 = time.monotonic()
        try:
            opened = new.__enter__() or new
        except Exception as e:
            self.metrics.engine_swaps.labels("failed").inc()
            raise LineError(f"hot swap to {label}: the new engine does not open ({e}); still running "
                            f"{self.artefact}") from e
        try:
            if engine_input(opened) != engine_input(self.engine):
                raise LineError(f"it takes {engine_input(opened)}, the running one {engine_input(self.engine)}; "
                                "a different input needs a restart")
            self._warm_up(opened)
        except Exception as e:
            opened.__exit__(None, None, None)
            self.metrics.engine_swaps.labels("failed").inc()
            raise LineError(f"hot swap to {label} refused: {e}; still running {self.artefact}") from e
        t_ready = time.monotonic()
        old_label = self.artefact
        old = self.note_swap(label, opened)
        try:
            old.__exit__(None, None, None)
        except Exception as e:  # the new engine runs; a failed close is only reported
            log.warning("closing the previous engine %s: %s", old_label, e)
        log.warning("line %s: hot swap %s -> %s (prepared in %.2f s)", self.name, old_label, label, t_ready - t0)
        return {"from": old_label, "to": label, "prepare_s": round(t_ready - t0, 3),
                "switch_s": round(time.monotonic() - t_ready, 4)}

    def _show_status(self, t_start: float, final: bool = False) -> None:
        if self.status is not None:
            p99 = self._decide_p99_ms()
            self.status.update(StatusLine.render(self.metrics.summary(), time.monotonic() - t_start, p99,
                                                 self.watchdog.healthy(), self._queue.qsize()), final)

    def _decide_p99_ms(self) -> float:
        """p99 of capture -> decision over the last 500 parts (for the status line)."""
        lat = [p.decision.t_decided - p.t_capture for p in list(self.records)[-500:] if p.decision is not None]
        return float(np.quantile(lat, 0.99) * 1000) if lat else 0.0

    # ================================================================= acquisition
    def _new_part(self, t_capture: float, frame: Optional[Frame] = None, frame_id: Optional[int] = None) -> Part:
        part = self.budget.part(self._seq, t_capture)
        part.frame = frame
        part.frame_id = frame.frame_id if frame is not None else frame_id
        self._seq += 1
        self.metrics.parts.inc()
        self.scheduler.register(part)
        return part

    def _missing(self, first_id: int, last_id: int, t_prev: Optional[float], t_next: float) -> None:
        """Parts first_id..last_id passed without a frame; their capture times are interpolated."""
        n = last_id - first_id + 1
        t0 = t_next if t_prev is None else t_prev
        for i in range(n):
            t = t0 + (t_next - t0) * (i + 1) / (n + 1)
            self.scheduler.fail_safe(self._new_part(t, frame_id=first_id + i).seq, "missing_frame")

    def _acquire(self) -> None:
        expected: Optional[int] = None
        t_prev: Optional[float] = None
        counts = self.source.counts_parts
        want_shape = self.prep.frame_shape
        try:
            while not self._stop.is_set():
                if self._max_parts is not None and self._seq >= self._max_parts:
                    self._stop_reason = self._stop_reason or "max_parts"
                    break
                self.watchdog.beat("acquire")
                self._count_source_drops()
                try:
                    frame = self.source.grab(self.opt.grab_timeout_s)
                except SourceExhausted as e:
                    if counts and expected is not None and e.frame_id is not None and e.frame_id >= expected:
                        self._missing(expected, e.frame_id, t_prev, time.monotonic())
                    self._stop_reason = self._stop_reason or "source_end"
                    break
                except CameraError as e:
                    kind = "timeout" if isinstance(e, CameraTimeout) else "corrupt"
                    self.metrics.camera_events.labels(kind).inc()
                    if e.part_expected:
                        t = e.t_expected if e.t_expected is not None else time.monotonic()
                        if counts and e.frame_id is not None:
                            if expected is not None and e.frame_id > expected:
                                self._missing(expected, e.frame_id - 1, t_prev, t)
                            expected = e.frame_id + 1
                        part = self._new_part(t, frame_id=e.frame_id)
                        self.scheduler.fail_safe(part.seq, "camera_timeout" if kind == "timeout" else "corrupt_frame")
                        t_prev = t
                    continue
                if counts:
                    if expected is not None and frame.frame_id < expected:
                        self.metrics.dropped_frames.labels("stale").inc()
                        continue
                    if expected is not None and frame.frame_id > expected:
                        self._missing(expected, frame.frame_id - 1, t_prev, frame.t_capture)
                    expected = frame.frame_id + 1
                t_prev = frame.t_capture
                part = self._new_part(frame.t_capture, frame)
                if frame.image is None or frame.image.shape != want_shape or frame.image.dtype != np.uint8:
                    got = None if frame.image is None else (frame.image.shape, str(frame.image.dtype))
                    log.debug("corrupt frame %s: %s, expected %s uint8", frame.frame_id, got, want_shape)
                    self.scheduler.fail_safe(part.seq, "corrupt_frame")
                    continue
                now = time.monotonic()
                part.times["capture_to_queue"] = now - frame.host_ts
                part.t_enqueued = now
                if now + self._queue_wait(now) + self.timer.estimate(self.prep.frames_per_part) > part.t_ready:
                    self.scheduler.fail_safe(part.seq, "over_budget")
                    if not self._queue.empty():
                        continue
                    # else queue it anyway: an idle engine probes with it, so the estimate can recover
                try:
                    self._queue.put_nowait(part)
                except queue.Full:
                    self.scheduler.fail_safe(part.seq, "queue_full")
                self.metrics.queue_depth.set(self._queue.qsize())
        finally:
            self._count_source_drops()
            self.watchdog.forget("acquire")
            self._acq_done.set()

    def _count_source_drops(self) -> None:
        dropped = self.source.dropped
        if dropped > self._source_dropped:
            self.metrics.dropped_frames.labels("source").inc(dropped - self._source_dropped)
            self._source_dropped = dropped

    # ================================================================= inference
    def _queue_wait(self, now: float) -> float:
        """Expected wait before a part queued now reaches the engine: the running call's rest plus the batches
        queued ahead of it."""
        rest = max(0.0, self._busy_until - now)
        batches = -(-self._queue.qsize() // self.opt.max_batch)
        return rest + batches * self.timer.estimate(self.opt.max_batch * self.prep.frames_per_part)

    def _take_batch(self) -> list[Part]:
        try:
            batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        end = time.monotonic() + self.opt.batch_wait_s
        while len(batch) < self.opt.max_batch:
            try:
                wait = end - time.monotonic()
                batch.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _infer(self) -> None:
        per_part = self.prep.frames_per_part
        try:
            while True:
                self.watchdog.beat("infer")
                batch = self._take_batch()
                if not batch:
                    if self._acq_done.is_set() and self._queue.empty():
                        return
                    continue
                self.metrics.queue_depth.set(self._queue.qsize())
                now = time.monotonic()
                # Parts that cannot be decided in time are decided fail-safe now, and do not cost engine time.
                keep = []
                for part in batch:
                    part.times["queue_wait"] = now - part.t_enqueued
                    if part.decision is not None:  # fired fail-safe while it waited
                        continue
                    if now + self.timer.estimate(per_part * (len(keep) + 1)) > part.t_ready:
                        self.scheduler.fail_safe(part.seq, "over_budget")
                    else:
                        keep.append(part)
                if not keep and now - self._last_engine_call > PROBE_AFTER_S:
                    # Without calls the estimate would not follow an engine that got fast again: probe with a
                    # part that is decided fail-safe already (its verdict is discarded) to measure it.
                    keep = [p for p in batch if p.frame is not None and p.frame.image is not None][-1:]
                if keep:
                    self._last_engine_call = now
                    self._run_batch(keep, per_part)
        finally:
            self.watchdog.forget("infer")

    def _run_batch(self, parts: list[Part], per_part: int) -> None:
        t0 = time.perf_counter()
        try:
            x = np.concatenate([self.prep.prepare(p.frame.image) for p in parts])
        except Exception as e:
            log.warning("preprocess failed: %s", e)
            for p in parts:
                self.scheduler.fail_safe(p.seq, "corrupt_frame")
            return
        t1 = time.perf_counter()
        self._busy_until = time.monotonic() + self.timer.estimate(len(x))
        try:
            with self._engine_lock:
                v = run_engine(self.engine, x)
                served = served_artefact(self.engine)
                if served and served != self.artefact:  # the server answers with another model version now
                    log.warning("line %s: %s decides now (was %s): the server rolled out another model version",
                                self.name, served, self.artefact)
                    self._set_artefact(served)
                artefact = self.artefact
        except Exception as e:
            self._busy_until = 0.0
            self._engine_errors_in_row += 1
            if self._engine_errors_in_row in (1, 10, 100):
                log.warning("ALARM engine failed %d time(s) in a row: %r", self._engine_errors_in_row, e)
            for p in parts:
                self.scheduler.fail_safe(p.seq, "engine_error")
            return
        t2 = time.perf_counter()
        self._busy_until = 0.0
        self._engine_errors_in_row = 0
        self.timer.add(len(x), t2 - t1)
        keep_maps = self.opt.keep_maps
        decided = []
        for i, p in enumerate(parts):
            s = slice(i * per_part, (i + 1) * per_part)
            score, norm, defective, amap = self.prep.combine(v.scores[s], v.normalized[s], v.decisions[s],
                                                             v.maps[s] if keep_maps else None)
            p.amap = amap
            if not math.isfinite(score):
                decided.append((p, None, score, norm))
            else:
                decided.append((p, model_verdict(defective, norm, self.opt.uncertain_band), score, norm))
        t3 = time.perf_counter()
        for p, verdict, score, norm in decided:
            p.artefact = artefact
            p.times.update(preprocess=t1 - t0, inference=t2 - t1, postprocess=t3 - t2)
            if verdict is None:
                self.scheduler.fail_safe(p.seq, "bad_result")
            else:
                self.scheduler.decide(p.seq, verdict, MODEL, score, norm)

    # ================================================================= scheduler callbacks
    def _collect_young(self) -> None:
        """Idle moment of the scheduler: collect the young generations (never the old one, which is frozen
        and would walk every object) once enough allocations piled up."""
        c0, c1, _ = gc.get_count()
        if c0 >= YOUNG_GC_MIN:
            gc.collect(1 if c1 >= gc.get_threshold()[1] else 0)

    def _on_final(self, part: Part) -> None:
        self._finals += 1
        self.metrics.on_final(part)
        if self.evidence is not None and self.evidence.wants(part):
            self.evidence.submit(part, self.name)
        if part.frame is not None:  # the record stays small: no pixels, no map
            part.frame = dataclasses.replace(part.frame, image=None)
        part.amap = None
        self.records.append(part)

    def _on_actuated(self, output: str, part: Part, t_start: float, t_done: float) -> None:
        part.times.setdefault("actuation", t_done - part.t_fire)
        self.metrics.on_actuated(part, t_start, t_done, self.opt.fire_tolerance_s)

    def _on_output_error(self, output: str, call: str, error: Exception) -> None:
        self.metrics.output_errors.labels(output, call).inc()

    def _heartbeat(self) -> None:
        healthy = self.watchdog.healthy()
        self.metrics.healthy.set(1 if healthy else 0)
        for fn in self.on_health:
            fn(healthy)
        if not healthy:
            if self._was_healthy:
                self.metrics.watchdog_trips.inc()
                log.warning("ALARM watchdog: %s not alive; heartbeat stopped so the PLC diverts every part",
                            self.watchdog.stale())
            self._was_healthy = False
            return
        self._was_healthy = True
        self._beat = self._beat % 65535 + 1
        self.metrics.heartbeat.set(self._beat)
        self.outputs.heartbeat(self._beat)
