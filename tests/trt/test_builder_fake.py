"""prn_edge.trt's builder against a FAKE tensorrt module (tests/helpers/fake_tensorrt.py) per version family:
8.5 (JetPack 5.1), 10.3 (JetPack 6.1/6.2) and 11.x (strongly typed). No TensorRT, CUDA or GPU is used."""
import json
import os
import sys

import cv2
import numpy as np
import onnx
import pytest

from prn_edge.artefact import decode_metadata, host, read_metadata, sha256_file
from prn_edge.trt import BuildError, build_engine, cuda_host, plan_precision, serialize
from prn_edge.trt.calibrator import cache_name, calibration_batches
from prn_edge.trt.compatibility import check_manifest
from prn_edge.data.images import read_image
from prn_edge.runtime import EngineError
from prn_edge.trt.runner import read_manifest
from tests.helpers.fake_cuda import use_host
from tests.helpers.fake_tensorrt import FakeCuda, engine_onnx, make_fake_tensorrt


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.fixture
def install(monkeypatch, tmp_path):
    """install(version, ...) -> the fake tensorrt module, imported as `tensorrt`; the fake GPU is `trt.__fake__.gpu`."""
    monkeypatch.setattr(host, "NV_TEGRA_RELEASE", tmp_path / "no_nv_tegra_release")

    def _install(version="10.3.0", cc="8.7", gpu="Fake Orin", **kw):
        cuda = FakeCuda(gpu, cc)
        trt = make_fake_tensorrt(version, cuda=cuda, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        use_host(monkeypatch, cuda)
        return trt

    return _install


def quiet(*_):
    pass


# ---------------------------------------------------------------------------------------------- no TensorRT
def test_without_tensorrt_a_clear_error_before_anything_is_written(monkeypatch, onnx_models, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    out = tmp_path / "engines" / "m.engine"
    with pytest.raises(BuildError, match=r"TensorRT is not installed here: build on the target \(Jetson / GPU host\) "
                                         r"with `pip install tensorrt` or JetPack's python3-libnvinfer; ONNX Runtime "
                                         r"runs the \.onnx here"):
        build_engine(onnx_models["dyn"], out, log=quiet)
    assert not (tmp_path / "engines").exists()


def test_tensorrt_without_gpu_is_a_clear_error(monkeypatch, onnx_models, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0"))

    def no_cuda(device=0, api="auto"):
        raise EngineError("no host-side CUDA API for TensorRT: install cuda-python")

    monkeypatch.setattr(cuda_host, "host_cuda", no_cuda)
    with pytest.raises(BuildError, match=r"TensorRT 10\.3\.0 is installed but no usable GPU/CUDA.*cuda-python"):
        build_engine(onnx_models["dyn"], tmp_path / "engines" / "m.engine", log=quiet)
    assert not (tmp_path / "engines").exists()


def test_argument_errors_name_the_fix(onnx_models, tmp_path):
    with pytest.raises(BuildError, match="choose one of"):
        build_engine(onnx_models["dyn"], tmp_path / "m.engine", precision="int4")
    with pytest.raises(BuildError, match=r"should end in \.engine or \.plan"):
        build_engine(onnx_models["dyn"], tmp_path / "m.trt")
    with pytest.raises(BuildError, match="min <= opt <= max"):
        build_engine(onnx_models["dyn"], tmp_path / "m.engine", batch_profile=(4, 2, 8))
    with pytest.raises(BuildError, match="needs a calibration run"):
        build_engine(onnx_models["dyn"], tmp_path / "m.engine", precision="int8", implicit_int8=True)
    with pytest.raises(BuildError, match="does not exist"):
        build_engine(tmp_path / "missing.onnx", tmp_path / "m.engine")
    with pytest.raises(BuildError, match="not a calibration run"):
        build_engine(onnx_models["dyn"], tmp_path / "m.engine", calibration=tmp_path)
    assert files_under(tmp_path) == []


# ---------------------------------------------------------------------------------------------- precision plans
@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_plan_weakly_typed(version):
    assert plan_precision(version, "fp32", False, False)["flags"] == []
    p = plan_precision(version, "fp16", False, False)
    assert p["flags"] == ["FP16"] and p["fp32_constraints"] and not p["convert_fp16"]
    assert plan_precision(version, "int8", True, False)["flags"] == ["INT8"]
    p = plan_precision(version, "int8", False, True)
    assert p["flags"] == ["INT8"] and p["int8"] == "implicit" and p["fp32_constraints"]
    assert not plan_precision(version, "int8", True, False)["fp32_constraints"]  # Q/DQ placement decides
    assert plan_precision(version, "best", True, False)["flags"] == ["FP16", "INT8"]
    assert plan_precision(version, "best", False, False)["flags"] == ["FP16"]  # no scales: no INT8
    with pytest.raises(BuildError, match="needs INT8 scales"):
        plan_precision(version, "int8", False, False)
    with pytest.raises(BuildError, match="no fast FP16"):
        plan_precision(version, "fp16", False, False, fast_fp16=False)
    with pytest.raises(BuildError, match="no fast INT8"):
        plan_precision(version, "int8", True, False, fast_int8=False)
    with pytest.raises(BuildError, match="already quantized"):
        plan_precision(version, "int8", True, True)


@pytest.mark.parametrize("version", ["11.0.0", "11.4.1"])
def test_plan_strongly_typed_never_uses_builder_precision_flags(version):
    for precision, qdq in (("fp32", False), ("fp16", False), ("int8", True), ("best", True), ("best", False)):
        p = plan_precision(version, precision, qdq, False)
        assert p["flags"] == [] and p["strongly_typed"] and not p["fp32_constraints"]
    assert plan_precision(version, "fp16", False, False)["convert_fp16"]
    assert plan_precision(version, "int8", True, False)["int8"] == "explicit"
    with pytest.raises(BuildError, match=r"(?i)run `prn-edge calibrate CKPT --data DATA --run NAME --flavour tensorrt` "
                                         r"first"):
        plan_precision(version, "int8", False, False)
    with pytest.raises(BuildError, match="no implicit INT8"):
        plan_precision(version, "int8", False, True)
    with pytest.raises(BuildError, match="quantized"):
        plan_precision(version, "fp16", True, False)


# ---------------------------------------------------------------------------------------------- builds
@pytest.mark.parametrize("version", ["8.5.2", "10.3.0", "11.1.0"])
def test_fp32_build_writes_engine_and_manifest(install, onnx_models, tmp_path, version):
    trt = install(version)
    out = tmp_path / "engines" / "tiny.engine"
    summary = build_engine(onnx_models["dyn"], out, workspace_mb=256, log=quiet)
    assert files_under(tmp_path / "engines") == ["tiny.engine", "tiny.json"]
    rec = trt.__fake__.builds[-1]
    cfg, net = rec["config"], rec["network"]
    assert cfg.flags == set()
    assert cfg.pools == {"WORKSPACE": 256 << 20}
    assert net.flags == (1 if version.startswith("8.") else 0)  # EXPLICIT_BATCH bit only on 8.x
    assert cfg.profiles[0].shapes["image"] == ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64))

    manifest = read_manifest(out)
    meta = read_metadata(onnx_models["dyn"])
    assert manifest["tensorrt_version"] == version and manifest["precision"] == "fp32"
    assert manifest["gpu_name"] == "Fake Orin" and manifest["compute_capability"] == "8.7"
    assert manifest["onnx_sha256"] == sha256_file(onnx_models["dyn"])
    assert manifest["engine_sha256"] == sha256_file(out)
    assert manifest["max_batch"] == 8 and manifest["batch_profile"] == [1, 4, 8]
    assert manifest["input"] == {"name": "image", "shape": [-1, 3, 64, 64], "format": "float"}
    assert manifest["thresholds"]["image_threshold"] == meta["image_threshold"]
    assert manifest["thresholds"]["score_spread"] == meta["score_spread"]
    assert manifest["strongly_typed"] == version.startswith("11.")
    assert manifest["l4t"] is None and manifest["calibration"] is None
    # the runtime accepts it on this (fake) device and refuses it elsewhere
    here = {"tensorrt_version": version, "compute_capability": "8.7", "gpu_name": "Fake Orin"}
    assert check_manifest(manifest, here, out) == []
    with pytest.raises(EngineError, match=r"compute capability 8\.7.*has 7\.2"):
        check_manifest(manifest, dict(here, compute_capability="7.2", gpu_name="Fake Xavier"), out)
    with pytest.raises(EngineError, match="only load in the TensorRT version that built them"):
        check_manifest(manifest, dict(here, tensorrt_version="12.0.0"), out)
    # the manifest carries the ONNX's metadata, which the runtime decodes for the input spec
    assert manifest["metadata"] == {p.key: p.value for p in onnx.load(str(onnx_models["dyn"])).metadata_props}
    assert summary["max_batch"] == 8 and summary["precision_detail"] == "fp32"


def test_engine_and_manifest_are_readable_by_the_line_user(install, onnx_models, tmp_path):
    """The service runs as its own user (`prn-edge service install --user prn-edge`): the engine and its manifest
    get the mode every other artefact gets (0644 under umask 022), not mkstemp's 0600."""
    import stat

    from prn_edge.artefact.files import FILE_MODE

    install("10.3.0")
    out = tmp_path / "engines" / "tiny.engine"
    build_engine(onnx_models["dyn"], out, workspace_mb=256, log=quiet)
    assert FILE_MODE & 0o044
    for p in (out, out.with_suffix(".json")):
        assert stat.S_IMODE(p.stat().st_mode) == FILE_MODE, p.name


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_fp16_weakly_typed_sets_the_flag_and_pins_sensitive_layers(install, onnx_models, tmp_path, version):
    trt = install(version)
    out = tmp_path / "engines" / "fp16.engine"
    build_engine(onnx_models["dyn"], out, precision="fp16", log=quiet)
    rec = trt.__fake__.builds[-1]
    assert rec["flags"] == {"FP16", "PREFER_PRECISION_CONSTRAINTS"}
    pinned = {l.name for l in rec["network"].layers if l.precision_set is trt.float32}
    assert {"/prototypes.0/ReduceMin", "/prototypes.0/Softmax", "/prototypes.1/MatMul", "/Sigmoid", "/TopK",
            "/ReduceMean", "/decoder/out/Conv", "/msa.1/Softmax"} <= pinned
    assert "/encoder/stages.0/stages.0.0/Conv" not in pinned and "/fusion/Concat" not in pinned
    assert engine_onnx(out.read_bytes()).graph.node[0].op_type == "Sub"  # the FP32 ONNX went in unchanged
    assert read_manifest(out)["fp32_pinned_layers"] == len(pinned)


def test_fp16_on_tensorrt_11_converts_the_onnx_and_touches_no_removed_api(install, onnx_models, tmp_path):
    trt = install("11.1.0")
    assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt, "IInt8EntropyCalibrator2")
    out = tmp_path / "engines" / "fp16.engine"
    summary = build_engine(onnx_models["dyn"], out, precision="fp16", log=quiet)
    rec = trt.__fake__.builds[-1]
    assert rec["flags"] == set()
    parsed = rec["network"].model
    assert sum(n.op_type == "Cast" for n in parsed.graph.node) >= 2
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in parsed.graph.initializer)
    assert parsed.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O types kept
    manifest = read_manifest(out)
    assert manifest["strongly_typed"] and "mixed fp16" in manifest["precision_detail"]
    assert manifest["built_onnx_sha256"] != manifest["onnx_sha256"]
    assert summary["mixed_fp16"]["fp16_nodes"] > 0


def test_tensorrt_10_12_and_later_build_strongly_typed_unless_the_build_needs_the_weak_path(install, onnx_models,
                                                                                             tmp_path, calib_run):
    """Weak typing and the precision flags are deprecated from 10.12: fp16 and Q/DQ int8 builds ask for a strongly
    typed network (the STRONGLY_TYPED creation flag, no precision flags, the ONNX converted to mixed FP16), while
    implicit INT8 calibration, which only the weak path has, keeps it. 10.11 is still weakly typed."""
    assert not plan_precision("10.11.0", "fp16", False, False)["strongly_typed"]
    trt = install("10.16.1")
    strong_bit = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    out = tmp_path / "engines" / "fp16.engine"
    build_engine(onnx_models["dyn"], out, precision="fp16", log=quiet)
    rec = trt.__fake__.builds[-1]
    assert rec["flags"] == set() and rec["network"].flags & strong_bit
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in rec["network"].model.graph.initializer)
    assert read_manifest(out)["strongly_typed"]
    build_engine(onnx_models["qdq"], tmp_path / "engines" / "q.engine", precision="int8", log=quiet)
    rec = trt.__fake__.builds[-1]
    assert rec["flags"] == set() and rec["network"].flags & strong_bit
    implicit = tmp_path / "engines" / "implicit.engine"
    build_engine(onnx_models["dyn"], implicit, precision="int8", implicit_int8=True, calibration=calib_run, log=quiet)
    rec = trt.__fake__.builds[-1]
    assert "INT8" in rec["flags"] and not rec["network"].flags & strong_bit
    assert not read_manifest(implicit)["strongly_typed"]


def test_the_fake_refuses_precision_flags_on_a_strongly_typed_network(install, onnx_models):
    """What real TensorRT enforces and the strongly typed path relies on: a network created STRONGLY_TYPED takes
    its precision from its tensors, and a build with BuilderFlag.FP16 fails (None, an error in the log)."""
    trt = install("10.16.1")
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, trt.Logger(trt.Logger.WARNING)).parse(onnx_models["dyn"].read_bytes())
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is None
    config.clear_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is not None


def test_platform_without_fast_fp16_or_int8_is_refused(install, onnx_models, tmp_path):
    install("10.3.0", fast_fp16=False, fast_int8=False)
    with pytest.raises(BuildError, match=r"no fast FP16 \(builder\.platform_has_fast_fp16 is False\)"):
        build_engine(onnx_models["dyn"], tmp_path / "engines" / "m.engine", precision="fp16", log=quiet)
    with pytest.raises(BuildError, match="no fast INT8"):
        build_engine(onnx_models["qdq"], tmp_path / "engines" / "m.engine", precision="int8", log=quiet)
    assert files_under(tmp_path / "engines") == []


def test_int8_plain_onnx_on_tensorrt_11_says_to_calibrate_first(install, onnx_models, tmp_path):
    install("11.1.0")
    with pytest.raises(BuildError, match=r"needs an explicitly quantized \(Q/DQ\) ONNX.*Run `prn-edge calibrate CKPT "
                                         r"--data DATA --run NAME --flavour tensorrt` first"):
        build_engine(onnx_models["dyn"], tmp_path / "engines" / "m.engine", precision="int8", log=quiet)
    assert not (tmp_path / "engines").exists()


@pytest.mark.parametrize("version,flags", [("10.3.0", {"INT8"}), ("11.1.0", set())])
def test_int8_from_qdq_onnx(install, onnx_models, tmp_path, version, flags):
    trt = install(version)
    out = tmp_path / "engines" / "int8.engine"
    build_engine(onnx_models["qdq"], out, precision="int8", log=quiet)
    assert trt.__fake__.builds[-1]["flags"] == flags
    m = read_manifest(out)
    assert m["precision"] == "int8" and "Q/DQ" in m["precision_detail"] and m["max_batch"] == 1


def test_cpu_flavour_qdq_is_refused(install, onnx_models, tmp_path):
    install("10.3.0")
    with pytest.raises(BuildError, match=r"uint8.*zero points.*--flavour tensorrt"):
        build_engine(onnx_models["qdq_cpu"], tmp_path / "m.engine", precision="int8", log=quiet)


def test_calibration_run_is_recorded_and_found_beside_its_model(install, onnx_models, tmp_path, calib_run):
    install("11.1.0")
    qdq = calib_run / "model.int8.onnx"
    qdq.write_bytes(onnx_models["qdq"].read_bytes())
    out = tmp_path / "engines" / "int8.engine"
    build_engine(qdq, out, precision="int8", log=quiet)  # no calibration= given: found beside the model
    cal = read_manifest(out)["calibration"]
    assert cal["mode"] == "explicit_qdq" and cal["name"] == "run1" and cal["images"] == 6 and cal["passed"] is True
    assert cal["manifest_sha256"] == sha256_file(calib_run / "manifest.json")


# ---------------------------------------------------------------------------------------------- implicit INT8
def test_implicit_int8_calibrator_feeds_the_runs_images_as_model_input(install, onnx_models, tmp_path, calib_run):
    trt = install("10.3.0")
    out = tmp_path / "engines" / "int8.engine"
    summary = build_engine(onnx_models["dyn"], out, precision="int8", implicit_int8=True, calibration=calib_run,
                           batch_profile=(1, 2, 4), log=quiet)
    rec = trt.__fake__.builds[-1]
    assert rec["flags"] == {"INT8", "PREFER_PRECISION_CONSTRAINTS"}  # prototype search etc. stay FP32
    assert rec["config"].calibration_profile.shapes["image"] == ((2, 3, 64, 64),) * 3
    got = rec["calibration_batches"]
    assert len(got) == 3  # 6 images in batches of the profile's opt batch (2)
    assert all(b.dtype == np.float32 and b.shape == (2, 3, 64, 64) for b in got)
    assert 0.0 <= min(b.min() for b in got) and max(b.max() for b in got) <= 1.0
    # the first image, read and resized independently: RGB, area-shrunk to 64x64, /255, NCHW
    manifest = json.loads((calib_run / "manifest.json").read_text())
    first = read_image(manifest["calibration_files"][0]["path"])
    want = cv2.resize(first, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32).transpose(2, 0, 1) / 255.0
    assert np.abs(got[0][0] - want).max() < 1e-6
    # TensorRT's cache is saved in the run folder after the engine; the manifest says how INT8 was calibrated
    cache = calib_run / cache_name("10.3.0", sha256_file(onnx_models["dyn"]))
    assert cache.read_bytes() == b"FAKE-CALIBRATION-CACHE"
    cal = read_manifest(out)["calibration"]
    assert cal["mode"] == "implicit_entropy2" and cal["batches_used"] == 3 and not cal["cache_reused"]
    assert summary["precision_detail"] == "int8 entropy-calibrated + fp32"
    assert trt.__fake__.gpu.mem == {}  # the calibrator freed its device buffer

    # a rebuild reads the cache and needs no images
    for f in manifest["calibration_files"]:
        os.unlink(f["path"])
    build_engine(onnx_models["dyn"], out, precision="int8", implicit_int8=True, calibration=calib_run,
                 batch_profile=(1, 2, 4), log=quiet)
    assert trt.__fake__.builds[-1]["calibration_cache_read"] == b"FAKE-CALIBRATION-CACHE"
    assert trt.__fake__.builds[-1]["calibration_batches"] == []
    assert read_manifest(out)["calibration"]["cache_reused"] is True


def test_implicit_int8_uint8_frames_on_jetpack5(install, onnx_models, tmp_path, calib_run):
    trt = install("8.5.2", cc="7.2", gpu="Fake Xavier")
    build_engine(onnx_models["u8"], tmp_path / "engines" / "u8.engine", precision="best", implicit_int8=True,
                 calibration=calib_run, log=quiet)
    rec = trt.__fake__.builds[-1]
    assert rec["flags"] == {"FP16", "INT8", "PREFER_PRECISION_CONSTRAINTS"}  # best: FP16 + calibrated INT8
    got = rec["calibration_batches"]
    assert len(got) == 3 and all(b.dtype == np.uint8 and b.shape == (2, 96, 96, 3) for b in got)
    manifest = json.loads((calib_run / "manifest.json").read_text())
    first = read_image(manifest["calibration_files"][0]["path"])  # 96x96 RGB: the frame is its BGR self
    assert np.array_equal(got[0][0], first[..., ::-1])
    spec = read_metadata(onnx_models["u8"])["input_spec"]
    assert all(np.array_equal(a, b) for a, b in zip(got, calibration_batches(calib_run, spec, 2)))


def test_a_non_square_model_builds_profiles_of_its_shapes(install, tmp_path, calib_run):
    # a 64x128 model: its float input is (N, 3, 64, 128), its uint8 one the camera's frames (N, 90, 170, 3)
    from prn_edge.export.onnx_export import export_onnx
    from tests.helpers.prn_artefacts import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "wide.pt", overrides={"model": {"image_size": [64, 128]}})
    export_onnx(ckpt, tmp_path / "float.onnx", batch=None)
    export_onnx(ckpt, tmp_path / "cam.onnx", batch=None, input_format="uint8", channel_order="bgr", input_hw=(90, 170))
    trt = install("10.3.0")
    build_engine(tmp_path / "float.onnx", tmp_path / "e" / "float.engine", precision="int8", implicit_int8=True,
                 calibration=calib_run, batch_profile=(1, 2, 4), log=quiet)
    rec = trt.__fake__.builds[-1]
    assert rec["config"].profiles[0].shapes["image"] == ((1, 3, 64, 128), (2, 3, 64, 128), (4, 3, 64, 128))
    assert all(b.shape == (2, 3, 64, 128) for b in rec["calibration_batches"])
    assert read_manifest(tmp_path / "e" / "float.engine")["input"]["shape"] == [-1, 3, 64, 128]
    build_engine(tmp_path / "cam.onnx", tmp_path / "e" / "cam.engine", batch_profile=(1, 2, 4), log=quiet)
    assert trt.__fake__.builds[-1]["config"].profiles[0].shapes["frames"][2] == (4, 90, 170, 3)
    manifest = read_manifest(tmp_path / "e" / "cam.engine")
    spec = decode_metadata(manifest["metadata"], "manifest")["input_spec"]
    assert spec.model_hw == (64, 128) and (spec.height, spec.width) == (90, 170)


def test_implicit_int8_is_refused_on_tensorrt_11(install, onnx_models, tmp_path, calib_run):
    install("11.1.0")
    with pytest.raises(BuildError, match="no implicit INT8 calibration"):
        build_engine(onnx_models["dyn"], tmp_path / "e" / "m.engine", precision="int8", implicit_int8=True,
                     calibration=calib_run, log=quiet)


def test_changed_calibration_image_is_refused_before_building(install, onnx_models, tmp_path, calib_run):
    trt = install("10.3.0")
    manifest = json.loads((calib_run / "manifest.json").read_text())
    p = manifest["calibration_files"][2]["path"]
    cv2.imwrite(p, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(BuildError, match=r"good_002\.png changed since calibration run run1"):
        build_engine(onnx_models["dyn"], tmp_path / "engines" / "m.engine", precision="int8", implicit_int8=True,
                     calibration=calib_run, log=quiet)
    assert trt.__fake__.builds == [] and not (tmp_path / "engines").exists()
    assert sorted(x.name for x in calib_run.iterdir()) == ["manifest.json"]


# ---------------------------------------------------------------------------------------------- DLA, portability
def test_dla_on_tensorrt_10(install, onnx_models, tmp_path):
    trt = install("10.3.0", dla_cores=2)
    out = tmp_path / "engines" / "dla.engine"
    # DLA runs static shapes only: a fixed batch (profile min = opt = max)
    build_engine(onnx_models["dyn"], out, precision="fp16", dla_core=1, batch_profile=(4, 4, 4), log=quiet)
    cfg = trt.__fake__.builds[-1]["config"]
    assert cfg.default_device_type == "DLA" and cfg.DLA_core == 1 and "GPU_FALLBACK" in cfg.flags
    assert cfg.profiles[0].shapes["image"] == ((4, 3, 64, 64),) * 3
    assert read_manifest(out)["dla_core"] == 1
    build_engine(onnx_models["u8"], out, precision="fp16", dla_core=0, log=quiet)  # a static-batch export
    with pytest.raises(BuildError, match="DLA runs FP16 and INT8 layers only"):
        build_engine(onnx_models["dyn"], out, precision="fp32", dla_core=0, log=quiet)
    with pytest.raises(BuildError, match=r"dla_core=2 but this device has 2 DLA core\(s\)"):
        build_engine(onnx_models["dyn"], out, precision="fp16", dla_core=2, log=quiet)
    install("10.3.0", dla_cores=0)
    with pytest.raises(BuildError, match="has no DLA"):
        build_engine(onnx_models["dyn"], out, precision="fp16", dla_core=0, log=quiet)


def test_dla_without_a_batch_profile_builds_static_shapes_or_says_so(install, onnx_models, tmp_path):
    install("10.3.0", dla_cores=2)
    out = tmp_path / "engines" / "dla.engine"
    try:
        build_engine(onnx_models["dyn"], out, precision="fp16", dla_core=0, log=quiet)
    except BuildError as e:  # refusing is right too, if it says what to do
        assert "DLA" in str(e) and "batch_profile" in str(e), e
        return
    profile = read_manifest(out)["batch_profile"]
    assert profile[0] == profile[1] == profile[2]


def test_dla_on_tensorrt_11(install, onnx_models, tmp_path):
    install("11.2.0", dla_cores=2)
    with pytest.raises(BuildError, match=r"TensorRT 11\.2\.0 has no DLA.*11\.0-11\.3"):
        build_engine(onnx_models["dyn"], tmp_path / "e" / "m.engine", precision="fp16", dla_core=0, log=quiet)
    trt = install("11.4.1", dla_cores=2)
    build_engine(onnx_models["dyn"], tmp_path / "e" / "m.engine", precision="fp16", dla_core=0,
                 batch_profile=(2, 2, 2), log=quiet)
    rec = trt.__fake__.builds[-1]
    assert rec["flags"] == {"GPU_FALLBACK"} and rec["config"].default_device_type == "DLA"


def test_version_and_hardware_compatibility(install, onnx_models, tmp_path):
    trt = install("10.3.0", cc="8.6", gpu="Fake A10")
    out = tmp_path / "engines" / "vc.engine"
    build_engine(onnx_models["dyn"], out, version_compatible=True, hardware_compat="ampere_plus", log=quiet)
    cfg = trt.__fake__.builds[-1]["config"]
    assert "VERSION_COMPATIBLE" in cfg.flags and cfg.hardware_compatibility_level == "AMPERE_PLUS"
    m = read_manifest(out)
    assert m["version_compatible"] and m["hardware_compatibility"] == "ampere_plus"
    # the runtime rules: a newer 10.x and another Ampere+ GPU load it; TensorRT 11 does not
    other = {"tensorrt_version": "10.8.0", "compute_capability": "8.9", "gpu_name": "Fake L4"}
    warnings = check_manifest(m, other, out)  # loads; only the other-GPU-model warning
    assert len(warnings) == 1 and "Fake A10" in warnings[0]
    with pytest.raises(EngineError):
        check_manifest(m, dict(other, tensorrt_version="11.0.0"), out)

    install("10.3.0", cc="7.5", gpu="Fake T4")
    with pytest.raises(BuildError, match="must be built on an Ampere or newer GPU"):
        build_engine(onnx_models["dyn"], out, hardware_compat="ampere_plus", log=quiet)
    install("8.5.2")
    with pytest.raises(BuildError, match=r"version-compatible engines need TensorRT 8\.6"):
        build_engine(onnx_models["dyn"], out, version_compatible=True, log=quiet)
    with pytest.raises(BuildError, match=r"hardware compatibility levels need TensorRT 8\.6"):
        build_engine(onnx_models["dyn"], out, hardware_compat="ampere_plus", log=quiet)


@pytest.mark.parametrize("version", ["10.16.1", "11.4.1"])
def test_same_compute_capability_where_tensorrt_has_it(install, onnx_models, tmp_path, version):
    trt = install(version, cc="8.6", gpu="Fake A10")
    build_engine(onnx_models["dyn"], tmp_path / "e" / "m.engine", hardware_compat="same_compute_capability", log=quiet)
    assert trt.__fake__.builds[-1]["config"].hardware_compatibility_level == "SAME_COMPUTE_CAPABILITY"


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_same_compute_capability_before_tensorrt_has_it_is_a_clear_build_error(install, onnx_models, tmp_path,
                                                                               version):
    install(version, cc="8.6", gpu="Fake A10")
    with pytest.raises(BuildError, match="same_compute_capability"):
        build_engine(onnx_models["dyn"], tmp_path / "e" / "m.engine", hardware_compat="same_compute_capability",
                     log=quiet)


def test_timing_cache_is_created_then_reused(install, onnx_models, tmp_path):
    trt = install("10.3.0")
    tc = tmp_path / "timing.cache"
    build_engine(onnx_models["dyn"], tmp_path / "e" / "a.engine", timing_cache=tc, log=quiet)
    assert trt.__fake__.builds[-1]["config"].timing_cache.loaded == b""
    assert trt.__fake__.builds[-1]["config"].timing_cache_ignore_mismatch is False
    saved = tc.read_bytes()
    assert saved.startswith(b"FAKE-TIMING-CACHE")
    build_engine(onnx_models["dyn"], tmp_path / "e" / "b.engine", timing_cache=tc, log=quiet)
    assert trt.__fake__.builds[-1]["config"].timing_cache.loaded == saved


def test_static_batch_onnx(install, onnx_models, tmp_path):
    trt = install("10.3.0")
    out = tmp_path / "e" / "u8.engine"
    build_engine(onnx_models["u8"], out, log=quiet)
    assert trt.__fake__.builds[-1]["config"].profiles == []
    m = read_manifest(out)
    assert m["max_batch"] == 2 and m["batch_profile"] is None and m["input"]["format"] == "uint8"
    with pytest.raises(BuildError, match="fixed batch of 2.*dynamic-batch export"):
        build_engine(onnx_models["u8"], out, batch_profile=(1, 2, 4), log=quiet)


def test_jetson_release_is_recorded(install, onnx_models, tmp_path, monkeypatch):
    install("8.5.2", cc="7.2", gpu="Fake Xavier")
    rel = tmp_path / "nv_tegra_release"
    rel.write_text("# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, DATE: Sun Mar 19\n")
    status = tmp_path / "status"
    status.write_text("Package: other\nStatus: install ok installed\nVersion: 1\n\n"
                      "Package: nvidia-jetpack\nStatus: install ok installed\nVersion: 5.1.1-b56\n")
    monkeypatch.setattr(host, "NV_TEGRA_RELEASE", rel)
    monkeypatch.setattr(host, "DPKG_STATUS", status)
    out = tmp_path / "e" / "j.engine"
    build_engine(onnx_models["dyn"], out, workspace_mb=256, log=quiet)
    m = read_manifest(out)
    assert m["l4t"] == "35.3.1" and m["jetpack"] == "5.1.1-b56"
    assert host.parse_nv_tegra_release("# R36 (release), REVISION: 4.3, GCID: 1") == "36.4.3"
    assert host.parse_nv_tegra_release("garbage") is None


# ---------------------------------------------------------------------------------------------- failures
def test_failed_build_leaves_no_files(install, onnx_models, tmp_path):
    trt = install("10.3.0", fail_build=True)
    engines = tmp_path / "engines"
    with pytest.raises(BuildError, match="TensorRT could not build m.engine"):
        build_engine(onnx_models["dyn"], engines / "m.engine", timing_cache=tmp_path / "t.cache", log=quiet)
    assert len(trt.__fake__.builds) == 1
    assert not engines.exists() and not (tmp_path / "t.cache").exists()
    # an existing engines/ folder keeps only what it had
    engines.mkdir()
    (engines / "other.engine").write_bytes(b"x")
    with pytest.raises(BuildError):
        build_engine(onnx_models["dyn"], engines / "m.engine", log=quiet)
    assert files_under(engines) == ["other.engine"]


def test_failure_while_writing_leaves_neither_engine_nor_manifest(install, onnx_models, tmp_path, monkeypatch):
    install("10.3.0")
    engines = tmp_path / "engines"
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append(dst)
        if str(dst).endswith(".json"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(serialize.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="disk full"):
        build_engine(onnx_models["dyn"], engines / "m.engine", log=quiet)
    assert len(calls) == 2 and not engines.exists()


def test_parser_errors_are_reported(install, onnx_models, tmp_path):
    install("10.3.0", parse_errors=("In node 12 (importResize): UNSUPPORTED_NODE: bad mode",))
    with pytest.raises(BuildError, match=r"ONNX parser rejected dyn\.onnx:\n  In node 12 \(importResize\)"):
        build_engine(onnx_models["dyn"], tmp_path / "e" / "m.engine", log=quiet)
    assert not (tmp_path / "e").exists()


def test_too_old_tensorrt(install, onnx_models, tmp_path):
    install("8.4.3")
    with pytest.raises(BuildError, match=r"older than prn_edge supports \(8\.5"):
        build_engine(onnx_models["dyn"], tmp_path / "e" / "m.engine", log=quiet)
