"""Build step: exported ONNX -> TensorRT engine + manifest, on the target (Jetson / GPU host).

    from prn_edge.build import build_engine
    build_engine("model.onnx", "engines/model.engine", precision="fp16", workspace_mb=256)

TensorRT 8.5-10.x (builder flags, implicit INT8 calibration) and 11+ (strongly typed: mixed-FP16 ONNX, Q/DQ
INT8) are both handled; see trt_build. Importing this package does not import tensorrt.
"""
from ..errors import BuildError
from .mixed_precision import MixedPrecisionError, has_qdq, to_mixed_fp16
from .trt_build import DEFAULT_BATCH_PROFILE, NOT_INSTALLED, PRECISIONS, build_engine, plan_precision

__all__ = ["build_engine", "plan_precision", "to_mixed_fp16", "has_qdq", "BuildError", "MixedPrecisionError",
           "PRECISIONS", "DEFAULT_BATCH_PROFILE", "NOT_INSTALLED"]
