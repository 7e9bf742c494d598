"""ONNX artefact -> OpenVINO IR (model.xml + model.bin), FP32, with the artefact's prn_edge metadata in the IR's
rt_info (prn_edge.artefact.openvino_ir reads it back), so the openvino engine decides with the same thresholds and
input spec as ONNX Runtime does on the ONNX. `save_ir` is also how INT8 calibration (NNCF) writes its IR."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..artefact import MetadataError, read_ir_metadata, read_metadata, sha256_file
from ..artefact.openvino_ir import set_ir_metadata, weights_of
from .errors import ExportError


def import_openvino():
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("converting to OpenVINO needs OpenVINO, which is not installed here: "
                          "pip install '.[openvino]' in the prn-edge source folder (or pip install openvino)") from None
    return ov


def ir_metadata(onnx_path: str | Path) -> dict[str, Any]:
    """What an IR made from the ONNX artefact carries: the ONNX's prn_edge metadata and the ONNX's hash."""
    try:
        meta = read_metadata(onnx_path)
    except MetadataError as e:
        raise ExportError(f"cannot convert {onnx_path} to OpenVINO: {e}") from None
    meta.pop("input_spec")
    meta["source_onnx_sha256"] = sha256_file(onnx_path)
    return meta


def convert_onnx(onnx_path: str | Path):
    """The ONNX model as an openvino.Model (metadata not yet attached)."""
    ov = import_openvino()
    try:
        return ov.convert_model(str(onnx_path))
    except Exception as e:
        raise ExportError(f"OpenVINO cannot convert {onnx_path} ({e.__class__.__name__}: {str(e).strip()[:300]})") \
            from None


def save_ir(model, out: str | Path, meta: dict[str, Any]) -> None:
    """Write `model` (an openvino.Model) with `meta` in its rt_info to `out` (.xml, weights to the .bin beside it).
    Weights stay as they are (save_model would halve FP32 ones to FP16 by default). Both files are written beside
    `out` under temporary names and renamed once complete, so `out` may be the IR `model` was read from."""
    ov = import_openvino()
    out = Path(out)
    if out.suffix != ".xml":
        raise ExportError(f"output {out} should end in .xml (an OpenVINO IR is NAME.xml + NAME.bin)")
    set_ir_metadata(model, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        read_ir_metadata(staged)  # what we wrote reads back
        os.replace(weights_of(staged), weights_of(out))
        os.replace(staged, out)


def update_ir_metadata(xml_path: str | Path, meta: dict[str, Any]) -> None:
    """Set prn_edge values (e.g. an INT8 IR's own thresholds) in an IR's rt_info, rewriting the IR in place."""
    ov = import_openvino()
    save_ir(ov.Core().read_model(str(xml_path)), xml_path, meta)


def export_openvino(onnx_path: str | Path, out: str | Path) -> dict:
    """Convert an exported ONNX artefact (FP32, or an INT8 Q/DQ one) to an OpenVINO IR at `out` (.xml; the weights
    go to the .bin beside it), FP32 weights."""
    t0 = time.perf_counter()
    onnx_path, out = Path(onnx_path), Path(out)
    if out.suffix != ".xml":
        raise ExportError(f"output {out} should end in .xml (an OpenVINO IR is NAME.xml + NAME.bin)")
    meta = ir_metadata(onnx_path)
    ov = import_openvino()
    save_ir(convert_onnx(onnx_path), out, meta)
    size = out.stat().st_size + weights_of(out).stat().st_size
    return {"path": str(out), "weights": str(weights_of(out)), "bytes": size,
            "sha256": sha256_file(out), "bin_sha256": sha256_file(weights_of(out)), "source_onnx": str(onnx_path),
            "source_onnx_sha256": meta["source_onnx_sha256"], "openvino": ov.get_version().split("-")[0],
            "weights_precision": "fp32", "seconds": round(time.perf_counter() - t0, 3)}
