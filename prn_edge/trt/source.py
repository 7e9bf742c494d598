"""The exported ONNX a build starts from, read and checked (its metadata, its quantization, the calibration run
it comes from), and prn_edge's TensorRT lint of it for the TensorRT generation that will parse it."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import onnx

from ..artefact import InputSpec, MetadataError, decode_metadata, metadata_props, sha256_file
from ..errors import BuildError
from .calibrator import is_calibration_run, read_calibration_run
from .mixed_precision import has_qdq, qdq_types
from .request import BuildRequest


@dataclass(frozen=True)
class Artefact:
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


def read_artefact(req: BuildRequest) -> Artefact:
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
    return Artefact(req.onnx_path, model, props, meta, qdq, run_dir)


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


def lint(req: BuildRequest, art: Artefact, target: Any) -> list[str]:
    """prn_edge's TensorRT-compatibility lint of the ONNX for this TensorRT generation: its warnings, or BuildError."""
    from ..export.errors import ExportError
    from ..export.lint import check_tensorrt_compatible

    try:
        return [str(i) for i in check_tensorrt_compatible(art.model, (target.caps.lint_family,))]
    except ExportError as e:
        raise BuildError(f"{req.onnx_path.name} will not build with TensorRT {target.version}: {e}") from None
