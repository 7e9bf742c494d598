"""The parse step: the ONNX as TensorRT's explicit-batch network (converted to mixed FP16 first where a strongly
typed TensorRT builds fp16), and what the manifest says about it.

Explicit batch is the only mode: create_network needs the EXPLICIT_BATCH flag on 8.x and ignores it from 10.0
("[DEPRECATED] Ignored ... always explicit batch in TensorRT 10.0"; capability.explicit_batch_flag).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import BuildError
from .mixed_precision import MixedPrecisionError, to_mixed_fp16


@dataclass(frozen=True)
class Network:
    """The network TensorRT parsed, and what the manifest says about it."""

    network: Any  # INetworkDefinition
    parser: Any  # the OnnxParser, kept alive until the build: it owns weights the network refers to
    input_name: str
    input_shape: tuple[int, ...]
    outputs: dict[str, list[int]]
    built_onnx_sha256: str  # of the ONNX parsed (on strongly typed fp16, the converted one)
    mixed_fp16: Optional[dict]  # the conversion's counts, when converted


def parse_network(trt: Any, builder: Any, logger: Any, req: Any, art: Any, plan: dict, target: Any) -> Network:
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
    if target.caps.explicit_batch_flag:
        net_flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan["strongly_typed"] and target.caps.precision_flags:  # 10.12-10.x: strong typing is opt-in
        net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
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
    return Network(network, parser, inp.name, tuple(int(d) for d in inp.shape), outputs, built_sha, mixed_stats)

