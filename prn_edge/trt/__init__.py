"""TensorRT, in one package laid out like Polygraphy's backend/trt: an exported ONNX -> an engine and its manifest
on the target (Jetson / GPU host), and the runner that runs it behind the one Engine contract.

    from prn_edge.trt import build_engine
    build_engine("model.onnx", "engines/model.engine", precision="fp16", workspace_mb=256)

    capability.py      what each TensorRT version has (one table)
    cuda_host.py       the host CUDA layer: cuda-python or pycuda, current per calling thread
    builder.py         build_engine: the pipeline of the steps below
      request.py source.py target.py precision.py mixed_precision.py network.py builder_config.py profiles.py
      dla.py compatibility.py caches.py calibrator.py serialize.py
    runner.py          TensorRTEngine, the "tensorrt" backend of prn_edge.runtime

It sits above prn_edge.runtime (the runner is an Engine; the calibrator preprocesses as the runtime does) and below
calibrate (which runs engines to measure accuracy): the builder takes a calibration run's folder, never the
calibrate package. Importing this package imports neither tensorrt, CUDA nor onnx: names load on first use (a
line appliance runs .engine files without onnx installed).
"""
from __future__ import annotations

import importlib

_LAZY = {
    "build_engine": "builder", "BuildError": "builder", "NOT_INSTALLED": "target",
    "plan_precision": "precision", "PRECISIONS": "request", "DEFAULT_BATCH_PROFILE": "request",
    "to_mixed_fp16": "mixed_precision", "has_qdq": "mixed_precision", "MixedPrecisionError": "mixed_precision",
    "capabilities": "capability", "host_cuda": "cuda_host",
    "TensorRTEngine": "runner", "TensorRTOptions": "runner",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
