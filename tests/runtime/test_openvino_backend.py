"""The openvino backend: typed options checked before anything is loaded, clear errors (OpenVINO missing, a device
that is not there, an IR without our metadata), and the same decisions as ONNX Runtime on the same frames, from an
ONNX artefact and from the IR `prn-edge export --to openvino` writes."""
import sys

import numpy as np
import pytest

from prn_edge.artefact import read_ir_metadata, read_metadata
from prn_edge.export.onnx_export import export_onnx
from prn_edge.runtime import EngineError, backend_for, engine_options, open_engine
from prn_edge.runtime.openvino_backend import OpenVINOOptions
from prn_edge.runtime.preprocess import rgb_to_frames

TOL = 1e-4


@pytest.fixture(scope="module")
def onnx_artefacts(tiny_ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("ov")
    paths = {"uint8_dyn": d / "uint8_dyn.onnx", "float1": d / "float1.onnx"}
    export_onnx(tiny_ckpt, paths["uint8_dyn"], batch=None, input_format="uint8", channel_order="bgr")
    export_onnx(tiny_ckpt, paths["float1"], batch=1)
    return paths


@pytest.fixture(scope="module")
def ir(onnx_artefacts, tmp_path_factory):
    pytest.importorskip("openvino")
    from prn_edge.export.openvino_export import export_openvino

    out = tmp_path_factory.mktemp("ir") / "model.xml"
    summary = export_openvino(onnx_artefacts["uint8_dyn"], out)
    assert summary["weights_precision"] == "fp32" and out.with_suffix(".bin").is_file()
    return out


def test_options_are_typed_with_their_defaults_beside_the_backend():
    o = engine_options("openvino", threads=2, device="cpu")
    assert isinstance(o, OpenVINOOptions) and o.device == "CPU"  # OpenVINO's spelling
    assert (OpenVINOOptions().performance_hint, OpenVINOOptions().inference_precision) == ("LATENCY", "f32")
    assert o.config() == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"}
    auto = engine_options("openvino", device="AUTO:GPU,CPU", threads=2, streams=2, performance_hint="THROUGHPUT")
    assert auto.config() == {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2, "DEVICE_PROPERTIES": {
        "GPU": {"INFERENCE_PRECISION_HINT": "f32"},
        "CPU": {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"}}}


@pytest.mark.parametrize("opts,match", [
    ({"device": "C P U"}, "device='C P U'"),
    ({"device": 0}, "device=0"),
    ({"streams": 0}, "streams=0"),
    ({"performance_hint": "fast"}, "performance_hint='fast'"),
    ({"performance_hint": "CUMULATIVE_THROUGHPUT"}, "needs device AUTO or MULTI"),
    ({"inference_precision": "int8"}, "inference_precision='int8'"),
    ({"providers": "cpu"}, "unknown option 'providers'"),
])
def test_bad_options_are_engine_errors_naming_them(opts, match):
    with pytest.raises(EngineError, match=f"openvino backend: .*{match}"):
        engine_options("openvino", **opts)


def test_xml_is_openvinos_and_onnx_stays_onnxruntimes():
    assert backend_for("m.xml") == "openvino" and backend_for("m.onnx") == "onnxruntime"


def test_missing_openvino_names_the_extra(onnx_artefacts, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(EngineError, match=r"pip install '\.\[openvino\]' in the prn-edge source folder"):
        open_engine(onnx_artefacts["uint8_dyn"], backend="openvino")


def test_a_device_that_is_not_there_lists_the_available_ones(onnx_artefacts):
    ov = pytest.importorskip("openvino")
    available = ov.Core().available_devices
    with pytest.raises(EngineError, match=r"device GPU\.7 is not available here \(available: "
                                          + ", ".join(available)):
        open_engine(onnx_artefacts["uint8_dyn"], backend="openvino", device="GPU.7")
    with pytest.raises(EngineError, match=r"device GPU\.7 is not available"):  # a device AUTO is to choose from
        open_engine(onnx_artefacts["uint8_dyn"], backend="openvino", device="AUTO:GPU.7,CPU")


def test_same_decisions_as_onnxruntime_on_the_same_frames(onnx_artefacts, ir, photos):
    with open_engine(onnx_artefacts["uint8_dyn"], threads=2) as ort_engine:
        frames = rgb_to_frames(photos, ort_engine.input_spec)
        ref = ort_engine.infer(frames)
    assert 0 < ref.decisions.sum() < len(frames)  # mixed decisions: a flip would show
    for path, opts in ((onnx_artefacts["uint8_dyn"], {"backend": "openvino"}), (ir, {})):
        with open_engine(path, threads=2, **opts) as ov_engine:
            described = ov_engine.describe()
            assert described["backend"] == "openvino" and described["device"] == "CPU"
            assert described["threads"] == 2 and described["inference_precision"] == "f32"
            assert ov_engine.input_spec == ort_engine.input_spec
            assert ov_engine.metadata["image_threshold"] == ort_engine.metadata["image_threshold"]
            got = ov_engine.infer(frames)
            single = ov_engine.infer(frames[:1])
        assert np.abs(got.maps - ref.maps).max() <= TOL and np.abs(got.scores - ref.scores).max() <= TOL
        assert np.array_equal(got.decisions, ref.decisions)
        assert np.abs(got.normalized_scores - ref.normalized_scores).max() <= TOL
        assert np.abs(single.scores - ref.scores[:1]).max() <= TOL


def test_float_artefact_gets_host_preprocessed_frames(onnx_artefacts, photos):
    pytest.importorskip("openvino")
    results = []
    for backend in ("onnxruntime", "openvino"):
        with open_engine(onnx_artefacts["float1"], backend=backend, channel_order="bgr", input_hw=(100, 90),
                         threads=2) as e:
            results.append(e.infer(rgb_to_frames(photos[:3], e.input_spec)))
    assert np.abs(results[0].maps - results[1].maps).max() <= TOL
    assert np.array_equal(results[0].decisions, results[1].decisions)


def test_the_ir_carries_the_onnx_metadata(onnx_artefacts, ir):
    onnx_meta, ir_meta = read_metadata(onnx_artefacts["uint8_dyn"]), read_ir_metadata(ir)
    assert ir_meta.pop("source_onnx_sha256")
    assert ir_meta == onnx_meta


def test_an_ir_without_our_metadata_is_refused(onnx_artefacts, tmp_path):
    ov = pytest.importorskip("openvino")
    import onnx

    proto = onnx.load(onnx_artefacts["uint8_dyn"])
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, bare)
    ov.save_model(ov.convert_model(str(bare)), str(tmp_path / "bare.xml"))
    with pytest.raises(EngineError, match="bare.xml carries no prn_edge metadata"):
        open_engine(tmp_path / "bare.xml")
    # OpenVINO's own converter keeps an ONNX artefact's metadata (rt_info/framework): such an IR is ours
    ov.save_model(ov.convert_model(str(onnx_artefacts["uint8_dyn"])), str(tmp_path / "theirs.xml"))
    assert read_ir_metadata(tmp_path / "theirs.xml")["image_threshold"] == \
        read_metadata(onnx_artefacts["uint8_dyn"])["image_threshold"]


def test_an_ir_without_its_weights_or_not_an_ir_is_a_clear_error(ir, tmp_path):
    lone = tmp_path / "lone.xml"
    lone.write_bytes(ir.read_bytes())
    with pytest.raises(EngineError, match=r"lone.bin are not beside it"):
        open_engine(lone)
    other = tmp_path / "other.xml"
    other.write_text("<config><a/></config>")
    other.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(EngineError, match="not an OpenVINO IR"):
        open_engine(other)


def test_bench_names_a_backend_per_artefact():
    from prn_edge.cli import _bench_artefact

    a = _bench_artefact("ov=runs/m.onnx@openvino", False)
    assert (a.label, str(a.path), a.backend) == ("ov", "runs/m.onnx", "openvino")
    b = _bench_artefact("runs/m.onnx@openvino", False)
    assert (b.label, b.backend) == ("m.onnx@openvino", "openvino")
    c = _bench_artefact("runs/a@b/m.onnx", False)  # an @ that names no backend belongs to the path
    assert (c.label, str(c.path), c.backend) == ("m.onnx", "runs/a@b/m.onnx", "auto")
