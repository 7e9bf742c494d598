"""The optimisation-profile step: one profile over the batch dimension of a dynamic-batch ONNX (a fixed batch
takes none), and the fixed calibration profile implicit INT8 runs its batches through."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..errors import BuildError
from .request import DEFAULT_BATCH_PROFILE


@dataclass(frozen=True)
class Batch:
    profile: Optional[list[int]]  # [min, opt, max] of a dynamic-batch ONNX's optimisation profile; None: fixed
    max: int
    calibration: int  # the batch the INT8 calibrator feeds: the profile's opt, or the fixed batch


def add_batch_profile(builder: Any, config: Any, net: Any, req: Any) -> Batch:
    """One optimisation profile over the batch dimension of a dynamic-batch ONNX; a fixed batch takes none."""
    shape = net.input_shape
    if shape[0] == -1:
        bmin, bopt, bmax = req.batch_profile if req.batch_profile is not None else DEFAULT_BATCH_PROFILE
        rest = shape[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(net.input_name, (bmin,) + rest, (bopt,) + rest, (bmax,) + rest)
        config.add_optimization_profile(profile)
        return Batch([bmin, bopt, bmax], bmax, bopt)
    static = shape[0]
    if req.batch_profile is not None and req.batch_profile != (static,) * 3:
        raise BuildError(f"{req.onnx_path.name} has a fixed batch of {static}; a batch profile {req.batch_profile} "
                         "needs a dynamic-batch export (`prn-edge export --batch dynamic`, export_onnx(batch=None))")
    return Batch(None, static, static)


def set_calibration_profile(builder: Any, config: Any, net: Any, batch: Batch) -> None:
    """Implicit INT8 on a dynamic-batch network: the calibrator's batch as a fixed profile (capability.implicit_int8:
    the calibrators and this call went together in TensorRT 11)."""
    if batch.profile is None:
        return
    profile = builder.create_optimization_profile()
    shape = (batch.calibration,) + net.input_shape[1:]
    profile.set_shape(net.input_name, shape, shape, shape)
    config.set_calibration_profile(profile)
