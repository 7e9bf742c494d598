"""ONNX artefact -> OpenVINO IR (model.xml + model.bin), FP32, with the artefact's prn_edge metadata in the IR's
rt_info (prn_edge.artefact.openvino_ir reads it back), so the openvino engine decides with the same thresholds and
input spec as ONNX Runtime does on the ONNX."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ..artefact import MetadataError, encode_metadata, read_ir_metadata, read_metadata, sha256_file
from ..artefact.metadata import PREFIX
from ..artefact.openvino_ir import RT_INFO_SECTION, weights_of
from .errors import ExportError


def export_openvino(onnx_path: str | Path, out: str | Path) -> dict:
    """Convert an exported ONNX artefact (FP32, or an INT8 Q/DQ one) to an OpenVINO IR at `out` (.xml; the weights
    go to the .bin beside it). Weights stay FP32 (OpenVINO's save_model would halve them to FP16 by default).
    Both files are written beside `out` under temporary names and renamed once complete."""
    t0 = time.perf_counter()
    onnx_path, out = Path(onnx_path), Path(out)
    if out.suffix != ".xml":
        raise ExportError(f"output {out} should end in .xml (an OpenVINO IR is NAME.xml + NAME.bin)")
    try:
        meta = read_metadata(onnx_path)
    except MetadataError as e:
        raise ExportError(f"cannot convert {onnx_path} to OpenVINO: {e}") from None
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("converting to OpenVINO needs OpenVINO, which is not installed here: "
                          "pip install 'prn-edge[openvino]' (or pip install openvino)") from None
    meta.pop("input_spec")
    meta["source_onnx_sha256"] = sha256_file(onnx_path)
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as e:
        raise ExportError(f"OpenVINO cannot convert {onnx_path} ({e.__class__.__name__}: {str(e).strip()[:300]})") \
            from None
    for key, value in encode_metadata(meta).items():
        model.set_rt_info(value, [RT_INFO_SECTION, key[len(PREFIX):]])
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        read_ir_metadata(staged)  # what we wrote reads back
        os.replace(weights_of(staged), weights_of(out))
        os.replace(staged, out)
    size = out.stat().st_size + weights_of(out).stat().st_size
    return {"path": str(out), "weights": str(weights_of(out)), "bytes": size,
            "sha256": sha256_file(out), "bin_sha256": sha256_file(weights_of(out)), "source_onnx": str(onnx_path),
            "source_onnx_sha256": meta["source_onnx_sha256"], "openvino": ov.get_version().split("-")[0],
            "weights_precision": "fp32", "seconds": round(time.perf_counter() - t0, 3)}
