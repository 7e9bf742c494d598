"""Loop benchmark (wrapped by tools/bench_line.py): the overhead the line adds around the engine, and a soak with
injected faults that must leave no part undecided and actuate no model verdict late."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..line.decision import Part
from .doubles import NullEngine, RecordingOutput, ScriptedEngine
from ..line.loop import Line, LoopOptions
from ..line.sources.base import FrameSource
from ..line.timing import Budget


def _ms(values: list[float]) -> dict:
    a = np.asarray(values, float) * 1000
    if not len(a):
        return {"n": 0}
    return {"n": int(len(a)), "p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3)}


def tiny_onnx_model(category: str | Path, out_dir: str | Path, variant: str = "prn-tiny",
                    overrides: Optional[dict] = None) -> Path:
    """A prn-tiny model (or another variant, with config `overrides`) whose prototypes are fitted on the category's
    train images brought to the model input by its input policy (no training), exported with uint8 RGB input at the
    images' own size: a real ONNX Runtime engine for line tests and benchmarks in seconds."""
    import torch

    from ..config import make_config
    from ..data.dataset import load_category, load_fitted
    from ..data.images import image_header
    from ..export.onnx_export import export_onnx
    from ..model.prn import build_prn
    from ..model.checkpoint import save_checkpoint

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = make_config(variant, overrides)
    cat = load_category(Path(category), num_shots=0)
    cfg.model.resolve_image_size(cat.train_aspect)  # "auto": as training would choose
    train = cat.train_good
    model, info = build_prn(cfg.model, num_images=len(train))
    images = np.stack([load_fitted(p, cfg.model.hw, cfg.model.input_policy)[0] for p in train])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    model.fit_prototypes(x)
    model.eval()
    with torch.no_grad():
        _, scores = model.predict(x)
    meta = {"category": Path(category).name, "train_images_sha256": "0" * 64, "backbone": info,
            "prototypes_sha256": "1" * 64, "image_threshold": float(scores.max()) + 1e-3, "pixel_threshold": 0.5,
            "score_spread": 0.1}
    save_checkpoint(out / "tiny.pt", model, cfg, meta)
    width, height, _ = image_header(train[0])
    export_onnx(out / "tiny.pt", out / "tiny.onnx", batch=None, input_format="uint8", channel_order="rgb",
                input_hw=(height, width), lint_targets=())
    return out / "tiny.onnx"


def demo_line(out_dir: str | Path) -> tuple[Path, Path]:
    """A small demo category (64 px gravel: 20 good, 4 defect test images) and a tiny real ONNX model fitted on
    it, made once under out_dir: what the line benchmarks run on. Returns (category folder, model.onnx)."""
    from ..data.demo import make_dataset

    out = Path(out_dir)
    if not (out / "data" / "gravel" / "meta.json").is_file():
        make_dataset(out / "data", categories=["gravel"], n_train=4, n_test_good=20, n_test_defect=4, n_shots=0,
                     size=64, progress=False)
    return out / "data" / "gravel", tiny_onnx_model(out / "data" / "gravel", out / "model")


def with_threshold(src: str | Path, dst: str | Path, threshold: float) -> Path:
    """A copy of an ONNX artefact with another image threshold (-1e9: rejects everything, 1e9: accepts all)."""
    from ..artefact import write_atomic
    from ..artefact.metadata import with_metadata

    write_atomic(dst, with_metadata(Path(src).read_bytes(), {"image_threshold": threshold}))
    return Path(dst)


def _camera(source: str, rate_hz: float, cti: str, dataset: Optional[str], parts: int) -> FrameSource:
    if source == "tlsimu":
        from ..line.sources.genicam import GenicamSource

        if not cti:
            import genicam

            cti = str(Path(genicam.__file__).parent / "TLSimu.cti")
        return GenicamSource(cti, index=0, trigger="software", trigger_rate_hz=rate_hz)
    from ..line.sources.conveyor import SyntheticConveyor

    return SyntheticConveyor(dataset, rate_hz=rate_hz, parts=parts)


_PROBE = r"""
import json, sys, threading, time
stalls, stop = [], threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
print("ready", flush=True)
while not stop.is_set():
    t0 = time.monotonic()
    time.sleep(0.001)
    t1 = time.monotonic()
    if t1 - t0 > 0.001 + THRESHOLD:
        stalls.append((round(t0, 6), round(t1, 6)))
print(json.dumps(stalls), flush=True)
"""


class StallProbe:
    """A separate process (its own GIL) that sleeps 1 ms at a time and records every wake-up that came more than
    threshold_s late: pauses of the whole machine (a hypervisor taking the vCPUs), which no scheduling inside the
    line can avoid. Intervals are in time.monotonic(), comparable with the line's timestamps."""

    def __init__(self, threshold_s: float = 0.003):
        self.threshold_s = threshold_s
        self.stalls: list[tuple[float, float]] = []
        self._proc = None

    def __enter__(self) -> "StallProbe":
        import subprocess
        import sys

        self._proc = subprocess.Popen([sys.executable, "-c", _PROBE.replace("THRESHOLD", repr(self.threshold_s))],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._proc.stdout.readline()  # "ready"
        return self

    def __exit__(self, *exc) -> None:
        import json

        out, _ = self._proc.communicate("stop\n", timeout=10)
        self.stalls = [tuple(x) for x in json.loads(out.strip().splitlines()[-1])]

    def overlapping(self, t0: float, t1: float) -> bool:
        return any(a < t1 and b > t0 for a, b in self.stalls)

    def summary(self) -> dict:
        d = [b - a for a, b in self.stalls]
        return {"count": len(d), "max_ms": round(1e3 * max(d), 2) if d else 0.0,
                "total_ms": round(1e3 * sum(d), 1), "threshold_ms": 1e3 * self.threshold_s}


def _late(parts: list[Part], times: list[float], tolerance: float) -> list[int]:
    """Model verdicts that were decided after their t_ready or actuated after t_fire + tolerance."""
    return [p.seq for p, t in zip(parts, times) if not p.decision.fail_safe
            and (p.decision.t_decided > p.t_ready or t - p.t_fire > tolerance)]


def overhead(source: str = "tlsimu", rate_hz: float = 100.0, parts: int = 500, deadline_s: float = 0.05,
             cti: str = "", dataset: Optional[str] = None, tolerance_s: float = 0.01) -> dict:
    """Null engine at rate_hz from a simulated camera: per-part time the loop adds.

    decide = verdict ready - frame on host - engine call; actuate = output called - fire time;
    total = decide + actuate."""
    cam = _camera(source, rate_hz, cti, dataset, parts)
    with cam:
        h, w, c = cam.geometry()
    rec = RecordingOutput()
    line = Line(_camera(source, rate_hz, cti, dataset, parts), NullEngine(h, w, c), [rec],
                Budget.from_line(deadline_s=deadline_s), LoopOptions(fire_tolerance_s=tolerance_s))
    t0 = time.perf_counter()
    summary = line.run(max_parts=parts)
    wall = time.perf_counter() - t0
    by_seq = {p.seq: t for p, t in zip(rec.parts, rec.times)}
    decide, act, total, engine = [], [], [], []
    for p in line.records:
        if p.decision.fail_safe or p.seq not in by_seq or p.frame is None:
            continue
        d = p.decision.t_decided - p.frame.host_ts - p.times.get("inference", 0.0)
        a = by_seq[p.seq] - p.t_fire
        decide.append(d)
        act.append(a)
        total.append(d + a)
        engine.append(p.times.get("inference", 0.0))
    caps = sorted(p.t_capture for p in line.records)
    rate = (len(caps) - 1) / (caps[-1] - caps[0]) if len(caps) > 1 and caps[-1] > caps[0] else 0.0
    return {"source": source, "frame": [h, w, c], "rate_hz": rate_hz, "parts": summary["parts"],
            "achieved_hz": round(rate, 1), "wall_s": round(wall, 2), "fail_safe": summary["fail_safe"],
            "undecided": summary["undecided"], "overhead_ms": _ms(total), "decide_overhead_ms": _ms(decide),
            "actuate_overhead_ms": _ms(act), "null_engine_ms": _ms(engine),
            "late_model_actuations": len(_late(rec.parts, rec.times, tolerance_s))}


def soak(parts: int = 2000, rate_hz: float = 200.0, dataset: Optional[str] = None, deadline_s: float = 0.05,
         fault_rate: float = 0.01, seed: int = 0, tolerance_s: float = 0.01) -> dict:
    """Synthetic conveyor with camera faults (drop, timeout, corrupt at fault_rate each), an engine that fails on
    about fault_rate of its calls and stalls (2x the deadline) on a fifth of that, and an output that is dead for
    a fifth of the run.
    Returns undecided parts, parts not actuated exactly once and late model actuations: all must be 0."""
    from ..line.sources.conveyor import SyntheticConveyor

    with tempfile.TemporaryDirectory() as tmp:
        if dataset is None:
            from ..data.demo import make_dataset

            make_dataset(tmp, categories=["grass"], n_train=2, n_test_good=8, n_test_defect=2, n_shots=0, size=64,
                         progress=False)
            dataset = str(Path(tmp) / "grass")
        rng = np.random.default_rng(seed)
        warm = 10  # calls of the warm-up (which must succeed for the line to start)
        fails = set((warm + np.flatnonzero(rng.random(parts * 2) < fault_rate)).tolist())
        # A stall keeps the recent p99 above the budget for p99_age_s: rarer than the other faults.
        stalls = set((warm + np.flatnonzero(rng.random(parts * 2) < fault_rate / 5)).tolist())
        engine = ScriptedEngine(64, 64, 3, score_fn=lambda f: float(f[0, 0, 0]) / 255.0,
                                delay_s=lambda i: 2 * deadline_s if i in stalls else 0.0, fail_on=fails)
        source = SyntheticConveyor(dataset, rate_hz=rate_hz, parts=parts, seed=seed,
                                   fault_rates={"drop": fault_rate, "timeout": fault_rate, "corrupt": fault_rate})
        rec = RecordingOutput()
        flaky = RecordingOutput("flaky")
        line = Line(source, engine, [rec, flaky], Budget.from_line(deadline_s=deadline_s),
                    LoopOptions(fire_tolerance_s=tolerance_s, max_batch=2, grab_timeout_s=0.05))
        period = parts / rate_hz
        import threading

        def outage():
            time.sleep(period * 0.3)
            flaky.fail = True
            time.sleep(period * 0.2)
            flaky.fail = False

        threading.Thread(target=outage, daemon=True).start()
        t0 = time.perf_counter()
        with StallProbe() as probe:
            summary = line.run()
        wall = time.perf_counter() - t0
    counts: dict[int, int] = {}
    for p in rec.parts:
        counts[p.seq] = counts.get(p.seq, 0) + 1
    not_once = [s for s in range(summary["parts"]) if counts.get(s) != 1]
    fire_late = [t - p.t_fire for p, t in zip(rec.parts, rec.times)]
    late = set(_late(rec.parts, rec.times, tolerance_s))
    # A late actuation whose lateness window overlaps a pause of the whole machine (seen by the probe process)
    in_stall = [p.seq for p, t in zip(rec.parts, rec.times) if p.seq in late
                and probe.overlapping(min(p.decision.t_decided, p.t_fire) - tolerance_s, t)]
    return {"parts": summary["parts"], "seconds": round(wall, 2), "undecided": summary["undecided"],
            "not_actuated_exactly_once": len(not_once), "late_model_actuations": len(late),
            "late_model_actuations_during_machine_pauses": len(in_stall), "machine_pauses": probe.summary(),
            "fail_safe": summary["fail_safe"], "decisions": summary["decisions"],
            "deadline_misses": summary["deadline_misses"],
            "output_errors": int(line.metrics.value("prn_line_output_errors_total", output="flaky", call="actuate")),
            "actuation_lateness_ms": _ms(fire_late)}


def bench_line(source: str = "tlsimu", rate_hz: float = 100.0, parts: int = 500, soak_parts: int = 2000,
               soak_rate_hz: float = 200.0, deadline_s: float = 0.05, cti: str = "", dataset: Optional[str] = None,
               fault_rate: float = 0.01, seed: int = 0) -> dict:
    """Both measurements; source "tlsimu" (GenICam simulator through harvesters) or "conveyor" (needs dataset)."""
    return {"overhead": overhead(source, rate_hz, parts, deadline_s, cti, dataset),
            "soak": soak(soak_parts, soak_rate_hz, dataset, deadline_s, fault_rate, seed) if soak_parts else None}


def encoder_timing(dataset: str, parts: int = 200, rate_hz: float = 40.0, distance_counts: int = 300,
                   actuator_lead_s: float = 0.01) -> dict:
    """An encoder-timed line against a real Modbus TCP server (the PLC's counter, simulated belt) whose speed ramps
    2000 -> 1000 -> 3000 counts/s and stops once: how far from the eject position each command went out.
    Error = the belt's true count at the actuation + the lead's travel - the part's eject position (counts)."""
    from ..line.encoder import EncoderBudget, EncoderTracker, ModbusEncoder
    from .plc import SimulatedPlc
    from ..line.sources.conveyor import SyntheticConveyor

    plc = SimulatedPlc(belt_counts_per_s=2000.0).start()
    belt = plc.belt  # knows the true count at any moment
    try:
        budget = EncoderBudget(EncoderTracker(ModbusEncoder("127.0.0.1", plc.port, register=20), poll_s=0.003),
                               distance_counts, actuator_lead_s=actuator_lead_s)
        rec = RecordingOutput()
        engine = ScriptedEngine(64, 64, 3, score_fn=lambda f: float(f[0, 0, 0]) / 255.0)
        line = Line(SyntheticConveyor(dataset, rate_hz=rate_hz, parts=parts, size=64), engine, [rec], budget,
                    LoopOptions(warmup=1, fire_tolerance_s=0.01))
        period = parts / rate_hz
        script = ([(0.2, v) for v in np.linspace(1800, 1000, 5)] + [(0.15 * period, 0.0), (0.1 * period, 1000.0)]
                  + [(0.1, v) for v in np.linspace(1200, 3000, 10)])

        def drive():
            while line.parts.seq < 3:
                time.sleep(0.002)
            for delay, v in script:
                time.sleep(delay)
                belt.set_speed(v)

        import threading

        threading.Thread(target=drive, daemon=True).start()
        summary = line.run()
    finally:
        plc.stop()
    # tracker position p is belt count origin + p (the belt starts at 0 and does not wrap here)
    origin = budget.tracker.origin
    err = np.array([belt.count_at(t + actuator_lead_s) - origin - p.eject_position for p, t in zip(rec.parts, rec.times)])
    a = np.abs(err)
    return {"parts": summary["parts"], "undecided": summary["undecided"], "fail_safe": summary["fail_safe"],
            "distance_counts": distance_counts, "speeds_counts_per_s": [1000.0, 3000.0, 0.0],
            "eject_error_counts": {"p50": round(float(np.percentile(a, 50)), 2),
                                   "p90": round(float(np.percentile(a, 90)), 2),
                                   "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2)},
            "early_commands": int((err < -3).sum()), "encoder_read_errors": budget.tracker.errors}
