"""`prn-edge build`: an exported PRN ONNX -> a TensorRT engine plus its manifest, on the target device.

Two API families, told apart by TensorRT's major version:

- TensorRT 8.5 .. 10.x ("weakly typed"): precision is allowed by builder flags. fp16 sets BuilderFlag.FP16
  and pins the sensitive layers (prototype search, softmax, sigmoid, top-k score, the last conv and after;
  see mixed_precision.fp32_nodes) to FP32 with PREFER_PRECISION_CONSTRAINTS; int8 sets BuilderFlag.INT8 and
  either builds a Q/DQ ONNX (explicit quantization) or, with implicit_int8, calibrates an FP32 ONNX with an
  IInt8EntropyCalibrator2 fed from a calibration run (deprecated from 10.1 but still there; DLA needs it).
  builder.platform_has_fast_fp16 / _int8 are checked first.
- TensorRT 11+ ("strongly typed"): BuilderFlag.FP16/INT8, the precision-constraint flags, int8_calibrator and
  the IInt8*Calibrator classes are gone (migration guide "tensorrt-10x-to-11x-python-api-reference", Removed
  Python APIs); precision comes from the ONNX. fp16 converts the ONNX to mixed FP16 first
  (mixed_precision.to_mixed_fp16, our stand-in for ModelOpt AutoCast that the guide recommends); int8 needs
  a Q/DQ ONNX (`prn-edge calibrate --flavour tensorrt` writes one). Nothing in this path reads a removed flag.

Common to both (TensorRT Python API "Builder"/"IBuilderConfig"; notes/tensorrt.md): explicit-batch network
(flag EXPLICIT_BATCH only on 8.x; "[DEPRECATED] Ignored ... always explicit batch in TensorRT 10.0"),
OnnxParser, config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes), a timing cache
(create_timing_cache / set_timing_cache / get_timing_cache().serialize()), one optimisation profile over the
batch for dynamic-batch ONNX, DLA (default_device_type = DeviceType.DLA, DLA_core, BuilderFlag.GPU_FALLBACK;
none in TensorRT 11.0-11.3, "Working with DLA" 11.4.1: back on AGX Orin from 11.4.1), BuilderFlag.
VERSION_COMPATIBLE (from 8.6, "Version Compatibility") and hardware_compatibility_level
(HardwareCompatibilityLevel.AMPERE_PLUS from 8.6; SAME_COMPUTE_CAPABILITY only from 10.9, refused before).
DLA runs static shapes only: a dynamic-batch ONNX needs a fixed batch_profile (B, B, B) for dla_core.

The engine and its manifest (prn_edge.artefact.manifest.make_engine_manifest, NAME.json beside NAME.engine)
are written to temporary files and renamed into place only after a successful build, so a failure leaves
nothing half-written; the timing cache and the calibration cache are saved after the engine.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import onnx

from .. import __version__
from ..artefact import (KeepFloat, MetadataError, RUN_MANIFEST, decode_metadata, engine_manifest_path, jetson_info,
                        make_engine_manifest, metadata_props, read_keep_float, sha256_file, write_atomic)
from ..artefact.manifest import encode_manifest
from ..errors import BuildError
from ..runtime import tensorrt_backend as tb
from ..runtime.base import EngineError
from .calibrator import (cache_name, calibration_batches, is_calibration_run, make_entropy_calibrator,
                         read_calibration_run)
from .mixed_precision import MixedPrecisionError, fp32_nodes, has_qdq, qdq_types, to_mixed_fp16

PRECISIONS = ("fp32", "fp16", "int8", "best")
HARDWARE_COMPAT = ("none", "ampere_plus", "same_compute_capability")
DEFAULT_BATCH_PROFILE = (1, 4, 8)
MIN_TENSORRT = (8, 5)
NOT_INSTALLED = ("TensorRT is not installed here: build on the target (Jetson / GPU host) with `pip install tensorrt` "
                 "or JetPack's python3-libnvinfer; ONNX Runtime runs the .onnx here")

# The CUDA helper of the runtime backend (cuda-python or pycuda); a module attribute so tests can swap it.
host_cuda = tb.host_cuda


# ---------------------------------------------------------------------------------------------- helpers
def version_tuple(version: str) -> tuple[int, int, int]:
    return tb._version_tuple(version, 3)  # noqa: SLF001 (same parsing as the manifest check)


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # noqa: WPS433 (optional dependency)
    except ImportError:
        raise BuildError(NOT_INSTALLED) from None
    return trt


def _check_args(onnx_path: Path, out: Path, precision: str, workspace_mb: int, batch_profile, dla_core,
                hardware_compat, calibration, implicit_int8: bool) -> str:
    if precision not in PRECISIONS:
        raise BuildError(f"precision={precision!r}: choose one of {PRECISIONS}")
    if out.suffix not in tb.ENGINE_SUFFIXES:
        raise BuildError(f"engine path {out} should end in {' or '.join(tb.ENGINE_SUFFIXES)} (its manifest goes "
                         f"beside it as {engine_manifest_path(out).name})")
    if out.resolve() == onnx_path.resolve():
        raise BuildError("the engine path is the ONNX path")
    if not onnx_path.is_file():
        raise BuildError(f"{onnx_path} does not exist; export one with `prn-edge export CKPT --out {onnx_path}`")
    if not isinstance(workspace_mb, int) or workspace_mb < 16:
        raise BuildError(f"workspace_mb={workspace_mb!r}: give an integer >= 16 (MiB); 256 suits Jetson, 1024 dGPUs")
    if batch_profile is not None:
        bp = tuple(batch_profile)
        if len(bp) != 3 or not all(isinstance(b, int) for b in bp) or not 1 <= bp[0] <= bp[1] <= bp[2]:
            raise BuildError(f"batch_profile={batch_profile!r}: give (min, opt, max) with 1 <= min <= opt <= max")
    if dla_core is not None and (not isinstance(dla_core, int) or dla_core < 0):
        raise BuildError(f"dla_core={dla_core!r}: give a DLA core number (0 or 1 on AGX Orin/Xavier)")
    hw = "none" if hardware_compat in (None, "", "none") else str(hardware_compat).lower()
    if hw not in HARDWARE_COMPAT:
        raise BuildError(f"hardware_compat={hardware_compat!r}: choose one of {HARDWARE_COMPAT}")
    if implicit_int8 and precision not in ("int8", "best"):
        raise BuildError(f"implicit_int8 calibrates INT8 layers: use precision 'int8' or 'best', not {precision!r}")
    if implicit_int8 and calibration is None:
        raise BuildError("implicit INT8 needs a calibration run for its images: calibration='calibration/RUN' "
                         "(made by `prn-edge calibrate`)")
    return hw


def _check_dla_shapes(onnx_path: Path, onnx_batch: Optional[int], dla_core, batch_profile) -> None:
    """DLA runs static shapes only (TensorRT "Working with DLA": min = opt = max in the profile); with GPU
    fallback TensorRT would silently move a dynamic-shape network to the GPU, so refuse it here."""
    if dla_core is None or onnx_batch is not None:
        return
    if batch_profile is None or len(set(batch_profile)) != 1:
        given = "no batch_profile (the default (1, 4, 8) is dynamic)" if batch_profile is None else \
            f"batch_profile={tuple(batch_profile)}"
        raise BuildError(f"DLA runs static shapes only, but {onnx_path.name} has a dynamic batch and {given}: give a "
                         "fixed batch_profile for dla_core, e.g. batch_profile=(B, B, B) (--batch-profile B,B,B) with "
                         "B the batch the line runs, or export a fixed batch (`prn-edge export --batch B`)")


def _load_onnx(path: Path) -> tuple[onnx.ModelProto, dict[str, str], dict]:
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise BuildError(f"{path} is not a readable ONNX model ({e.__class__.__name__}: {str(e)[:160]}); export it "
                         "again with `prn-edge export`") from None
    props = metadata_props(model)
    try:
        meta = decode_metadata(props, str(path))
    except MetadataError as e:
        raise BuildError(str(e)) from None
    return model, props, meta


def _lint_target(major: int) -> str:
    return "8.5" if major < 10 else ("10" if major == 10 else "11")


# ---------------------------------------------------------------------------------------------- plan
def plan_precision(version: str, precision: str, qdq: bool, implicit_int8: bool, *, fast_fp16: bool = True,
                   fast_int8: bool = True, dla: bool = False) -> dict:
    """What to do for `precision` on this TensorRT (pure: no TensorRT needed).

    Returns {"strongly_typed", "flags" (BuilderFlag names to set), "convert_fp16", "int8" (None | "explicit" |
    "implicit"), "fp32_constraints", "detail"} or raises BuildError for what this platform cannot do.
    """
    major = version_tuple(version)[0]
    strong = major >= 11
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
                raise BuildError(f"precision int8 on TensorRT {version} needs an explicitly quantized (Q/DQ) ONNX: "
                                 "TensorRT 11 builds strongly typed networks only and has no INT8 calibrator. Run "
                                 "`prn-edge calibrate CKPT --data DATA --run NAME --flavour tensorrt` first and build "
                                 "calibration/NAME/model.int8.onnx")
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


# ---------------------------------------------------------------------------------------------- build
def build_engine(onnx_path: str | Path, out_engine: str | Path, precision: str = "fp32", workspace_mb: int = 1024,
                 timing_cache: Optional[str | Path] = None, batch_profile: Optional[Sequence[int]] = None,
                 dla_core: Optional[int] = None, version_compatible: bool = False,
                 hardware_compat: Optional[str] = None, calibration: Optional[str | Path] = None,
                 implicit_int8: bool = False, log: Callable[[str], None] = print, device: int = 0,
                 allow_failed_gate: bool = False) -> dict:
    """Build a TensorRT engine of an exported PRN ONNX at `out_engine` (+ manifest NAME.json); return a summary.

    precision: "fp32" | "fp16" | "int8" | "best" (fp16 plus int8 where the ONNX is Q/DQ or implicit_int8).
    workspace_mb: builder workspace (MiB); keep it small on Jetson (shared memory), e.g. 256.
    timing_cache: a file to load (if present) and save the builder's timing cache (faster rebuilds).
    batch_profile: (min, opt, max) batch for a dynamic-batch ONNX (default (1, 4, 8)); a fixed-batch ONNX
      takes none (or its own batch three times).
    dla_core: run on this DLA core with GPU fallback (Jetson AGX Orin/Xavier; needs fp16 or int8, and a fixed
      batch_profile (B, B, B) for a dynamic-batch ONNX: DLA runs static shapes only).
    version_compatible: the engine also loads in newer TensorRT of the same major (8.6+; may be slower).
    hardware_compat: "ampere_plus" (any GPU of compute capability >= 8.0) or "same_compute_capability" (10.9+).
    calibration: a calibration run folder (calibration/<run>): its images for implicit INT8 (with
      implicit_int8=True, TensorRT 8.5-10.x only), and recorded in the manifest; found automatically when
      onnx_path is the run's own model.int8.onnx / model.fp32.onnx.
    """
    t0 = time.perf_counter()
    onnx_path, out = Path(onnx_path), Path(out_engine)
    hw = _check_args(onnx_path, out, precision, workspace_mb, batch_profile, dla_core, hardware_compat,
                     calibration, implicit_int8)
    run_dir: Optional[Path] = Path(calibration) if calibration is not None else None
    if run_dir is not None:
        read_calibration_run(run_dir)  # a clear error now rather than mid-build
    elif is_calibration_run(onnx_path.parent):
        run_dir = onnx_path.parent
    model, props, meta = _load_onnx(onnx_path)
    if meta.get("accuracy_gate") == "failed" and not allow_failed_gate:
        raise BuildError(f"{onnx_path} comes from calibration run {meta.get('calibration_run', '?')!r}, which FAILED its "
                         "accuracy gate (see its manifest.json); build the FP32 model, calibrate again, or pass "
                         "--allow-failed-gate")
    spec = meta["input_spec"]
    qdq = has_qdq(model)
    if qdq:
        bad = sorted(qdq_types(model) - {"int8"})
        if bad:
            raise BuildError(f"{onnx_path.name} is quantized with {'/'.join(bad)} zero points (the 'cpu' flavour for "
                             "ONNX Runtime); TensorRT takes symmetric INT8 only: calibrate with --flavour tensorrt")

    # --- TensorRT and the GPU: before anything is written
    trt = _import_tensorrt()
    trt_version = str(getattr(trt, "__version__", "0"))
    major, minor, patch = version_tuple(trt_version)
    if (major, minor) < MIN_TENSORRT:
        raise BuildError(f"TensorRT {trt_version} is older than prn_edge supports (8.5, JetPack 5.1); upgrade JetPack "
                         "or TensorRT")
    try:
        cuda = host_cuda(device)
        dev = tb.current_device_info(device, trt=trt, cuda=cuda)
    except EngineError as e:
        raise BuildError(f"TensorRT {trt_version} is installed but no usable GPU/CUDA was found ({e}); build on the "
                         "target GPU host or Jetson") from None
    jetson = jetson_info()
    cc = tb._cc_tuple(dev["compute_capability"])  # noqa: SLF001

    # --- checks that need only the version and the device
    if dla_core is not None and major >= 11 and (minor, patch) < (4, 1):
        raise BuildError(f"TensorRT {trt_version} has no DLA (DLA is absent from TensorRT 11.0-11.3, and 11.4.0 has it "
                         "on Windows on ARM only; it is back on Jetson AGX Orin with 11.4.1 + JetPack 7.2.2): build "
                         "for the GPU (no dla_core), or use TensorRT 10.x / 11.4.1+")
    if version_compatible and (major, minor) < (8, 6):
        raise BuildError(f"version-compatible engines need TensorRT 8.6 or newer (this is {trt_version})")
    if hw != "none":
        if (major, minor) < (8, 6) or not hasattr(trt, "HardwareCompatibilityLevel"):
            raise BuildError(f"hardware compatibility levels need TensorRT 8.6 or newer (this is {trt_version})")
        if hw == "same_compute_capability" and not hasattr(trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY"):
            # HardwareCompatibilityLevel has NONE and AMPERE_PLUS from 8.6, SAME_COMPUTE_CAPABILITY from 10.9 only
            # (API snapshots: absent in 8.6.1 and 10.3.0, present in 10.16 and 11.4)
            raise BuildError(f"hardware_compat='same_compute_capability' needs TensorRT 10.9 or newer (this is "
                             f"{trt_version}, whose HardwareCompatibilityLevel has NONE and AMPERE_PLUS only): use "
                             "hardware_compat='ampere_plus' (any GPU of compute capability >= 8.0, a little slower), "
                             "or build without hardware_compat for this GPU only")
        if hw == "ampere_plus" and cc < (8, 0):
            raise BuildError(f"hardware_compat='ampere_plus' must be built on an Ampere or newer GPU; this "
                             f"{dev['gpu_name']} has compute capability {dev['compute_capability']}")
        if jetson.get("l4t"):
            log("warning: hardware compatibility levels are documented for discrete GPUs; on Jetson the engine may "
                "not gain portability")
    if jetson.get("l4t") and workspace_mb > 512:
        log(f"note: {workspace_mb} MiB workspace on a Jetson (memory shared with the CPU); 256 is usually enough")

    lint_target = _lint_target(major)
    from ..export.errors import ExportError
    from ..export.lint import check_tensorrt_compatible
    try:
        lint_warnings = [str(i) for i in check_tensorrt_compatible(model, (lint_target,))]
    except ExportError as e:
        raise BuildError(f"{onnx_path.name} will not build with TensorRT {trt_version}: {e}") from None

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strong = major >= 11
    plan = plan_precision(trt_version, precision, qdq, implicit_int8,
                          fast_fp16=True if strong else bool(getattr(builder, "platform_has_fast_fp16", True)),
                          fast_int8=True if strong else bool(getattr(builder, "platform_has_fast_int8", True)),
                          dla=dla_core is not None)
    if dla_core is not None:
        n_dla = int(getattr(builder, "num_DLA_cores", 0) or 0)
        if n_dla == 0:
            raise BuildError(f"this device ({dev['gpu_name']}) has no DLA (Orin Nano and discrete GPUs have none): "
                             "build without dla_core")
        if dla_core >= n_dla:
            raise BuildError(f"dla_core={dla_core} but this device has {n_dla} DLA core(s) (0..{n_dla - 1})")
        _check_dla_shapes(onnx_path, spec.batch, dla_core, batch_profile)

    # --- the network (converted to mixed FP16 first on strongly typed TensorRT)
    build_model, mixed_stats = model, None
    if plan["convert_fp16"]:
        mixed_stats = {}
        try:
            build_model = to_mixed_fp16(model, stats=mixed_stats)
        except MixedPrecisionError as e:
            raise BuildError(f"cannot convert {onnx_path.name} to mixed FP16: {e}") from None
        log(f"mixed FP16: {mixed_stats['fp16_nodes']} nodes FP16, {mixed_stats['fp32_nodes']} kept FP32, "
            f"{mixed_stats['casts']} casts")
    onnx_bytes = build_model.SerializeToString() if build_model is not model else onnx_path.read_bytes()

    net_flags = 0
    if major < 10:
        net_flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"TensorRT {trt_version}'s ONNX parser rejected {onnx_path.name}:\n  " + "\n  ".join(errors)
                         + "\ncheck it with prn_edge.export.lint.check_tensorrt_compatible, or re-export it")
    if network.num_inputs != 1:
        raise BuildError(f"{onnx_path.name} has {network.num_inputs} inputs; prn_edge ONNX have one")
    inp = network.get_input(0)
    in_shape = tuple(int(d) for d in inp.shape)
    outputs = {network.get_output(i).name: [int(d) for d in network.get_output(i).shape]
               for i in range(network.num_outputs)}

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    flags_set = []

    def set_flag(name: str) -> None:
        config.set_flag(getattr(trt.BuilderFlag, name))
        flags_set.append(name)

    for name in plan["flags"]:
        set_flag(name)
    pinned = 0
    if plan["fp32_constraints"]:
        pinned = _pin_fp32_layers(trt, network, fp32_nodes(model), read_keep_float(model))
        if pinned:
            set_flag("PREFER_PRECISION_CONSTRAINTS")
    if version_compatible:
        set_flag("VERSION_COMPATIBLE")
    if hw != "none":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, hw.upper())
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        set_flag("GPU_FALLBACK")

    # batch: one optimisation profile over the batch dimension
    profile_shapes = None
    if in_shape[0] == -1:
        bmin, bopt, bmax = tuple(batch_profile) if batch_profile is not None else DEFAULT_BATCH_PROFILE
        rest = in_shape[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (bmin,) + rest, (bopt,) + rest, (bmax,) + rest)
        config.add_optimization_profile(profile)
        profile_shapes = [bmin, bopt, bmax]
        max_batch, calib_batch = bmax, bopt
    else:
        static = in_shape[0]
        if batch_profile is not None and tuple(batch_profile) != (static,) * 3:
            raise BuildError(f"{onnx_path.name} has a fixed batch of {static}; a batch profile {tuple(batch_profile)} "
                             "needs a dynamic-batch export (`prn-edge export --batch dynamic`, export_onnx(batch=None))")
        max_batch = calib_batch = static

    # timing cache
    cache_obj = None
    if timing_cache is not None:
        tc_path = Path(timing_cache)
        data = tc_path.read_bytes() if tc_path.is_file() else b""
        cache_obj = config.create_timing_cache(data)
        config.set_timing_cache(cache_obj, False)
        log(f"timing cache {tc_path} ({'loaded' if data else 'new'})")

    # implicit INT8: the entropy calibrator (8.5 .. 10.x)
    calibrator, calib_info = None, None
    onnx_sha = sha256_file(onnx_path)
    if plan["int8"] == "implicit":
        cpath = run_dir / cache_name(trt_version, onnx_sha)
        batches = None
        if cpath.is_file():
            log(f"implicit INT8: reusing calibration cache {cpath}")
        else:
            batches = calibration_batches(run_dir, spec, calib_batch)
            log(f"implicit INT8: {len(batches)} batches of {calib_batch} from calibration run {run_dir.name}")
        calibrator = make_entropy_calibrator(trt, batches=batches, batch_size=calib_batch, cache_path=cpath,
                                             cuda=cuda, log=log)
        config.int8_calibrator = calibrator
        if profile_shapes is not None and hasattr(config, "set_calibration_profile"):
            cprof = builder.create_optimization_profile()
            shape = (calib_batch,) + in_shape[1:]
            cprof.set_shape(inp.name, shape, shape, shape)
            config.set_calibration_profile(cprof)
        calib_info = {"mode": "implicit_entropy2", "cache": cpath.name, "batch": calib_batch}
    elif run_dir is not None:
        calib_info = {"mode": "explicit_qdq" if qdq else "recorded"}
    if calib_info is not None:
        run_manifest = read_calibration_run(run_dir)
        calib_info.update({"run": str(run_dir.resolve()), "name": run_dir.name,
                           "manifest_sha256": sha256_file(run_dir / RUN_MANIFEST),
                           "images": len(run_manifest.get("calibration_files", [])),
                           "passed": run_manifest.get("passed")})

    # --- build
    log(f"building {out.name}: TensorRT {trt_version} ({'strongly' if strong else 'weakly'} typed), {precision} "
        f"[{plan['detail']}], {dev['gpu_name']} (sm {dev['compute_capability']})"
        + (f", DLA core {dla_core}" if dla_core is not None else "")
        + (f", batch profile {profile_shapes}" if profile_shapes else f", batch {max_batch}"))
    tb0 = time.perf_counter()
    try:
        with cuda.current():  # the device's context on this thread for TensorRT and the calibrator's copies
            try:
                serialized = builder.build_serialized_network(network, config)
                if calibrator is not None and calibrator.error is not None:
                    raise BuildError(f"INT8 calibration failed: {calibrator.error}")
            finally:
                if calibrator is not None:
                    calibrator.free()
    finally:
        cuda.close()
    if serialized is None:
        raise BuildError(f"TensorRT could not build {out.name} (see its log above): try a larger workspace_mb, "
                         "another precision, or check the ONNX with prn_edge.export.lint")
    engine_bytes = bytes(serialized)
    if not engine_bytes:
        raise BuildError(f"TensorRT returned an empty engine for {out.name}")
    build_s = time.perf_counter() - tb0
    if calibrator is not None:
        calib_info["batches_used"] = calibrator.batches_served
        calib_info["cache_reused"] = bool(calibrator.cache_used)

    thresholds = {k: meta.get(k) for k in ("image_threshold", "pixel_threshold", "score_spread")}
    manifest = make_engine_manifest(
        tensorrt_version=trt_version, compute_capability=dev["compute_capability"], gpu_name=dev["gpu_name"],
        onnx_metadata=props, onnx_sha256=onnx_sha, engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        precision=precision, version_compatible=version_compatible, hardware_compatibility=hw, max_batch=max_batch,
        precision_detail=plan["detail"], strongly_typed=strong, builder_flags=flags_set,
        input={"name": inp.name, "shape": list(in_shape), "format": spec.format},
        outputs=outputs, batch_profile=profile_shapes, dla_core=dla_core, workspace_mb=workspace_mb,
        l4t=jetson.get("l4t"), jetpack=jetson.get("jetpack"), cuda_api=dev.get("cuda_api"),
        thresholds=thresholds, calibration=calib_info, onnx_path=str(onnx_path.resolve()),
        built_onnx_sha256=(hashlib.sha256(onnx_bytes).hexdigest() if build_model is not model else onnx_sha),
        mixed_fp16=mixed_stats, fp32_pinned_layers=pinned, toolkit_version=__version__,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(build_s, 2))
    _write_engine_and_manifest(out, engine_bytes, manifest)

    warnings = list(lint_warnings)
    if cache_obj is not None:
        try:
            write_atomic(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
        except Exception as e:  # the engine is fine; the cache only speeds up the next build
            warnings.append(f"timing cache not saved: {e}")
    if calibrator is not None and calibrator.new_cache and not calibrator.cache_used:
        try:
            write_atomic(run_dir / calib_info["cache"], calibrator.new_cache)
        except Exception as e:
            warnings.append(f"calibration cache not saved: {e}")
    for w in warnings:
        log(f"warning: {w}")
    summary = {"engine": str(out), "manifest": str(engine_manifest_path(out)), "bytes": len(engine_bytes),
               "precision": precision, "precision_detail": plan["detail"], "tensorrt_version": trt_version,
               "strongly_typed": strong, "gpu_name": dev["gpu_name"], "compute_capability": dev["compute_capability"],
               "builder_flags": flags_set, "batch_profile": profile_shapes, "max_batch": max_batch,
               "calibration": calib_info, "mixed_fp16": mixed_stats, "fp32_pinned_layers": pinned,
               "dla_core": dla_core, "warnings": warnings, "build_seconds": round(build_s, 2),
               "seconds": round(time.perf_counter() - t0, 2)}
    log(f"wrote {out} ({len(engine_bytes) / 1e6:.1f} MB) and {engine_manifest_path(out).name} "
        f"in {summary['seconds']} s")
    return summary


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


def _write_engine_and_manifest(out: Path, engine_bytes: bytes, manifest: dict) -> None:
    """Both files or neither: temporaries beside the targets, renamed at the end, removed on any failure."""
    created_dir = None
    if not out.parent.exists():
        created_dir = out.parent
        while not created_dir.parent.exists():
            created_dir = created_dir.parent
        out.parent.mkdir(parents=True)
    man_path = engine_manifest_path(out)
    tmps: list[str] = []
    finals: list[Path] = []
    try:
        for data, target in ((engine_bytes, out), (encode_manifest(manifest), man_path)):
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=out.parent)
            tmps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, target in zip(tmps, (out, man_path)):
            os.replace(tmp, target)
            finals.append(target)
    except BaseException:
        for p in tmps:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        for p in finals:  # an engine without its manifest (or the other way round) is worse than nothing
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        if created_dir is not None:
            import shutil

            shutil.rmtree(created_dir, ignore_errors=True)
        raise


__all__ = ["build_engine", "plan_precision", "BuildError", "PRECISIONS", "DEFAULT_BATCH_PROFILE", "NOT_INSTALLED"]
