"""The precision step: what `precision` means on this TensorRT (plan_precision, pure), the flags it sets in the
builder config, and the sensitive layers it keeps in FP32.

Weakly typed TensorRT (8.5 .. 10.x, capability.precision_flags): precision is allowed by builder flags. fp16 sets
BuilderFlag.FP16 and pins the sensitive layers (prototype search, softmax, sigmoid, top-k score, the last conv and
after; mixed_precision.fp32_nodes) to FP32 with PREFER_PRECISION_CONSTRAINTS; int8 sets BuilderFlag.INT8 and builds
a Q/DQ ONNX (explicit quantization) or, with implicit_int8, calibrates an FP32 ONNX with an IInt8EntropyCalibrator2
fed from a calibration run (deprecated from 10.1 but still there; DLA needs it). builder.platform_has_fast_fp16 /
_int8 are checked first.
Strongly typed TensorRT (11+, and 10.12-10.x where weak typing is deprecated, unless the build asks for implicit INT8
calibration or DLA, which only the weakly typed path has there): no precision flags; precision comes from the ONNX. fp16
converts the ONNX to mixed FP16 first (mixed_precision.to_mixed_fp16, our stand-in for ModelOpt AutoCast that the
migration guide recommends; network.parse_network does it); int8 needs a Q/DQ ONNX (`prn-edge calibrate --flavour
tensorrt` writes one). Nothing in this path reads a removed flag.
"""
from __future__ import annotations

from typing import Any

from ..artefact import KeepFloat, read_keep_float
from ..errors import BuildError
from .builder_config import set_flag
from .capability import capabilities
from .mixed_precision import fp32_nodes


def plan_precision(version: str, precision: str, qdq: bool, implicit_int8: bool, *, fast_fp16: bool = True,
                   fast_int8: bool = True, dla: bool = False) -> dict:
    """What to do for `precision` on this TensorRT (pure: no TensorRT needed).

    Returns {"strongly_typed", "flags" (BuilderFlag names to set), "convert_fp16", "int8" (None | "explicit" |
    "implicit"), "fp32_constraints", "detail"} or raises BuildError for what this platform cannot do.
    """
    caps = capabilities(version)
    strong = caps.strongly_typed or (caps.weak_typing_deprecated and not implicit_int8 and not dla)
    plan = {"strongly_typed": strong, "flags": [], "convert_fp16": False, "int8": None, "fp32_constraints": False,
            "detail": "fp32"}
    if qdq and precision in ("fp32", "fp16"):
        raise BuildError(f"this ONNX is quantized (Q/DQ nodes): build it with precision 'int8' (or 'best'), or build "
                         f"the FP32 export for {precision}")
    if dla and precision == "fp32":
        raise BuildError("DLA runs FP16 and INT8 layers only: build with precision 'fp16' or 'int8' for dla_core "
                         "(GPU fallback then takes what DLA cannot run)")
    if strong:
        if implicit_int8:
            raise BuildError(f"TensorRT {version} has no implicit INT8 calibration (IInt8EntropyCalibrator2 and "
                             "BuilderFlag.INT8 were removed in TensorRT 11): build the Q/DQ model of a calibration "
                             "run instead: `prn-edge calibrate CKPT --data DATA --run NAME --flavour tensorrt`, then "
                             "build calibration/NAME/model.int8.onnx")
        if precision == "fp16" or (precision == "best" and not qdq):
            plan.update(convert_fp16=True, detail="mixed fp16/fp32 (strongly typed, converted ONNX)")
        elif precision in ("int8", "best"):
            if not qdq:
                why = ("TensorRT 11 builds strongly typed networks only and has no INT8 calibrator" if not caps.implicit_int8
                       else "strongly typed builds take INT8 scales from the model (the implicit calibrator, "
                            "deprecated here, is there with --implicit-int8 --calibration calibration/NAME)")
                raise BuildError(f"precision int8 on TensorRT {version} needs an explicitly quantized (Q/DQ) ONNX: "
                                 f"{why}. Run `prn-edge calibrate CKPT --data DATA --run NAME --flavour tensorrt` "
                                 "first and build calibration/NAME/model.int8.onnx")
            plan.update(int8="explicit", detail="int8 Q/DQ + fp32 (strongly typed)")
        return plan
    # 8.5 .. 10.x
    if precision in ("fp16", "best"):
        if not fast_fp16:
            if precision == "fp16":
                raise BuildError("this GPU has no fast FP16 (builder.platform_has_fast_fp16 is False): build fp32, "
                                 "or int8 where the GPU has fast INT8")
        else:
            plan["flags"].append("FP16")
            plan["detail"] = "fp16 (sensitive layers pinned to fp32)"
    if precision in ("int8", "best"):
        if not fast_int8:
            if precision == "int8":
                raise BuildError("this GPU has no fast INT8 (builder.platform_has_fast_int8 is False): build fp16 "
                                 "or fp32")
        elif qdq:
            if implicit_int8:
                raise BuildError("implicit_int8 calibrates an FP32 ONNX, but this ONNX is already quantized (Q/DQ): "
                                 "drop implicit_int8 to build it as it is, or give the FP32 export")
            plan["flags"].append("INT8")
            plan["int8"] = "explicit"
        elif implicit_int8:
            plan["flags"].append("INT8")
            plan["int8"] = "implicit"
        elif precision == "int8":
            raise BuildError("precision int8 needs INT8 scales: build the Q/DQ model of a calibration run "
                             "(calibration/NAME/model.int8.onnx, from `prn-edge calibrate --flavour tensorrt`), or "
                             "calibrate this FP32 ONNX here with implicit_int8=True and calibration='calibration/NAME'")
    # Reduced precision without Q/DQ: keep the sensitive layers (mixed_precision.fp32_nodes) in FP32, as the
    # calibration run keeps them float by design (prn_edge.calibrate.quantize.float_by_design).
    plan["fp32_constraints"] = bool(plan["flags"]) and not qdq
    if plan["int8"]:
        parts = ["int8 " + ("Q/DQ" if plan["int8"] == "explicit" else "entropy-calibrated")]
        parts.append("fp16" if "FP16" in plan["flags"] else "fp32")
        plan["detail"] = " + ".join(parts)
    if dla and not plan["flags"]:
        raise BuildError("DLA needs FP16 or INT8 layers, and this GPU/precision combination enables neither")
    return plan


def precision_plan(builder: Any, req: Any, art: Any, target: Any) -> dict:
    """plan_precision for this TensorRT and what this GPU runs fast (strongly typed TensorRT has no such flags)."""
    strong = target.caps.strongly_typed
    return plan_precision(target.version, req.precision, art.qdq, req.implicit_int8,
                          fast_fp16=True if strong else bool(getattr(builder, "platform_has_fast_fp16", True)),
                          fast_int8=True if strong else bool(getattr(builder, "platform_has_fast_int8", True)),
                          dla=req.dla_core is not None)


def set_precision(trt: Any, config: Any, flags: list[str], network: Any, art: Any, plan: dict) -> int:
    """The plan's precision flags in the config, and the sensitive layers pinned to FP32 where it asks for that.
    Returns the number of layers pinned."""
    for name in plan["flags"]:
        set_flag(trt, config, flags, name)
    if not plan["fp32_constraints"]:
        return 0
    pinned = _pin_fp32_layers(trt, network, fp32_nodes(art.model), read_keep_float(art.model))
    if pinned:
        set_flag(trt, config, flags, "PREFER_PRECISION_CONSTRAINTS")
    return pinned


def _pin_fp32_layers(trt: Any, network: Any, keep: set[str], keep_float: KeepFloat) -> int:
    """Ask TensorRT (8.5-10.x, FP16 allowed) to keep the layers of sensitive ONNX nodes in FP32.

    The ONNX parser names layers after their nodes; a layer is pinned when its name is a kept node's name or
    lies in one of the artefact's keep-in-float scopes (the prototype search). Returns the number of layers pinned.
    """
    floats = {getattr(trt, "float32", None), getattr(trt, "float16", None)}
    n = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        name = str(layer.name)
        if name not in keep and not keep_float.covers(name):
            continue
        try:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in floats:
                    layer.set_output_type(j, trt.float32)
            n += 1
        except Exception:  # layers without a settable precision (shape/constant layers)
            continue
    return n
