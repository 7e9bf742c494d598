"""The TensorRT backend under rules real TensorRT and CUDA enforce: the fake TensorRT of the version (its real
API surface, host code in version-compatible engines) and the real host-CUDA helpers of the backend
(_CudaPython, _PyCuda) running over fake cuda-python / pycuda modules with CUDA's per-thread contexts and
devices (tests/helpers/fake_cuda.py). The issue-11 bugs each have a test below that must pass."""
import json
import sys
import threading

import numpy as np
import onnx
import pytest

from prn_edge.artefact import engine_manifest_path, host, make_engine_manifest, sha256_file
from prn_edge.export.onnx_export import export_onnx
from prn_edge.runtime import EngineError, open_engine
from prn_edge.runtime.preprocess import rgb_to_frames
from prn_edge.trt import build_engine, cuda_host
from prn_edge.trt import runner as tb
from tests.helpers.fake_cuda import (FakeCuda, FakeCudaError, FakeGpu, fake_cudart, fake_pycuda, use_cuda_python,
                                     use_host, use_pycuda)
from tests.helpers.fake_tensorrt import make_fake_tensorrt, serialize_engine

VERSION = "10.3.0"


@pytest.fixture(scope="module")
def onnx_dyn(tiny_ckpt, tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "dyn.onnx"
    export_onnx(tiny_ckpt, path, batch=None, input_format="uint8", channel_order="bgr")
    return path


def write_engine(onnx_path, engine_path, version=VERSION, flags=(), gpu=("Fake Orin", "8.7"), **manifest):
    """A fake engine (what the fake TensorRT's build writes) and its manifest."""
    engine_path.write_bytes(serialize_engine(onnx_path.read_bytes(), [1, 2, 4], fake_tensorrt=version,
                                             flags=sorted(flags)))
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    m = make_engine_manifest(tensorrt_version=version, compute_capability=gpu[1], gpu_name=gpu[0], onnx_metadata=props,
                         onnx_sha256=sha256_file(onnx_path), engine_sha256=sha256_file(engine_path), **manifest)
    engine_manifest_path(engine_path).write_text(json.dumps(m))
    return engine_path


def in_thread(fn, name="line-infer"):
    """Run fn on another thread (as the line's inference thread does); return its result or raise its error."""
    out = {}

    def run():
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: B902 - handed back to the test
            out["error"] = e

    t = threading.Thread(target=run, name=name)
    t.start()
    t.join(60)
    if "error" in out:
        raise out["error"]
    return out.get("result")


def use_trt(monkeypatch, gpu, version=VERSION):
    trt = make_fake_tensorrt(version, cuda=gpu)
    monkeypatch.setattr(tb, "_import_tensorrt", lambda path: trt)
    return trt


def frames_for(engine, photos):
    return rgb_to_frames(photos[:3], engine.input_spec)


# ---------------------------------------------------------------------------------------------- the fakes' rules
def test_fake_cuda_contexts_are_per_thread():
    gpu = FakeGpu(devices=2)
    drv = fake_pycuda(gpu)
    ctx = drv.Device(0).retain_primary_context()
    ctx.push()
    try:
        assert int(drv.mem_alloc(16)) in gpu.mem  # current here
        with pytest.raises(drv.LogicError, match="invalid device context"):
            in_thread(lambda: drv.mem_alloc(16))  # not current on another thread
    finally:
        ctx.pop()
    rt = fake_cudart(gpu)
    rt.cudaSetDevice(1)
    _, here = rt.cudaMalloc(16)
    _, there = in_thread(lambda: rt.cudaMalloc(16))
    assert gpu.mem_device[here] == 1 and gpu.mem_device[there] == 0  # cudaSetDevice is per thread
    _, stream = rt.cudaStreamCreate()
    err = in_thread(lambda: rt.cudaStreamSynchronize(stream))[0]
    assert err == rt.cudaError_t.cudaErrorInvalidResourceHandle  # a stream of device 1 on a device-0 thread
    with pytest.raises(FakeCudaError):
        in_thread(lambda: gpu.enqueue(stream, gpu.runtime_device(), lambda: None))


def test_cuda_python_engine_on_device_0_runs_on_any_thread(monkeypatch, onnx_dyn, tmp_path, photos):
    """Correct use passes: the runtime API takes device 0's primary context on any thread."""
    gpu = FakeGpu()
    use_trt(monkeypatch, gpu)
    use_cuda_python(monkeypatch, gpu)
    engine = open_engine(write_engine(onnx_dyn, tmp_path / "m.engine"), use_cuda_graph=True)
    assert engine._cuda.name == "cuda-python"  # noqa: SLF001 - the real helper runs
    with open_engine(onnx_dyn, threads=1) as ref:
        want = ref.infer(frames_for(ref, photos))

    def run():
        with engine:
            return engine.infer(frames_for(engine, photos))

    got = in_thread(run)
    assert np.abs(got.maps - want.maps).max() <= 1e-6 and gpu.captures == 1 and gpu.mem == {}


def test_pycuda_engine_used_on_the_thread_that_made_it(monkeypatch, onnx_dyn, tmp_path, photos):
    gpu = FakeGpu()
    use_trt(monkeypatch, gpu)
    use_pycuda(monkeypatch, gpu)
    with open_engine(write_engine(onnx_dyn, tmp_path / "m.engine")) as engine:
        assert engine._cuda.name == "pycuda"  # noqa: SLF001
        assert len(engine.infer(frames_for(engine, photos))) == 3
    assert gpu.mem == {}


# ---------------------------------------------------------------------------------------------- issue 11 (fixed)
def test_threads_option_is_accepted(monkeypatch, onnx_dyn, tmp_path, photos):
    cuda = FakeCuda()
    use_trt(monkeypatch, cuda)
    use_host(monkeypatch, cuda)
    with open_engine(write_engine(onnx_dyn, tmp_path / "m.engine"), threads=2) as engine:
        assert len(engine.infer(frames_for(engine, photos))) == 3


def test_version_compatible_engine_built_here_loads(monkeypatch, onnx_dyn, tmp_path, photos):
    cuda = FakeCuda()
    trt = use_trt(monkeypatch, cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    use_host(monkeypatch, cuda)
    monkeypatch.setattr(host, "NV_TEGRA_RELEASE", tmp_path / "none")
    out = tmp_path / "e" / "vc.engine"
    build_engine(onnx_dyn, out, version_compatible=True, batch_profile=(1, 2, 4), log=lambda m: None)
    assert "VERSION_COMPATIBLE" in trt.__fake__.builds[-1]["flags"]
    with open_engine(out) as engine:
        assert len(engine.infer(frames_for(engine, photos))) == 3


def test_pycuda_engine_runs_on_another_thread(monkeypatch, onnx_dyn, tmp_path, photos):
    gpu = FakeGpu()
    use_trt(monkeypatch, gpu)
    use_pycuda(monkeypatch, gpu)
    engine = open_engine(write_engine(onnx_dyn, tmp_path / "m.engine"))  # the main thread builds the line

    def run():
        with engine:
            return engine.infer(frames_for(engine, photos))

    assert len(in_thread(run)) == 3


def test_cuda_python_engine_stays_on_its_device_on_other_threads(monkeypatch, onnx_dyn, tmp_path, photos):
    gpu = FakeGpu(devices=2)
    use_trt(monkeypatch, gpu)
    rt = use_cuda_python(monkeypatch, gpu)
    engine = open_engine(write_engine(onnx_dyn, tmp_path / "m.engine"), device=1)
    devices = {}

    def run():
        with engine:
            devices.update({ptr: gpu.mem_device[ptr] for ptr in gpu.mem})
            return engine.infer(frames_for(engine, photos))

    assert len(in_thread(run)) == 3
    assert devices and set(devices.values()) == {1}, [c for c in rt.calls if c[0] == "cudaMalloc"]


def test_closing_a_pycuda_engine_releases_its_context(monkeypatch, onnx_dyn, tmp_path, photos):
    gpu = FakeGpu()
    use_trt(monkeypatch, gpu)
    use_pycuda(monkeypatch, gpu)
    path = write_engine(onnx_dyn, tmp_path / "m.engine")
    for _ in range(2):
        with open_engine(path) as engine:
            engine.infer(frames_for(engine, photos))
    assert gpu.context_stack() == []


def test_fixed_batch_profile_engine_pads_small_batches(monkeypatch, onnx_dyn, tmp_path, photos):
    """A dynamic-batch ONNX built with a fixed profile (min = opt = max, what DLA needs) takes fewer frames."""
    cuda = FakeCuda()
    use_trt(monkeypatch, cuda)
    use_host(monkeypatch, cuda)
    path = tmp_path / "fixed.engine"
    write_engine(onnx_dyn, path)
    path.write_bytes(serialize_engine(onnx_dyn.read_bytes(), [2, 2, 2], fake_tensorrt=VERSION, flags=[]))
    m = json.loads(engine_manifest_path(path).read_text())
    m["engine_sha256"] = sha256_file(path)
    engine_manifest_path(path).write_text(json.dumps(m))
    with open_engine(onnx_dyn, threads=1) as ref:
        want = ref.infer(frames_for(ref, photos))
    with open_engine(path) as engine:
        got = engine.infer(frames_for(engine, photos))  # 3 frames: a batch of 2, then 1 padded to 2
    assert len(got) == 3 and np.abs(got.maps - want.maps).max() <= 1e-6 and cuda.closed == 1


# ---------------------------------------------------------------------------------------------- issue 11, findings
def test_an_engine_unlike_its_manifest_is_refused_before_tensorrt_or_cuda(monkeypatch, onnx_dyn, tmp_path):
    touched = []
    monkeypatch.setattr(tb, "_import_tensorrt", lambda path: touched.append("tensorrt"))
    monkeypatch.setattr(cuda_host, "host_cuda", lambda device=0, api="auto": touched.append("cuda"))
    path = write_engine(onnx_dyn, tmp_path / "m.engine")
    path.write_bytes(path.read_bytes() + b"\0")  # damaged, or another build's engine beside this manifest
    with pytest.raises(EngineError, match=r"m\.engine is not the engine its manifest describes \(sha256"):
        open_engine(path)
    m = json.loads(engine_manifest_path(path).read_text())
    del m["engine_sha256"]
    engine_manifest_path(path).write_text(json.dumps(m))
    with pytest.raises(EngineError, match="records no engine_sha256"):
        open_engine(path)
    assert touched == []


def test_an_engine_replaced_after_opening_is_refused_at_activation(monkeypatch, onnx_dyn, tmp_path):
    gpu = FakeGpu()
    use_trt(monkeypatch, gpu)
    use_pycuda(monkeypatch, gpu)
    path = write_engine(onnx_dyn, tmp_path / "m.engine")
    engine = open_engine(path)
    path.write_bytes(path.read_bytes().replace(b'"profile": [1, 2, 4]', b'"profile": [1, 2, 8]'))
    with pytest.raises(EngineError, match="not the engine its manifest describes"):
        engine.activate()
    assert gpu.mem == {} and gpu.context_stack() == []  # nothing allocated, no context left pushed


@pytest.mark.parametrize("damage", ["body", "header"])
def test_an_engine_tensorrt_cannot_deserialize_is_an_engine_error(monkeypatch, onnx_dyn, tmp_path, damage):
    """A plan its manifest vouches for (a hand-made manifest, a plan from another tool) that TensorRT still cannot
    read: deserialize_cuda_engine returns None ("The ICudaEngine, or None if it could not be deserialized",
    tensorrt.Runtime docs) and logs why; the runner says so and frees what it set up."""
    gpu = FakeGpu()
    trt = use_trt(monkeypatch, gpu)
    use_pycuda(monkeypatch, gpu)
    path = write_engine(onnx_dyn, tmp_path / "m.engine")
    head, body = path.read_bytes().split(b"\n", 1)
    path.write_bytes(head + b"\n" + body[:100] if damage == "body" else b"\x00garbage" + body)
    m = json.loads(engine_manifest_path(path).read_text())
    engine_manifest_path(path).write_text(json.dumps(dict(m, engine_sha256=sha256_file(path))))
    engine = open_engine(path)
    with pytest.raises(EngineError, match=r"TensorRT could not deserialize .*m\.engine \(corrupt file"):
        engine.activate()
    assert any("ERROR" in line for line in trt.__fake__.log)
    assert gpu.mem == {} and gpu.context_stack() == []


def test_cuda_api_chooses_the_host_layer(monkeypatch, onnx_dyn, tmp_path):
    gpu = FakeGpu()
    use_trt(monkeypatch, gpu)
    path = write_engine(onnx_dyn, tmp_path / "m.engine")
    use_pycuda(monkeypatch, gpu)
    with pytest.raises(EngineError, match=r"install cuda-python, or let prn_edge choose \(cuda_api 'auto'\)"):
        open_engine(path, cuda_api="cuda-python")
    use_cuda_python(monkeypatch, gpu)  # both import now: auto takes cuda-python, pycuda when asked
    monkeypatch.setitem(sys.modules, "pycuda", fake_pycuda(gpu).__parent__)
    monkeypatch.setitem(sys.modules, "pycuda.driver", sys.modules["pycuda"].driver)
    assert open_engine(path)._cuda.name == "cuda-python"  # noqa: SLF001
    assert open_engine(path, cuda_api="pycuda")._cuda.name == "pycuda"  # noqa: SLF001
    with pytest.raises(EngineError, match=r"cuda_api='cupy': choose one of \('auto', 'cuda-python', 'pycuda'\)"):
        open_engine(path, cuda_api="cupy")
