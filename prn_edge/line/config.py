"""Line configuration: typed dataclasses read from YAML, validated once, with errors naming the key.

    name: line1
    engine: {path: model.onnx, backend: auto}
    source: {kind: genicam, genicam: {cti: /opt/vendor/lib/producer.cti, serial: "12345", trigger: hardware}}
    region: {roi: [0, 0, 512, 512], tiles: false}
    decision: {fail_safe: reject, uncertain_band: [0.4, 0.6]}
    timing: {speed_m_s: 0.5, distance_m: 0.3, actuator_lead_s: 0.03}      # or {deadline_s: 0.2}
    outputs:
      - {kind: csv, path: decisions.csv}
      - {kind: modbus, host: 192.168.0.10, command_register: 0, heartbeat_register: 10}
    monitor: {port: 9108, evidence_dir: evidence, evidence_quota_mb: 200}

Relative paths are taken from the config file's folder.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Tuple

from ..config import _build, _choice, load_config_file
from ..errors import ConfigError
from ..runtime import BACKENDS as BACKEND_REGISTRY
from ..runtime import EngineError, backend_for, backend_names, engine_options
from . import registry
from .errors import LineConfigError
from .loop import LoopOptions

log = logging.getLogger(__name__)

BACKENDS = ("auto",) + backend_names()  # the runtime's registry (prn_edge.runtime.BACKENDS)


@dataclass
class EngineConfig:
    path: str = ""  # exported .onnx, checkpoint .pt, built .engine, or triton://HOST:PORT/MODEL[/VERSION]
    backend: str = "auto"
    threads: int = 0  # 0 = the backend's default
    warmup: int = 3
    # Several lines (cameras) run together with the same engine.path share one engine: calls within
    # share_wait_s of each other run as one batch of at most share_max_batch frames (0 = one per line).
    share_wait_s: float = 0.002
    share_max_batch: int = 0
    allow_failed_gate: bool = False  # run an INT8 artefact whose calibration failed its accuracy gate
    # the backend's own options (its options dataclass in prn_edge.runtime, e.g. OnnxRuntimeOptions:
    # {providers: [tensorrt, cuda], trt_fp16: true}), checked when the config is read
    options: dict = field(default_factory=dict)


@dataclass
class LineScanConfig:
    enabled: bool = False
    frame_height: int = 0  # lines per part frame
    mode: str = "length"  # length | trigger


@dataclass
class SourceConfig:
    """source: {kind: K, K: {...its options...}, grab_timeout_s, linescan}; the options of kind K are the
    dataclass registered beside its implementation (prn_edge.line.registry)."""
    kind: str = "conveyor"
    grab_timeout_s: float = 0.5
    linescan: LineScanConfig = field(default_factory=LineScanConfig)
    options: Any = None  # the chosen kind's options dataclass


@dataclass
class RegionConfig:
    roi: Tuple[int, ...] = ()  # [x, y, width, height]; [] = whole frame
    tiles: bool = False
    overlap: int = LoopOptions.overlap
    # the region resized to the engine's frames on the host, by training's resampling (input_policy.axis_weights;
    # about 180 ms for a 5-megapixel frame on a 2-core CPU against 20 ms for cv2's INTER_AREA, which differs from
    # training where an axis is enlarged). Cheaper: export with --input-size at the region's size, the graph resizes.
    resize: bool = False


@dataclass
class DecisionConfig:
    fail_safe: str = "reject"  # reject | recheck
    uncertain_band: Tuple[float, ...] = ()  # [low, high] normalized score -> recheck


@dataclass
class EncoderConfig:
    kind: str = "none"  # none (time-based) | modbus (the PLC's counter registers) | clock (simulated encoder)
    distance_counts: int = 0  # camera to ejector, in encoder counts
    host: str = "127.0.0.1"
    port: int = 502
    device_id: int = 1
    register: int = 20  # high word; low word at register + 1
    table: str = "input"  # input | holding registers
    counts_per_s: float = 0.0  # kind clock: the simulated belt speed
    poll_s: float = 0.005
    speed_headroom: float = 1.25  # first fire-time guesses assume the belt may run this much faster


@dataclass
class TimingConfig:
    speed_m_s: float = 0.0
    distance_m: float = 0.0  # camera to ejector
    actuator_lead_s: float = 0.0  # valve opening time, PLC scan
    deadline_s: float = 0.0  # capture -> command out, instead of speed/distance
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # eject by belt position instead of time
    margin_s: float = 0.005  # a verdict must be in this long before the command goes out
    max_batch: int = 1
    batch_wait_s: float = 0.0
    queue_size: int = 64
    heartbeat_s: float = 0.1
    watchdog_s: float = 1.0
    fire_tolerance_s: float = LoopOptions.fire_tolerance_s
    stale_after_s: float = 0.05  # a command not delivered by fire time + this is dropped (stale), never sent late
    p99_window: int = 200  # recent engine calls in the p99 that decides 'too late already'
    p99_age_s: float = 1.0  # ... no older than this
    switch_interval_s: float = 0.0005  # Python thread switch interval while the line runs


@dataclass
class MonitorConfig:
    port: int = -1  # -1 = no metrics endpoint, 0 = any free port
    bind: str = "127.0.0.1"
    # The endpoint has no authentication: an address other than loopback is refused unless this says so.
    expose: bool = False
    evidence_dir: str = ""  # "" = no evidence on disk
    evidence_quota_mb: float = 100.0
    evidence_reserve_mb: float = 200.0  # evidence never leaves less than this free on its disk (oldest go first)
    evidence_fail_safe: bool = False
    status_line: bool = True


ENCODER_KINDS = ("none", "modbus", "clock")


@dataclass
class LineConfig:
    name: str = "line1"
    engine: EngineConfig = field(default_factory=EngineConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    region: RegionConfig = field(default_factory=RegionConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    outputs: Tuple[Any, ...] = ()  # output configs; empty = one CSV output
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def validate(self) -> "LineConfig":
        try:
            _choice("source.kind", self.source.kind, list(registry.sources()))
            _choice("engine.backend", self.engine.backend, list(BACKENDS))
            _choice("decision.fail_safe", self.decision.fail_safe, ["reject", "recheck"])
            _choice("source.linescan.mode", self.source.linescan.mode, ["length", "trigger"])
            _choice("timing.encoder.kind", self.timing.encoder.kind, list(ENCODER_KINDS))
            _choice("timing.encoder.table", self.timing.encoder.table, ["input", "holding"])
            for i, o in enumerate(self.outputs):
                if hasattr(o, "at"):
                    _choice(f"outputs[{i}].at", o.at, ["eject", "decision"])
        except ConfigError as e:
            raise LineConfigError(str(e)) from None
        out_kinds = registry.outputs()
        for i, o in enumerate(self.outputs):
            for need in out_kinds[o.kind].needs:
                if not getattr(o, need):
                    raise LineConfigError(f"outputs[{i}] (kind {o.kind}) needs {need}")
        if self.source.linescan.enabled and self.source.linescan.frame_height < 1:
            raise LineConfigError("source.linescan.frame_height must be >= 1 when source.linescan.enabled is true")
        t, e = self.timing, self.timing.encoder
        if e.kind != "none":
            if t.speed_m_s or t.distance_m or t.deadline_s:
                raise LineConfigError("timing: with timing.encoder.kind set, give the distance as "
                                      "timing.encoder.distance_counts and leave speed_m_s, distance_m and deadline_s 0")
            if e.distance_counts <= 0:
                raise LineConfigError("timing.encoder.distance_counts must be > 0 (camera-to-ejector distance in "
                                      "encoder counts)")
            if e.kind == "clock" and e.counts_per_s <= 0:
                raise LineConfigError("timing.encoder.counts_per_s must be > 0 for kind clock (the simulated belt)")
            if e.poll_s <= 0 or e.speed_headroom < 1:
                raise LineConfigError("timing.encoder.poll_s must be > 0 and timing.encoder.speed_headroom >= 1")
        if self.source.grab_timeout_s <= 0:
            raise LineConfigError("source.grab_timeout_s must be > 0")
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise LineConfigError(f"outputs: names {names} repeat; give each output its own name:")
        if self.monitor.port < -1 or self.monitor.port > 65535:
            raise LineConfigError(f"monitor.port={self.monitor.port}: -1 (off), 0 (any free port) or 1..65535")
        loopback = self.monitor.bind in ("localhost", "::1") or self.monitor.bind.startswith("127.")
        if self.monitor.port >= 0 and not loopback:
            if not self.monitor.expose:
                raise LineConfigError(f"monitor.bind={self.monitor.bind!r} would serve the unauthenticated metrics "
                                      "endpoint beyond this machine; keep 127.0.0.1 (and scrape through a proxy), or "
                                      "set monitor.expose: true to allow it on a trusted network")
            log.warning("monitor.bind=%s: the metrics endpoint (no authentication) is reachable from the network",
                        self.monitor.bind)
        if self.engine.warmup < 0 or self.engine.threads < 0:
            raise LineConfigError("engine.warmup and engine.threads must be >= 0")
        self.backend_options()
        # last: `run --check` checks each section against defaults for the others, where the source's missing
        # path is expected; every check of the section before this one must have run
        kind = self.source.kind
        for need in registry.sources()[kind].needs:
            if not getattr(self.source.options, need):
                raise LineConfigError(f"source.kind={kind!r} needs source.{kind}.{need}")
        return self

    def engine_backend(self) -> str:
        """The engine's backend: engine.backend, or what its path says (auto)."""
        e = self.engine
        try:
            return e.backend if e.backend != "auto" else backend_for(e.path)
        except EngineError as err:
            raise LineConfigError(f"engine.path: {err}") from None

    def backend_options(self) -> dict:
        """engine.options checked against the backend's options dataclass (with engine.threads), as keywords."""
        e = self.engine
        if not isinstance(e.options, Mapping):
            raise LineConfigError(f"engine.options: expected a mapping of the backend's options, got {e.options!r}")
        if "threads" in e.options:
            raise LineConfigError("engine.options.threads: give it as engine.threads")
        opts = {**e.options, **({"threads": e.threads} if e.threads else {})}
        if opts and e.path:
            try:
                engine_options(self.engine_backend(), **opts)
            except EngineError as err:
                raise LineConfigError(f"engine.options: {err}") from None
        return opts


def _outputs(items: Any) -> tuple:
    kinds = registry.outputs()
    if not isinstance(items, (list, tuple)):
        raise LineConfigError(f"outputs: expected a list of outputs, got {items!r}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "kind" not in item:
            raise LineConfigError(f"outputs[{i}]: expected a mapping with a kind, one of {sorted(kinds)}")
        if not isinstance(item["kind"], str) or item["kind"] not in kinds:
            raise LineConfigError(f"outputs[{i}].kind={item['kind']!r} is not allowed; choose one of "
                                  f"{sorted(kinds)}")
        data = dict(item)
        data.setdefault("name", item["kind"])
        out.append(_build(kinds[item["kind"]].options, data, f"outputs[{i}]"))
    return tuple(out)


def _source(data: Any) -> SourceConfig:
    """source: the common keys, the linescan section, and one section per source kind (each checked against that
    kind's options; the chosen kind's becomes SourceConfig.options)."""
    kinds = registry.sources()
    if not isinstance(data, Mapping):
        raise LineConfigError(f"source: expected a mapping, got {data!r}")
    allowed = {f.name for f in dataclasses.fields(SourceConfig) if f.name != "options"} | set(kinds)
    for key in data:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            raise LineConfigError(f"unknown key source.{key}; allowed: {sorted(allowed)}"
                                  + (f"; did you mean {near[0]!r}?" if near else ""))
    common = {k: v for k, v in data.items() if k not in kinds}
    cfg = _build(SourceConfig, common, "source")
    if cfg.options is not None:
        raise LineConfigError(f"source.options is not a key; put the options under source.{cfg.kind}")
    sections = {k: _build(kinds[k].options, v if v is not None else {}, f"source.{k}")
                for k, v in data.items() if k in kinds}
    if cfg.kind in kinds:
        cfg.options = sections.get(cfg.kind) or kinds[cfg.kind].options()
    return cfg


def _resolve(path: str, base: Path) -> str:
    if "://" in path:  # an address (triton://host:8001/model), not a file
        return path
    return str(base / path) if path and not Path(path).is_absolute() else path


def line_config(data: Mapping[str, Any], base_dir: str | Path = ".") -> LineConfig:
    """A validated LineConfig from a nested dict (YAML); relative paths are taken from base_dir."""
    if not isinstance(data or {}, Mapping):
        raise LineConfigError(f"line config: expected a mapping of sections, got {type(data).__name__}")
    data = dict(data or {})
    outputs = data.pop("outputs", None)
    source = data.pop("source", None)
    try:
        cfg = _build(LineConfig, data, "")
        cfg.source = _source(source) if source is not None else _source({})
        cfg.outputs = _outputs(outputs) if outputs is not None else (registry.outputs()["csv"].options(),)
    except LineConfigError:
        raise
    except ConfigError as e:
        raise LineConfigError(str(e)) from None
    base = Path(base_dir)
    cfg.engine.path = _resolve(cfg.engine.path, base)
    if cfg.engine.path and cfg.engine.options and isinstance(cfg.engine.options, Mapping):
        known = BACKEND_REGISTRY.get(cfg.engine_backend())  # an unknown backend is reported by validate()
        for key in known.options.paths if known is not None else ():  # e.g. the TensorRT EP's cache folder
            if cfg.engine.options.get(key):
                cfg.engine.options[key] = _resolve(str(cfg.engine.options[key]), base)
    cfg.monitor.evidence_dir = _resolve(cfg.monitor.evidence_dir, base)
    kind = registry.sources().get(cfg.source.kind)
    for key in kind.paths if kind is not None and cfg.source.options is not None else ():
        setattr(cfg.source.options, key, _resolve(getattr(cfg.source.options, key), base))
    out_kinds = registry.outputs()
    for o in cfg.outputs:
        for key in out_kinds[o.kind].paths:
            setattr(o, key, _resolve(getattr(o, key), base))
    return cfg.validate()


def load_line_config(path: str | Path) -> LineConfig:
    """Read and validate a line YAML file."""
    try:
        data = load_config_file(path)
    except LineConfigError:
        raise
    except ConfigError as e:
        raise LineConfigError(str(e)) from None
    try:
        return line_config(data, Path(path).resolve().parent)
    except LineConfigError as e:  # the first problem only; --check checks each section on its own
        raise LineConfigError(f"{path}: {e} (`prn-edge run --config {path} --check` lists every problem of the "
                              "config at once)") from None


def to_dict(cfg: LineConfig) -> dict:
    return dataclasses.asdict(cfg)
