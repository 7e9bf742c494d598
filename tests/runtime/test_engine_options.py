"""Typed per-backend options and the backend registry (prn_edge.runtime): unknown options are EngineErrors that
name them, the options every backend takes are accepted everywhere, a backend is one registration."""
import logging
from dataclasses import dataclass
from typing import ClassVar

import pytest

from prn_edge.line import config as line_config
from prn_edge.runtime import (BACKENDS, Backend, EngineError, EngineOptions, backend_for, backend_names,
                              engine_options, open_engine, register)
from prn_edge.runtime.onnxruntime_backend import OnnxRuntimeOptions
from prn_edge.trt.runner import TensorRTOptions
from prn_edge.runtime.torch_backend import TorchOptions
from prn_edge.runtime.triton_backend import TritonOptions

COMMON = ("threads", "channel_order", "input_hw", "resize")


def test_each_backend_has_its_options_class_beside_it():
    from prn_edge.runtime.cascade import CascadeOptions

    assert {n: BACKENDS[n].options for n in ("onnxruntime", "torch", "tensorrt", "triton", "cascade")} == {
        "onnxruntime": OnnxRuntimeOptions, "torch": TorchOptions, "tensorrt": TensorRTOptions,
        "triton": TritonOptions, "cascade": CascadeOptions}
    assert OnnxRuntimeOptions.names() == list(COMMON) + [
        "providers", "max_batch", "device_id", "trt_fp16", "trt_cache_dir", "trt_timing_cache", "trt_workspace_mb",
        "cudnn_conv_algo_search", "tf32", "spinning"]
    assert CascadeOptions.names() == list(COMMON) + ["reference", "reference_backend", "fast_backend", "margin"]
    assert CascadeOptions.paths == ("reference",)  # a line config takes it from its own folder
    assert TorchOptions().max_batch == 16 and OnnxRuntimeOptions().max_batch == 32  # defaults live there
    assert TensorRTOptions().device == 0 and TensorRTOptions().use_cuda_graph is False


@pytest.mark.parametrize("name", backend_names())
def test_every_backend_accepts_the_common_options(name):
    options = engine_options(name, threads=2, channel_order="bgr", input_hw=(480, 640), resize="auto")
    assert isinstance(options, EngineOptions) and options.threads == 2 and tuple(options.input_hw) == (480, 640)
    assert set(COMMON) <= set(type(options).names())


def test_threads_is_ignored_by_tensorrt_with_a_note(caplog):
    with caplog.at_level(logging.INFO, logger="prn_edge.runtime.base"):
        assert engine_options("tensorrt", threads=4).threads == 4
    assert "tensorrt backend: option threads=4 ignored" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="prn_edge.runtime.base"):
        engine_options("onnxruntime", threads=4)
    assert "ignored" not in caplog.text


@pytest.mark.parametrize("backend,path,option", [
    ("tensorrt", "m.engine", "providers"),
    ("onnxruntime", "m.onnx", "use_cuda_graph"),
    ("torch", "m.pt", "device"),
])
def test_unknown_option_is_an_engine_error_naming_it(tmp_path, backend, path, option):
    # checked before the file is looked at: the error is about the option, not the missing file
    with pytest.raises(EngineError) as err:
        open_engine(tmp_path / path, **{option: 1})
    msg = str(err.value)
    assert msg.startswith(f"{backend} backend: unknown option {option!r}; allowed: ")
    assert all(name in msg for name in BACKENDS[backend].options.names())


@pytest.mark.parametrize("opts,match", [
    ({"threads": -1}, "threads=-1"),
    ({"threads": "2"}, "threads='2'"),
    ({"max_batch": 0}, "max_batch=0"),
    ({"channel_order": "rgba"}, "channel_order='rgba'"),
    ({"input_hw": (480,)}, r"input_hw=\(480,\)"),
])
def test_bad_option_values_are_engine_errors(opts, match):
    with pytest.raises(EngineError, match=f"onnxruntime backend: {match}"):
        engine_options("onnxruntime", **opts)


def test_triton_options_are_typed_and_may_come_in_the_address(caplog):
    """The triton:// engine's options like any backend's: defaults in TritonOptions, values checked before the
    server is asked, the URL's query as a source of them (a keyword wins), threads accepted and ignored."""
    assert TritonOptions() == TritonOptions(timeout_s=2.0, shared_memory="auto", repository=None)
    url = "triton://127.0.0.1:9/coin?timeout_s=0.5&shared_memory=none"
    assert TritonOptions.for_target(url, {}) == TritonOptions(timeout_s=0.5, shared_memory="none")
    assert TritonOptions.for_target(url, {"timeout_s": 3}).timeout_s == 3
    with caplog.at_level(logging.INFO, logger="prn_edge.runtime.base"):
        assert TritonOptions.for_target("triton://h/coin", {"threads": 2}).threads == 2
    assert "triton backend: option threads=2 ignored (threads are the server's setting" in caplog.text
    for url, opts, match in [
        ("triton://h/coin?shm=1", {}, r"unknown options \['shm'\] in the address; it may set timeout_s"),
        ("triton://h/coin?timeout_s=soon", {}, "timeout_s='soon' is not a number of seconds"),
        ("triton://h/coin", {"timeout_s": 0}, "triton backend: timeout_s=0: give a number of seconds > 0"),
        ("triton://h/coin", {"shared_memory": "cuda"}, "shared_memory='cuda': choose one of auto, system, none"),
        ("triton://h/coin", {"providers": "cpu"}, "triton backend: unknown option 'providers'; allowed: .*timeout_s"),
    ]:
        with pytest.raises(EngineError, match=match):
            open_engine(url, **opts)  # refused before any server is asked (port 8001 on host "h" is never tried)


def test_tensorrt_device_is_checked():
    with pytest.raises(EngineError, match="tensorrt backend: device=-1"):
        engine_options("tensorrt", device=-1)


@pytest.mark.parametrize("value", ["maybe", "no", 1, None])
def test_tensorrt_use_cuda_graph_is_a_boolean(value):
    # a line YAML's `use_cuda_graph: "no"` is a string: truthy, it would turn graphs on
    with pytest.raises(EngineError, match=f"tensorrt backend: use_cuda_graph={value!r}: give true or false"):
        engine_options("tensorrt", use_cuda_graph=value)


def test_unknown_backend_lists_the_registered_ones(tmp_path):
    with pytest.raises(EngineError, match="unknown backend 'tflite'.*onnxruntime, torch, tensorrt"):
        open_engine(tmp_path / "m.onnx", backend="tflite")


def test_the_line_config_takes_its_backends_from_the_registry():
    assert line_config.BACKENDS == ("auto",) + backend_names()


# ---------------------------------------------------------------------------------------------- registration
@dataclass(frozen=True)
class UrlOptions(EngineOptions):
    timeout_s: float = 1.0

    backend: ClassVar[str] = "url-demo"


class UrlEngine:
    """A stand-in for a served model (no file): what open_engine needs of an engine class."""

    Options = UrlOptions

    def __init__(self, target, options):
        self.target, self.options, self.metadata = target, options, {}


@pytest.fixture
def url_backend():
    entry = register(Backend("url-demo", f"{__name__}:UrlEngine", schemes=("demo",)))
    yield entry
    BACKENDS.pop(entry.name)


def test_a_backend_is_one_registration_and_may_take_urls(url_backend):
    assert "url-demo" in backend_names()
    assert backend_for("demo://host:8001/prn") == "url-demo"
    assert backend_for("model.onnx") == "onnxruntime"  # suffixes still decide for paths
    engine = open_engine("demo://host:8001/prn", threads=1, timeout_s=2.5)  # no file needed for a URL
    assert engine.target == "demo://host:8001/prn" and engine.options == UrlOptions(threads=1, timeout_s=2.5)
    with pytest.raises(EngineError, match="url-demo backend: unknown option 'providers'; allowed: .*timeout_s"):
        open_engine("demo://host/prn", providers="cpu")
    with pytest.raises(EngineError, match="URL scheme 'nope://'"):
        backend_for("nope://host/prn")
    with pytest.raises(ValueError, match="already onnxruntime's"):
        register(Backend("other", f"{__name__}:UrlEngine", suffixes=(".onnx",)))
