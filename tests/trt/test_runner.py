"""TensorRT backend: manifest rules (pure), the missing-TensorRT error, the buffer/stream plumbing against a
fake TensorRT + fake CUDA (numpy memory, ONNX Runtime as the 'engine'), and a real engine where TensorRT is."""
import importlib.util
import json

import numpy as np
import onnx
import pytest

from prn_edge.artefact import engine_manifest_path, make_engine_manifest, sha256_file
from prn_edge.export.onnx_export import export_onnx
from prn_edge.runtime import EngineError, open_engine
from prn_edge.runtime.preprocess import rgb_to_frames
from prn_edge.trt import runner as tb
from prn_edge.trt.compatibility import check_manifest
from tests.helpers.fake_cuda import FakeCuda, use_host
from tests.helpers.fake_tensorrt import make_fake_tensorrt, serialize_engine

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None

# A made-up host for the manifest rules: nothing here is queried from a real GPU.
FAKE_CURRENT_DEVICE = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "gpu_name": "Fake Orin"}


def _manifest(**over):
    base = dict(tensorrt_version="10.3.0", compute_capability="8.7", gpu_name="Fake Orin", onnx_metadata={},
                onnx_sha256="a" * 64, engine_sha256="b" * 64)
    base.update(over)
    return make_engine_manifest(**base)


# ---------------------------------------------------------------------------------------------- manifest rules
def test_manifest_matching_host_is_accepted():
    assert check_manifest(_manifest(), FAKE_CURRENT_DEVICE, "m.engine") == []
    # a patch-level suffix (10.3.0.30) is the same release
    assert check_manifest(_manifest(tensorrt_version="10.3.0.30"), FAKE_CURRENT_DEVICE, "m.engine") == []


def test_manifest_for_another_tensorrt_is_refused_with_rebuild_advice():
    with pytest.raises(EngineError, match=r"m\.engine was built with TensorRT 8\.5\.2 but this host has TensorRT "
                                          r"10\.3\.0.*rebuild it"):
        check_manifest(_manifest(tensorrt_version="8.5.2"), FAKE_CURRENT_DEVICE, "m.engine")
    with pytest.raises(EngineError, match="10.4.0"):
        check_manifest(_manifest(tensorrt_version="10.4.0"), FAKE_CURRENT_DEVICE, "m.engine")
    # version-compatible engines: same major, host not older
    assert check_manifest(_manifest(tensorrt_version="10.1.0", version_compatible=True), FAKE_CURRENT_DEVICE,
                             "m.engine") == []
    with pytest.raises(EngineError, match="version-compatible"):
        check_manifest(_manifest(tensorrt_version="10.5.0", version_compatible=True), FAKE_CURRENT_DEVICE, "m")
    with pytest.raises(EngineError, match="version-compatible"):
        check_manifest(_manifest(tensorrt_version="11.0.0", version_compatible=True), FAKE_CURRENT_DEVICE, "m")


def test_manifest_for_another_gpu_is_refused():
    with pytest.raises(EngineError, match=r"compute capability 7\.2 \(Xavier\).*has 8\.7.*rebuild"):
        check_manifest(_manifest(compute_capability="7.2", gpu_name="Xavier"), FAKE_CURRENT_DEVICE, "m.engine")
    # hardware compatibility ampere_plus: any GPU >= 8.0
    assert check_manifest(_manifest(compute_capability="8.6", hardware_compatibility="ampere_plus"),
                             FAKE_CURRENT_DEVICE, "m.engine") == []
    turing = dict(FAKE_CURRENT_DEVICE, compute_capability="7.5", gpu_name="Fake T4")
    with pytest.raises(EngineError, match="ampere_plus"):
        check_manifest(_manifest(hardware_compatibility="ampere_plus"), turing, "m.engine")
    # same capability, other GPU model: loads, with a warning
    warnings = check_manifest(_manifest(gpu_name="Fake AGX Orin"), dict(FAKE_CURRENT_DEVICE, gpu_name="Fake NX"),
                                 "m.engine")
    assert len(warnings) == 1 and "Fake AGX Orin" in warnings[0]
    with pytest.raises(EngineError, match="unknown"):
        check_manifest(_manifest(compute_capability=""), FAKE_CURRENT_DEVICE, "m.engine")


def test_read_manifest_errors(tmp_path):
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"x")
    with pytest.raises(EngineError, match=r"no manifest m\.json"):
        tb.read_manifest(eng)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(EngineError, match="not readable JSON"):
        tb.read_manifest(eng)
    (tmp_path / "m.json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(EngineError, match="not a prn_edge engine manifest"):
        tb.read_manifest(eng)
    (tmp_path / "m.json").write_text(json.dumps(_manifest()))
    assert tb.read_manifest(eng)["compute_capability"] == "8.7"


@pytest.fixture(scope="module")
def engine_dir(tiny_ckpt, tmp_path_factory):
    """ONNX artefacts, and engines for the fake TensorRT (a header with the batch profile, then the ONNX)."""
    d = tmp_path_factory.mktemp("trt")
    out = {}
    for name, kw in {"dyn": dict(batch=None, input_format="uint8", channel_order="bgr"),
                     "float2": dict(batch=2)}.items():
        onnx_path = d / f"{name}.onnx"
        export_onnx(tiny_ckpt, onnx_path, **kw)
        engine = d / f"{name}.engine"
        engine.write_bytes(serialize_engine(onnx_path.read_bytes(), [1, 2, 4] if kw["batch"] is None else None))
        props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
        manifest = _manifest(onnx_metadata=props, onnx_sha256=sha256_file(onnx_path), engine_sha256=sha256_file(engine))
        engine_manifest_path(engine).write_text(json.dumps(manifest))
        out[name] = (onnx_path, engine)
    return out


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here; this checks the error on hosts without it")
def test_without_tensorrt_the_engine_says_what_to_do(engine_dir):
    _, engine = engine_dir["dyn"]
    with pytest.raises(EngineError, match=r"TensorRT is not installed.*dyn\.engine.*onnxruntime.*install tensorrt"):
        open_engine(engine)


# ---------------------------------------------------------------------------------------------- fakes
@pytest.fixture
def fake_trt(monkeypatch):
    cuda = FakeCuda(FAKE_CURRENT_DEVICE["gpu_name"], FAKE_CURRENT_DEVICE["compute_capability"])
    trt = make_fake_tensorrt(FAKE_CURRENT_DEVICE["tensorrt_version"], cuda=cuda)
    monkeypatch.setattr(tb, "_import_tensorrt", lambda path: trt)
    use_host(monkeypatch, cuda)
    return trt, cuda


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_plumbing_against_fakes(fake_trt, engine_dir, photos, cuda_graph):
    _, cuda = fake_trt
    onnx_path, engine_path = engine_dir["dyn"]
    with open_engine(onnx_path, threads=1) as ref:
        frames = rgb_to_frames(photos[:6], ref.input_spec)
        want = ref.infer(frames)
    with open_engine(engine_path, use_cuda_graph=cuda_graph) as eng:
        assert eng.backend == "tensorrt" and eng.device_info["gpu_name"] == "Fake Orin"
        info = eng.describe()  # what bench and the line print
        assert info["engine"] == engine_path.name and info["device"].startswith("0 (Fake Orin, sm ")
        assert info["tensorrt"] == eng.device_info["tensorrt_version"] and info["precision"]
        got = eng.infer(frames)  # 6 frames through a profile of max batch 4: chunks of 4 and 2
        again = eng.infer(frames[:3])
        t = eng.last_timings
        assert t["h2d"] > 0 and t["compute"] > 0 and t["d2h"] > 0
        assert len(cuda.mem) == 3 and len(cuda.pinned) == 3  # one device + one pinned buffer per I/O tensor
    assert np.abs(got.maps - want.maps).max() <= 1e-6 and np.array_equal(got.decisions, want.decisions)
    assert np.abs(again.maps - want.maps[:3]).max() <= 1e-6
    assert cuda.mem == {} and cuda.pinned == []  # close() freed everything
    if cuda_graph:
        assert cuda.captures == 3 and cuda.launches == 3  # one graph per batch size (4, 2, 3), replayed


def test_tensorrt_float_engine_with_static_batch_and_host_preprocessing(fake_trt, engine_dir, photos):
    onnx_path, engine_path = engine_dir["float2"]
    with open_engine(engine_path, channel_order="bgr", input_hw=(128, 128)) as eng:
        assert eng.input_spec.resize == "area" and eng.input_spec.batch == 2
        frames = rgb_to_frames(photos[:3], eng.input_spec)
        got = eng.infer(frames)
    with open_engine(onnx_path, channel_order="bgr", input_hw=(128, 128), threads=1) as ref:
        want = ref.infer(frames)
    assert np.abs(got.maps - want.maps).max() <= 1e-6 and np.array_equal(got.decisions, want.decisions)


def test_tensorrt_engine_for_another_gpu_is_refused_before_loading(fake_trt, engine_dir):
    _, cuda = fake_trt
    cuda.gpu_name, cuda.compute_capability = "Fake Xavier", "7.2"
    with pytest.raises(EngineError, match=r"dyn\.engine was built for a GPU of compute capability 8\.7.*rebuild"):
        open_engine(engine_dir["dyn"][1])


# ---------------------------------------------------------------------------------------------- real TensorRT
def _build_real_engine(onnx_path, engine_path, max_batch=4):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        raise AssertionError([str(parser.get_error(i)) for i in range(parser.num_errors)])
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 256 << 20)
    inp = network.get_input(0)
    if inp.shape[0] == -1:
        rest = tuple(inp.shape)[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1,) + rest, (2,) + rest, (max_batch,) + rest)
        config.add_optimization_profile(profile)
    data = builder.build_serialized_network(network, config)
    assert data is not None, "TensorRT build failed"
    engine_path.write_bytes(bytes(data))
    info = tb.current_device_info()
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    manifest = make_engine_manifest(tensorrt_version=info["tensorrt_version"], compute_capability=info["compute_capability"],
                                gpu_name=info["gpu_name"], onnx_metadata=props, onnx_sha256=sha256_file(onnx_path),
                                engine_sha256=sha256_file(engine_path), max_batch=max_batch)
    engine_manifest_path(engine_path).write_text(json.dumps(manifest))


@pytest.mark.skipif(not HAVE_TENSORRT, reason="TensorRT is not installed on this host (CPU-only machine); "
                                              "this test builds and runs a real engine on GPU hosts")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_real_tensorrt_engine_matches_onnxruntime(engine_dir, photos, tmp_path, cuda_graph):
    onnx_path, _ = engine_dir["dyn"]
    try:
        tb.current_device_info()
    except EngineError as e:
        pytest.skip(f"TensorRT imports but no usable GPU/CUDA API: {e}")
    engine_path = tmp_path / "real.engine"
    _build_real_engine(onnx_path, engine_path)
    with open_engine(onnx_path, threads=1) as ref:
        frames = rgb_to_frames(photos[:6], ref.input_spec)
        want = ref.infer(frames)
    try:
        eng = open_engine(engine_path, use_cuda_graph=cuda_graph)
    except EngineError as e:
        if cuda_graph and "CUDA graphs need cuda-python" in str(e):
            pytest.skip(str(e))
        raise
    with eng:
        got = eng.infer(frames)
    assert np.abs(got.maps - want.maps).max() <= 1e-3  # FP32 engine; TensorRT may pick other kernels
    assert np.array_equal(got.decisions, want.decisions)
