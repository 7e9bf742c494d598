"""`prn-edge run --check CONFIG`: everything a line needs, checked without running it, every problem reported at
once (an integrator fixes a config in one round, not one error per start).

Checks: each config section on its own (so an error in one does not hide the others; unknown keys get a
did-you-mean), then, if the config is whole, the time budget, the engine artefact (opens, its gate status, what
runs it), the source (opens and gives a frame geometry), each output (opens: a Modbus PLC must answer a read), the
folders the line writes and the metrics port.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import load_config_file
from ..errors import PrnEdgeError
from .config import line_config


@dataclass
class Check:
    what: str
    ok: bool
    detail: str

    def row(self) -> str:
        return f"{'ok ' if self.ok else 'ERR'}  {self.what:<22} {self.detail}"


def _try(what: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(what, True, fn() or "")
    except PrnEdgeError as e:
        return Check(what, False, str(e))
    except Exception as e:  # anything else a part raises while opening is still a finding, not a crash
        return Check(what, False, f"{e.__class__.__name__}: {e}")


def check_line(path: str | Path) -> list[Check]:
    """All findings for one line config file; the config is valid and reachable when every Check is ok."""
    path = Path(path)
    checks: list[Check] = []
    try:
        data = load_config_file(path)
    except PrnEdgeError as e:
        return [Check("config file", False, str(e))]
    if not isinstance(data, dict):
        return [Check("config file", False, f"expected a mapping of sections, got {type(data).__name__}")]
    base = path.resolve().parent
    minimal = {"outputs": []}  # a section is checked alone, against defaults for the rest
    for section in sorted(data):
        checks.append(_try(f"config: {section}", lambda s=section: _section(data, s, minimal, base)))
    if not all(c.ok for c in checks):
        return checks
    cfg = line_config(data, base)
    checks.append(Check("config", True, f"line {cfg.name}: source {cfg.source.kind}, {len(cfg.outputs)} output(s)"))
    from .factory import build_engine, build_outputs, build_source

    checks.append(_try("timing", lambda: _timing(cfg)))
    opened: dict[str, Any] = {}  # what the engine and source checks learned: input, geometry, the source
    checks.append(_try("engine", lambda: _engine(build_engine(cfg), opened)))
    checks.append(_try("source", lambda: _source(build_source(cfg), opened)))
    if {"engine_input", "geometry"} <= set(opened):  # what `run` builds from the two before its first part
        checks.append(_try("region", lambda: _region(cfg, opened)))
    try:
        outputs = build_outputs(cfg, opened.get("source"))
    except PrnEdgeError as e:
        checks.append(Check("outputs", False, str(e)))
        outputs = []
    for o in outputs:
        checks.append(_try(f"output: {o.name}", lambda o=o: _output(o)))
    if cfg.monitor.evidence_dir:
        checks.append(_try("evidence folder", lambda: _writable(cfg.monitor.evidence_dir)))
    if cfg.monitor.port > 0:
        checks.append(_try("metrics port", lambda: _port(cfg.monitor.bind, cfg.monitor.port)))
    return checks


def _section(data: dict, section: str, minimal: dict, base: Path) -> str:
    trial = dict(minimal)
    trial[section] = data[section]
    if section != "source" and "source" in data and isinstance(data["source"], dict):
        trial.setdefault("source", {"kind": data["source"].get("kind", "conveyor")})
    try:
        line_config(trial, base)
    except PrnEdgeError as e:
        text = str(e)
        # A missing requirement of another section (e.g. the source's path) is reported by that section
        if section != "source" and text.startswith("source.kind="):
            return ""
        raise
    return ""


def _timing(cfg) -> str:
    """The time budget `run` derives from timing (a time-based one; an encoder's is measured on the belt)."""
    e = cfg.timing.encoder
    if e.kind != "none":  # its budget opens the encoder: not here
        return f"encoder {e.kind}: the ejector {e.distance_counts} counts after the camera"
    from .factory import budget_of

    budget = budget_of(cfg)
    return f"each part decided within {budget.fire_delay_s - budget.margin_s:.3f} s of its capture"


def _engine(engine, box: dict) -> str:
    from ..runtime.base import describe_line
    from .engine import engine_description, engine_input
    from .swap import artefact_label

    with engine:
        info = engine_description(engine)
        spec = engine.input_spec
        box["engine_input"] = engine_input(engine)
    gate = engine.metadata.get("accuracy_gate")
    return (f"{artefact_label(engine)}: {spec.height}x{spec.width}x{spec.channels} {spec.channel_order}, "
            + describe_line(info) + (f", accuracy gate {gate}" if gate else ""))


def _source(source, box: dict) -> str:
    with source:
        h, w, c = box["geometry"] = source.geometry()
    box["source"] = source
    return f"{type(source).__name__}: frames {h}x{w}x{c} (height x width x channels)"


def _region(cfg, box: dict) -> str:
    """The camera region against the model input, as the running line plans it (tiles.Preprocessor): a size
    mismatch without roi, tiles or resize is found here, not at the first part."""
    from .tiles import Preprocessor

    r = cfg.region
    prep = Preprocessor(box["geometry"], box["engine_input"], tuple(r.roi), r.tiles, r.overlap, r.resize)
    how = f"{prep.frames_per_part} tiles" if prep.grid is not None else "resized" if prep.resize else "as it is"
    return f"camera region {prep.region.height}x{prep.region.width} -> model input ({how})"


def _output(output) -> str:
    if getattr(output, "audit", False) and hasattr(output, "path"):  # a file: check, do not create it
        return _writable(Path(output.path).parent) + f" ({output.path})"
    if hasattr(output, "check"):  # a peer that a running line may be using: read-only (Modbus: one read)
        output.check()
        return "answers (read-only check)"
    with output:
        pass
    return "opened and closed"


def _writable(folder: str | Path) -> str:
    from ..artefact.files import check_writable

    check_writable(folder, folder=True)
    return f"{folder} writable"


def _port(bind: str, port: int) -> str:
    with socket.socket() as s:
        try:
            s.bind((bind, port))
        except OSError as e:
            raise PrnEdgeError(f"monitor.port {port} on {bind}: {e}; choose a free port") from None
    return f"{bind}:{port} free"
