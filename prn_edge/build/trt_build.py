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

import dataclasses
import datetime as _dt
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import onnx

from .. import __version__
from ..artefact import (InputSpec, KeepFloat, MetadataError, RUN_MANIFEST, decode_metadata, engine_manifest_path,
                        jetson_info, make_engine_manifest, metadata_props, read_keep_float, sha256_file, write_atomic)
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


@dataclass(frozen=True)
class _Request:
    """build_engine's arguments; `checked()` validates them once and normalizes them."""

    onnx_path: Path
    out: Path
    precision: str
    workspace_mb: int
    timing_cache: Optional[Path]
    batch_profile: Optional[Sequence[int]]  # checked: a (min, opt, max) tuple
    dla_core: Optional[int]
    version_compatible: bool
    hardware_compat: Optional[str]  # checked: one of HARDWARE_COMPAT
    calibration: Optional[Path]
    implicit_int8: bool
    allow_failed_gate: bool
    device: int
    log: Callable[[str], None]

    def checked(self) -> "_Request":
        """The request validated (a BuildError names the fix) and normalized."""
        precision, out, onnx_path = self.precision, self.out, self.onnx_path
        if precision not in PRECISIONS:
            raise BuildError(f"precision={precision!r}: choose one of {PRECISIONS}")
        if out.suffix not in tb.ENGINE_SUFFIXES:
            raise BuildError(f"engine path {out} should end in {' or '.join(tb.ENGINE_SUFFIXES)} (its manifest goes "
                             f"beside it as {engine_manifest_path(out).name})")
        if out.resolve() == onnx_path.resolve():
            raise BuildError("the engine path is the ONNX path")
        if not onnx_path.is_file():
            raise BuildError(f"{onnx_path} does not exist; export one with `prn-edge export CKPT --out {onnx_path}`")
        if not isinstance(self.workspace_mb, int) or self.workspace_mb < 16:
            raise BuildError(f"workspace_mb={self.workspace_mb!r}: give an integer >= 16 (MiB); 256 suits Jetson, "
                             "1024 dGPUs")
        bp = None if self.batch_profile is None else tuple(self.batch_profile)
        if bp is not None and (len(bp) != 3 or not all(isinstance(b, int) for b in bp)
                               or not 1 <= bp[0] <= bp[1] <= bp[2]):
            raise BuildError(f"batch_profile={self.batch_profile!r}: give (min, opt, max) with 1 <= min <= opt <= max")
        if self.dla_core is not None and (not isinstance(self.dla_core, int) or self.dla_core < 0):
            raise BuildError(f"dla_core={self.dla_core!r}: give a DLA core number (0 or 1 on AGX Orin/Xavier)")
        hw = "none" if self.hardware_compat in (None, "", "none") else str(self.hardware_compat).lower()
        if hw not in HARDWARE_COMPAT:
            raise BuildError(f"hardware_compat={self.hardware_compat!r}: choose one of {HARDWARE_COMPAT}")
        if self.implicit_int8 and precision not in ("int8", "best"):
            raise BuildError(f"implicit_int8 calibrates INT8 layers: use precision 'int8' or 'best', not "
                             f"{precision!r}")
        if self.implicit_int8 and self.calibration is None:
            raise BuildError("implicit INT8 needs a calibration run for its images: calibration='calibration/RUN' "
                             "(made by `prn-edge calibrate`)")
        return dataclasses.replace(self, batch_profile=bp, hardware_compat=hw)


@dataclass(frozen=True)
class _Artefact:
    """The exported ONNX to build, read and checked, and the calibration run it comes from (or was given)."""

    path: Path
    model: onnx.ModelProto
    props: dict[str, str]  # its metadata_props as they are (the manifest carries them to the runtime)
    meta: dict  # ... decoded
    qdq: bool  # explicitly quantized
    run_dir: Optional[Path]

    @property
    def spec(self) -> InputSpec:
        return self.meta["input_spec"]

    @cached_property
    def sha256(self) -> str:
        return sha256_file(self.path)


def _read_artefact(req: _Request) -> _Artefact:
    run_dir = req.calibration
    if run_dir is not None:
        read_calibration_run(run_dir)  # a clear error now rather than mid-build
    elif is_calibration_run(req.onnx_path.parent):
        run_dir = req.onnx_path.parent
    model, props, meta = _load_onnx(req.onnx_path)
    if meta.get("accuracy_gate") == "failed" and not req.allow_failed_gate:
        raise BuildError(f"{req.onnx_path} comes from calibration run {meta.get('calibration_run', '?')!r}, which "
                         "FAILED its accuracy gate (see its manifest.json); build the FP32 model, calibrate again, or "
                         "pass --allow-failed-gate")
    qdq = has_qdq(model)
    bad = sorted(qdq_types(model) - {"int8"}) if qdq else []
    if bad:
        raise BuildError(f"{req.onnx_path.name} is quantized with {'/'.join(bad)} zero points (the 'cpu' flavour for "
                         "ONNX Runtime); TensorRT takes symmetric INT8 only: calibrate with --flavour tensorrt")
    return _Artefact(req.onnx_path, model, props, meta, qdq, run_dir)


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


@dataclass(frozen=True)
class _Target:
    """The TensorRT and the GPU this build runs on."""

    version: str  # TensorRT's
    cuda: Any  # the host CUDA helper (tensorrt_backend.host_cuda)
    device: dict  # tensorrt_backend.current_device_info: gpu_name, compute_capability, cuda_api
    jetson: dict  # prn_edge.artefact.jetson_info: l4t, jetpack (None off a Jetson)

    @property
    def release(self) -> tuple[int, int, int]:
        return version_tuple(self.version)

    @property
    def strongly_typed(self) -> bool:
        return self.release[0] >= 11


def _open_target(trt: Any, req: _Request) -> _Target:
    """This TensorRT and GPU, checked against the request before anything is written."""
    version = str(getattr(trt, "__version__", "0"))
    if version_tuple(version)[:2] < MIN_TENSORRT:
        raise BuildError(f"TensorRT {version} is older than prn_edge supports (8.5, JetPack 5.1); upgrade JetPack "
                         "or TensorRT")
    try:
        cuda = host_cuda(req.device)
        device = tb.current_device_info(req.device, trt=trt, cuda=cuda)
    except EngineError as e:
        raise BuildError(f"TensorRT {version} is installed but no usable GPU/CUDA was found ({e}); build on the "
                         "target GPU host or Jetson") from None
    target = _Target(version, cuda, device, jetson_info())
    _check_target(trt, req, target)
    return target


def _check_target(trt: Any, req: _Request, target: _Target) -> None:
    """What this TensorRT or device cannot do for the request (DLA, portability), and notes for a Jetson."""
    major, minor, patch = target.release
    version, hw, l4t = target.version, req.hardware_compat, target.jetson.get("l4t")
    if req.dla_core is not None and major >= 11 and (minor, patch) < (4, 1):
        raise BuildError(f"TensorRT {version} has no DLA (DLA is absent from TensorRT 11.0-11.3, and 11.4.0 has it "
                         "on Windows on ARM only; it is back on Jetson AGX Orin with 11.4.1 + JetPack 7.2.2): build "
                         "for the GPU (no dla_core), or use TensorRT 10.x / 11.4.1+")
    if req.version_compatible and (major, minor) < (8, 6):
        raise BuildError(f"version-compatible engines need TensorRT 8.6 or newer (this is {version})")
    if hw != "none":
        if (major, minor) < (8, 6) or not hasattr(trt, "HardwareCompatibilityLevel"):
            raise BuildError(f"hardware compatibility levels need TensorRT 8.6 or newer (this is {version})")
        if hw == "same_compute_capability" and not hasattr(trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY"):
            # HardwareCompatibilityLevel has NONE and AMPERE_PLUS from 8.6, SAME_COMPUTE_CAPABILITY from 10.9 only
            # (API snapshots: absent in 8.6.1 and 10.3.0, present in 10.16 and 11.4)
            raise BuildError(f"hardware_compat='same_compute_capability' needs TensorRT 10.9 or newer (this is "
                             f"{version}, whose HardwareCompatibilityLevel has NONE and AMPERE_PLUS only): use "
                             "hardware_compat='ampere_plus' (any GPU of compute capability >= 8.0, a little slower), "
                             "or build without hardware_compat for this GPU only")
        if hw == "ampere_plus" and tb._cc_tuple(target.device["compute_capability"]) < (8, 0):  # noqa: SLF001
            raise BuildError(f"hardware_compat='ampere_plus' must be built on an Ampere or newer GPU; this "
                             f"{target.device['gpu_name']} has compute capability "
                             f"{target.device['compute_capability']}")
        if l4t:
            req.log("warning: hardware compatibility levels are documented for discrete GPUs; on Jetson the engine "
                    "may not gain portability")
    if l4t and req.workspace_mb > 512:
        req.log(f"note: {req.workspace_mb} MiB workspace on a Jetson (memory shared with the CPU); 256 is usually "
                "enough")


def _lint(req: _Request, art: _Artefact, target: _Target) -> list[str]:
    """prn_edge's TensorRT-compatibility lint of the ONNX for this TensorRT family: its warnings, or BuildError."""
    from ..export.errors import ExportError
    from ..export.lint import check_tensorrt_compatible

    major = target.release[0]
    family = "8.5" if major < 10 else ("10" if major == 10 else "11")
    try:
        return [str(i) for i in check_tensorrt_compatible(art.model, (family,))]
    except ExportError as e:
        raise BuildError(f"{req.onnx_path.name} will not build with TensorRT {target.version}: {e}") from None


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
    req = _Request(onnx_path=Path(onnx_path), out=Path(out_engine), precision=precision, workspace_mb=workspace_mb,
                   timing_cache=None if timing_cache is None else Path(timing_cache), batch_profile=batch_profile,
                   dla_core=dla_core, version_compatible=version_compatible, hardware_compat=hardware_compat,
                   calibration=None if calibration is None else Path(calibration), implicit_int8=implicit_int8,
                   allow_failed_gate=allow_failed_gate, device=device, log=log).checked()
    art = _read_artefact(req)
    trt = _import_tensorrt()  # TensorRT and the GPU are checked before anything is written
    target = _open_target(trt, req)
    lint_warnings = _lint(req, art, target)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    plan = _precision_plan(builder, req, art, target)
    _check_dla(builder, req, art, target)
    net = _parse_network(trt, builder, logger, req, art, plan, target)
    config, flags, pinned = _configure(trt, builder, net.network, req, art, plan)
    batch = _add_batch_profile(builder, config, net, req)
    timing = _load_timing_cache(config, req)
    calib_info = _calibration_record(req, art, target, plan, batch)
    calibrator = None
    if plan["int8"] == "implicit":
        calibrator = _implicit_calibrator(trt, builder, config, req, art, target, net, batch,
                                          art.run_dir / calib_info["cache"])

    log(f"building {req.out.name}: TensorRT {target.version} ({'strongly' if target.strongly_typed else 'weakly'} "
        f"typed), {precision} [{plan['detail']}], {target.device['gpu_name']} (sm "
        f"{target.device['compute_capability']})" + (f", DLA core {dla_core}" if dla_core is not None else "")
        + (f", batch profile {batch.profile}" if batch.profile else f", batch {batch.max}"))
    engine_bytes, build_s = _serialize(builder, net.network, config, calibrator, target.cuda, req.out.name)
    if calibrator is not None:
        calib_info.update(batches_used=calibrator.batches_served, cache_reused=bool(calibrator.cache_used))
    manifest = _engine_manifest(req, art, target, net, plan, flags, pinned, batch, calib_info, engine_bytes, build_s)
    _write_engine_and_manifest(req.out, engine_bytes, manifest)

    warnings = lint_warnings + _save_caches(config, timing, calibrator, req, art, calib_info)
    for w in warnings:
        log(f"warning: {w}")
    summary = {"engine": str(req.out), "manifest": str(engine_manifest_path(req.out)), "bytes": len(engine_bytes),
               **{k: manifest[k] for k in _SUMMARY_FIELDS}, "warnings": warnings,
               "build_seconds": manifest["build_seconds"], "seconds": round(time.perf_counter() - t0, 2)}
    log(f"wrote {req.out} ({len(engine_bytes) / 1e6:.1f} MB) and {engine_manifest_path(req.out).name} "
        f"in {summary['seconds']} s")
    return summary


# the manifest fields the summary repeats, in its order
_SUMMARY_FIELDS = ("precision", "precision_detail", "tensorrt_version", "strongly_typed", "gpu_name",
                   "compute_capability", "builder_flags", "batch_profile", "max_batch", "calibration", "mixed_fp16",
                   "fp32_pinned_layers", "dla_core")


def _precision_plan(builder: Any, req: _Request, art: _Artefact, target: _Target) -> dict:
    """plan_precision for this TensorRT and what this GPU runs fast (strongly typed TensorRT has no such flags)."""
    strong = target.strongly_typed
    return plan_precision(target.version, req.precision, art.qdq, req.implicit_int8,
                          fast_fp16=True if strong else bool(getattr(builder, "platform_has_fast_fp16", True)),
                          fast_int8=True if strong else bool(getattr(builder, "platform_has_fast_int8", True)),
                          dla=req.dla_core is not None)


def _check_dla(builder: Any, req: _Request, art: _Artefact, target: _Target) -> None:
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


@dataclass(frozen=True)
class _Network:
    """The network TensorRT parsed, and what the manifest says about it."""

    network: Any  # INetworkDefinition
    parser: Any  # the OnnxParser, kept alive until the build: it owns weights the network refers to
    input_name: str
    input_shape: tuple[int, ...]
    outputs: dict[str, list[int]]
    built_onnx_sha256: str  # of the ONNX parsed (on strongly typed fp16, the converted one)
    mixed_fp16: Optional[dict]  # the conversion's counts, when converted


def _parse_network(trt: Any, builder: Any, logger: Any, req: _Request, art: _Artefact, plan: dict,
                   target: _Target) -> _Network:
    """The explicit-batch network of the ONNX, converted to mixed FP16 first on strongly typed TensorRT."""
    mixed_stats = None
    if plan["convert_fp16"]:
        mixed_stats = {}
        try:
            onnx_bytes = to_mixed_fp16(art.model, stats=mixed_stats).SerializeToString()
        except MixedPrecisionError as e:
            raise BuildError(f"cannot convert {req.onnx_path.name} to mixed FP16: {e}") from None
        built_sha = hashlib.sha256(onnx_bytes).hexdigest()
        req.log(f"mixed FP16: {mixed_stats['fp16_nodes']} nodes FP16, {mixed_stats['fp32_nodes']} kept FP32, "
                f"{mixed_stats['casts']} casts")
    else:
        onnx_bytes, built_sha = req.onnx_path.read_bytes(), art.sha256
    net_flags = 0
    if target.release[0] < 10:
        net_flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"TensorRT {target.version}'s ONNX parser rejected {req.onnx_path.name}:\n  "
                         + "\n  ".join(errors)
                         + "\ncheck it with prn_edge.export.lint.check_tensorrt_compatible, or re-export it")
    if network.num_inputs != 1:
        raise BuildError(f"{req.onnx_path.name} has {network.num_inputs} inputs; prn_edge ONNX have one")
    inp = network.get_input(0)
    outputs = {network.get_output(i).name: [int(d) for d in network.get_output(i).shape]
               for i in range(network.num_outputs)}
    return _Network(network, parser, inp.name, tuple(int(d) for d in inp.shape), outputs, built_sha, mixed_stats)


def _configure(trt: Any, builder: Any, network: Any, req: _Request, art: _Artefact,
               plan: dict) -> tuple[Any, list[str], int]:
    """The builder config: workspace, the plan's precision flags with the sensitive layers pinned to FP32,
    portability and DLA. Returns it, the flags set and the number of layers pinned."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(req.workspace_mb) << 20)
    flags_set: list[str] = []

    def set_flag(name: str) -> None:
        config.set_flag(getattr(trt.BuilderFlag, name))
        flags_set.append(name)

    for name in plan["flags"]:
        set_flag(name)
    pinned = 0
    if plan["fp32_constraints"]:
        pinned = _pin_fp32_layers(trt, network, fp32_nodes(art.model), read_keep_float(art.model))
        if pinned:
            set_flag("PREFER_PRECISION_CONSTRAINTS")
    if req.version_compatible:
        set_flag("VERSION_COMPATIBLE")
    if req.hardware_compat != "none":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, req.hardware_compat.upper())
    if req.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(req.dla_core)
        set_flag("GPU_FALLBACK")
    return config, flags_set, pinned


@dataclass(frozen=True)
class _Batch:
    profile: Optional[list[int]]  # [min, opt, max] of a dynamic-batch ONNX's optimisation profile; None: fixed
    max: int
    calibration: int  # the batch the INT8 calibrator feeds: the profile's opt, or the fixed batch


def _add_batch_profile(builder: Any, config: Any, net: _Network, req: _Request) -> _Batch:
    """One optimisation profile over the batch dimension of a dynamic-batch ONNX; a fixed batch takes none."""
    shape = net.input_shape
    if shape[0] == -1:
        bmin, bopt, bmax = req.batch_profile if req.batch_profile is not None else DEFAULT_BATCH_PROFILE
        rest = shape[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(net.input_name, (bmin,) + rest, (bopt,) + rest, (bmax,) + rest)
        config.add_optimization_profile(profile)
        return _Batch([bmin, bopt, bmax], bmax, bopt)
    static = shape[0]
    if req.batch_profile is not None and req.batch_profile != (static,) * 3:
        raise BuildError(f"{req.onnx_path.name} has a fixed batch of {static}; a batch profile {req.batch_profile} "
                         "needs a dynamic-batch export (`prn-edge export --batch dynamic`, export_onnx(batch=None))")
    return _Batch(None, static, static)


def _load_timing_cache(config: Any, req: _Request) -> Any:
    """The timing cache file's content (or a new cache) in the config; None without timing_cache."""
    if req.timing_cache is None:
        return None
    data = req.timing_cache.read_bytes() if req.timing_cache.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    req.log(f"timing cache {req.timing_cache} ({'loaded' if data else 'new'})")
    return cache


def _calibration_record(req: _Request, art: _Artefact, target: _Target, plan: dict, batch: _Batch) -> Optional[dict]:
    """How INT8 got its scales and from which calibration run, for the manifest (None without a run)."""
    if plan["int8"] == "implicit":
        info = {"mode": "implicit_entropy2", "cache": cache_name(target.version, art.sha256),
                "batch": batch.calibration}
    elif art.run_dir is not None:
        info = {"mode": "explicit_qdq" if art.qdq else "recorded"}
    else:
        return None
    run_manifest = read_calibration_run(art.run_dir)
    info.update({"run": str(art.run_dir.resolve()), "name": art.run_dir.name,
                 "manifest_sha256": sha256_file(art.run_dir / RUN_MANIFEST),
                 "images": len(run_manifest.get("calibration_files", [])), "passed": run_manifest.get("passed")})
    return info


def _implicit_calibrator(trt: Any, builder: Any, config: Any, req: _Request, art: _Artefact, target: _Target,
                         net: _Network, batch: _Batch, cache: Path) -> Any:
    """Implicit INT8 (8.5 .. 10.x): the entropy calibrator in the config, fed from the calibration run's images
    unless TensorRT's cache for this version and ONNX is there already."""
    batches = None
    if cache.is_file():
        req.log(f"implicit INT8: reusing calibration cache {cache}")
    else:
        batches = calibration_batches(art.run_dir, art.spec, batch.calibration)
        req.log(f"implicit INT8: {len(batches)} batches of {batch.calibration} from calibration run "
                f"{art.run_dir.name}")
    calibrator = make_entropy_calibrator(trt, batches=batches, batch_size=batch.calibration, cache_path=cache,
                                         cuda=target.cuda, log=req.log)
    config.int8_calibrator = calibrator
    if batch.profile is not None and hasattr(config, "set_calibration_profile"):
        profile = builder.create_optimization_profile()
        shape = (batch.calibration,) + net.input_shape[1:]
        profile.set_shape(net.input_name, shape, shape, shape)
        config.set_calibration_profile(profile)
    return calibrator


def _serialize(builder: Any, network: Any, config: Any, calibrator: Any, cuda: Any, name: str) -> tuple[bytes, float]:
    """The serialized engine and the seconds it took. The build runs in the device's context on this thread (for
    TensorRT and the calibrator's copies); the calibrator's buffer and the CUDA helper are freed either way."""
    t0 = time.perf_counter()
    try:
        with cuda.current():
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
        raise BuildError(f"TensorRT could not build {name} (see its log above): try a larger workspace_mb, "
                         "another precision, or check the ONNX with prn_edge.export.lint")
    engine_bytes = bytes(serialized)
    if not engine_bytes:
        raise BuildError(f"TensorRT returned an empty engine for {name}")
    return engine_bytes, time.perf_counter() - t0


def _engine_manifest(req: _Request, art: _Artefact, target: _Target, net: _Network, plan: dict, flags: list[str],
                     pinned: int, batch: _Batch, calibration: Optional[dict], engine_bytes: bytes,
                     build_s: float) -> dict:
    dev, jetson = target.device, target.jetson
    return make_engine_manifest(
        tensorrt_version=target.version, compute_capability=dev["compute_capability"], gpu_name=dev["gpu_name"],
        onnx_metadata=art.props, onnx_sha256=art.sha256, engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        precision=req.precision, version_compatible=req.version_compatible,
        hardware_compatibility=req.hardware_compat, max_batch=batch.max, precision_detail=plan["detail"],
        strongly_typed=target.strongly_typed, builder_flags=flags,
        input={"name": net.input_name, "shape": list(net.input_shape), "format": art.spec.format},
        outputs=net.outputs, batch_profile=batch.profile, dla_core=req.dla_core, workspace_mb=req.workspace_mb,
        l4t=jetson.get("l4t"), jetpack=jetson.get("jetpack"), cuda_api=dev.get("cuda_api"),
        thresholds={k: art.meta.get(k) for k in ("image_threshold", "pixel_threshold", "score_spread")},
        calibration=calibration, onnx_path=str(req.onnx_path.resolve()), built_onnx_sha256=net.built_onnx_sha256,
        mixed_fp16=net.mixed_fp16, fp32_pinned_layers=pinned, toolkit_version=__version__,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), build_seconds=round(build_s, 2))


def _save_caches(config: Any, timing: Any, calibrator: Any, req: _Request, art: _Artefact,
                 calibration: Optional[dict]) -> list[str]:
    """After the engine: the timing cache, and a calibration cache TensorRT made. Failing to save one is a
    warning: the engine is fine, the caches only speed up the next build."""
    warnings = []
    if timing is not None:
        try:
            write_atomic(req.timing_cache, bytes(config.get_timing_cache().serialize()))
        except Exception as e:
            warnings.append(f"timing cache not saved: {e}")
    if calibrator is not None and calibrator.new_cache and not calibrator.cache_used:
        try:
            write_atomic(art.run_dir / calibration["cache"], calibrator.new_cache)
        except Exception as e:
            warnings.append(f"calibration cache not saved: {e}")
    return warnings


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
