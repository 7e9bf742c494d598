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
