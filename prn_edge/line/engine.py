"""What the line needs from an inference engine (prn_edge.runtime's Engine or any look-alike), and how it reads it.

The line only calls `infer(frames)` and reads `metadata`, `input_spec`, `last_timings`; input_spec may be an
object or a dict with height, width, channels (and channel_order), the result may name its normalized scores
`normalized` or `normalized_scores`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import LineError


@runtime_checkable
class EngineLike(Protocol):
    metadata: dict
    input_spec: Any
    last_timings: dict

    def infer(self, frames: np.ndarray) -> Any:
        ...

    def __enter__(self) -> "EngineLike":
        ...

    def __exit__(self, *exc) -> None:
        ...


@dataclass(frozen=True)
class EngineInput:
    height: int
    width: int
    channels: int
    channel_order: str  # rgb | bgr | mono
    fit: str = "stretch"  # the artefact's input policy (prn_edge.input_policy)


def engine_input(engine: Any) -> EngineInput:
    spec = engine.input_spec
    get = spec.get if isinstance(spec, dict) else lambda k, d=None: getattr(spec, k, d)
    try:
        h, w, c = int(get("height")), int(get("width")), int(get("channels"))
    except (TypeError, ValueError):
        raise LineError(f"engine input_spec {spec!r} lacks height/width/channels; is this a prn_edge engine?") from None
    order = get("channel_order") or ("mono" if c == 1 else "rgb")
    return EngineInput(h, w, c, str(order), str(get("fit") or "stretch"))


def engine_threshold(engine: Any) -> float:
    meta = engine.metadata or {}
    return float(meta.get("image_threshold", float("nan")))


@dataclass
class Verdicts:
    maps: np.ndarray  # float32 (N, h, w)
    scores: np.ndarray  # float32 (N,)
    normalized: np.ndarray  # float32 (N,), 0.5 at the threshold
    decisions: np.ndarray  # bool (N,)


def run_engine(engine: Any, frames: np.ndarray) -> Verdicts:
    """engine.infer, with the result checked: right length, finite scores. Raises LineError otherwise."""
    r = engine.infer(frames)
    n = len(frames)
    normalized = getattr(r, "normalized", None)
    if normalized is None:
        normalized = getattr(r, "normalized_scores", None)
    out = Verdicts(np.asarray(r.maps, np.float32), np.asarray(r.scores, np.float32).reshape(-1),
                   np.asarray(normalized if normalized is not None else np.full(n, np.nan), np.float32).reshape(-1),
                   np.asarray(r.decisions, bool).reshape(-1))
    if out.maps.ndim == 4:
        out.maps = out.maps[:, 0]
    if not (len(out.maps) == len(out.scores) == len(out.normalized) == len(out.decisions) == n):
        raise LineError(f"engine returned {len(out.scores)} results for {n} frames")
    return out


def engine_description(engine: Any) -> dict:
    """What actually runs: backend, ONNX Runtime providers in use (not just asked for), threads, TensorRT
    precision; so a wrong install (CPU provider on a GPU box) shows at once in the log and the summary."""
    inner = getattr(getattr(engine, "_shared", None), "engine", None) or engine
    out: dict = {"backend": getattr(inner, "backend", type(inner).__name__)}
    session = getattr(inner, "_session", None)
    if session is not None and hasattr(session, "get_providers"):
        out["providers"] = list(session.get_providers())
    elif getattr(inner, "providers", None):
        out["providers"] = [p if isinstance(p, str) else p[0] for p in inner.providers]
    for key in ("threads", "precision", "device"):
        if getattr(inner, key, None) is not None:
            out[key] = getattr(inner, key)
    meta = getattr(inner, "metadata", None) or {}
    if meta.get("precision"):
        out.setdefault("precision", meta["precision"])
    return out
