"""The DLA step (Jetson AGX Orin / Xavier): the core asked for exists, the network has static shapes, and the
config runs on it with GPU fallback. Which TensorRT has DLA at all is capability.dla (target.open_target asks)."""
from __future__ import annotations

from typing import Any

from ..errors import BuildError
from .builder_config import set_flag


def check_dla(builder: Any, req: Any, art: Any, target: Any) -> None:
    """The DLA core asked for exists here, and the network has static shapes: DLA runs nothing else (TensorRT
    "Working with DLA": min = opt = max in the profile), and with GPU fallback TensorRT would silently move a
    dynamic-shape network to the GPU, so it is refused here."""
    if req.dla_core is None:
        return
    n_dla = int(getattr(builder, "num_DLA_cores", 0) or 0)
    if n_dla == 0:
        raise BuildError(f"this device ({target.device['gpu_name']}) has no DLA (Orin Nano and discrete GPUs have "
                         "none): build without dla_core")
    if req.dla_core >= n_dla:
        raise BuildError(f"dla_core={req.dla_core} but this device has {n_dla} DLA core(s) (0..{n_dla - 1})")
    if art.spec.batch is not None:
        return
    if req.batch_profile is None or len(set(req.batch_profile)) != 1:
        given = "no batch_profile (the default (1, 4, 8) is dynamic)" if req.batch_profile is None else \
            f"batch_profile={req.batch_profile}"
        raise BuildError(f"DLA runs static shapes only, but {req.onnx_path.name} has a dynamic batch and {given}: "
                         "give a fixed batch_profile for dla_core, e.g. batch_profile=(B, B, B) (--batch-profile "
                         "B,B,B) with B the batch the line runs, or export a fixed batch (`prn-edge export --batch B`)")


def set_dla(trt: Any, config: Any, flags: list[str], req: Any) -> None:
    """Layers on the DLA core, what it cannot run on the GPU."""
    if req.dla_core is None:
        return
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(req.dla_core)
    set_flag(trt, config, flags, "GPU_FALLBACK")
