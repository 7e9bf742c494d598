"""Prototypes re-fitted on the INT8 encoder's features: the plumbing reproduces the trained prototypes when the
encoder is the FP32 one, and gives the INT8 artefact its own when it is quantized."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from prn_edge.calibrate.quantize import float_by_design, prepare, quantize_qdq
from prn_edge.calibrate.refit import refit_prototypes
from prn_edge.data.dataset import load_category
from prn_edge.data.images import read_image
from prn_edge.errors import BuildError
from prn_edge.artefact import read_metadata
from prn_edge.export.onnx_export import export_onnx
from prn_edge.runtime.preprocess import frames_to_model_input, rgb_to_frames
from prn_edge.model.checkpoint import load_model
from prn_edge.evaluate.validation import split_normals


def _protos(path):
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    return [(inits[f"prn.prototypes.{i}.protos"], float(inits[f"prn.prototypes.{i}.res_scale"].reshape(-1)[0]))
            for i in range(3)]


def _memories(path):
    """The distance memories (centres (M, D), scale): of every scale that keeps one, then the joint one."""
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    prefixes = [f"prn.prototypes.{i}." for i in range(3)] + ["prn.distance.memory."]
    return [(inits[p + "memory_t"].T, float(inits[p + "memory_scale"].reshape(-1)[0]))
            for p in prefixes if p + "memory_t" in inits]


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    ckpt, data = trained
    tmp = tmp_path_factory.mktemp("refit")
    export_onnx(ckpt, tmp / "raw.onnx", batch=1)
    fp32 = prepare(tmp / "raw.onnx", tmp / "fp32.onnx")
    _, cfg, meta = load_model(ckpt)
    spec = read_metadata(fp32)["input_spec"]
    fit_paths, _ = split_normals(load_category(data, seed=meta.get("data_seed", 0)), cfg.train)
    inputs = [frames_to_model_input(rgb_to_frames([read_image(p)], spec), spec) for p in fit_paths]
    return tmp, fp32, cfg, spec, inputs


def test_refit_through_the_fp32_encoder_reproduces_the_trained_prototypes(exported):
    tmp, fp32, cfg, spec, inputs = exported
    out = tmp / "same.onnx"
    report = refit_prototypes(fp32, out, inputs, cfg.model.prototype_mode, cfg.model.prototype_softness,
                              cfg.train.seed)
    assert report["images"] == len(inputs)
    for (p0, s0), (p1, s1) in zip(_protos(fp32), _protos(out)):
        # same images, K, seed: k-means lands on the same centres (features differ in the last bits only)
        assert np.abs(p0 - p1).max() < 1e-3 * max(1.0, np.abs(p0).max())
        assert s1 == pytest.approx(s0, rel=1e-3)
    before, after = _memories(fp32), _memories(out)
    # the defaults keep a memory per distance scale and the joint one (model.distance_features both)
    assert cfg.model.distance_features == "both" and cfg.model.joint_memory
    assert len(before) == len(cfg.model.distance_scales) + 1 and len(after) == len(before)
    for (m0, s0), (m1, s1) in zip(before, after):
        assert np.abs(m0 - m1).max() < 1e-3 * max(1.0, np.abs(m0).max())
        assert s1 == pytest.approx(s0, rel=1e-3)


def test_refit_gives_the_int8_artefact_its_own_prototypes(exported):
    tmp, fp32, cfg, spec, inputs = exported
    q = tmp / "q.onnx"
    quantize_qdq(fp32, q, spec.name, inputs[:8], "cpu", "minmax", float_by_design(fp32))
    out = tmp / "q.refit.onnx"
    report = refit_prototypes(q, out, inputs, cfg.model.prototype_mode, cfg.model.prototype_softness, cfg.train.seed)
    before, after = _protos(q), _protos(out)
    assert any(np.abs(b[0] - a[0]).max() > 1e-4 for b, a in zip(before, after))  # the quantized features moved
    assert any(np.abs(b[0] - a[0]).max() > 1e-4 for b, a in zip(_memories(q), _memories(out)))  # memories too
    assert [r["distance_memory"] for r in report["scales"]] == [
        cfg.model.distance_memory if i in cfg.model.distance_scales else 0 for i in range(3)]
    assert report["joint_memory"]["size"] == cfg.model.distance_memory  # the joint memory re-fitted too
    assert report["joint_memory"]["scale_after"] == pytest.approx(_memories(out)[-1][1])
    assert [r["res_scale_after"] for r in report["scales"]] == pytest.approx([a[1] for a in after])
    # the graph is untouched apart from those initializers
    g0, g1 = onnx.load(str(q)).graph, onnx.load(str(out)).graph
    assert [n.op_type for n in g0.node] == [n.op_type for n in g1.node]
    import onnxruntime as ort

    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    amap, score = s.run(None, {spec.name: inputs[0]})[:2]
    assert np.isfinite(amap).all() and np.isfinite(score).all()


@pytest.mark.parametrize("scales", [[1, 2], [2]])
def test_refit_finds_the_joint_memory_and_its_feature_maps(tmp_path, scales):
    """model.distance_features joint: one memory of the strides 8 and 16 joined (or of stride 16 alone), re-fitted
    from the features that enter its scope; through the FP32 graph it lands where training put it, quantized it
    moves."""
    from prn_edge.input_policy import resample
    from tests.helpers.prn_artefacts import make_checkpoint, real_images

    ckpt = make_checkpoint(tmp_path / "j.pt", "prn-tiny", {"model": {"distance_memory": 32, "distance_scales": scales,
                                                                     "distance_features": "joint"}})
    export_onnx(ckpt, tmp_path / "raw.onnx", batch=1)
    fp32 = prepare(tmp_path / "raw.onnx", tmp_path / "fp32.onnx")
    spec = read_metadata(fp32)["input_spec"]
    _, cfg, _ = load_model(ckpt)
    imgs = [np.clip(np.rint(resample(i, cfg.model.hw)), 0, 255).astype(np.uint8) for i in real_images(12, 64)]
    inputs = [frames_to_model_input(rgb_to_frames([img], spec), spec) for img in imgs]
    before = _memories(fp32)
    channels = {1: 16, 2: 24}  # the tiny encoder's channels at strides 8, 16
    assert len(before) == 1 and before[0][0].shape == (32, sum(channels[i] for i in scales))
    report = refit_prototypes(fp32, tmp_path / "same.onnx", inputs, cfg.model.prototype_mode,
                              cfg.model.prototype_softness, cfg.train.seed)
    (m0, s0), (m1, s1) = before[0], _memories(tmp_path / "same.onnx")[0]
    assert np.abs(m0 - m1).max() < 1e-3 * max(1.0, np.abs(m0).max()) and s1 == pytest.approx(s0, rel=1e-3)
    assert report["joint_memory"]["size"] == 32 and report["joint_memory"]["channels"] == before[0][0].shape[1]
    assert [r["distance_memory"] for r in report["scales"]] == [0, 0, 0]
    q = tmp_path / "q.onnx"
    quantize_qdq(fp32, q, spec.name, inputs[:8], "cpu", "minmax", float_by_design(fp32))
    report = refit_prototypes(q, tmp_path / "q.refit.onnx", inputs, cfg.model.prototype_mode,
                              cfg.model.prototype_softness, cfg.train.seed)
    (mq, _), (mr, sr) = _memories(q)[0], _memories(tmp_path / "q.refit.onnx")[0]
    assert np.abs(mq - mr).max() > 1e-4 and report["joint_memory"]["scale_after"] == pytest.approx(sr)


def test_refit_refuses_a_foreign_model(tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="/other/Relu")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(g), str(tmp_path / "m.onnx"))
    with pytest.raises(BuildError, match="prn_edge export"):
        refit_prototypes(tmp_path / "m.onnx", tmp_path / "o.onnx", [np.zeros((1, 3), np.float32)], "patch", 0.0, 0)


def test_layer_groups_follow_the_model_structure(exported):
    from prn_edge.calibrate.quantize import quantizable_nodes
    from prn_edge.calibrate.sensitivity import layer_groups

    tmp, fp32, cfg, spec, inputs = exported
    groups = dict(layer_groups(fp32, quantizable_nodes(fp32, "cpu")))
    assert any(k.startswith("encoder/") for k in groups) and any(k.startswith("decoder/") for k in groups)
    assert all(all(n.lstrip("/").startswith(k) for n in nodes) for k, nodes in groups.items())
    assert sum(len(v) for v in groups.values()) == len(set(n for v in groups.values() for n in v))  # disjoint


def test_a_non_square_model_quantizes_and_refits_its_whole_map_prototypes(tmp_path):
    # image-mode prototypes of a 64x128 model are whole feature maps of 16x32, 8x16 and 4x8 cells
    from tests.helpers.prn_artefacts import make_checkpoint, real_images

    ckpt = make_checkpoint(tmp_path / "wide.pt", overrides={"model": {"image_size": [64, 128],
                                                                      "prototype_mode": "image"}})
    export_onnx(ckpt, tmp_path / "raw.onnx", batch=1)
    fp32 = prepare(tmp_path / "raw.onnx", tmp_path / "fp32.onnx")
    spec = read_metadata(fp32)["input_spec"]
    inputs = [frames_to_model_input(rgb_to_frames([img], spec), spec) for img in real_images(10, (64, 128))]
    assert inputs[0].shape == (1, 3, 64, 128)
    q, out = tmp_path / "q.onnx", tmp_path / "q.refit.onnx"
    quantize_qdq(fp32, q, spec.name, inputs[:4], "cpu", "minmax", float_by_design(fp32))
    model, cfg, _ = load_model(ckpt)
    report = refit_prototypes(q, out, inputs, "image", cfg.model.prototype_softness, 0)
    assert report["images"] == 10
    cells = [16 * 32, 8 * 16, 4 * 8]
    assert [p.shape[1] for p, _ in _protos(out)] == [m.channels * c for m, c in zip(model.prototypes, cells)]
    assert [p.shape for p, _ in _protos(out)] == [p.shape for p, _ in _protos(q)]
    import onnxruntime as ort

    amap, score = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {spec.name: inputs[0]})
    assert amap.shape == (1, 1, 64, 128) and np.isfinite(amap).all() and np.isfinite(score).all()
