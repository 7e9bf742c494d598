"""What the line reads from its engine: the runtime's one Engine contract (prn_edge.runtime.Engine; the shared
engine's client and the test doubles in prn_edge.sim are Engines too), checked where the line depends on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..runtime.base import Engine
from .errors import LineError

EngineLike = Engine  # the contract's name in the line's signatures


@dataclass(frozen=True)
class EngineInput:
    height: int
    width: int
    channels: int
    channel_order: str  # rgb | bgr | mono
    fit: str = "stretch"  # the artefact's input policy (prn_edge.input_policy)


def engine_input(engine: Engine) -> EngineInput:
    spec = engine.input_spec
    try:
        h, w, c = int(spec.height), int(spec.width), int(spec.channels)
    except (AttributeError, TypeError, ValueError):
        raise LineError(f"engine input_spec {spec!r} lacks height/width/channels; is this a prn_edge engine?") from None
    return EngineInput(h, w, c, str(spec.channel_order), str(getattr(spec, "fit", "stretch") or "stretch"))


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
    out = Verdicts(np.asarray(r.maps, np.float32), np.asarray(r.scores, np.float32).reshape(-1),
                   np.asarray(r.normalized_scores, np.float32).reshape(-1), np.asarray(r.decisions, bool).reshape(-1))
    if out.maps.ndim == 4:
        out.maps = out.maps[:, 0]
    if not (len(out.maps) == len(out.scores) == len(out.normalized) == len(out.decisions) == n):
        raise LineError(f"engine returned {len(out.scores)} results for {n} frames")
    return out


def _inner(engine: Any) -> Any:
    """The engine that computes: a SharedEngine client's shared engine, else the engine itself."""
    return getattr(getattr(engine, "_shared", None), "engine", None) or engine


def served_artefact(engine: Any) -> Optional[str]:
    """Which model version a server answered with (Engine.served_artefact), None for an engine of a file."""
    return _inner(engine).served_artefact


def engine_description(engine: Any) -> dict:
    """What actually runs (Engine.describe(): backend, ONNX Runtime providers in use, threads, TensorRT engine...);
    a SharedEngine client describes the engine it shares."""
    return _inner(engine).describe()
