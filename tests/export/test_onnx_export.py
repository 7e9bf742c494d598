import json
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from prn_edge import FORMAT_VERSION, __version__
from prn_edge.artefact import InputSpec, MetadataError, choose_resize, read_metadata, sha256_file
from prn_edge.artefact.metadata import ONNX_FORMAT_VERSION
from prn_edge.export import ExportError
from prn_edge.export.onnx_export import CameraPRN, export_onnx, resize_scale
from prn_edge.runtime.preprocess import frames_to_model_input, rgb_to_frames
from prn_edge.input_policy import placement
from tests.helpers.prn_artefacts import make_checkpoint, ort_run, real_images, torch_predict

TOL = 1e-4  # maps and scores, ONNX Runtime CPU vs PyTorch


def _model_input(images) -> np.ndarray:
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def _crops(photos, n, size=64):
    return [p[:size, :size] for p in photos[:n]]


@pytest.mark.parametrize("batch", [1, 2])
def test_static_batch_export_matches_torch(tiny_ckpt, photos, tmp_path, batch):
    out = tmp_path / f"b{batch}.onnx"
    summary = export_onnx(tiny_ckpt, out, batch=batch)
    assert summary["batch"] == batch and out.is_file()
    graph_in = onnx.load(str(out)).graph.input[0]
    assert [d.dim_value for d in graph_in.type.tensor_type.shape.dim] == [batch, 3, 64, 64]
    x = _model_input(_crops(photos, batch))
    maps, scores = ort_run(out, x)
    ref_maps, ref_scores = torch_predict(tiny_ckpt, x)
    assert maps.shape == (batch, 1, 64, 64) and scores.shape == (batch,)
    assert np.abs(maps - ref_maps).max() <= TOL
    assert np.abs(scores - ref_scores).max() <= TOL


def test_dynamic_batch_export_matches_torch_for_1_2_3(tiny_ckpt, photos, tmp_path):
    out = tmp_path / "dyn.onnx"
    export_onnx(tiny_ckpt, out, batch=None)
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 64]
    for n in (1, 2, 3):
        x = _model_input(_crops(photos, n))
        maps, scores = ort_run(out, x)
        ref_maps, ref_scores = torch_predict(tiny_ckpt, x)
        assert maps.shape == (n, 1, 64, 64)
        assert np.abs(maps - ref_maps).max() <= TOL, n
        assert np.abs(scores - ref_scores).max() <= TOL, n


@pytest.mark.parametrize("order", ["bgr", "rgb", "mono"])
def test_uint8_camera_input_matches_torch_on_the_same_frames(tiny_ckpt, photos, tmp_path, order):
    out = tmp_path / f"u8_{order}.onnx"
    summary = export_onnx(tiny_ckpt, out, batch=None, input_format="uint8", channel_order=order)
    spec = read_metadata(out)["input_spec"]
    assert (spec.format, spec.layout, spec.channel_order, spec.resize) == ("uint8", "NHWC", order, "none")
    assert summary["ops"].get("Cast") == 1  # the uint8 input is cast once, at the start
    frames = rgb_to_frames(photos[:3], spec)
    assert frames.shape == (3, 64, 64, 1 if order == "mono" else 3) and frames.dtype == np.uint8
    maps, scores = ort_run(out, frames)
    # reference: the same frames, converted on the host, through PyTorch
    ref_maps, ref_scores = torch_predict(tiny_ckpt, frames_to_model_input(frames, spec))
    assert np.abs(maps - ref_maps).max() <= TOL
    assert np.abs(scores - ref_scores).max() <= TOL
    if order == "bgr":  # and BGR frames of RGB images equal the RGB model input exactly
        rgb = _model_input([f[..., ::-1] for f in frames])
        assert np.array_equal(frames_to_model_input(frames, spec), rgb)


@pytest.mark.parametrize("hw,order,method", [((128, 192), "bgr", "area"), ((100, 90), "rgb", "separable"),
                                             ((48, 80), "mono", "separable"), ((128, 128), "rgb", "bilinear")])
def test_camera_frame_size_differs_from_model_size(tiny_ckpt, photos, tmp_path, hw, order, method):
    out = tmp_path / "cam.onnx"
    resize = "bilinear" if hw == (128, 128) else "auto"  # force bilinear for an integer factor too
    export_onnx(tiny_ckpt, out, batch=2, input_format="uint8", channel_order=order, input_hw=hw, resize=resize)
    spec = read_metadata(out)["input_spec"]
    assert (spec.height, spec.width, spec.resize) == (hw[0], hw[1], method)
    big = [np.ascontiguousarray(np.tile(p, (2, 3, 1))) for p in photos[:2]]  # real texture at camera scale
    frames = rgb_to_frames(big, spec)
    assert frames.shape[1:3] == hw
    maps, scores = ort_run(out, frames)
    ref_maps, ref_scores = torch_predict(tiny_ckpt, frames_to_model_input(frames, spec))
    assert np.abs(maps - ref_maps).max() <= TOL
    assert np.abs(scores - ref_scores).max() <= TOL


class _PreprocessOnly(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.cam = CameraPRN(nn.Identity(), spec)

    def forward(self, frames):
        return self.cam.preprocess(frames)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter announces itself
@pytest.mark.parametrize("hw,order,method,model_hw,fit", [
    ((64, 64), "bgr", "none", (64, 64), "stretch"), ((128, 192), "rgb", "area", (64, 64), "stretch"),
    ((100, 90), "bgr", "bilinear", (64, 64), "stretch"), ((40, 50), "mono", "bilinear", (64, 64), "stretch"),
    ((256, 128), "mono", "area", (64, 64), "stretch"),
    # separable: shrink one axis and enlarge the other, or shrink both by non-integer factors
    ((100, 50), "bgr", "separable", (64, 64), "stretch"), ((389, 236), "rgb", "separable", (64, 128), "stretch"),
    ((150, 150), "mono", "separable", (64, 128), "letterbox"),
    # a non-square model input: stretched from odd frame sizes, letterboxed (padded left/right, or above/below)
    ((97, 211), "bgr", "bilinear", (64, 128), "stretch"), ((128, 256), "rgb", "area", (64, 128), "stretch"),
    ((150, 150), "rgb", "bilinear", (64, 128), "letterbox"), ((45, 300), "mono", "bilinear", (64, 128), "letterbox"),
    ((256, 128), "bgr", "area", (128, 64), "stretch")])
def test_in_graph_preprocessing_equals_the_host_reference(tmp_path, photos, hw, order, method, model_hw, fit):
    """The graph's Cast/Transpose/AveragePool|MatMul|Resize/Pad/Gather|Concat/Div against numpy+cv2, value by
    value."""
    spec = InputSpec(name="frames", format="uint8", layout="NHWC", batch=None, height=hw[0], width=hw[1],
                     channels=1 if order == "mono" else 3, channel_order=order, model_height=model_hw[0],
                     model_width=model_hw[1], resize=method, fit=fit)
    big = [np.ascontiguousarray(np.tile(p, (3, 3, 1))) for p in photos[:2]]
    frames = rgb_to_frames(big, spec)
    path = tmp_path / "pre.onnx"
    torch.onnx.export(_PreprocessOnly(spec), (torch.from_numpy(frames),), str(path), dynamo=False, opset_version=17,
                      input_names=["frames"], output_names=["x"], dynamic_axes={"frames": {0: "n"}})
    import onnxruntime as ort

    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"frames": frames})[0]
    want = frames_to_model_input(frames, spec)
    assert got.shape == want.shape == (2, 3, *model_hw)
    # float32 rounding only (1e-5 of full scale = 0.003 grey levels): sums in another order (area), the
    # float32 scale's reciprocal vs cv2's in/out ratio for the sampling positions (bilinear)
    assert np.abs(got - want).max() <= 1e-5
    eager = _PreprocessOnly(spec)(torch.from_numpy(frames)).numpy()
    assert np.abs(eager - want).max() <= 1e-5


def test_resize_scale_gives_exact_output_sizes():
    for src in range(64, 2049, 7):
        s = resize_scale(src, 256)
        assert np.floor(np.float32(src) * np.float32(s)) == 256 and np.floor(src * s) == 256


def test_metadata_round_trip(tiny_ckpt, tmp_path):
    out = tmp_path / "meta.onnx"
    export_onnx(tiny_ckpt, out, batch=1, input_format="uint8", channel_order="bgr", input_hw=(128, 128))
    meta = read_metadata(out)
    ck = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)["meta"]
    assert meta["kind"] == "prn_edge.onnx" and meta["format_version"] == ONNX_FORMAT_VERSION == FORMAT_VERSION
    assert meta["toolkit_version"] == __version__ and meta["variant"] == "prn-tiny"
    assert meta["category"] == "photos"
    assert meta["image_threshold"] == pytest.approx(ck["image_threshold"], abs=0)
    assert meta["pixel_threshold"] == pytest.approx(ck["pixel_threshold"], abs=0)
    assert meta["score_spread"] == pytest.approx(ck["score_spread"], abs=0)
    assert meta["train_images_sha256"] == ck["train_images_sha256"]
    assert meta["prototypes_sha256"] == ck["prototypes_sha256"]
    assert meta["checkpoint_sha256"] == sha256_file(tiny_ckpt)
    assert meta["backbone"]["backbone"] == "tiny"
    assert "score_spread + 0.5" in meta["score_normalization"]
    spec = meta["input_spec"]
    assert (spec.name, spec.format, spec.layout, spec.batch, spec.height, spec.width, spec.channels) == \
        ("frames", "uint8", "NHWC", 1, 128, 128, 3)
    assert spec.channel_order == "bgr" and spec.resize == "area" and spec.scale == pytest.approx(1 / 255)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    # every value is a string in the file; structured ones are JSON; ONNX Runtime sees the same
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert all(isinstance(v, str) for v in props.values())
    assert json.loads(props["prn_edge.input"])["channel_order"] == "bgr"
    import onnxruntime as ort

    custom = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert custom["prn_edge.image_threshold"] == props["prn_edge.image_threshold"]


def test_read_metadata_errors_name_the_file_and_the_fix(tmp_path, tiny_ckpt):
    plain = tmp_path / "plain.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    g = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(g), str(plain))
    with pytest.raises(MetadataError, match=r"plain\.onnx carries no prn_edge metadata.*prn-edge export"):
        read_metadata(plain)
    with pytest.raises(MetadataError, match="does not exist"):
        read_metadata(tmp_path / "missing.onnx")
    good = tmp_path / "good.onnx"
    export_onnx(tiny_ckpt, good)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MetadataError, match=r"cut\.onnx"):
        read_metadata(cut)
    future = tmp_path / "future.onnx"
    m = onnx.load(str(good))
    next(p for p in m.metadata_props if p.key == "prn_edge.format_version").value = "99"
    onnx.save(m, str(future))
    with pytest.raises(MetadataError, match=r"future\.onnx has prn_edge artefact format 99.*re-export"):
        read_metadata(future)


def test_prn_graphs_have_no_banned_ops(tiny_ckpt, tmp_path):
    banned = {"Einsum", "Col2Im", "Im2Col", "Loop", "If", "Scan", "SequenceAt", "SequenceConstruct",
              "SplitToSequence", "ConcatFromSequence", "NonZero", "Unique",
              # torch.cdist exports as Sqrt(ReduceSum(Pow(Sub))) or ReduceL2/ReduceSumSquare over broadcasts
              # (a ReduceSum of |f|^2 over channels, for the prototype softmin's temperature, is allowed)
              "Sqrt", "ReduceL2", "ReduceSumSquare"}
    for kw in (dict(batch=1), dict(batch=None, input_format="uint8", channel_order="bgr", input_hw=(100, 90))):
        out = tmp_path / "g.onnx"
        export_onnx(tiny_ckpt, out, **kw)
        model = onnx.load(str(out))
        ops = Counter(n.op_type for n in model.graph.node)
        assert not banned & set(ops), ops
        assert ops["ReduceSum"] <= 4  # one |f|^2 per prototype scale and one of the joint memory, nothing cdist-like
        # static dimensions leave no shape arithmetic behind, not even with a dynamic batch
        assert not {"Shape", "ConstantOfShape", "Constant", "Identity"} & set(ops), ops
        assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
        assert model.opset_import[0].version == 17


def test_export_writes_atomically(tiny_ckpt, tmp_path, monkeypatch):
    import prn_edge.artefact.files as files

    out = tmp_path / "atomic.onnx"
    out.write_bytes(b"previous artefact")

    monkeypatch.setattr(files.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        export_onnx(tiny_ckpt, out)
    assert out.read_bytes() == b"previous artefact"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.onnx"]  # no temp file left


def test_lint_failure_writes_nothing(tiny_ckpt, tmp_path, monkeypatch):
    import prn_edge.export.onnx_export as ox
    from prn_edge.export.lint import LintIssue

    monkeypatch.setattr(ox, "lint_for_tensorrt",
                        lambda model, targets: [LintIssue("8.5", "error", "n1", "Einsum", "banned")])
    with pytest.raises(ExportError, match="n1"):
        export_onnx(tiny_ckpt, tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_bad_requests(tiny_ckpt, tmp_path):
    with pytest.raises(ExportError, match="input_format='uint8'"):
        export_onnx(tiny_ckpt, tmp_path / "a.onnx", channel_order="bgr")  # float artefacts are RGB at model size
    with pytest.raises(ExportError, match="input_format='uint8'"):
        export_onnx(tiny_ckpt, tmp_path / "a.onnx", input_hw=(100, 100))
    with pytest.raises(ExportError, match="input_format"):
        export_onnx(tiny_ckpt, tmp_path / "a.onnx", input_format="fp16")
    with pytest.raises(ExportError, match="channel_order"):
        export_onnx(tiny_ckpt, tmp_path / "a.onnx", input_format="uint8", channel_order="yuv")
    with pytest.raises(ExportError, match="integer multiples"):
        export_onnx(tiny_ckpt, tmp_path / "a.onnx", input_format="uint8", input_hw=(100, 90), resize="area")
    with pytest.raises(ExportError, match="batch"):
        export_onnx(tiny_ckpt, tmp_path / "a.onnx", batch=0)
    with pytest.raises(ExportError, match=r"\.onnx"):
        export_onnx(tiny_ckpt, tmp_path / "a.bin")
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(tmp_path / "none.pt", tmp_path / "a.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_checkpoint_without_thresholds(tmp_path):
    ckpt = make_checkpoint(tmp_path / "last.pt", with_thresholds=False)
    with pytest.raises(ExportError, match="image_threshold.*best checkpoint"):
        export_onnx(ckpt, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_parity_walks_a_test_folder_with_defect_subfolders(tiny_ckpt, photos, tmp_path, capsys):
    import json

    from PIL import Image

    from prn_edge.cli import main

    test = tmp_path / "test"
    for i, img in enumerate(photos):
        d = test / ("good" if i % 2 else "crack")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:03d}.png")
    (tmp_path / "ground_truth").mkdir()  # masks are not inputs
    assert main(["export", str(tiny_ckpt), "-o", str(tmp_path / "m.onnx"), "--parity", str(test),
                 "--parity-images", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parity"]["images"] == 4 and out["parity"]["ok"] is True
    assert out["parity"]["max_abs_map_diff"] <= 1e-4 and out["parity"]["decisions_identical"]


def test_letterbox_frames_pad_inside_the_graph_like_the_host(photos, tmp_path):
    # A 48x80 camera frame into a 64x64 letterbox model: resize to 38x64 inside the graph, pad black above and
    # below; the same steps on the host (and in training, data.fit) give the same maps.
    from tests.helpers.prn_artefacts import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "lb.pt", overrides={"model": {"input_policy": "letterbox"}})
    out = tmp_path / "lb.onnx"
    summary = export_onnx(ckpt, out, batch=None, input_format="uint8", channel_order="bgr", input_hw=(48, 80))
    spec = read_metadata(out)["input_spec"]
    assert spec.fit == "letterbox" and spec.resize == "separable" and summary["ops"].get("Pad") == 1
    frames = rgb_to_frames([p[:48, :80] for p in photos[:2]], spec)
    x = frames_to_model_input(frames, spec)
    assert (x[:, :, :13] == 0).all() and (x[:, :, -13:] == 0).all() and x[:, :, 13:51].mean() > 0.1
    maps, scores = ort_run(out, frames)
    ref_maps, ref_scores = torch_predict(ckpt, x)
    assert np.abs(maps - ref_maps).max() <= TOL and np.abs(scores - ref_scores).max() <= TOL


# ---------------------------------------------------------------------------------------------- non-square input
WIDE = {"model": {"image_size": [64, 128]}}


@pytest.fixture(scope="module")
def wide_ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("wide")
    return {fit: make_checkpoint(d / f"{fit}.pt", overrides={"model": {**WIDE["model"], "input_policy": fit}})
            for fit in ("stretch", "letterbox")}


def test_a_non_square_float_artefact_matches_torch(wide_ckpts, tmp_path):
    out = tmp_path / "wide.onnx"
    export_onnx(wide_ckpts["stretch"], out, batch=None)
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 64, 128]
    meta = read_metadata(out)
    assert meta["format_version"] == 2 and meta["input_spec"].model_hw == (64, 128)
    assert (meta["input_spec"].height, meta["input_spec"].width) == (64, 128)
    assert meta["model"]["image_size"] == [64, 128]
    x = _model_input(real_images(3, (64, 128)))
    maps, scores = ort_run(out, x)
    ref_maps, ref_scores = torch_predict(wide_ckpts["stretch"], x)
    assert maps.shape == (3, 1, 64, 128)
    assert np.abs(maps - ref_maps).max() <= TOL and np.abs(scores - ref_scores).max() <= TOL


@pytest.mark.parametrize("fit,hw,order,method", [("stretch", (97, 211), "bgr", "separable"),
                                                 ("stretch", (128, 256), "rgb", "area"),
                                                 ("letterbox", (150, 150), "mono", "separable"),
                                                 ("letterbox", (45, 300), "bgr", "separable"),
                                                 ("letterbox", (64, 128), "rgb", "none")])
def test_non_square_uint8_frames_of_odd_sizes_match_torch(wide_ckpts, tmp_path, fit, hw, order, method):
    out = tmp_path / "cam.onnx"
    summary = export_onnx(wide_ckpts[fit], out, batch=None, input_format="uint8", channel_order=order, input_hw=hw)
    spec = read_metadata(out)["input_spec"]
    assert (spec.height, spec.width, spec.model_hw, spec.fit, spec.resize) == (*hw, (64, 128), fit, method)
    assert (summary["ops"].get("Pad") == 1) == any(spec.placement().pads)
    frames = rgb_to_frames(real_images(3, (220, 330)), spec)
    maps, scores = ort_run(out, frames)
    x = frames_to_model_input(frames, spec)
    ref_maps, ref_scores = torch_predict(wide_ckpts[fit], x)
    assert maps.shape == (3, 1, 64, 128)
    assert np.abs(maps - ref_maps).max() <= TOL and np.abs(scores - ref_scores).max() <= TOL


@pytest.mark.parametrize("fit", ["stretch", "letterbox"])
@pytest.mark.parametrize("hw", [(128, 256), (40, 50), (40, 16), (64, 128), (97, 211), (389, 236), (300, 500)])
def test_training_fits_images_where_the_graph_puts_frames(fit, hw):
    """Training (data.fit on uint8 images) and the graph's reference (runtime.preprocess on float frames) place an
    image alike in a non-square model input: the same padding, and the same values up to uint8 rounding at any
    size (the resampling weights are one function, input_policy.axis_weights)."""
    from prn_edge.data.fit import fit_image

    img = real_images(1, hw)[0]
    where = placement(hw, (64, 128), fit)
    spec = InputSpec(name="frames", format="uint8", layout="NHWC", batch=None, height=hw[0], width=hw[1],
                     channels=3, channel_order="rgb", model_height=64, model_width=128, fit=fit,
                     resize=choose_resize(hw, (where.h, where.w)))
    trained, fitted = fit_image(img, (64, 128), fit)
    assert fitted == where == spec.placement()
    host = frames_to_model_input(img[None], spec)[0].transpose(1, 2, 0)
    assert np.abs(trained / 255.0 - host).max() <= 0.5 / 255 + 1e-6  # uint8 rounding only
    assert not host[~where.valid()].any() and not trained[~where.valid()].any()


def test_a_separable_resize_is_two_matmuls_kept_in_float(tiny_ckpt, tmp_path):
    """A camera frame that is no integer multiple of the model input is resampled in the graph by two MatMuls,
    and every precision keeps them in float: the keep-in-float record names them (INT8 calibration and the FP16
    conversion read it), so grey levels 0..255 are never squeezed into 8 bits."""
    from prn_edge.artefact import read_keep_float

    out = tmp_path / "sep.onnx"
    export_onnx(tiny_ckpt, out, batch=1, input_format="uint8", channel_order="mono", input_hw=(100, 90))
    graph = onnx.load(str(out)).graph
    resample = [n.name for n in graph.node if n.name.startswith("/resample/")]
    assert [n.op_type for n in graph.node if n.name in resample] == ["MatMul", "MatMul"]
    record = read_keep_float(out)
    assert record.preprocess == ("/resample/",) and set(resample) <= set(record.nodes)
    export_onnx(tiny_ckpt, tmp_path / "same.onnx", batch=1, input_format="uint8")  # model-size frames: no resample
    assert read_keep_float(tmp_path / "same.onnx").preprocess == ()


@pytest.mark.parametrize("setting", [{"map_decoder": "gated", "map_contrast": 0},
                                     {"map_decoder": "weighted", "map_contrast": 2.0},  # the largest allowed
                                     {"map_decoder": "gated", "map_contrast": 0.5}])  # the zero-shot choice
def test_a_gated_or_contrasted_map_exports_beside_the_plain_score(photos, tmp_path, setting):
    """model.map_decoder gated / model.map_contrast: the exported map gates the decoder by the distance or is
    contrasted around each image's mean, the exported score is the one the same model pools from the plain fusion;
    both match PyTorch."""
    apart = make_checkpoint(tmp_path / "apart.pt", "prn-tiny", {"model": setting})
    same = make_checkpoint(tmp_path / "same.pt", "prn-tiny")
    x = _model_input(_crops(photos, 3))
    outputs = {}
    for ckpt in (apart, same):
        export_onnx(ckpt, ckpt.with_suffix(".onnx"), batch=None)
        outputs[ckpt] = ort_run(ckpt.with_suffix(".onnx"), x)
        ref_maps, ref_scores = torch_predict(ckpt, x)
        assert np.abs(outputs[ckpt][0] - ref_maps).max() <= TOL
        assert np.abs(outputs[ckpt][1] - ref_scores).max() <= TOL
    assert np.abs(outputs[apart][1] - outputs[same][1]).max() <= TOL  # the score: the plain fusion in both
    assert np.abs(outputs[apart][0] - outputs[same][0]).max() > 1e-3  # the map: gated in one
