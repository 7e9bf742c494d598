"""Inference backends behind one Engine contract (see prn_edge.runtime.base).

    from prn_edge.runtime import open_engine
    with open_engine("model.onnx", threads=2) as engine:
        result = engine.infer(frames)   # uint8 (N, H, W, C)

Importing this package loads neither torch, onnxruntime nor tensorrt: each backend imports its library
when an engine is constructed.
"""
from __future__ import annotations

from pathlib import Path

from .base import STAGES, Engine, EngineError, InferResult

BACKENDS = {".onnx": "onnxruntime", ".pt": "torch", ".pth": "torch", ".engine": "tensorrt", ".plan": "tensorrt"}


def backend_for(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in BACKENDS:
        raise EngineError(f"cannot tell the backend of {path} from its suffix {suffix!r}: expected .onnx "
                          "(onnxruntime), .pt (torch checkpoint) or .engine/.plan (tensorrt); pass backend=...")
    return BACKENDS[suffix]


def open_engine(path_or_ckpt: str | Path, backend: str = "auto", allow_failed_gate: bool = False,
                **opts) -> Engine:
    """An (inactive) Engine for an artefact; activate it with `with ... as engine:` or `.activate()`.

    backend "auto" picks by suffix: .onnx -> onnxruntime, .pt -> torch, .engine/.plan -> tensorrt, and a
    model on a Triton server by its address: triton://HOST:PORT/MODEL[/VERSION] -> triton.
    opts go to the backend (e.g. threads, providers, channel_order, input_hw, use_cuda_graph, timeout_s).
    An INT8 artefact whose calibration run failed its accuracy gate is refused unless allow_failed_gate.
    """
    if backend == "triton" or (backend == "auto" and str(path_or_ckpt).startswith("triton://")):
        from .triton_backend import TritonEngine  # an address, not a file

        return TritonEngine(str(path_or_ckpt), allow_failed_gate=allow_failed_gate, **opts)
    path = Path(path_or_ckpt)
    name = backend_for(path) if backend == "auto" else backend
    if not path.is_file():
        raise EngineError(f"{path} does not exist; give an exported .onnx, a checkpoint .pt or a built .engine")
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeEngine
        engine: Engine = OnnxRuntimeEngine(path, **opts)
    elif name == "torch":
        from .torch_backend import TorchEngine
        engine = TorchEngine(path, **opts)
    elif name == "tensorrt":
        from .tensorrt_backend import TensorRTEngine
        engine = TensorRTEngine(path, **opts)
    else:
        raise EngineError(f"unknown backend {backend!r}; choose 'auto', 'onnxruntime', 'torch', 'tensorrt' or "
                          "'triton'")
    check_gate(engine.metadata, path, allow_failed_gate)
    return engine


def check_gate(metadata: dict, path: Path, allow_failed: bool) -> None:
    """Refuse an artefact from a calibration run whose accuracy gate failed (marked in its metadata)."""
    if metadata.get("accuracy_gate") == "failed" and not allow_failed:
        raise EngineError(f"{path} comes from calibration run {metadata.get('calibration_run', '?')!r}, which FAILED "
                          "its accuracy gate (see its manifest.json); use the FP32 model, calibrate again, or allow "
                          "it explicitly (engine.allow_failed_gate: true / --allow-failed-gate)")


__all__ = ["Engine", "EngineError", "InferResult", "STAGES", "open_engine", "backend_for", "BACKENDS"]
