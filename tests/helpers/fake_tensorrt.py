"""A FAKE `tensorrt` module for unit tests of prn_edge.build on machines without TensorRT or a GPU.

Nothing here is NVIDIA's code or behaviour beyond the API surface prn_edge.build uses; each version family
exposes only what that family has, so touching a removed API fails loudly:

- 8.5: BuilderFlag FP16/INT8/GPU_FALLBACK/PREFER/OBEY_PRECISION_CONSTRAINTS, NetworkDefinitionCreationFlag.
  EXPLICIT_BATCH, IInt8EntropyCalibrator2, platform_has_fast_fp16/int8; no VERSION_COMPATIBLE, no
  HardwareCompatibilityLevel (both from 8.6).
- 10.x: as 8.5 plus VERSION_COMPATIBLE and HardwareCompatibilityLevel.
- 11.x: no FP16/INT8/precision-constraint flags, no int8_calibrator, no IInt8*Calibrator, no
  platform_has_fast_*, no EXPLICIT_BATCH; layer precision cannot be set (strongly typed); DLA from 11.4.1.

The "engine" a build returns is a short header followed by the ONNX the parser was given (serialize_engine);
the fake Runtime deserializes it and runs the ONNX with ONNX Runtime on the fake CUDA memory, enqueued on the
stream like real work (so CUDA-graph capture records it). A build with an INT8 calibrator reads the
calibrator's batches out of the fake CUDA memory (so tests can check their format) and hands back a fake
calibration cache. Shared by the build and runtime tests; inject with monkeypatch.setitem(sys.modules,
"tensorrt", module) or the backend's import hook.
"""
from __future__ import annotations

import importlib.machinery
import json
import types

import numpy as np
import onnx
from onnx import TensorProto

from .fake_cuda import FakeCuda  # noqa: F401 - re-exported: the CUDA these fake engines run on


def serialize_engine(onnx_bytes: bytes, profile=None, **header) -> bytes:
    """A fake engine file: a JSON header line (profile = [min, opt, max] batch, None for a static batch), then
    the ONNX."""
    return json.dumps({**header, "profile": profile}).encode() + b"\n" + onnx_bytes


class _DType:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"DataType.{self.name}"


def make_fake_tensorrt(version: str = "10.3.0", *, cuda: FakeCuda | None = None, fast_fp16: bool = True,
                       fast_int8: bool = True, dla_cores: int = 0, fail_build: bool = False,
                       parse_errors: tuple = ()) -> types.ModuleType:
    major, minor = (int(x) for x in version.split(".")[:2])
    patch = int(version.split(".")[2]) if len(version.split(".")) > 2 else 0
    weak = major <= 10
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # libraries probe find_spec("tensorrt")
    trt.__version__ = version
    trt.__fake__ = True
    trt.cuda = cuda
    trt.builds = []  # one record per build_serialized_network call

    float32, float16, int32, int64, uint8, int8, boolean = (_DType(n) for n in (
        "FLOAT", "HALF", "INT32", "INT64", "UINT8", "INT8", "BOOL"))
    trt.float32, trt.float16, trt.int32, trt.int64, trt.uint8, trt.int8, trt.bool = (
        float32, float16, int32, int64, uint8, int8, boolean)
    onnx_to_trt = {TensorProto.FLOAT: float32, TensorProto.FLOAT16: float16, TensorProto.UINT8: uint8,
                   TensorProto.INT64: int64, TensorProto.INT32: int32, TensorProto.INT8: int8}
    trt_to_np = {float32: np.float32, float16: np.float16, uint8: np.uint8, int32: np.int32, int64: np.int64,
                 int8: np.int8}

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, level=2):
            self.level = level

    trt.Logger = Logger

    flag_names = ["GPU_FALLBACK", "DEBUG", "REFIT"]
    if weak:
        flag_names += ["FP16", "INT8", "BF16", "FP8", "PREFER_PRECISION_CONSTRAINTS", "OBEY_PRECISION_CONSTRAINTS",
                       "DIRECT_IO"]
    if (major, minor) >= (8, 6):
        flag_names += ["VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"]
    trt.BuilderFlag = type("BuilderFlag", (), {n: i for i, n in enumerate(flag_names)})
    flag_by_value = dict(enumerate(flag_names))

    net_flags = {}
    if weak:
        net_flags["EXPLICIT_BATCH"] = 0
    if major >= 9:
        net_flags["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = type("NetworkDefinitionCreationFlag", (), net_flags)
    trt.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "WORKSPACE", "DLA_MANAGED_SRAM": "DLA_SRAM"})
    trt.DeviceType = type("DeviceType", (), {"GPU": "GPU", "DLA": "DLA"})
    if (major, minor) >= (8, 6):
        trt.HardwareCompatibilityLevel = type("HardwareCompatibilityLevel", (), {
            "NONE": "NONE", "AMPERE_PLUS": "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY": "SAME_COMPUTE_CAPABILITY"})

    if weak:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                self._base_initialised = True

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    def nptype(dtype):
        return trt_to_np[dtype]

    trt.nptype = nptype

    # ------------------------------------------------------------------ network and parser
    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class Layer:
        def __init__(self, name, op, outputs):
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "op", op)
            object.__setattr__(self, "_outputs", outputs)
            object.__setattr__(self, "output_types", {})
            object.__setattr__(self, "precision_set", None)

        @property
        def num_outputs(self):
            return len(self._outputs)

        def get_output(self, i):
            return self._outputs[i]

        def __setattr__(self, key, value):
            if key == "precision":
                if not weak:
                    raise AttributeError("strongly typed networks do not allow setting layer precision (fake 11.x)")
                object.__setattr__(self, "precision_set", value)
                return
            object.__setattr__(self, key, value)

        def set_output_type(self, i, dtype):
            if not weak:
                raise AttributeError("strongly typed networks do not allow setting output types (fake 11.x)")
            self.output_types[i] = dtype

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.inputs, self.outputs, self.layers = [], [], []
            self.model = None

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

        def get_layer(self, i):
            return self.layers[i]

    class ParserError:
        def __init__(self, text):
            self.text = text

        def __str__(self):
            return self.text

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse(self, data):
            if parse_errors:
                self.errors = [ParserError(e) for e in parse_errors]
                return False
            model = onnx.load_from_string(bytes(data))
            net = self.network
            net.model = model
            inits = {i.name for i in model.graph.initializer}

            def tensor(vi):
                t = vi.type.tensor_type
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
                return Tensor(vi.name, dims, onnx_to_trt.get(t.elem_type, float32))

            net.inputs = [tensor(vi) for vi in model.graph.input if vi.name not in inits]
            net.outputs = [tensor(vi) for vi in model.graph.output]
            for n in model.graph.node:
                outs = [Tensor(o, (), int64 if n.op_type in ("ArgMin", "ArgMax", "Shape") else float32)
                        for o in n.output]
                net.layers.append(Layer(n.name, n.op_type, outs))
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    trt.OnnxParser = OnnxParser

    # ------------------------------------------------------------------ config, profile, timing cache
    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):  # noqa: A002 (TensorRT's keyword names)
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

    class TimingCache:
        def __init__(self, data):
            self.loaded = bytes(data)

        def serialize(self):
            return b"FAKE-TIMING-CACHE:" + str(len(self.loaded)).encode()

    class Config:
        def __init__(self):
            object.__setattr__(self, "flags", set())
            object.__setattr__(self, "pools", {})
            object.__setattr__(self, "profiles", [])
            object.__setattr__(self, "calibration_profile", None)
            object.__setattr__(self, "timing_cache", None)
            object.__setattr__(self, "timing_cache_ignore_mismatch", None)
            object.__setattr__(self, "default_device_type", "GPU")
            object.__setattr__(self, "DLA_core", -1)
            if (major, minor) >= (8, 6):
                object.__setattr__(self, "hardware_compatibility_level", "NONE")
            object.__setattr__(self, "_calibrator", None)

        def __setattr__(self, key, value):
            if key == "int8_calibrator":
                if not weak:
                    raise AttributeError("IBuilderConfig.int8_calibrator was removed in TensorRT 11 (fake)")
                object.__setattr__(self, "_calibrator", value)
                return
            if not hasattr(self, key):
                raise AttributeError(f"fake IBuilderConfig has no attribute {key!r} in TensorRT {version}")
            object.__setattr__(self, key, value)

        @property
        def int8_calibrator(self):
            if not weak:
                raise AttributeError("IBuilderConfig.int8_calibrator was removed in TensorRT 11 (fake)")
            return self._calibrator

        def set_flag(self, flag):
            self.flags.add(flag_by_value[flag])

        def get_flag(self, flag):
            return flag_by_value[flag] in self.flags

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            object.__setattr__(self, "timing_cache", cache)
            object.__setattr__(self, "timing_cache_ignore_mismatch", ignore_mismatch)
            return True

        def get_timing_cache(self):
            return self.timing_cache

    if weak:
        def set_calibration_profile(self, profile):
            object.__setattr__(self, "calibration_profile", profile)
            return True

        Config.set_calibration_profile = set_calibration_profile

    # ------------------------------------------------------------------ builder
    class Builder:
        def __init__(self, logger):
            self.logger = logger
            self.num_DLA_cores = dla_cores if (weak or (major, minor, patch) >= (11, 4, 1)) else 0

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            record = {"network": network, "config": config, "flags": set(config.flags),
                      "calibration_batches": [], "calibration_cache_read": None}
            trt.builds.append(record)
            calibrator = config._calibrator if weak else None
            if calibrator is not None:
                assert getattr(calibrator, "_base_initialised", False), "calibrator did not call the base __init__"
                cache = calibrator.read_calibration_cache()
                record["calibration_cache_read"] = cache
                if cache is None:
                    inp = network.get_input(0)
                    bs = calibrator.get_batch_size()
                    shape = (bs,) + tuple(inp.shape[1:])
                    dtype = np.dtype(trt_to_np[inp.dtype])
                    nbytes = int(np.prod(shape)) * dtype.itemsize
                    while True:
                        ptrs = calibrator.get_batch([inp.name])
                        if ptrs is None:
                            break
                        raw = cuda.mem[ptrs[0]][:nbytes]
                        record["calibration_batches"].append(raw.view(dtype).reshape(shape).copy())
                    calibrator.write_calibration_cache(b"FAKE-CALIBRATION-CACHE")
            if fail_build:
                return None
            inp = network.get_input(0)
            profile = None
            if config.profiles:
                mn, op, mx = config.profiles[0].shapes[inp.name]
                profile = [mn[0], op[0], mx[0]]
            return serialize_engine(network.model.SerializeToString(), profile, fake_tensorrt=version,
                                    flags=sorted(config.flags), device=config.default_device_type)

    if weak:
        Builder.platform_has_fast_fp16 = property(lambda self: fast_fp16)
        Builder.platform_has_fast_int8 = property(lambda self: fast_int8)
    trt.Builder = Builder

    # ------------------------------------------------------------------ runtime: the engine runs its ONNX in ORT
    class Engine:
        def __init__(self, data):
            import onnxruntime as ort

            head, body = bytes(data).split(b"\n", 1)
            self.header = json.loads(head)
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            self.sess = ort.InferenceSession(body, so, providers=["CPUExecutionProvider"])
            np_of = {"tensor(uint8)": (np.uint8, uint8), "tensor(float)": (np.float32, float32)}
            self.io = []
            for t in self.sess.get_inputs() + self.sess.get_outputs():
                shape = tuple(d if isinstance(d, int) else -1 for d in t.shape)
                self.io.append((t.name, shape) + np_of[t.type])
            self.input_name = self.sess.get_inputs()[0].name

        num_io_tensors = property(lambda self: len(self.io))

        def get_tensor_name(self, i):
            return self.io[i][0]

        def _t(self, name):
            return next(t for t in self.io if t[0] == name)

        def get_tensor_shape(self, name):
            return self._t(name)[1]

        def get_tensor_dtype(self, name):
            return self._t(name)[3]

        def get_tensor_profile_shape(self, name, profile_index):
            rest = self._t(name)[1][1:]
            return [(b,) + rest for b in self.header["profile"]]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine, self.addr, self.batch = engine, {}, None

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.header["profile"]
            if not lo <= shape[0] <= hi:
                return False
            self.batch = shape[0]
            return True

        def execute_async_v3(self, stream_handle):
            cuda.submit(self._execute)  # on the stream: runs now, or is recorded while a graph is captured
            return True

        def _execute(self):
            e = self.engine
            name, shape, dtype, _ = e._t(e.input_name)
            n = self.batch if shape[0] == -1 else shape[0]
            size = n * int(np.prod(shape[1:])) * np.dtype(dtype).itemsize
            x = cuda.mem[self.addr[name]][:size].view(dtype).reshape((n,) + shape[1:])
            for (oname, *_), value in zip(e.io[1:], e.sess.run(None, {name: x})):
                raw = np.ascontiguousarray(value, dtype=np.float32).reshape(-1).view(np.uint8)
                cuda.mem[self.addr[oname]][:raw.size] = raw

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(data)

    trt.Runtime = Runtime
    return trt


def engine_onnx(engine_bytes: bytes) -> onnx.ModelProto:
    """The ONNX inside a fake engine."""
    return onnx.load_from_string(engine_bytes.split(b"\n", 1)[1])
