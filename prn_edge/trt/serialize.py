"""The last steps: build the serialized engine (in the device's context on this thread), its manifest
(prn_edge.artefact.manifest: what the runtime checks before it loads the engine, the engine's sha256 among it), and
both files written together: temporaries beside the targets, renamed at the end, removed on any failure, so a
failed build leaves nothing half-written."""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from .. import __version__
from ..artefact import engine_manifest_path, make_engine_manifest
from ..artefact.files import FILE_MODE
from ..artefact.manifest import encode_manifest
from ..errors import BuildError


def serialize(builder: Any, network: Any, config: Any, calibrator: Any, cuda: Any, name: str) -> tuple[bytes, float]:
    """The serialized engine and the seconds it took. The build runs in the device's context on this thread (for
    TensorRT and the calibrator's copies); the calibrator's buffer is freed either way."""
    t0 = time.perf_counter()
    with cuda.current():
        try:
            serialized = builder.build_serialized_network(network, config)
            if calibrator is not None and calibrator.error is not None:
                raise BuildError(f"INT8 calibration failed: {calibrator.error}")
        finally:
            if calibrator is not None:
                calibrator.free()
    if serialized is None:
        raise BuildError(f"TensorRT could not build {name} (see its log above): try a larger workspace_mb, "
                         "another precision, or check the ONNX with prn_edge.export.lint")
    engine_bytes = bytes(serialized)
    if not engine_bytes:
        raise BuildError(f"TensorRT returned an empty engine for {name}")
    return engine_bytes, time.perf_counter() - t0


def engine_manifest(req: Any, art: Any, target: Any, net: Any, plan: dict, flags: list[str], pinned: int, batch: Any,
                    calibration: Optional[dict], engine_bytes: bytes, build_s: float) -> dict:
    dev, jetson = target.device, target.jetson
    return make_engine_manifest(
        tensorrt_version=target.version, compute_capability=dev["compute_capability"], gpu_name=dev["gpu_name"],
        onnx_metadata=art.props, onnx_sha256=art.sha256, engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        precision=req.precision, version_compatible=req.version_compatible,
        hardware_compatibility=req.hardware_compat, max_batch=batch.max, precision_detail=plan["detail"],
        strongly_typed=plan["strongly_typed"], builder_flags=flags,
        input={"name": net.input_name, "shape": list(net.input_shape), "format": art.spec.format},
        outputs=net.outputs, batch_profile=batch.profile, dla_core=req.dla_core, workspace_mb=req.workspace_mb,
        l4t=jetson.get("l4t"), jetpack=jetson.get("jetpack"), cuda_api=dev.get("cuda_api"),
        thresholds={k: art.meta.get(k) for k in ("image_threshold", "pixel_threshold", "score_spread")},
        calibration=calibration, onnx_path=str(req.onnx_path.resolve()), built_onnx_sha256=net.built_onnx_sha256,
        mixed_fp16=net.mixed_fp16, fp32_pinned_layers=pinned, toolkit_version=__version__,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), build_seconds=round(build_s, 2))


def write_engine_and_manifest(out: Path, engine_bytes: bytes, manifest: dict) -> None:
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
                os.fchmod(f.fileno(), FILE_MODE)  # the usual mode, not mkstemp's 0600: the line may run as another user
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
            shutil.rmtree(created_dir, ignore_errors=True)
        raise
