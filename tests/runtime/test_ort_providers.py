"""ONNX Runtime's GPU providers (CUDA, TensorRT EP) as options of the onnxruntime backend: the exact provider list
ONNX Runtime gets, the engine cache named by the artefact's hash, a clear error instead of a silent CPU run. The
sessions on a GPU skip with the reason where this onnxruntime has no CUDA provider."""
from pathlib import Path

import numpy as np
import pytest

from prn_edge.artefact import sha256_file
from prn_edge.export.onnx_export import export_onnx
from prn_edge.runtime import EngineError, engine_options, open_engine
from prn_edge.runtime.onnxruntime_backend import OnnxRuntimeOptions
from prn_edge.runtime.ort_providers import (CPU, CUDA, TENSORRT, check_active, resolve, session_providers,
                                            trt_cache_dir)
from prn_edge.runtime.preprocess import rgb_to_frames

GPU_ORT = (CPU, CUDA, TENSORRT)  # what onnxruntime-gpu offers
ort = pytest.importorskip("onnxruntime")
NO_CUDA = CUDA not in ort.get_available_providers()
needs_cuda = pytest.mark.skipif(NO_CUDA, reason="this onnxruntime has no CUDAExecutionProvider (CPU build or no GPU: "
                                                "install onnxruntime-gpu on a GPU host)")


def test_the_provider_list_onnx_runtime_gets_for_the_tensorrt_ep(tmp_path):
    o = OnnxRuntimeOptions(providers="tensorrt", device_id=1, trt_fp16=True, trt_workspace_mb=256,
                           trt_cache_dir=tmp_path / "cache")
    got = session_providers(o, GPU_ORT, tmp_path / "coin.onnx", "ab" * 32, qdq=False, ort_version="1.20.1")
    assert got == [
        (TENSORRT, {"device_id": 1, "trt_fp16_enable": True, "trt_int8_enable": False, "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(tmp_path / "cache" / ("ab" * 8 + "-fp16-ort1.20.1")),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(tmp_path / "cache"),
                    "trt_max_workspace_size": 256 << 20}),
        (CUDA, {"device_id": 1}),  # behind TensorRT, for the nodes it does not take (ONNX Runtime's advice)
        (CPU, {}),
    ]


def test_a_qdq_artefact_runs_int8_from_its_own_scales_and_caches_apart(tmp_path):
    o = OnnxRuntimeOptions(providers=["tensorrt", "cuda"])
    (trt, opts), *_ = session_providers(o, GPU_ORT, tmp_path / "m.int8.onnx", "cd" * 32, qdq=True, ort_version="1.20")
    assert opts["trt_int8_enable"] is True and "trt_int8_calibration_table_name" not in opts  # explicit quantization
    assert opts["trt_engine_cache_path"] == str(tmp_path / "m.int8.ort_trt_cache" / ("cd" * 8 + "-int8-ort1.20"))
    assert "trt_max_workspace_size" not in opts  # ONNX Runtime's default unless asked


def test_the_engine_cache_is_never_shared_by_two_models_or_precisions(tmp_path):
    a = trt_cache_dir(tmp_path, "a" * 64, False, False, "1.20")
    assert a != trt_cache_dir(tmp_path, "b" * 64, False, False, "1.20")  # a new export of the same file name
    assert a != trt_cache_dir(tmp_path, "a" * 64, True, False, "1.20")
    assert a != trt_cache_dir(tmp_path, "a" * 64, False, False, "1.21")  # ONNX Runtime's cache format moves on


def test_cuda_provider_options():
    o = OnnxRuntimeOptions(providers="cuda", device_id=2, cudnn_conv_algo_search="heuristic", tf32=False)
    assert session_providers(o, GPU_ORT, Path("m.onnx"), "", False, "1.20") == [
        (CUDA, {"device_id": 2, "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": False}), (CPU, {})]
    # unset: ONNX Runtime's own defaults, no key passed (older builds refuse keys they do not know)
    assert session_providers(OnnxRuntimeOptions(providers="cuda"), GPU_ORT, Path("m.onnx"), "", False, "1.20") == [
        (CUDA, {"device_id": 0}), (CPU, {})]


@pytest.mark.parametrize("providers,available,expected", [
    ("auto", GPU_ORT, [CUDA, CPU]),  # auto never starts a TensorRT build
    ("auto", (CPU,), [CPU]),
    ("cpu", GPU_ORT, [CPU]),
    ("tensorrt,cuda", GPU_ORT, [TENSORRT, CUDA, CPU]),  # a URL query or --set gives a comma list
    (["cuda", "tensorrt"], GPU_ORT, [CUDA, TENSORRT, CPU]),  # the order given is the priority
    ([TENSORRT, CPU], GPU_ORT, [TENSORRT, CUDA, CPU]),
])
def test_provider_order(providers, available, expected):
    assert resolve(OnnxRuntimeOptions(providers=providers).providers, available) == expected


def test_a_gpu_provider_that_is_not_there_is_an_error_that_says_what_to_install():
    with pytest.raises(EngineError) as err:
        resolve(("tensorrt",), (CPU,))
    msg = str(err.value)
    assert "ONNX Runtime provider TensorrtExecutionProvider is not available here" in msg
    assert "prn-edge[gpu]" in msg and "onnxruntime-gpu" in msg and "Jetson AI Lab" in msg


def test_a_gpu_provider_onnx_runtime_dropped_at_session_start_is_an_error():
    check_active([CUDA, CPU], [CUDA, CPU])
    with pytest.raises(EngineError, match="could not start CUDAExecutionProvider .*would run on CPUExecutionProvider"):
        check_active([CUDA, CPU], [CPU])  # ORT's behaviour when libcudnn is missing: a warning and the CPU


@pytest.mark.parametrize("opts,match", [
    ({"providers": "rocm"}, "'rocm' is not one of cpu, cuda, tensorrt"),
    ({"providers": "cuda,cuda"}, "'cuda' is repeated"),
    ({"providers": []}, "give 'auto', one of cpu, cuda, tensorrt"),
    ({"providers": 5}, r"providers=5: give 'auto', one of cpu, cuda, tensorrt"),  # a YAML number, not a TypeError
    ({"providers": True}, r"providers=True: give 'auto'"),
    ({"providers": {"cuda": 1}}, r"providers=\{'cuda': 1\}: give 'auto'"),
    ({"device_id": -1}, "device_id=-1"),
    ({"trt_fp16": "yes", "providers": "tensorrt"}, "trt_fp16='yes': give true or false"),
    ({"trt_fp16": True}, "trt_fp16 is for the TensorRT provider; add tensorrt to providers"),
    ({"trt_workspace_mb": 0, "providers": "tensorrt"}, "trt_workspace_mb=0"),
    ({"cudnn_conv_algo_search": "fast"}, "cudnn_conv_algo_search='FAST': choose EXHAUSTIVE, HEURISTIC, DEFAULT"),
])
def test_bad_gpu_options_are_refused_before_any_session(opts, match):
    with pytest.raises(EngineError, match=match):
        engine_options("onnxruntime", **opts)


@pytest.fixture(scope="module")
def u8_onnx(tiny_ckpt, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ortgpu") / "coin.onnx"
    export_onnx(tiny_ckpt, path, batch=None, input_format="uint8", channel_order="bgr")
    return path


@pytest.mark.skipif(not NO_CUDA, reason="checks the error on a host without the CUDA provider")
def test_asking_for_cuda_here_is_refused_when_the_engine_is_opened(u8_onnx):
    with pytest.raises(EngineError, match="CUDAExecutionProvider is not available here"):
        open_engine(u8_onnx, providers="cuda")


def test_the_cpu_session_describes_itself_without_gpu_fields(u8_onnx):
    with open_engine(u8_onnx, providers="cpu", threads=1) as e:
        assert e.describe() == {"backend": "onnxruntime", "providers": [CPU], "threads": 1}


@needs_cuda
@pytest.mark.parametrize("providers,extra", [("cuda", {}), ("tensorrt", {}), ("tensorrt", {"trt_fp16": True})])
def test_gpu_session_runs_on_the_gpu_and_agrees_with_the_cpu(u8_onnx, photos, tmp_path, providers, extra):
    if providers == "tensorrt" and TENSORRT not in ort.get_available_providers():
        pytest.skip("this onnxruntime-gpu has no TensorrtExecutionProvider")
    frames = rgb_to_frames(photos, open_engine(u8_onnx, providers="cpu").input_spec)
    with open_engine(u8_onnx, providers="cpu") as cpu:
        ref = cpu.infer(frames)
    opts = {"trt_cache_dir": tmp_path, **extra} if providers == "tensorrt" else {}
    with open_engine(u8_onnx, providers=providers, **opts) as gpu:
        got = gpu.infer(frames)
        info = gpu.describe()
    assert info["providers"][0] == {"cuda": CUDA, "tensorrt": TENSORRT}[providers] and info["device_id"] == 0
    tol = 2e-2 if extra else 1e-2  # TF32 / FP16 on the GPU
    assert np.abs(got.maps - ref.maps).max() < tol and np.abs(got.scores - ref.scores).max() < tol
    if providers == "tensorrt":
        cache = Path(info["trt_engine_cache"])
        assert cache.parent == tmp_path and cache.name.startswith(sha256_file(u8_onnx)[:16])
        assert any(cache.iterdir())  # ONNX Runtime wrote the engine where we said
