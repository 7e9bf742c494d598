"""Which layers suffer most from INT8: the local signal-to-quantization-noise ratio of each quantized
activation (float value vs its quantize-dequantize value, inside the Q/DQ model), lowest first."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from .quantize import _quiet, _Reader


def rank_sensitive_nodes(fp32: Path, qdq: Path, input_name: str, batches: Sequence[np.ndarray]) -> list[dict]:
    """[{node, op, tensor, sqnr_db}] for every quantized activation, most damaged (lowest SQNR) first."""
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        aug_f, aug_q = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        modify_model_output_intermediate_tensors(str(fp32), str(aug_f))
        modify_model_output_intermediate_tensors(str(qdq), str(aug_q))
        float_acts = collect_activations(str(aug_f), _Reader(input_name, batches))
        qdq_acts = collect_activations(str(aug_q), _Reader(input_name, batches))
        errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    producer = {out: n for n in onnx.load(str(fp32)).graph.node for out in n.output}
    ranked = []
    for tensor, err in errors.items():
        node = producer.get(tensor)
        if node is None or "xmodel_err" not in err:
            continue
        sqnr = float(err["qdq_err"])  # local: the tensor before vs after its own Q/DQ pair
        ranked.append({"node": node.name, "op": node.op_type, "tensor": tensor,
                       "sqnr_db": sqnr if np.isfinite(sqnr) else 1e9,
                       "accumulated_sqnr_db": float(err["xmodel_err"])})
    ranked.sort(key=lambda r: r["sqnr_db"])
    return ranked


def layer_groups(model_path: Path, candidates: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The model's quantizable nodes grouped by layer: each encoder block, the stem, each decoder stage, each
    attention block, the input projections, the fusion (from the exported node names, e.g. /encoder/_blocks.3/)."""
    cand = set(candidates)
    groups: dict[str, list[str]] = {}
    for n in onnx.load(str(model_path)).graph.node:
        if n.name not in cand:
            continue
        parts = n.name.strip("/").split("/")
        key = "/".join(parts[:2]) if parts[0] in ("encoder", "decoder") and len(parts) > 2 else parts[0]
        groups.setdefault(key, []).append(n.name)
    return list(groups.items())


def rank_sensitive_groups(fp32: Path, input_name: str, calib: Sequence[np.ndarray], probe: Sequence[np.ndarray],
                          groups: list[tuple[str, list[str]]], quantize, fixed: Sequence[str],
                          log=lambda m: None, suffix: str = ".onnx") -> list[dict]:
    """Per-layer sensitivity measured where it matters, on the anomaly map: for each group, quantize everything
    else, run the probe inputs and compare the maps with FP32 (correlation). The groups whose float version
    restores the map most come first. `quantize(out_path, exclude)` writes an INT8 model: a Q/DQ ONNX, or an
    OpenVINO IR (suffix ".xml")."""
    from ..artefact import OUTPUT_MAP
    from .session import model_runner

    def maps(path) -> np.ndarray:
        run = model_runner(path, input_name, [OUTPUT_MAP])
        return np.concatenate([run(x)[0] for x in probe]).ravel()

    ref = maps(fp32)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        q = Path(tmp) / f"q{suffix}"
        quantize(q, list(fixed))
        base = float(np.corrcoef(ref, maps(q))[0, 1])
        for i, (name, nodes) in enumerate(groups):
            quantize(q, list(fixed) + nodes)
            corr = float(np.corrcoef(ref, maps(q))[0, 1])
            out.append({"group": name, "nodes": len(nodes), "map_correlation_if_float": corr,
                        "gain": corr - base})
            log(f"sensitivity {i + 1}/{len(groups)}: {name} in float -> map correlation {corr:.4f} "
                f"(all INT8 {base:.4f})")
    out.sort(key=lambda r: -r["gain"])
    return out
