"""Real TensorRT builds (GPU hosts and Jetsons only): engines built by prn_edge.trt run by its runner and compared with ONNX Runtime on the ONNX they came from. Skipped where `import tensorrt` fails."""
import numpy as np
import pytest

from tests.helpers.prn_artefacts import real_images

try:
    import tensorrt  # noqa: F401

    HAVE_TENSORRT, WHY = True, ""
except ImportError as e:  # the CPU-only development machines
    HAVE_TENSORRT, WHY = False, str(e)

pytestmark = pytest.mark.skipif(
    not HAVE_TENSORRT, reason=f"TensorRT is not installed here (`import tensorrt` failed: {WHY}); these tests build "
                              "real engines on a Jetson / GPU host - the fake-TensorRT tests cover the logic here")


@pytest.fixture(scope="module")
def device():
    from prn_edge.runtime import EngineError
    from prn_edge.trt.runner import current_device_info

    try:
        return current_device_info()
    except EngineError as e:
        pytest.skip(f"TensorRT imports but there is no usable GPU / CUDA API: {e}")


def _compare(onnx_path, engine_path):
    from prn_edge.runtime import open_engine
    from prn_edge.runtime.preprocess import rgb_to_frames

    with open_engine(onnx_path, threads=2) as ref:
        frames = rgb_to_frames(real_images(12, 96), ref.input_spec)
        a = ref.infer(frames)
    with open_engine(engine_path) as eng:
        b = eng.infer(frames)
        assert eng.warnings == []
    return np.abs(a.maps - b.maps), a, b


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_real_build_matches_onnxruntime(device, onnx_models, tmp_path, precision, tol):
    from prn_edge.trt import build_engine
    from prn_edge.trt.compatibility import check_manifest
    from prn_edge.trt.runner import read_manifest

    out = tmp_path / "engines" / f"{precision}.engine"
    summary = build_engine(onnx_models["dyn"], out, precision=precision, workspace_mb=256, batch_profile=(1, 2, 4),
                           timing_cache=tmp_path / "timing.cache")
    assert summary["tensorrt_version"] == device["tensorrt_version"]
    assert check_manifest(read_manifest(out), device, out) == []
    diff, a, b = _compare(onnx_models["dyn"], out)
    assert diff.max() <= tol
    assert np.array_equal(a.decisions, b.decisions)


def test_real_int8_from_qdq(device, onnx_models, tmp_path):
    from prn_edge.trt import build_engine

    out = tmp_path / "engines" / "int8.engine"
    build_engine(onnx_models["qdq"], out, precision="int8", workspace_mb=256)
    diff, _, _ = _compare(onnx_models["qdq"], out)
    assert diff.mean() <= 2e-2


def test_real_implicit_int8(device, onnx_models, tmp_path, calib_run):
    from prn_edge.trt import build_engine
    from prn_edge.trt.capability import capabilities

    if not capabilities(device["tensorrt_version"]).implicit_int8:
        pytest.skip("TensorRT 11 has no implicit INT8")
    out = tmp_path / "engines" / "int8i.engine"
    summary = build_engine(onnx_models["dyn"], out, precision="int8", implicit_int8=True, calibration=calib_run,
                           batch_profile=(1, 2, 4), workspace_mb=256)
    assert summary["calibration"]["batches_used"] == 3
    assert (calib_run / summary["calibration"]["cache"]).is_file()
    diff, _, _ = _compare(onnx_models["dyn"], out)
    assert diff.mean() <= 5e-2
