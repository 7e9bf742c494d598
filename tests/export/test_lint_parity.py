import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from prn_edge.export.lint import check_tensorrt_compatible, lint_for_tensorrt
from prn_edge.export import ExportError
from prn_edge.export.onnx_export import export_onnx
from prn_edge.verify import check_parity
from tests.helpers.prn_artefacts import make_checkpoint, real_images

TARGETS = ("8.5", "10", "11")


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("lint")
    f = d / "float.onnx"
    u = d / "u8.onnx"
    export_onnx(tiny_ckpt, f, batch=1)
    export_onnx(tiny_ckpt, u, batch=None, input_format="uint8", channel_order="bgr", input_hw=(100, 90))
    return f, u


def _errors(issues):
    return [i for i in issues if i.severity == "error"]


def test_real_graphs_lint_clean_for_all_targets(exported):
    for path in exported:
        issues = lint_for_tensorrt(onnx.load(str(path)), TARGETS)
        assert issues == [], [str(i) for i in issues]
        assert check_tensorrt_compatible(path, TARGETS) == []


@pytest.mark.parametrize("variant,overrides", [
    # EfficientNet-Lite0 (the shipped default) and ResNet-18 with image prototypes; at reduced input sizes to
    # keep the suite fast (same layers and ops as at 256)
    ("prn-edge", {"model": {"pretrained": False, "image_size": 128, "distance_features": "both"}}),  # the default
    ("prn-paper", {"model": {"pretrained": False, "image_size": 64}}),
    ("prn-edge", {"model": {"pretrained": False, "image_size": 128, "prototype_softness": 0.0}}),
    ("prn-edge", {"model": {"pretrained": False, "image_size": 128, "distance_features": "joint"}}),
])
def test_full_size_variants_export_and_lint_clean(tmp_path, variant, overrides):
    ckpt = make_checkpoint(tmp_path / "m.pt", variant, overrides)
    summary = export_onnx(ckpt, tmp_path / "m.onnx", batch=None, input_format="uint8", channel_order="bgr",
                          lint_targets=TARGETS)
    assert summary["lint_warnings"] == []
    ops = summary["ops"]
    assert {"Conv", "MatMul", "Softmax", "TopK", "Resize"} <= set(ops)
    if overrides["model"].get("prototype_softness", 0.01) > 0:  # softmin blend of near-tie prototypes
        assert "ReduceMin" in ops and "ArgMin" not in ops
    else:  # hard nearest prototype
        assert {"ArgMin", "Gather"} <= set(ops)
    assert not {"Shape", "Einsum", "Loop", "If", "SequenceAt", "Sqrt"} & set(ops)
    if overrides["model"].get("distance_features") in ("joint", "both"):  # joined features export and agree
        report = check_parity(ckpt, tmp_path / "m.onnx", real_images(6, 96))
        assert report["ok"] and report["max_abs_map_diff"] <= 1e-4, report


def _model_with(node, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph([node], "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _inject(path, node, extra_inits=()):
    """The real graph with one more node reading the anomaly map and feeding a new output."""
    m = onnx.load(str(path))
    m.graph.node.append(node)
    m.graph.initializer.extend(extra_inits)
    m.graph.output.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None))
    return m


def test_injected_einsum_is_an_error_naming_the_node(exported, tmp_path):
    node = helper.make_node("Einsum", ["anomaly_map", "anomaly_map"], ["e"], name="evil_einsum",
                            equation="nchw,nchw->nc")
    m = _inject(exported[0], node)
    errs = _errors(lint_for_tensorrt(m, TARGETS))
    assert {e.target for e in errs} == set(TARGETS)
    assert all(e.node == "evil_einsum" and e.op == "Einsum" for e in errs)
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(ExportError, match=r"evil_einsum.*\(Einsum\)"):
        check_tensorrt_compatible(bad, TARGETS)


def test_injected_sequence_op_is_an_error_for_every_version(exported):
    seq = helper.make_node("SequenceConstruct", ["anomaly_map"], ["seq"], name="make_seq")
    at = helper.make_node("SequenceAt", ["seq", "zero"], ["picked"], name="pick_from_seq")
    m = onnx.load(str(exported[0]))
    m.graph.node.extend([seq, at])
    m.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int64), "zero"))
    m.graph.output.append(helper.make_tensor_value_info("picked", TensorProto.FLOAT, None))
    errs = _errors(lint_for_tensorrt(m, TARGETS))
    named = {(e.node, e.op, e.target) for e in errs}
    for t in TARGETS:
        assert ("pick_from_seq", "SequenceAt", t) in named and ("make_seq", "SequenceConstruct", t) in named
    with pytest.raises(ExportError, match="pick_from_seq"):
        check_tensorrt_compatible(m, TARGETS)


def _x(shape, t=TensorProto.FLOAT, name="x"):
    return helper.make_tensor_value_info(name, t, shape)


def test_hazards():
    # ArgMin with select_last_index=1
    m = _model_with(helper.make_node("ArgMin", ["x"], ["y"], name="am", axis=1, select_last_index=1),
                    [_x([1, 4])], [_x([1, 1], TensorProto.INT64, "y")])
    assert any(e.node == "am" for e in _errors(lint_for_tensorrt(m, TARGETS)))
    # Resize modes TensorRT lacks
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    for attrs in ({"mode": "cubic"}, {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
                  {"mode": "linear", "antialias": 1}):
        node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="rs", **attrs)
        m = _model_with(node, [_x([1, 1, 4, 4])], [_x([1, 1, 8, 8], name="y")], [scales], opset=18)
        assert any(e.node == "rs" for e in _errors(lint_for_tensorrt(m, ("10", "11")))), attrs
    # TopK with a computed K: an error for 8.5 (dynamic K from 8.6 on), a warning for 10
    k_node = helper.make_node("Shape", ["x"], ["k"], name="k_from_shape", start=1)
    topk = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="tk", axis=1)
    g = helper.make_graph([k_node, topk], "g", [_x([1, 4])], [_x([1, None], name="v")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    issues = lint_for_tensorrt(m, TARGETS)
    assert any(i.node == "tk" and i.severity == "error" for i in issues if i.target == "8.5")
    assert not any(i.node == "tk" and i.severity == "error" for i in issues if i.target == "10")
    # TopK K beyond TensorRT's limit
    big_k = numpy_helper.from_array(np.array([5000], np.int64), "k")
    m = _model_with(helper.make_node("TopK", ["x", "k"], ["v", "i"], name="tk2", axis=1), [_x([1, 8000])],
                    [_x([1, 5000], name="v")], [big_k])
    assert any(e.node == "tk2" and "3840" in e.message for e in _errors(lint_for_tensorrt(m, TARGETS)))
    # Loop / If are refused
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "t", [], [_x([1], name="t")])
    m = _model_with(helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=then_g),
                    [_x([], TensorProto.BOOL, "c"), _x([1])], [_x([1], name="y")])
    assert any(e.node == "branch" for e in _errors(lint_for_tensorrt(m, TARGETS)))
    # opset 18 is beyond TensorRT 8.5
    m = _model_with(helper.make_node("Relu", ["x"], ["y"]), [_x([1])], [_x([1], name="y")], opset=18)
    assert [e.target for e in _errors(lint_for_tensorrt(m, TARGETS))] == ["8.5"]
    # LayerNormalization: parsed from 10 on, not by 8.5
    scale = numpy_helper.from_array(np.ones(4, np.float32), "s")
    m = _model_with(helper.make_node("LayerNormalization", ["x", "s"], ["y"], name="ln"), [_x([1, 4])],
                    [_x([1, 4], name="y")], [scale])
    assert {e.target for e in _errors(lint_for_tensorrt(m, TARGETS))} == {"8.5"}
    # UINT8 in the middle of the graph (TensorRT takes it only as network I/O)
    nodes = [helper.make_node("Cast", ["x"], ["u"], name="to_u8", to=TensorProto.UINT8),
             helper.make_node("Cast", ["u"], ["y"], name="back", to=TensorProto.FLOAT)]
    g = helper.make_graph(nodes, "g", [_x([1])], [_x([1], name="y")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert any("UINT8" in e.message for e in _errors(lint_for_tensorrt(m, TARGETS)))
    # dynamic spatial dimensions
    m = _model_with(helper.make_node("Relu", ["x"], ["y"]), [_x([1, 3, "h", 64])], [_x([1, 3, "h", 64], name="y")])
    assert any("dynamic non-batch" in e.message for e in _errors(lint_for_tensorrt(m, TARGETS)))
    with pytest.raises(ExportError, match="unknown TensorRT target"):
        lint_for_tensorrt(m, ("7.1",))


def test_parity_on_real_images(tiny_ckpt, exported):
    images = real_images(6, 96)
    for path in exported:
        report = check_parity(tiny_ckpt, path, images)
        assert report["ok"], report
        assert report["images"] == 6 and report["max_abs_map_diff"] <= 1e-4
        assert report["max_abs_score_diff"] <= 1e-4 and report["decisions_identical"]
        assert 0 < sum(report["decisions_torch"]) < 6  # thresholds sit between the scores: mixed decisions
