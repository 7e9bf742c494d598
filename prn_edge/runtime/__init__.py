"""Inference backends behind one Engine contract (see prn_edge.runtime.base).

    from prn_edge.runtime import open_engine
    with open_engine("model.onnx", threads=2) as engine:
        result = engine.infer(frames)   # uint8 (N, H, W, C)

Backends are registered once below (name, module, engine class, artefact suffixes, URL schemes); each module
holds its engine and its typed options dataclass (an EngineOptions). Adding a backend is one new module and
one `register(...)` line. Importing this package loads neither torch, onnxruntime, tensorrt nor openvino: a
backend's module is imported when it is asked for, and imports its library when an engine is constructed.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import STAGES, Engine, EngineError, EngineOptions, InferResult


@dataclass(frozen=True)
class Backend:
    name: str
    # "module:Class", the module relative to this package, or absolute for a backend with a package of its own
    # (imported only when asked for, so naming it here is no import edge); the class has .Options
    engine: str
    suffixes: tuple[str, ...] = ()  # artefact files it opens (backend "auto")
    schemes: tuple[str, ...] = ()  # URL schemes it opens, e.g. "triton" for triton://host:8001/model

    def engine_class(self) -> type[Engine]:
        module, _, cls = self.engine.partition(":")
        return getattr(importlib.import_module(module, __name__), cls)

    @property
    def options(self) -> type[EngineOptions]:
        return self.engine_class().Options


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    taken = {s: b.name for b in BACKENDS.values() for s in b.suffixes + b.schemes}
    for key in backend.suffixes + backend.schemes:
        if taken.get(key, backend.name) != backend.name:
            raise ValueError(f"backend {backend.name}: {key!r} is already {taken[key]}'s")
    BACKENDS[backend.name] = backend
    return backend


register(Backend("onnxruntime", ".onnxruntime_backend:OnnxRuntimeEngine", suffixes=(".onnx",)))
register(Backend("torch", ".torch_backend:TorchEngine", suffixes=(".pt", ".pth")))
register(Backend("tensorrt", "prn_edge.trt.runner:TensorRTEngine", suffixes=(".engine", ".plan")))
register(Backend("triton", ".triton_backend:TritonEngine", schemes=("triton",)))
# .onnx stays ONNX Runtime's by suffix; backend="openvino" runs an ONNX artefact with OpenVINO too
register(Backend("openvino", ".openvino_backend:OpenVINOEngine", suffixes=(".xml",)))
# by name only: an INT8 artefact (any backend) screens, its FP32 reference decides the frames near the threshold
register(Backend("cascade", ".cascade:CascadeEngine"))


def backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def _scheme(target: str) -> str:
    scheme, sep, _ = target.partition("://")
    return scheme.lower() if sep else ""


def backend_for(path: str | Path) -> str:
    """The backend of an artefact path (by suffix) or a URL (by scheme)."""
    scheme = _scheme(str(path))
    for b in BACKENDS.values():
        if scheme and scheme in b.schemes:
            return b.name
    suffix = Path(path).suffix.lower()
    for b in BACKENDS.values():
        if not scheme and suffix in b.suffixes:
            return b.name
    known = "; ".join(f"{b.name}: {', '.join(b.suffixes + tuple(s + '://' for s in b.schemes))}"
                      for b in BACKENDS.values())
    what = f"its URL scheme {scheme + '://'!r}" if scheme else f"its suffix {suffix!r}"
    raise EngineError(f"cannot tell the backend of {path} from {what}: expected {known}; pass backend=...")


def _backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise EngineError(f"unknown backend {name!r}; choose 'auto' or one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def engine_options(backend: str, **opts: Any) -> EngineOptions:
    """Validate options for a backend: an EngineError names an unknown option and lists the allowed ones."""
    return _backend(backend).options.from_kwargs(opts)


def open_engine(path_or_ckpt: str | Path, backend: str = "auto", allow_failed_gate: bool = False,
                **opts) -> Engine:
    """An (inactive) Engine for an artefact; activate it with `with ... as engine:` or `.activate()`.

    backend "auto" picks by suffix (.onnx -> onnxruntime, .pt -> torch, .engine/.plan -> tensorrt, .xml ->
    openvino) or by a registered URL scheme (triton:// -> triton); backend="openvino" also runs an .onnx.
    opts are the backend's options dataclass fields (OnnxRuntimeOptions, TorchOptions, TensorRTOptions,
    TritonOptions, OpenVINOOptions...); the common ones (threads,
    channel_order, input_hw, resize) every backend accepts.
    An INT8 artefact whose calibration run failed its accuracy gate is refused unless allow_failed_gate.
    """
    name = backend_for(path_or_ckpt) if backend == "auto" else backend
    entry = _backend(name)
    options = entry.options.for_target(str(path_or_ckpt), opts)  # before any file or library is touched
    target: Any = str(path_or_ckpt)
    if not _scheme(target):
        target = Path(path_or_ckpt)
        if not target.is_file():
            raise EngineError(f"{target} does not exist; give an exported .onnx, a checkpoint .pt, a built .engine "
                              "or an OpenVINO .xml")
    engine = entry.engine_class()(target, options)
    engine.allow_failed_gate = allow_failed_gate
    check_gate(engine.metadata, target, allow_failed_gate)
    return engine


def check_gate(metadata: dict, path: str | Path, allow_failed: bool) -> None:
    """Refuse an artefact from a calibration run whose accuracy gate failed (marked in its metadata)."""
    if metadata.get("accuracy_gate") == "failed" and not allow_failed:
        raise EngineError(f"{path} comes from calibration run {metadata.get('calibration_run', '?')!r}, which FAILED "
                          "its accuracy gate (see its manifest.json); use the FP32 model, calibrate again, or allow "
                          "it explicitly (engine.allow_failed_gate: true / --allow-failed-gate)")


__all__ = ["Engine", "EngineError", "EngineOptions", "InferResult", "STAGES", "open_engine", "backend_for",
           "backend_names", "engine_options", "register", "Backend", "BACKENDS"]
