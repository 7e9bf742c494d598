"""Monitoring: Prometheus metrics (a private registry per line, served on 127.0.0.1 by default), defect evidence
on disk in a ring buffer with a size quota, and a one-line live status for the terminal."""
from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Optional, TextIO

import cv2
import numpy as np
from .decision import FAIL_SAFE_CAUSES, STAGES, VERDICTS, Part
from .errors import LineConfigError, LineError

log = logging.getLogger(__name__)

SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20))
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class LineMetrics:
    """Counters and histograms of one line. `value(name, **labels)` reads them back (tests, summaries)."""

    def __init__(self, line: str = "line"):
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise LineError("the line needs prometheus-client: pip install '.[line]' in the prn-edge source "
                            "folder") from None
        self.line = line
        r = self.registry = CollectorRegistry()
        self.parts = Counter("prn_line_parts", "Parts seen (each gets one decision)", registry=r)
        self.decisions = Counter("prn_line_decisions", "Final decisions by verdict", ["verdict"], registry=r)
        self.rejects = Counter("prn_line_rejects", "Parts diverted (reject or recheck), fail-safe included",
                               registry=r)
        self.fail_safe = Counter("prn_line_fail_safe_rejects", "Fail-safe decisions by cause", ["cause"], registry=r)
        self.deadline_misses = Counter("prn_line_deadline_misses", "Parts whose verdict was not in by its deadline",
                                       registry=r)
        self.late_actuations = Counter("prn_line_late_actuations",
                                       "Actuations later than the tolerance after their fire time", ["kind"],
                                       registry=r)
        self.dropped_frames = Counter("prn_line_dropped_frames", "Frames discarded", ["reason"], registry=r)
        self.camera_events = Counter("prn_line_camera_events", "Camera timeouts, corrupt frames, errors",
                                     ["kind"], registry=r)
        self.output_errors = Counter("prn_line_output_errors", "Failed output calls", ["output", "call"],
                                     registry=r)
        self.commands = Counter("prn_line_commands", "Commands by output and outcome (delivered, late, stale, "
                                "failed, unknown, none)", ["output", "outcome"], registry=r)
        self.evidence_dropped = Counter("prn_line_evidence_dropped", "Evidence not written (writer busy)",
                                        registry=r)
        self.evidence_failed = Counter("prn_line_evidence_failed", "Evidence sets not written (reason: reserve = "
                                       "the disk's free-space reserve, write = a write failed)", ["reason"],
                                       registry=r)
        self.watchdog_trips = Counter("prn_line_watchdog_trips", "Times the heartbeat stopped", registry=r)
        self.stage = Histogram("prn_line_stage_seconds", "Per-part time in each stage", ["stage"],
                               buckets=STAGE_BUCKETS, registry=r)
        self.queue_depth = Gauge("prn_line_queue_depth", "Parts waiting for inference", registry=r)
        self.heartbeat = Gauge("prn_line_heartbeat", "Last heartbeat counter sent", registry=r)
        self.healthy = Gauge("prn_line_healthy", "1 while every loop thread and the camera are alive", registry=r)
        self.score = Histogram("prn_line_normalized_score", "Normalized scores of model decisions (0.5 = threshold)",
                               buckets=SCORE_BUCKETS, registry=r)
        self.drift = Gauge("prn_line_score_drift", "Median normalized score of recent good parts minus that of the "
                           "run's first good parts (lighting, camera, material changing)", registry=r)
        self.drift_alarms = Counter("prn_line_score_drift_alarms", "Times the score drift crossed its alarm level",
                                    registry=r)
        self.engine_swaps = Counter("prn_line_engine_swaps", "Hot swaps of the engine artefact", ["result"],
                                    registry=r)
        self.artefact = Gauge("prn_line_artefact_info", "1 for the artefact deciding now (name@sha256; a Triton "
                              "model: MODEL/VERSION:name@sha256)", ["artefact"], registry=r)
        self.by_artefact = Counter("prn_line_model_decisions", "Model decisions by the artefact (Triton: model "
                                   "version) that made them", ["artefact"], registry=r)
        self.reference_decisions = Counter("prn_line_reference_decisions", "Parts a cascade engine's FP32 reference "
                                           "decided (their INT8 score lay near the threshold)", registry=r)
        for result in ("ok", "failed"):
            self.engine_swaps.labels(result)
        self._drift = ScoreDrift()
        for reason in ("reserve", "write"):  # series exist at 0 from the start: rate() and alerts see them
            self.evidence_failed.labels(reason)
        # Children bound once: labels() builds a key and takes the metric's lock on every call, on the
        # scheduler's and the outputs' threads.
        self._by_verdict = {v: self.decisions.labels(v) for v in VERDICTS}
        self._by_cause = {c: self.fail_safe.labels(c) for c in FAIL_SAFE_CAUSES}
        self._by_stage = {s: self.stage.labels(s) for s in STAGES}
        self._late_by_kind = {k: self.late_actuations.labels(k) for k in ("model", "fail_safe")}
        self._server = None

    def value(self, name: str, **labels) -> float:
        v = self.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v

    def on_final(self, part: Part) -> None:
        d = part.decision
        (self._by_verdict.get(d.verdict) or self.decisions.labels(d.verdict)).inc()
        if d.rejects:
            self.rejects.inc()
        if d.fail_safe:
            (self._by_cause.get(d.cause) or self.fail_safe.labels(d.cause)).inc()
        if d.cause == "late_verdict":
            self.deadline_misses.inc()
        if not d.fail_safe and part.artefact:
            self.by_artefact.labels(part.artefact).inc()
        if not d.fail_safe and d.normalized == d.normalized:
            self.score.observe(d.normalized)
            if not d.rejects:
                drift = self._drift.add(d.normalized)
                if drift is not None:
                    self.drift.set(drift)
                    if self._drift.crossed:
                        self.drift_alarms.inc()
                        log.warning("ALARM score drift on line %s: good parts score %+.3f above the run's start "
                                    "(normalized; 0.5 = threshold): check lighting and camera, re-tune with "
                                    "`prn-edge threshold` if the parts are good", self.line, drift)
        by_stage = self._by_stage
        for stage, seconds in list(part.times.items()):  # other threads may still add to it
            if stage != "actuation":
                (by_stage.get(stage) or self.stage.labels(stage)).observe(seconds)

    def on_command(self, output: str, part: Part, outcome: str) -> None:
        self.commands.labels(output, outcome).inc()

    def on_actuated(self, part: Part, t_start: float, t_done: float, fire_tolerance_s: float) -> bool:
        """Records the actuation stage; returns whether it was late (started after fire time + tolerance)."""
        self._by_stage["actuation"].observe(t_done - part.t_fire)
        late = t_start - part.t_fire > fire_tolerance_s
        if late:
            self._late_by_kind["fail_safe" if part.decision.fail_safe else "model"].inc()
        return late

    def summary(self) -> dict:
        causes = {c: int(self.value("prn_line_fail_safe_rejects_total", cause=c)) for c in FAIL_SAFE_CAUSES}
        return {
            "parts": int(self.value("prn_line_parts_total")),
            "decisions": {v: int(self.value("prn_line_decisions_total", verdict=v)) for v in VERDICTS},
            "rejects": int(self.value("prn_line_rejects_total")),
            "fail_safe": {c: n for c, n in causes.items() if n},
            "deadline_misses": int(self.value("prn_line_deadline_misses_total")),
            "late_actuations": {k: int(self.value("prn_line_late_actuations_total", kind=k))
                                for k in ("model", "fail_safe")},
            "model_decisions_by_artefact": {x.labels["artefact"]: int(x.value) for m in self.by_artefact.collect()
                                            for x in m.samples if x.name.endswith("_total")},
            "reference_decisions": int(self.value("prn_line_reference_decisions_total")),
        }

    def serve(self, port: int, bind: str = "127.0.0.1") -> int:
        """Serve /metrics and /healthz for this line alone; port 0 picks a free one. Returns the port."""
        if self._server is not None:
            raise RuntimeError("metrics are already served")
        self._server = MetricsEndpoint([self], port, bind)
        return self._server.port

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class ScoreDrift:
    """Drift of the good parts' scores: the median of the last `window` normalized scores of accepted parts
    against the median of the run's first `baseline` ones. `crossed` is True on the call where the drift first
    exceeds `alarm` (again after it fell below half of it)."""

    def __init__(self, window: int = 500, baseline: int = 200, alarm: float = 0.15):
        from collections import deque

        self.window, self.baseline_n, self.alarm = window, baseline, alarm
        self._base: list[float] = []
        self._recent = deque(maxlen=window)
        self.reference: Optional[float] = None
        self._alarmed = False
        self.crossed = False

    def add(self, normalized: float) -> Optional[float]:
        self.crossed = False
        if self.reference is None:
            self._base.append(normalized)
            if len(self._base) >= self.baseline_n:
                self.reference = float(np.median(self._base))
            return None
        self._recent.append(normalized)
        if len(self._recent) < min(self.window, self.baseline_n) or len(self._recent) % 10:
            return None
        drift = float(np.median(self._recent)) - self.reference
        if drift > self.alarm and not self._alarmed:
            self._alarmed = self.crossed = True
        elif drift < self.alarm / 2:
            self._alarmed = False
        return drift


class MetricsEndpoint:
    """One HTTP endpoint per process for all its lines: /metrics (Prometheus text; every series carries a `line`
    label) and /healthz (200 while every line is healthy, else 503; JSON body per line) for a service manager or
    a load balancer. Binds 127.0.0.1 unless told otherwise."""

    def __init__(self, lines: list[LineMetrics], port: int = 0, bind: str = "127.0.0.1"):
        import http.server

        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        collector = _LineLabels(lines)
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(collector), CONTENT_TYPE_LATEST, 200
                elif path == "/healthz":
                    state = endpoint.health()
                    body = json.dumps(state).encode()
                    ctype, code = "application/json", 200 if state["healthy"] else 503
                else:
                    body, ctype, code = b"/metrics or /healthz\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes every few seconds: not worth a log line each
                pass

        self.lines = lines
        try:
            self._httpd = http.server.ThreadingHTTPServer((bind, port), Handler)
        except OSError as e:
            raise LineConfigError(f"monitor.port={port} on {bind}: cannot listen ({e}); choose a free port") from None
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.bind = bind
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="line-metrics", daemon=True)
        self._thread.start()

    def health(self) -> dict:
        lines = {m.line: bool(m.value("prn_line_healthy")) for m in self.lines}
        return {"healthy": all(lines.values()), "lines": lines}

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _LineLabels:
    """A collector over the lines' private registries that adds line="<name>" to every sample."""

    def __init__(self, lines: list[LineMetrics]):
        self.lines = lines

    def collect(self):
        from prometheus_client.metrics_core import Metric

        families: dict[str, Metric] = {}
        for m in self.lines:
            for fam in m.registry.collect():
                out = families.get(fam.name)
                if out is None:
                    out = families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                for smp in fam.samples:
                    out.add_sample(smp.name, {"line": m.line, **smp.labels}, smp.value, smp.timestamp,
                                   smp.exemplar)
        return list(families.values())


def heat_overlay(image: np.ndarray, amap: Optional[np.ndarray], alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: the anomaly map (0..1, jet colours) over the image."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    if amap is None:
        return rgb.copy()
    m = cv2.resize(np.asarray(amap, np.float32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.clip(m * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return cv2.addWeighted(rgb, 1 - alpha, heat, alpha, 0)


class EvidenceStore:
    """Image, heat-map overlay and JSON of rejected parts, oldest deleted first to stay within quota_bytes and to
    keep reserve_bytes free on the disk (the decisions CSV and the system share it).

    Writing happens on a background thread; when it falls behind, evidence is dropped (counted), never the line.
    A set is complete or absent: its files are encoded in memory, written under temporary names and renamed,
    the JSON last; a failed write removes the set's files and is counted (`failed`, prn_line_evidence_failed).
    """

    SUFFIXES = (".png", "_overlay.png", ".json")
    TMP = ".part"

    def __init__(self, folder: str | Path, quota_bytes: int = 100 << 20, fail_safe: bool = False,
                 metrics: Optional[LineMetrics] = None, backlog: int = 16, reserve_bytes: int = 200 << 20):
        if quota_bytes <= 0:
            raise LineConfigError("monitor.evidence_quota_mb must be > 0")
        if reserve_bytes < 0:
            raise LineConfigError("monitor.evidence_reserve_mb must be >= 0")
        self.folder = Path(folder)
        self.quota = int(quota_bytes)
        self.reserve = int(reserve_bytes)
        self.fail_safe = fail_safe  # also keep fail-safe rejects that have an image
        self._metrics = metrics
        self._q: queue.Queue = queue.Queue(maxsize=backlog)
        self._thread: Optional[threading.Thread] = None
        self._ring: list[tuple[str, int]] = []  # (stem, bytes) oldest first
        self.used = 0
        self.written = 0
        self.dropped = 0
        self.failed: dict[str, int] = {"reserve": 0, "write": 0}

    def __enter__(self) -> "EvidenceStore":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LineConfigError(f"monitor.evidence_dir={str(self.folder)!r}: {e}") from None
        stems: dict[str, int] = {}
        for p in list(self.folder.iterdir()):
            if p.name.endswith(self.TMP):  # a set cut short by a crash or a full disk
                p.unlink(missing_ok=True)
            elif p.suffix == ".json":
                stem = p.stem
                stems[stem] = sum(q.stat().st_size for q in self._files(stem) if q.exists())
        self._ring = sorted(stems.items())  # stems start with a time stamp: sorted = oldest first
        self.used = sum(b for _, b in self._ring)
        self._thread = threading.Thread(target=self._run, name="line-evidence", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._q.put(None)
        if self._thread is not None:
            self._thread.join(10)

    def summary(self) -> dict:
        return {"written": self.written, "dropped_busy": self.dropped, "failed": dict(self.failed),
                "bytes": self.used}

    def _files(self, stem: str) -> list[Path]:
        return [self.folder / (stem + s) for s in self.SUFFIXES]

    def wants(self, part: Part) -> bool:
        d = part.decision
        return d.rejects and (not d.fail_safe or self.fail_safe) and part.frame is not None \
            and part.frame.image is not None

    def submit(self, part: Part, line: str = "") -> None:
        d = part.decision
        info = {"line": line, "seq": part.seq, "part_id": part.part_id, "frame_id": part.frame_id,
                "verdict": d.verdict, "cause": d.cause, "score": None if d.score != d.score else d.score,
                "normalized": None if d.normalized != d.normalized else d.normalized,
                "label": part.label, "defect": part.defect, "wall_time": time.time(),
                "stage_seconds": {k: round(v, 6) for k, v in part.times.items()}}
        try:
            self._q.put_nowait((info, part.frame.image, part.amap))
        except queue.Full:
            self.dropped += 1
            if self._metrics is not None:
                self._metrics.evidence_dropped.inc()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            try:
                self._write(*item)
            except Exception as e:  # anything else: still never the line
                self._fail("write", e)

    def _fail(self, reason: str, error) -> None:
        self.failed[reason] += 1
        if self._metrics is not None:
            self._metrics.evidence_failed.labels(reason).inc()
        if sum(self.failed.values()) in (1, 10, 100, 1000):
            log.warning("ALARM evidence not written (%d so far): %s", sum(self.failed.values()), error)

    def _free(self) -> int:
        st = os.statvfs(self.folder)
        return st.f_bavail * st.f_frsize

    def _evict_oldest(self) -> None:
        old, b = self._ring.pop(0)
        for p in self._files(old):
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
        self.used -= b

    def _write(self, info: dict, image: np.ndarray, amap: Optional[np.ndarray]) -> None:
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}_{info['seq']:09d}_{info['verdict']}"
        bgr = lambda a: a if a.shape[2] == 1 else a[..., ::-1]  # noqa: E731 - OpenCV writes BGR
        blobs = []
        for arr in (bgr(image), heat_overlay(image, amap)[..., ::-1]):
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
            if not ok:
                self._fail("write", f"PNG encoding failed for part {info['seq']}")
                return
            blobs.append(buf.tobytes())
        blobs.append(json.dumps(info, indent=1).encode())
        size = sum(len(b) for b in blobs)
        while self._ring and (self.used + size > self.quota or self._free() - size < self.reserve):
            self._evict_oldest()
        if self._free() - size < self.reserve:
            self._fail("reserve", f"{self.folder}: less than {self.reserve >> 20} MiB would stay free")
            return
        paths = self._files(stem)
        tmps = [p.with_name(p.name + self.TMP) for p in paths]
        try:
            for tmp, blob in zip(tmps, blobs):
                with open(tmp, "wb") as f:
                    f.write(blob)
            for tmp, path in zip(tmps, paths):  # the JSON last: a set with its JSON is complete
                os.replace(tmp, path)
        except OSError as e:
            for q in tmps + paths:
                try:
                    os.remove(q)
                except OSError:
                    pass
            self._fail("write", e)
            return
        self._ring.append((stem, size))
        self.used += size
        self.written += 1


class StatusLine:
    """One live line on a terminal: parts, rate, rejects, fail-safe, deadline misses, p99 latency, health."""

    def __init__(self, stream: TextIO = sys.stderr, every_s: float = 0.5, force: bool = False):
        self.stream = stream
        self.every_s = every_s
        self.enabled = force or (hasattr(stream, "isatty") and stream.isatty())
        self._last = 0.0
        self._t0 = time.monotonic()
        self._width = 0

    @staticmethod
    def render(summary: dict, elapsed_s: float, p99_ms: float, healthy: bool, queue_depth: int) -> str:
        parts = summary["parts"]
        fs = sum(summary["fail_safe"].values())
        return (f"parts {parts}  {parts / max(elapsed_s, 1e-9):.1f}/s  rejects {summary['rejects']}  "
                f"fail-safe {fs}  missed {summary['deadline_misses']}  queue {queue_depth}  "
                f"p99 {p99_ms:.1f} ms  {'OK' if healthy else 'ALARM'}")

    def update(self, text: str, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self._last < self.every_s):
            return
        self._last = now
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
        self.stream.flush()
