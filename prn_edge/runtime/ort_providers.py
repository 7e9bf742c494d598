"""ONNX Runtime's execution providers for an artefact: which ones, in what order, with which options.

Pure functions of the engine's options and of what this ONNX Runtime offers, so a test can check the exact list
ONNX Runtime gets on a machine without a GPU. Option names are ONNX Runtime's (TensorRT EP:
include/onnxruntime/core/providers/tensorrt/tensorrt_provider_options.h and
onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html; CUDA EP: cuda_provider_options.h).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .base import EngineError

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
ALIASES = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}
GPU_PROVIDERS = (TENSORRT, CUDA)
AUTO = (CUDA, CPU)  # the TensorRT EP only when asked for: it builds an engine when the session starts
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")

INSTALL_GPU = ("install the GPU build of ONNX Runtime: on x86, pip uninstall onnxruntime && pip install "
               "'prn-edge[gpu]' (onnxruntime-gpu; the two wheels cannot coexist); on a Jetson, the JetPack wheel "
               "from the Jetson AI Lab index (docs/jetson.md). The TensorRT EP also needs TensorRT's libraries "
               "(JetPack's, or pip install tensorrt on x86)")


def provider_names(providers: Any) -> list[str]:
    """'auto' | a name or alias | a list (or "tensorrt,cuda") -> ONNX Runtime's names in the order given; names
    are checked, availability is not (see resolve)."""
    if providers is None:
        providers = "auto"
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    if not isinstance(providers, (list, tuple)) or not providers:  # before list(): a YAML number is no list
        raise EngineError(f"onnxruntime backend: providers={providers!r}: give 'auto', one of cpu, cuda, tensorrt, "
                          "or a list of them in priority order")
    if list(providers) == ["auto"]:
        return ["auto"]
    names = []
    for p in providers:
        name = ALIASES.get(str(p).lower(), p) if isinstance(p, str) else p
        if name not in ALIASES.values() or name in names:
            why = "repeated" if name in names else "not one of cpu, cuda, tensorrt (or their ONNX Runtime names)"
            raise EngineError(f"onnxruntime backend: providers={providers!r}: {p!r} is {why}")
        names.append(name)
    return names


def resolve(providers: Any, available: Sequence[str]) -> list[str]:
    """The providers a session gets, in priority order. A GPU provider asked for but missing from this ONNX Runtime
    is an EngineError (a line must not run on the CPU by surprise); 'auto' takes CUDA where it is, else the CPU.
    The TensorRT EP gets the CUDA EP behind it (ONNX Runtime's advice: nodes TensorRT does not take run on the GPU
    too), and the CPU comes last for whatever no GPU provider takes."""
    names = provider_names(providers)
    if names == ["auto"]:
        return [p for p in AUTO if p in available]
    missing = [p for p in names if p not in available]
    if missing:
        raise EngineError(f"ONNX Runtime provider {', '.join(missing)} is not available here (this onnxruntime "
                          f"offers {', '.join(available)}); {INSTALL_GPU}. Or use providers: cpu")
    if TENSORRT in names and CUDA not in names:
        names.insert(names.index(TENSORRT) + 1, CUDA)
    if CPU not in names:
        names.append(CPU)
    return names


def trt_cache_dir(base: Path, artefact_sha256: str, fp16: bool, int8: bool, ort_version: str) -> Path:
    """The TensorRT EP's engine cache for one artefact: a folder named by its content hash and what shapes the
    engine, so a new export, another precision or another ONNX Runtime never loads a stale engine (ONNX Runtime
    names its cache files by the model's graph, not by its weights)."""
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    return Path(base) / f"{artefact_sha256[:16]}-{precision}-ort{ort_version}"


def session_providers(o: Any, available: Sequence[str], artefact: Path, artefact_sha256: str, qdq: bool,
                      ort_version: str) -> list[tuple[str, dict]]:
    """[(provider, its options)] for ort.InferenceSession(providers=...), from OnnxRuntimeOptions `o`.
    qdq: the artefact holds Q/DQ nodes; TensorRT then builds INT8 from them (explicit quantization: no calibration
    table, which TensorRT refuses for a Q/DQ model)."""
    out = []
    for name in resolve(o.providers, available):
        opts: dict[str, Any] = {}
        if name == TENSORRT:
            base = Path(o.trt_cache_dir) if o.trt_cache_dir else artefact.with_suffix(".ort_trt_cache")
            opts = {"device_id": o.device_id, "trt_fp16_enable": bool(o.trt_fp16), "trt_int8_enable": qdq,
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(trt_cache_dir(base, artefact_sha256, o.trt_fp16, qdq, ort_version)),
                    # the timing cache holds layer timings of this GPU, not the model: one for all artefacts
                    "trt_timing_cache_enable": bool(o.trt_timing_cache), "trt_timing_cache_path": str(base)}
            if o.trt_workspace_mb:
                opts["trt_max_workspace_size"] = int(o.trt_workspace_mb) << 20
        elif name == CUDA:
            opts = {"device_id": o.device_id}
            if o.cudnn_conv_algo_search:
                opts["cudnn_conv_algo_search"] = o.cudnn_conv_algo_search
            if o.tf32 is not None:
                opts["use_tf32"] = bool(o.tf32)
        out.append((name, opts))
    return out


def check_active(asked: Sequence[str], active: Sequence[str]) -> None:
    """ONNX Runtime drops a GPU provider it cannot start (CUDA or cuDNN libraries missing, an unusable device)
    with a warning only, and runs on the CPU: refuse that."""
    lost = [p for p in asked if p in GPU_PROVIDERS and p not in active]
    if lost:
        raise EngineError(f"ONNX Runtime could not start {', '.join(lost)} (the session would run on "
                          f"{', '.join(active) or 'nothing'}): its CUDA, cuDNN or TensorRT libraries are missing or do "
                          "not match this onnxruntime-gpu, or the GPU is not usable (ONNX Runtime's warning above "
                          "says which); or use providers: cpu")

