"""The line loop: acquisition thread -> inference thread (micro-batches) -> decision -> reject scheduler.

Every part gets a sequence number at capture and exactly one decision. A missing frame, a camera timeout, a
corrupt frame, a full queue, a verdict that can no longer be in time, an engine error or a late verdict each
decide the part fail-safe (default reject) and are counted by cause. The scheduler fires every decision at
the part's fire time; outputs run on their own threads so a dead PLC delays nobody.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import math
import sys
import threading
import time
from collections import deque
from contextlib import ExitStack
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .decision import MODEL, RECHECK, REJECT, Part, model_verdict
from ..runtime.base import describe_line
from ..tiling import DEFAULT_OVERLAP
from .engine import EngineLike, Verdicts, engine_description, engine_input, run_engine
from .engine_queue import EngineQueue
from .errors import CameraError, CameraTimeout, LineConfigError, LineError, SourceExhausted
from .monitor import EvidenceStore, LineMetrics, StatusLine
from .outputs.base import OUTCOMES, OutputSet, RejectOutput
from .parts import PartLedger
from .sources.base import FrameSource
from .stopping import Stopping
from .swap import EngineSlot, artefact_label
from .tiles import Preprocessor
from .timing import Budget, EngineTimer, RejectScheduler, Watchdog

log = logging.getLogger(__name__)

YOUNG_GC_MIN = 700  # allocations (CPython's default gen-0 threshold) before an idle-time collection


@dataclasses.dataclass
class LoopOptions:
    fail_safe: str = REJECT  # reject | recheck
    uncertain_band: Sequence[float] = ()  # (low, high) in normalized score: low <= s < high -> recheck
    roi: Sequence[int] = ()
    tiles: bool = False
    overlap: int = DEFAULT_OVERLAP  # pixels shared by neighbouring tiles (a defect on a tile border is seen whole once)
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


class Line:
    """One inspection line: a frame source, an engine, reject outputs and a latency budget.

        line = Line(source, engine, [CsvOutput("decisions.csv")], Budget.from_line(deadline_s=0.2))
        summary = line.run()             # until the source ends, or stop() / duration_s / max_parts

    Two threads run the loop: acquisition (a part per frame, admitted to the engine queue) and inference
    (micro-batches through the engine, a verdict per part); the scheduler fires every decision. Beside them: the
    part ledger (numbering, missed frames, records; parts.py), the engine queue (which parts get engine time;
    engine_queue.py), the engine slot (the artefact deciding now, hot swaps; swap.py) and the stopping rules (why
    the line stops, the drain; stopping.py).
    """

    def __init__(self, source: FrameSource, engine: EngineLike, outputs: list[RejectOutput], budget: Budget,
                 options: Optional[LoopOptions] = None, *, name: str = "line", metrics: Optional[LineMetrics] = None,
                 evidence: Optional[EvidenceStore] = None, status: Optional[StatusLine] = None):
        self.source, self.budget = source, budget
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
                                         idle=_collect_young if self.opt.idle_gc else None,
                                         retime=budget.retime, recheck_s=budget.recheck_s)
        self.parts = PartLedger(budget, self.scheduler, self.metrics, self.opt.keep_records)
        self._slot = EngineSlot(engine, self.metrics, name)
        self._stopping = Stopping(name)
        self.prep: Optional[Preprocessor] = None  # the frames -> engine input (tiles), once the source is open
        self._queue: Optional[EngineQueue] = None  # ... and the parts waiting for the engine
        self._max_parts: Optional[int] = None
        self._beat = 0
        self._was_healthy = True
        self._engine_errors_in_row = 0
        self._source_dropped = 0
        self._ran = False
        # The service manager's view (prn_edge.line.service): called once the line runs, and at every heartbeat
        self.on_ready: list[Callable[[], None]] = []
        self.on_health: list[Callable[[bool], None]] = []
        self.config = None  # the LineConfig it was built from, if any (prn_edge.line.factory)
        self._running = False

    @property
    def engine(self) -> EngineLike:
        """The engine deciding now (a hot swap changes it)."""
        return self._slot.engine

    @property
    def artefact(self) -> str:
        """The label of the artefact deciding now (name@sha256)."""
        return self._slot.artefact

    @property
    def engine_info(self) -> dict:
        """What decides now, for the log and the summary: the artefact and the engine's description ({} before
        the engine is open)."""
        if not self._slot.opened:
            return {}
        return {"artefact": self.artefact, **engine_description(self.engine)}

    @property
    def records(self) -> deque[Part]:
        """The last keep_records decided parts."""
        return self.parts.records

    # ================================================================= running
    def stop(self, reason: str = "stop") -> None:
        """Stop taking frames; parts already seen are still decided and fired. `reason` ends up in the summary's
        stopped_by (the first reason given wins)."""
        self._stopping.stop(reason)

    def run(self, duration_s: Optional[float] = None, max_parts: Optional[int] = None) -> dict:
        """Run until the source ends (or stop(), duration_s, max_parts); a Line runs once."""
        if self._ran:
            raise LineError(f"line {self.name} has run already; build a new Line to run again")
        self._ran = True
        self._max_parts = max_parts
        t_start = time.monotonic()
        with ExitStack() as stack:
            stack.enter_context(_interpreter_settings(self.opt))
            self._open(stack)
            threads = self._start(stack)
            self._stopping.wait(duration_s, t_start, lambda: self._show_status(t_start))
            self._stopping.drain(threads, self.scheduler, self.budget.fire_delay_s)
            self._show_status(t_start, final=True)
        self._stopping.raise_error()
        return self.summary(time.monotonic() - t_start)

    def _open(self, stack: ExitStack) -> None:
        """Budget, source, engine (warmed up), outputs, evidence and scheduler, each closed by `stack`."""
        stack.enter_context(self.budget)  # an encoder budget tracks the belt from the start
        stack.enter_context(self.source)
        self._slot.open()
        stack.callback(self._slot.close)  # whichever engine is current at the end (a hot swap changes it)
        spec = engine_input(self.engine)
        self.prep = Preprocessor(self.source.geometry(), spec, self.opt.roi, self.opt.tiles, self.opt.overlap,
                                 self.opt.resize)
        self._queue = EngineQueue(self.prep.frames_per_part, self.opt.queue_size, self.opt.max_batch,
                                  self.opt.batch_wait_s, self.timer, self.scheduler, self.metrics)
        self._warm_up()
        log.info("line %s: engine %s", self.name, describe_line(self.engine_info))
        stack.enter_context(self.outputs)
        if self.evidence is not None:
            stack.enter_context(self.evidence)
        self.scheduler.start()
        stack.callback(self.scheduler.stop)

    def _start(self, stack: ExitStack) -> list[threading.Thread]:
        """The acquisition and inference threads, started; then the line is ready (on_ready)."""
        threads = [threading.Thread(target=self._stopping.guard, args=(self._acquire,), name="line-acquire",
                                    daemon=True),
                   threading.Thread(target=self._stopping.guard, args=(self._infer,), name="line-infer", daemon=True)]
        self.watchdog.beat("acquire")
        self.watchdog.beat("infer")
        for t in threads:
            t.start()
        self._running = True
        stack.callback(setattr, self, "_running", False)
        self.metrics.artefact.labels(self.artefact).set(1)
        for fn in self.on_ready:
            fn()
        return threads

    def summary(self, elapsed_s: float = 0.0) -> dict:
        s = self.metrics.summary()
        s.update({"line": self.name, "elapsed_s": round(elapsed_s, 3), "finalized": self.parts.finals,
                  "undecided": self.parts.undecided, "late_results_discarded": self.scheduler.late_results,
                  "dropped_frames": int(sum(self.metrics.value("prn_line_dropped_frames_total", reason=r)
                                            for r in ("stale", "source"))),
                  "output_failing": self.outputs.failing,
                  "stopped_by": self._stopping.reason or None,
                  "commands": {name: {k: n for k, n in c.items() if n} for name, c in self.outputs.outcomes.items()},
                  "commands_lost": self.outputs.lost()})
        if self.evidence is not None:
            s["evidence"] = self.evidence.summary()
        s["engine"] = {**self.engine_info, "artefact": self.artefact}
        return s

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

    def _show_status(self, t_start: float, final: bool = False) -> None:
        if self.status is not None:
            self.status.update(StatusLine.render(self.metrics.summary(), time.monotonic() - t_start,
                                                 self.parts.decide_p99_ms(), self.watchdog.healthy(),
                                                 self._queue.qsize()), final)

    # ================================================================= hot swap
    def swap_engine(self, new: EngineLike, artefact: str = "") -> dict:
        """Replace the engine of a running line without stopping capture: the new one is opened, checked to take
        the same frames and warmed up while the old one keeps deciding; then, between two engine calls, it takes
        over (the call in flight finishes on the old engine, which is then closed). A swap that fails anywhere
        before that leaves the old engine running and raises LineError saying why. Every decision records the
        artefact that made it (CSV column `artefact`, metric prn_line_artefact_info)."""
        if not self._running or self.prep is None:
            raise LineError(f"line {self.name} is not running; give the new engine to a new Line instead")
        return self._slot.swap(new, artefact or artefact_label(new), self._warm_up)

    def note_swap(self, label: str, engine: Optional[EngineLike] = None) -> Optional[EngineLike]:
        """Record that the engine (e.g. a shared one) now runs another artefact; with `engine`, it takes over
        between two engine calls. Returns the engine it replaced (None without one)."""
        return self._slot.note_swap(label, engine)

    # ================================================================= acquisition
    def _acquire(self) -> None:
        self.parts.counting = self.source.counts_parts
        want_shape = self.prep.frame_shape
        try:
            while not self._stopping.stopped:
                if self._max_parts is not None and self.parts.seq >= self._max_parts:
                    self._stopping.stop("max_parts")
                    break
                self.watchdog.beat("acquire")
                self._count_source_drops()
                try:
                    frame = self.source.grab(self.opt.grab_timeout_s)
                except SourceExhausted as e:
                    self.parts.source_ended(e)
                    self._stopping.stop("source_end")
                    break
                except CameraError as e:
                    kind = "timeout" if isinstance(e, CameraTimeout) else "corrupt"
                    self.metrics.camera_events.labels(kind).inc()
                    self.parts.camera_error(e, "camera_timeout" if kind == "timeout" else "corrupt_frame")
                    continue
                part = self.parts.captured(frame)
                if part is None:
                    self.metrics.dropped_frames.labels("stale").inc()
                    continue
                if frame.image is None or frame.image.shape != want_shape or frame.image.dtype != np.uint8:
                    got = None if frame.image is None else (frame.image.shape, str(frame.image.dtype))
                    log.warning("corrupt frame %s: %s, expected %s uint8 (the camera's frame size or pixel format "
                                "changed?): the part gets the fail-safe action", frame.frame_id, got, want_shape)
                    self.scheduler.fail_safe(part.seq, "corrupt_frame")
                    continue
                self._queue.admit(part, frame.host_ts)
        finally:
            self._count_source_drops()
            self.watchdog.forget("acquire")
            self._stopping.acquisition_done.set()

    def _count_source_drops(self) -> None:
        dropped = self.source.dropped
        if dropped > self._source_dropped:
            self.metrics.dropped_frames.labels("source").inc(dropped - self._source_dropped)
            self._source_dropped = dropped

    # ================================================================= inference
    def _infer(self) -> None:
        try:
            while True:
                self.watchdog.beat("infer")
                batch = self._queue.take()
                if batch:
                    self._run_batch(batch)
                elif self._stopping.acquisition_done.is_set() and self._queue.empty():
                    return
        finally:
            self.watchdog.forget("infer")

    def _run_batch(self, parts: list[Part]) -> None:
        t0 = time.perf_counter()
        try:
            x = np.concatenate([self.prep.prepare(p.frame.image) for p in parts])
        except Exception as e:
            log.warning("preprocess failed: %s", e)
            for p in parts:
                self.scheduler.fail_safe(p.seq, "corrupt_frame")
            return
        t1 = time.perf_counter()
        answer = self._call_engine(x, parts)
        if answer is None:
            return
        v, artefact = answer
        t2 = time.perf_counter()
        self.timer.add(len(x), t2 - t1)
        verdicts = [self._verdict(p, v, i) for i, p in enumerate(parts)]
        t3 = time.perf_counter()
        for p, (verdict, score, norm) in zip(parts, verdicts):
            p.artefact = artefact
            p.times.update(preprocess=t1 - t0, inference=t2 - t1, postprocess=t3 - t2)
            if verdict is None:
                self.scheduler.fail_safe(p.seq, "bad_result")
            else:
                self.scheduler.decide(p.seq, verdict, MODEL, score, norm)

    def _call_engine(self, x: np.ndarray, parts: list[Part]) -> Optional[tuple[Verdicts, str]]:
        """The engine's verdicts on x and the artefact that made them; None when the engine fails: its parts are
        then decided fail-safe, and the alarm is raised at the 1st, 10th and 100th failure in a row."""
        try:
            with self._queue.engine_call(len(x)):
                answer = self._slot.run(x)
        except Exception as e:
            self._engine_errors_in_row += 1
            if self._engine_errors_in_row in (1, 10, 100):
                log.warning("ALARM engine failed %d time(s) in a row: %r", self._engine_errors_in_row, e)
            for p in parts:
                self.scheduler.fail_safe(p.seq, "engine_error")
            return None
        self._engine_errors_in_row = 0
        return answer

    def _verdict(self, part: Part, v: Verdicts, i: int) -> tuple[Optional[str], float, float]:
        """The i-th part's verdict (None for a result that is not finite), score and normalized score, combined
        over its frames (tiles); its stitched map is kept on the part when keep_maps."""
        per_part = self.prep.frames_per_part
        s = slice(i * per_part, (i + 1) * per_part)
        score, norm, defective, amap = self.prep.combine(v.scores[s], v.normalized[s], v.decisions[s],
                                                         v.maps[s] if self.opt.keep_maps else None)
        part.amap = amap
        if not math.isfinite(score):
            return None, score, norm
        return model_verdict(defective, norm, self.opt.uncertain_band), score, norm

    # ================================================================= scheduler callbacks
    def _on_final(self, part: Part) -> None:
        self.metrics.on_final(part)
        if self.evidence is not None and self.evidence.wants(part):
            self.evidence.submit(part, self.name)
        self.parts.record(part)

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


@contextlib.contextmanager
def _interpreter_settings(opt: LoopOptions) -> Iterator[None]:
    """CPython settings while the line runs, so the scheduler meets its fire times; restored afterwards."""
    with ExitStack() as stack:
        if opt.switch_interval_s > 0:  # the scheduler waits less for the GIL
            stack.callback(sys.setswitchinterval, sys.getswitchinterval())
            sys.setswitchinterval(opt.switch_interval_s)
        if opt.freeze_gc:
            # A full collection walks every object (hundreds of thousands once torch is imported) and stops
            # every thread for up to 100 ms; frozen objects are skipped. Parts themselves make no cycles.
            gc.collect()
            gc.freeze()
            stack.callback(gc.unfreeze)
        if opt.idle_gc:
            # Collections of the young generations run in whichever thread allocates, for 0.1-1 ms with the
            # GIL held: at an actuation that is jitter. The scheduler collects when nothing is due instead
            # (_collect_young); the automatic collection stays as a backstop, so memory stays bounded if it
            # never idles.
            stack.callback(gc.set_threshold, *gc.get_threshold())
            t0, t1, t2 = gc.get_threshold()
            gc.set_threshold(max(t0, opt.gc_backstop), t1, t2)
        yield


def _collect_young() -> None:
    """Idle moment of the scheduler: collect the young generations (never the old one, which is frozen and
    would walk every object) once enough allocations piled up."""
    c0, c1, _ = gc.get_count()
    if c0 >= YOUNG_GC_MIN:
        gc.collect(1 if c1 >= gc.get_threshold()[1] else 0)
