"""`prn-edge build`: an exported PRN ONNX -> a TensorRT engine plus its manifest, on the target device, as a
pipeline of small steps (Polygraphy's loaders, as functions):

    request.checked -> source.read_artefact -> target.open_target (TensorRT, GPU, capability table, DLA and
    portability checks) -> source.lint -> precision.precision_plan -> dla.check_dla -> network.parse_network ->
    builder_config.create_config -> precision.set_precision -> compatibility.set_portability -> dla.set_dla ->
    profiles.add_batch_profile -> caches.load_timing_cache -> calibrator.implicit_calibrator ->
    serialize.serialize -> serialize.engine_manifest -> serialize.write_engine_and_manifest -> caches.save_caches

Two API families, told apart by the capability table (capability.py): TensorRT 8.5 .. 10.x builds weakly typed
networks with precision flags and implicit INT8 calibrators; 11+ builds strongly typed networks only (precision
from the ONNX: mixed FP16 converted here, Q/DQ INT8 from a calibration run). See precision.py.
The host CUDA layer opened for the build is closed on every path.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..artefact import engine_manifest_path
from ..errors import BuildError
from .builder_config import create_config
from .caches import load_timing_cache, save_caches
from .calibrator import calibration_record, implicit_calibrator
from .compatibility import set_portability
from .dla import check_dla, set_dla
from .network import parse_network
from .precision import plan_precision, precision_plan, set_precision
from .profiles import add_batch_profile
from .request import DEFAULT_BATCH_PROFILE, PRECISIONS, BuildRequest
from .serialize import engine_manifest, serialize, write_engine_and_manifest
from .source import lint, read_artefact
from .target import NOT_INSTALLED, Target, import_tensorrt, open_target

# the manifest fields the summary repeats, in its order
_SUMMARY_FIELDS = ("precision", "precision_detail", "tensorrt_version", "strongly_typed", "gpu_name",
                   "compute_capability", "builder_flags", "batch_profile", "max_batch", "calibration", "mixed_fp16",
                   "fp32_pinned_layers", "dla_core")


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
    req = BuildRequest(onnx_path=Path(onnx_path), out=Path(out_engine), precision=precision,
                       workspace_mb=workspace_mb, timing_cache=None if timing_cache is None else Path(timing_cache),
                       batch_profile=batch_profile, dla_core=dla_core, version_compatible=version_compatible,
                       hardware_compat=hardware_compat, calibration=None if calibration is None else Path(calibration),
                       implicit_int8=implicit_int8, allow_failed_gate=allow_failed_gate, device=device,
                       log=log).checked()
    art = read_artefact(req)
    trt = import_tensorrt()  # TensorRT and the GPU are checked before anything is written
    target = open_target(trt, req)
    try:
        summary = _build(trt, req, art, target)
    finally:
        target.cuda.close()
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    log(f"wrote {req.out} ({summary['bytes'] / 1e6:.1f} MB) and {engine_manifest_path(req.out).name} "
        f"in {summary['seconds']} s")
    return summary


def _build(trt, req: BuildRequest, art, target: Target) -> dict:
    lint_warnings = lint(req, art, target)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    plan = precision_plan(builder, req, art, target)
    check_dla(builder, req, art, target)
    net = parse_network(trt, builder, logger, req, art, plan, target)
    config = create_config(trt, builder, req.workspace_mb)
    flags: list[str] = []
    pinned = set_precision(trt, config, flags, net.network, art, plan)
    set_portability(trt, config, flags, req)
    set_dla(trt, config, flags, req)
    batch = add_batch_profile(builder, config, net, req)
    timing = load_timing_cache(config, req)
    calib_info = calibration_record(art, target, plan, batch)
    calibrator = None
    if plan["int8"] == "implicit":
        calibrator = implicit_calibrator(trt, builder, config, req, art, target, net, batch,
                                         art.run_dir / calib_info["cache"])

    req.log(f"building {req.out.name}: TensorRT {target.version} "
            f"({'strongly' if plan['strongly_typed'] else 'weakly'} typed), {req.precision} [{plan['detail']}], "
            f"{target.device['gpu_name']} (sm {target.device['compute_capability']})"
            + (f", DLA core {req.dla_core}" if req.dla_core is not None else "")
            + (f", batch profile {batch.profile}" if batch.profile else f", batch {batch.max}"))
    engine_bytes, build_s = serialize(builder, net.network, config, calibrator, target.cuda, req.out.name)
    if calibrator is not None:
        calib_info.update(batches_used=calibrator.batches_served, cache_reused=bool(calibrator.cache_used))
    manifest = engine_manifest(req, art, target, net, plan, flags, pinned, batch, calib_info, engine_bytes, build_s)
    write_engine_and_manifest(req.out, engine_bytes, manifest)

    warnings = lint_warnings + save_caches(config, timing, calibrator, req, art, calib_info)
    for w in warnings:
        req.log(f"warning: {w}")
    return {"engine": str(req.out), "manifest": str(engine_manifest_path(req.out)), "bytes": len(engine_bytes),
            **{k: manifest[k] for k in _SUMMARY_FIELDS}, "warnings": warnings,
            "build_seconds": manifest["build_seconds"]}


__all__ = ["build_engine", "plan_precision", "BuildError", "PRECISIONS", "DEFAULT_BATCH_PROFILE", "NOT_INSTALLED"]
