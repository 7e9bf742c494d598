"""From a validated LineConfig to the running objects: source, engine, outputs, loop and monitoring."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from . import registry
from .config import LineConfig
from .errors import LineConfigError
from .loop import Line, LoopOptions
from .monitor import EvidenceStore, LineMetrics, StatusLine
from .outputs.base import RejectOutput
from .sources.base import FrameSource
from .timing import Budget


def build_source(cfg: LineConfig) -> FrameSource:
    s = cfg.source
    source: FrameSource = registry.sources()[s.kind].build(s.options, {})
    if s.linescan.enabled:
        from .tiles import LineScanAssembler

        source = LineScanAssembler(source, s.linescan.frame_height, s.linescan.mode)
    return source


def build_outputs(cfg: LineConfig, source: Optional[FrameSource] = None) -> list[RejectOutput]:
    kinds = registry.outputs()
    return [kinds[o.kind].build(o, {"source": source}) for o in cfg.outputs]


def build_engine(cfg: LineConfig) -> Any:
    if not cfg.engine.path:
        raise LineConfigError("engine.path is empty; give the exported model (.onnx), checkpoint (.pt) or engine")
    try:
        from ..runtime import open_engine
    except ImportError as e:
        raise LineConfigError(f"the inference runtime (prn_edge.runtime) cannot be imported: {e}") from None
    return open_engine(cfg.engine.path, backend=cfg.engine.backend, allow_failed_gate=cfg.engine.allow_failed_gate,
                       **cfg.backend_options())


def loop_options(cfg: LineConfig) -> LoopOptions:
    t, r = cfg.timing, cfg.region
    return LoopOptions(
        fail_safe=cfg.decision.fail_safe, uncertain_band=tuple(cfg.decision.uncertain_band), roi=tuple(r.roi),
        tiles=r.tiles, overlap=r.overlap, resize=r.resize, max_batch=t.max_batch, batch_wait_s=t.batch_wait_s,
        queue_size=t.queue_size, grab_timeout_s=cfg.source.grab_timeout_s, heartbeat_s=t.heartbeat_s,
        watchdog_s=t.watchdog_s, fire_tolerance_s=t.fire_tolerance_s, stale_after_s=t.stale_after_s,
        p99_window=t.p99_window, p99_age_s=t.p99_age_s, warmup=cfg.engine.warmup, keep_maps=bool(cfg.monitor.evidence_dir),
        switch_interval_s=t.switch_interval_s)


def budget_of(cfg: LineConfig) -> Any:
    """Budget (time-based) or EncoderBudget (belt position; its tracker starts with the line)."""
    t = cfg.timing
    e = t.encoder
    if e.kind == "none":
        return Budget.from_line(t.speed_m_s, t.distance_m, t.actuator_lead_s, t.deadline_s, t.margin_s)
    from .encoder import ClockEncoder, EncoderBudget, EncoderTracker, ModbusEncoder

    reader = (ClockEncoder(e.counts_per_s) if e.kind == "clock"
              else ModbusEncoder(e.host, e.port, e.device_id, e.register, e.table))
    return EncoderBudget(EncoderTracker(reader, e.poll_s), e.distance_counts, t.actuator_lead_s, t.margin_s,
                         e.speed_headroom)


def build_line(cfg: LineConfig, engine: Any = None, source: Optional[FrameSource] = None,
               outputs: Optional[list[RejectOutput]] = None, status: Optional[StatusLine] = None) -> Line:
    """The Line of a config; engine/source/outputs may be given (tests, benchmarks) instead of built."""
    budget = budget_of(cfg)  # config errors before anything opens
    options = loop_options(cfg)
    source = source if source is not None else build_source(cfg)
    outputs = outputs if outputs is not None else build_outputs(cfg, source)
    engine = engine if engine is not None else build_engine(cfg)
    metrics = LineMetrics(cfg.name)
    m = cfg.monitor
    evidence = (EvidenceStore(m.evidence_dir, int(m.evidence_quota_mb * (1 << 20)), m.evidence_fail_safe, metrics,
                              reserve_bytes=int(m.evidence_reserve_mb * (1 << 20)))
                if m.evidence_dir else None)
    line = Line(source, engine, outputs, budget, options, name=cfg.name, metrics=metrics, evidence=evidence,
                status=status)
    line.config = cfg  # what a reload compares the re-read config with
    return line


def build_lines(cfgs: list[LineConfig], status: Optional[StatusLine] = None) -> tuple[list[Line], list]:
    """Lines of several configs (one per camera). Lines whose configs name the same engine file share one engine
    (micro-batching across cameras, SharedEngine); returns (lines, shared engines)."""
    from .shared import SharedEngine

    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        raise LineConfigError(f"line names {names} repeat; give each config its own name (metrics and evidence "
                              "are kept per line)")
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(cfgs):
        # a Triton model is not shared here: each line has its own client and the server's batcher gathers them
        alone = not c.engine.path or "://" in c.engine.path
        # one engine for configs that open the same file the same way (backend and its options too)
        key = repr((str(Path(c.engine.path).resolve()), c.engine.backend, sorted(c.backend_options().items())))
        groups.setdefault(f"#{i}" if alone else key, []).append(i)
    engines: dict[int, Any] = {}
    shared = []
    for members in groups.values():
        if len(members) == 1:
            continue
        first = cfgs[members[0]]
        frames = sum(max(1, cfgs[i].timing.max_batch) for i in members)
        sh = SharedEngine(build_engine(first), first.engine.share_max_batch or frames, first.engine.share_wait_s)
        shared.append(sh)
        for i in members:
            engines[i] = sh.client()
    lines = [build_line(c, engine=engines.get(i), status=status if len(cfgs) == 1 else None)
             for i, c in enumerate(cfgs)]
    return lines, shared
