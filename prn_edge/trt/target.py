"""The TensorRT and the GPU a build runs on: imported, identified and checked against the request before
anything is written."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..artefact import jetson_info
from ..errors import BuildError
from ..runtime.base import EngineError
from . import cuda_host
from .capability import MIN_TENSORRT, Capabilities, capabilities, version_tuple
from .compatibility import check_portability
from .request import BuildRequest
from .runner import current_device_info

NOT_INSTALLED = ("TensorRT is not installed here: build on the target (Jetson / GPU host) with `pip install tensorrt` "
                 "or JetPack's python3-libnvinfer; ONNX Runtime runs the .onnx here")


@dataclass(frozen=True)
class Target:
    version: str  # TensorRT's
    caps: Capabilities
    cuda: Any  # the host CUDA layer (cuda_host)
    device: dict  # runner.current_device_info: gpu_name, compute_capability, cuda_api
    jetson: dict  # prn_edge.artefact.jetson_info: l4t, jetpack (None off a Jetson)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # noqa: WPS433 (optional dependency)
    except ImportError:
        raise BuildError(NOT_INSTALLED) from None
    return trt


def open_target(trt: Any, req: BuildRequest) -> Target:
    """This TensorRT and GPU, checked against the request (DLA, portability) before anything is written."""
    version = str(getattr(trt, "__version__", "0"))
    if version_tuple(version)[:2] < MIN_TENSORRT:
        raise BuildError(f"TensorRT {version} is older than prn_edge supports (8.5, JetPack 5.1); upgrade JetPack "
                         "or TensorRT")
    try:
        cuda = cuda_host.host_cuda(req.device)
        device = current_device_info(req.device, trt=trt, cuda=cuda)
    except EngineError as e:
        raise BuildError(f"TensorRT {version} is installed but no usable GPU/CUDA was found ({e}); build on the "
                         "target GPU host or Jetson") from None
    target = Target(version, capabilities(version), cuda, device, jetson_info())
    caps = target.caps
    if req.dla_core is not None and not caps.dla:
        raise BuildError(f"TensorRT {version} has no DLA (DLA is absent from TensorRT 11.0-11.3, and 11.4.0 has it "
                         "on Windows on ARM only; it is back on Jetson AGX Orin with 11.4.1 + JetPack 7.2.2): build "
                         "for the GPU (no dla_core), or use TensorRT 10.x / 11.4.1+")
    check_portability(req, target)
    if target.jetson.get("l4t") and req.workspace_mb > 512:
        req.log(f"note: {req.workspace_mb} MiB workspace on a Jetson (memory shared with the CPU); 256 is usually "
                "enough")
    return target
