"""to_mixed_fp16 on a real exported PRN, run by ONNX Runtime (CPU) against the FP32 model."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto

from prn_edge.trt.mixed_precision import MixedPrecisionError, fp32_nodes, has_qdq, to_mixed_fp16
from prn_edge.export.lint import check_tensorrt_compatible
from prn_edge.artefact import read_metadata
from prn_edge.runtime import open_engine
from prn_edge.runtime.preprocess import rgb_to_frames
from tests.helpers.prn_artefacts import real_images


def _types(model):
    g = onnx.shape_inference.infer_shapes(model).graph
    t = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.value_info) + list(g.output)}
    t.update({i.name: i.data_type for i in g.initializer})
    return t


@pytest.mark.parametrize("key", ["dyn", "u8"])
def test_mixed_fp16_matches_fp32_in_onnxruntime(onnx_models, tmp_path, key):
    src = onnx_models[key]
    model = onnx.load(str(src))
    stats = {}
    half = to_mixed_fp16(model, stats=stats)
    out = tmp_path / f"{key}.fp16.onnx"
    onnx.save(half, str(out))

    # structure: I/O types kept, the bulk in FP16, the sensitive parts in FP32
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == \
           [i.type.tensor_type.elem_type for i in model.graph.input]
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in half.graph.output)
    types = _types(half)
    convs = [n for n in half.graph.node if n.op_type == "Conv"]
    assert all(types[c.input[0]] == TensorProto.FLOAT16 and types[c.input[1]] == TensorProto.FLOAT16
               for c in convs[:-1])
    assert convs[-1].name == "/decoder/out/Conv" and types[convs[-1].input[1]] == TensorProto.FLOAT
    for n in half.graph.node:
        if n.op_type in ("Softmax", "Sigmoid", "TopK", "ReduceMean", "ArgMin") or "/prototypes." in n.name:
            assert types[n.input[0]] == TensorProto.FLOAT, n.name
    inits = {i.name: i.data_type for i in half.graph.initializer}
    assert inits["prn.prototypes.0.protos"] == TensorProto.FLOAT
    assert stats["fp16_nodes"] > stats["fp32_nodes"] and stats["casts"] > 0 and stats["fp16_initializers"] > 10
    assert sum(n.op_type == "Cast" for n in half.graph.node) - sum(n.op_type == "Cast" for n in model.graph.node) \
        == stats["casts"]
    # still a prn_edge artefact, still TensorRT-clean
    assert read_metadata(out)["image_threshold"] == read_metadata(src)["image_threshold"]
    check_tensorrt_compatible(half, ("10", "11"))

    # numbers: ONNX Runtime CPU, FP32 vs mixed FP16, on real photos
    with open_engine(src, threads=2) as ref, open_engine(out, threads=2) as eng:
        frames = rgb_to_frames(real_images(12, 96), ref.input_spec)
        a, b = ref.infer(frames), eng.infer(frames)
    assert np.abs(a.maps - b.maps).max() < 2e-2
    assert np.abs(a.scores - b.scores).max() < 5e-3
    assert a.decisions.any() and not a.decisions.all()  # the thresholds split these photos
    assert np.array_equal(a.decisions, b.decisions)


def test_keep_options_move_the_fp32_boundary(onnx_models):
    model = onnx.load(str(onnx_models["dyn"]))
    default = fp32_nodes(model)
    assert "/decoder/out/Conv" in default and "/prototypes.0/MatMul" in default and "/msa.1/Softmax" in default
    assert "/encoder/stages.0/stages.0.0/Conv" not in default
    loose = fp32_nodes(model, keep_fp32_ops=("Sigmoid", "TopK", "ReduceMean", "ArgMin", "Softmax"),
                       keep_fp32_names=(), keep_tail=False)
    assert "/decoder/out/Conv" not in loose and "/prototypes.0/MatMul" not in loose
    half = to_mixed_fp16(model, keep_fp32_names=(), keep_tail=False,
                         keep_fp32_nodes=("/encoder/stages.0/stages.0.0/Conv",))
    inits = {i.name: i.data_type for i in half.graph.initializer}
    assert inits["prn.decoder.out.weight"] == TensorProto.FLOAT16
    first_conv = next(n for n in half.graph.node if n.name == "/encoder/stages.0/stages.0.0/Conv")
    assert inits[first_conv.input[1]] == TensorProto.FLOAT


def test_refuses_quantized_or_already_half_models(onnx_models):
    qdq = onnx.load(str(onnx_models["qdq"]))
    assert has_qdq(qdq) and not has_qdq(onnx.load(str(onnx_models["b1"])))
    with pytest.raises(MixedPrecisionError, match="Q/DQ"):
        to_mixed_fp16(qdq)
    half = to_mixed_fp16(onnx.load(str(onnx_models["b1"])))
    with pytest.raises(MixedPrecisionError, match="already holds FP16"):
        to_mixed_fp16(half)
