"""Where an engine may run, seen from both ends: what the build may promise (version-compatible engines,
hardware-compatibility levels, from the capability table and the GPU it builds on), and whether an engine file
may load on this host (its manifest against this TensorRT and GPU, its bytes against the manifest's sha256).

TensorRT's rules: an engine loads in the TensorRT that built it on a GPU of the same compute capability, unless
built VERSION_COMPATIBLE (same major, this TensorRT not older; 8.6+) or with a hardware-compatibility level
(AMPERE_PLUS: any GPU of compute capability >= 8.0; 8.6+). The classic user error is "generated on an
incompatible device" (TensorRT #2176), and stale engines after a JetPack upgrade.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..errors import BuildError
from ..runtime.base import EngineError
from .builder_config import set_flag
from .capability import version_tuple


def cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = str(cc).partition(".")
    return int(major), int(minor or 0)


# ---------------------------------------------------------------------------------------------- build
def check_portability(req: Any, target: Any) -> None:
    """What the request asks of portability that this TensorRT (target.caps) or GPU cannot do: BuildError."""
    caps, version, hw = target.caps, target.version, req.hardware_compat
    if req.version_compatible and not caps.version_compatible:
        raise BuildError(f"version-compatible engines need TensorRT 8.6 or newer (this is {version})")
    if hw == "none":
        return
    if not caps.hardware_levels:
        raise BuildError(f"hardware compatibility levels need TensorRT 8.6 or newer (this is {version})")
    if hw not in caps.hardware_levels:
        raise BuildError(f"hardware_compat={hw!r} needs TensorRT 10.9 or newer (this is {version}, whose "
                         "HardwareCompatibilityLevel has NONE and AMPERE_PLUS only): use hardware_compat='ampere_plus' "
                         "(any GPU of compute capability >= 8.0, a little slower), or build without hardware_compat "
                         "for this GPU only")
    if hw == "ampere_plus" and cc_tuple(target.device["compute_capability"]) < (8, 0):
        raise BuildError(f"hardware_compat='ampere_plus' must be built on an Ampere or newer GPU; this "
                         f"{target.device['gpu_name']} has compute capability {target.device['compute_capability']}")
    if target.jetson.get("l4t"):
        req.log("warning: hardware compatibility levels are documented for discrete GPUs; on Jetson the engine may "
                "not gain portability")


def set_portability(trt: Any, config: Any, flags: list[str], req: Any) -> None:
    """The portability the (checked) request asks for, in the builder config."""
    if req.version_compatible:
        set_flag(trt, config, flags, "VERSION_COMPATIBLE")
    if req.hardware_compat != "none":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, req.hardware_compat.upper())


# ---------------------------------------------------------------------------------------------- run
def verified_plan(engine_path: str | Path, manifest: dict) -> bytes:
    """The engine file's bytes, checked against the sha256 its manifest records: an engine swapped, truncated or
    copied without its own manifest is refused before TensorRT or CUDA see it."""
    path = Path(engine_path)
    want = manifest.get("engine_sha256")
    if not want:
        raise EngineError(f"{path.name}: its manifest records no engine_sha256, so the file cannot be checked; "
                          "rebuild it with `prn-edge build`")
    data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise EngineError(f"{path.name} is not the engine its manifest describes (sha256 {got[:12]}..., manifest "
                          f"{str(want)[:12]}...): the file was replaced or damaged, or its manifest belongs to another "
                          "build; copy the engine and its .json together, or rebuild it")
    return data


def check_manifest(manifest: dict, current: dict, engine_path: str | Path) -> list[str]:
    """Refuse an engine built for another TensorRT version or GPU; return warnings for tolerated differences.

    current: {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "gpu_name": "..."} of this host.
    Rules (TensorRT's own): same major.minor.patch, unless built version-compatible (then same major and this
    TensorRT not older); same compute capability, unless built with hardware compatibility "ampere_plus"
    (then any GPU of compute capability >= 8.0). A different GPU name with the same capability is a warning.
    """
    name = Path(engine_path).name
    rebuild = (f"rebuild it on this host from its ONNX (`prn-edge build MODEL.onnx --out {name}`), "
               "or run the ONNX with the onnxruntime backend")
    built_v, cur_v = manifest.get("tensorrt_version"), current.get("tensorrt_version")
    if not built_v or not cur_v:
        raise EngineError(f"{name}: TensorRT version unknown (manifest {built_v!r}, host {cur_v!r}); {rebuild}")
    b, c = version_tuple(built_v), version_tuple(cur_v)
    if manifest.get("version_compatible"):
        if b[0] != c[0] or c[:2] < b[:2]:
            raise EngineError(f"{name} was built version-compatible with TensorRT {built_v}, which does not cover "
                              f"TensorRT {cur_v} on this host (same major, not older); {rebuild}")
    elif b != c:
        raise EngineError(f"{name} was built with TensorRT {built_v} but this host has TensorRT {cur_v}: engines "
                          f"only load in the TensorRT version that built them; {rebuild}")
    built_cc, cur_cc = manifest.get("compute_capability"), current.get("compute_capability")
    if not built_cc or not cur_cc:
        raise EngineError(f"{name}: GPU compute capability unknown (manifest {built_cc!r}, host {cur_cc!r}); {rebuild}")
    hw = str(manifest.get("hardware_compatibility", "none")).lower()
    if hw == "ampere_plus":
        if cc_tuple(cur_cc) < (8, 0):
            raise EngineError(f"{name} was built for Ampere or newer GPUs (hardware compatibility ampere_plus) but "
                              f"this GPU has compute capability {cur_cc}; {rebuild}")
    elif cc_tuple(built_cc) != cc_tuple(cur_cc):
        raise EngineError(f"{name} was built for a GPU of compute capability {built_cc} "
                          f"({manifest.get('gpu_name', '?')}) but this GPU ({current.get('gpu_name', '?')}) has "
                          f"{cur_cc}: TensorRT engines are specific to the GPU that built them; {rebuild}")
    warnings = []
    if manifest.get("gpu_name") and current.get("gpu_name") and manifest["gpu_name"] != current["gpu_name"]:
        warnings.append(f"{name} was built on {manifest['gpu_name']}, this is {current['gpu_name']} (same compute "
                        "capability): it loads, but tactics were timed on the other GPU; rebuild for best latency")
    return warnings
