"""A FAKE `tensorrt` module for unit tests of prn_edge.trt (the builder and the runner), on machines without
TensorRT or a GPU. It can say no: its API surface is the real one of the version asked for.

    trt = make_fake_tensorrt("10.3.0", cuda=FakeCuda())     # or "10.3", "8.5.2", "11.4.1", ...

Surface: every name comes from the snapshot of the real API (tests/helpers/trt_api/<family>.json, made by
tools/trt_api_snapshot.py; trt_api.family_for picks the snapshot for a version). The module holds exactly the
snapshot's module names; a class exactly its snapshot members (inherited ones included); an enum exactly its
members. Anything else raises AttributeError, as the real module would: `trt.BuilderFlag.FP16` on 11.x,
`config.int8_calibrator` on 11.x, `trt.HardwareCompatibilityLevel` on 8.5, setting a read-only property, or
setting an attribute a TensorRT object does not have. Names that exist in the real API but that this fake does
not model are present (hasattr is True, as on real TensorRT) and raise NotImplementedError when called or
read. Enum members get their declaration index as value (TensorRT's enums count from 0 in declaration order).

Behaviour (only what prn_edge relies on), with the rules real TensorRT enforces:
- Builder/network/parser/config/profile/timing cache as in the 10.x build pattern; the "engine" a build returns
  is a JSON header line (version, flags, device, profile) followed by the ONNX the parser was given
  (serialize_engine); the Runtime deserializes it and runs the ONNX with ONNX Runtime on the fake GPU memory,
  enqueued on the stream like real work (so CUDA-graph capture records it).
- A version-compatible engine built without EXCLUDE_LEAN_RUNTIME embeds host code: the Runtime refuses it
  (deserialize_cuda_engine returns None and logs why) unless `runtime.engine_host_code_allowed = True`.
  An engine built by another TensorRT version is refused unless version-compatible (same major, not newer).
- DLA: a build for DLA (default_device_type DLA) whose optimisation profile is not fixed (min = opt = max)
  fails: DLA runs static shapes only. (Real TensorRT with GPU_FALLBACK moves those layers to the GPU instead,
  so the DLA request silently does nothing; the fake refuses so that tests notice.)
- Implicit INT8 (8.5-10.x): a build with int8_calibrator set reads the calibrator's batches out of the fake
  GPU memory and hands back a fake calibration cache. In 11.x the INT8/FP16 flags, int8_calibrator and the
  IInt8*Calibrator classes do not exist (the snapshot has none), so touching them fails.
- execute_async_v3 runs on the calling thread's current CUDA device (fake_cuda.FakeGpu rules): a stream of
  another device makes it fail (returns False). Each enqueue is recorded as (batch, thread name).

What a test inspects lives under `trt.__fake__` (never part of the real API): `.builds` (one record per
build_serialized_network: plain snapshots of network and config), `.enqueues` ((batch, thread name) of every
execute_async_v3 that ran), `.gpu`, `.cuda`, `.log` (messages the fake TensorRT logged), `.surface` (the
trt_api.Surface).
"""
from __future__ import annotations

import importlib.machinery
import json
import threading
import types
from typing import Any, Optional

import numpy as np
import onnx
from onnx import TensorProto

from . import trt_api
from .fake_cuda import FakeCuda, FakeCudaError, FakeGpu  # noqa: F401 - re-exported: the CUDA these engines run on


def serialize_engine(onnx_bytes: bytes, profile=None, **header) -> bytes:
    """A fake engine file: a JSON header line (profile = [min, opt, max] batch, None for a static batch), then
    the ONNX."""
    return json.dumps({**header, "profile": profile}).encode() + b"\n" + onnx_bytes


def engine_onnx(engine_bytes: bytes) -> onnx.ModelProto:
    """The ONNX inside a fake engine."""
    return onnx.load_from_string(engine_bytes.split(b"\n", 1)[1])


def _version_tuple(v: str) -> tuple[int, int, int]:
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in str(v).split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- surface machinery
class _EnumType(type):
    def __iter__(cls):
        return iter(cls.__members__.values())

    def __len__(cls):
        return len(cls.__members__)

    def __repr__(cls):
        return f"<class 'tensorrt.{cls.__qualname__}'>"


def _make_enum(qualname: str, members: list[str]) -> type:
    """A pybind11-like enum: members are instances with .name/.value, int() and equality; nothing else."""

    def __init__(self, value):
        object.__setattr__(self, "_value", int(value))

    ns = {"__init__": __init__, "__qualname__": qualname, "__module__": "tensorrt",
          "name": property(lambda self: self._name), "value": property(lambda self: self._value),
          "__int__": lambda self: self._value, "__index__": lambda self: self._value,
          "__hash__": lambda self: hash((qualname, self._value)),
          "__eq__": lambda self, o: type(o) is type(self) and o._value == self._value,
          "__repr__": lambda self: f"<{qualname}.{self._name}: {self._value}>",
          "__str__": lambda self: f"{qualname.rsplit('.', 1)[-1]}.{self._name}",
          "__setattr__": lambda self, k, v: _no_attr(qualname, k, "enum values are immutable")}
    cls = _EnumType(qualname.rsplit(".", 1)[-1], (), ns)
    table = {}
    for i, name in enumerate(members):
        m = object.__new__(cls)
        object.__setattr__(m, "_value", i)
        object.__setattr__(m, "_name", name)
        type.__setattr__(cls, name, m)
        table[name] = m
    type.__setattr__(cls, "__members__", table)
    return cls


def _no_attr(cls_name: str, name: str, why: str = "") -> None:
    raise AttributeError(f"'tensorrt.{cls_name}' object has no attribute '{name}'" + (f" ({why})" if why else ""))


class _Real:
    """Base of the fake classes standing for a TensorRT class (`_trt` names it). Instances take no attribute the
    real class does not have; read-only properties cannot be set. Python subclasses (a calibrator) are free,
    as subclasses of pybind11 classes are."""

    _trt = ""
    _surface: Any = None

    def __setattr__(self, name, value):
        if name.startswith("_") or "_trt" not in type(self).__dict__:  # fake internals, or a user subclass
            object.__setattr__(self, name, value)
            return
        found = self._surface.member(self._trt, name)
        if found is None:
            _no_attr(self._trt, name, f"not in TensorRT {self._surface.version}")
        kind, info = found
        if kind != "property" or not info["writable"]:
            raise AttributeError(f"can't set attribute '{name}' of 'tensorrt.{self._trt}' (read-only in TensorRT "
                                 f"{self._surface.version})")
        object.__setattr__(self, name, value)


def _unmodeled_method(cls: str, name: str, version: str):
    def method(*args, **kwargs):
        raise NotImplementedError(f"the fake tensorrt does not model {cls}.{name} (real TensorRT {version} has it)")

    method.__name__ = name
    return method


def _stored_property(name: str, writable: bool, cls: str, version: str, check: Optional[type] = None):
    """A property the fake does not compute: set values are kept; reading one never set is not modeled."""
    key = f"_prop_{name}"

    def get(self):
        if key not in self.__dict__:
            raise NotImplementedError(f"the fake tensorrt does not model {cls}.{name} (real TensorRT {version} has "
                                      "it); set it first or model it")
        return self.__dict__[key]

    def put(self, value):
        if check is not None and not isinstance(value, check):
            raise TypeError(f"{cls}.{name}: incompatible value {value!r}; expected tensorrt.{check.__qualname__}")
        self.__dict__[key] = value

    return property(get, put if writable else None)


def _fit_class(cls: type, surface, enums: dict) -> type:
    """Give a fake class exactly the surface of its TensorRT class: drop what the version lacks, add what the
    fake does not model (methods that raise NotImplementedError, stored properties), set class constants."""
    name = cls._trt
    real = surface.members(name)
    for attr in [a for a in list(vars(cls)) if not a.startswith("_")]:
        found = real.get(attr)
        impl = vars(cls)[attr]
        if found is None:
            delattr(cls, attr)  # the version does not have it
        elif found[0] == "property" and isinstance(impl, property) and impl.fset is not None \
                and not found[1]["writable"]:
            setattr(cls, attr, property(impl.fget))  # read-only in this version
    for attr, (kind, info) in real.items():
        if attr in vars(cls) or any(attr in vars(b) for b in cls.__mro__[1:] if b is not object):
            continue
        if kind in ("method", "static_method"):
            setattr(cls, attr, _unmodeled_method(name, attr, surface.version))
        elif kind == "property":
            setattr(cls, attr, _stored_property(attr, info["writable"], name, surface.version,
                                                enums.get(info["type"])))
        elif kind == "nested":
            if info in enums:
                setattr(cls, attr, enums[info])
        elif kind == "constant" and isinstance(info, str) and info.rsplit(".", 1)[0] in enums:
            setattr(cls, attr, getattr(enums[info.rsplit(".", 1)[0]], info.rsplit(".", 1)[1]))
    cls._surface = surface
    return cls


def _placeholder_class(qualname: str, surface, enums: dict) -> type:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"the fake tensorrt does not model {qualname} (real TensorRT {surface.version} "
                                  "has it)")

    cls = type(qualname.rsplit(".", 1)[-1], (_Real,), {"_trt": qualname, "__init__": __init__,
                                                      "__qualname__": qualname, "__module__": "tensorrt"})
    return _fit_class(cls, surface, enums)


# ---------------------------------------------------------------------------------------------- the module
def make_fake_tensorrt(version: str = "10.3.0", *, cuda: Optional[FakeCuda] = None, fast_fp16: bool = True,
                       fast_int8: bool = True, dla_cores: int = 0, fail_build: bool = False,
                       parse_errors: tuple = ()) -> types.ModuleType:
    surface = trt_api.surface_for(version)
    if len(version.split(".")) < 3 and trt_api.family_for(version) == version:
        version = surface.version  # "10.3" -> the snapshot's full version
    major, minor, patch = _version_tuple(version)
    cuda = cuda if cuda is not None else FakeCuda()
    gpu: FakeGpu = cuda.gpu if isinstance(cuda, FakeCuda) else cuda
    fake = types.SimpleNamespace(builds=[], enqueues=[], log=[], gpu=gpu, cuda=cuda, surface=surface,
                                 version=version)

    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # libraries probe find_spec("tensorrt")
    trt.__version__ = version
    trt.__fake__ = fake

    enums = {q: _make_enum(q, e["members"]) for q, e in surface.enums.items()}
    E = types.SimpleNamespace(**{q.replace(".", "_"): e for q, e in enums.items()})
    DataType = enums["DataType"]
    to_np = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
             "BOOL": np.bool_, "UINT8": np.uint8}
    onnx_to_trt = {TensorProto.FLOAT: "FLOAT", TensorProto.FLOAT16: "HALF", TensorProto.UINT8: "UINT8",
                   TensorProto.INT64: "INT64", TensorProto.INT32: "INT32", TensorProto.INT8: "INT8"}

    def dtype(name: str):
        return getattr(DataType, name, None) or DataType.INT32  # INT64 is absent before 10.0

    def log(severity: str, msg: str) -> None:
        fake.log.append(f"[{severity}] {msg}")

    classes: dict[str, type] = {}

    def real(cls: type) -> type:
        if cls._trt in surface.classes:
            classes[cls._trt] = cls
        return cls

    # ------------------------------------------------------------------ logger
    @real
    class Logger(_Real):
        _trt = "Logger"

        def __init__(self, min_severity=None):
            self._min = min_severity

        def log(self, severity, msg):
            log(str(severity), msg)

    # ------------------------------------------------------------------ network and parser
    @real
    class ITensor(_Real):
        _trt = "ITensor"

        def __init__(self, name, shape, dt):
            self._name, self._shape, self._dtype = name, tuple(shape), dt

        name = property(lambda self: self._name)
        shape = property(lambda self: self._shape)
        dtype = property(lambda self: self._dtype)

    @real
    class ILayer(_Real):
        _trt = "ILayer"

        def __init__(self, name, op, outputs):
            self._name, self._op, self._outputs = name, op, outputs
            self._precision, self._output_types = None, {}

        name = property(lambda self: self._name)
        num_outputs = property(lambda self: len(self._outputs))

        def get_output(self, index):
            return self._outputs[index]

        def _set_precision(self, value):
            if not isinstance(value, DataType):
                raise TypeError(f"ILayer.precision: expected tensorrt.DataType, got {value!r}")
            self._precision = value

        precision = property(lambda self: self._precision or DataType.FLOAT, _set_precision)

        def set_output_type(self, index, dtype):
            if not isinstance(dtype, DataType):
                raise TypeError(f"ILayer.set_output_type: expected tensorrt.DataType, got {dtype!r}")
            self._output_types[index] = dtype

    @real
    class INetworkDefinition(_Real):
        _trt = "INetworkDefinition"

        def __init__(self, flags):
            self._flags, self._inputs, self._outputs, self._layers, self._model = flags, [], [], [], None

        num_inputs = property(lambda self: len(self._inputs))
        num_outputs = property(lambda self: len(self._outputs))
        num_layers = property(lambda self: len(self._layers))

        def get_input(self, index):
            return self._inputs[index]

        def get_output(self, index):
            return self._outputs[index]

        def get_layer(self, index):
            return self._layers[index]

    @real
    class ParserError(_Real):
        _trt = "ParserError"

        def __init__(self, text):
            self._text = text

        def desc(self):
            return self._text

        def __str__(self):
            return self._text

    @real
    class OnnxParser(_Real):
        _trt = "OnnxParser"

        def __init__(self, network, logger):
            self._network, self._errors = network, []

        def parse(self, model, path=None):
            if parse_errors:
                self._errors = [ParserError(e) for e in parse_errors]
                return False
            proto = onnx.load_from_string(bytes(model))
            net = self._network
            net._model = proto
            inits = {i.name for i in proto.graph.initializer}

            def tensor(vi):
                t = vi.type.tensor_type
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
                return ITensor(vi.name, dims, dtype(onnx_to_trt.get(t.elem_type, "FLOAT")))

            net._inputs = [tensor(vi) for vi in proto.graph.input if vi.name not in inits]
            net._outputs = [tensor(vi) for vi in proto.graph.output]
            for n in proto.graph.node:
                outs = [ITensor(o, (), dtype("INT64" if n.op_type in ("ArgMin", "ArgMax", "Shape") else "FLOAT"))
                        for o in n.output]
                net._layers.append(ILayer(n.name, n.op_type, outs))
            return True

        num_errors = property(lambda self: len(self._errors))

        def get_error(self, index):
            return self._errors[index]

    # ------------------------------------------------------------------ config, profile, timing cache
    @real
    class IOptimizationProfile(_Real):
        _trt = "IOptimizationProfile"

        def __init__(self):
            self._shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 (TensorRT's keyword names)
            self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

    @real
    class ITimingCache(_Real):
        _trt = "ITimingCache"

        def __init__(self, data):
            self._loaded = bytes(data)

        def serialize(self):
            return b"FAKE-TIMING-CACHE:" + str(len(self._loaded)).encode()

    @real
    class IBuilderConfig(_Real):
        _trt = "IBuilderConfig"

        def __init__(self):
            self._flags, self._pools, self._profiles = set(), {}, []
            self._calibration_profile = self._timing_cache = self._ignore_mismatch = self._calibrator = None
            self._device, self._dla_core = E.DeviceType.GPU, -1
            self._hw = getattr(getattr(E, "HardwareCompatibilityLevel", None), "NONE", None)

        def set_flag(self, flag):
            if not isinstance(flag, E.BuilderFlag):
                raise TypeError(f"set_flag: expected tensorrt.BuilderFlag, got {flag!r}")
            self._flags.add(flag.name)

        def get_flag(self, flag):
            return flag.name in self._flags

        def clear_flag(self, flag):
            self._flags.discard(flag.name)

        def set_memory_pool_limit(self, pool, pool_size):
            if not isinstance(pool, E.MemoryPoolType):
                raise TypeError(f"set_memory_pool_limit: expected tensorrt.MemoryPoolType, got {pool!r}")
            self._pools[pool.name] = int(pool_size)

        def add_optimization_profile(self, profile):
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            return ITimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache, ignore_mismatch):
            self._timing_cache, self._ignore_mismatch = cache, ignore_mismatch
            return True

        def get_timing_cache(self):
            return self._timing_cache

        def set_calibration_profile(self, profile):
            self._calibration_profile = profile
            return True

        def _typed(attr, enum_name):
            def put(self, value):
                enum = getattr(E, enum_name)
                if not isinstance(value, enum):
                    raise TypeError(f"IBuilderConfig: expected tensorrt.{enum_name}, got {value!r}")
                setattr(self, attr, value)
            return property(lambda self: getattr(self, attr), put)

        default_device_type = _typed("_device", "DeviceType")
        hardware_compatibility_level = _typed("_hw", "HardwareCompatibilityLevel")
        DLA_core = property(lambda self: self._dla_core, lambda self, v: setattr(self, "_dla_core", int(v)))
        int8_calibrator = property(lambda self: self._calibrator, lambda self, v: setattr(self, "_calibrator", v))
        del _typed

    # ------------------------------------------------------------------ builder
    def profile_view(p):
        return types.SimpleNamespace(shapes=dict(p._shapes)) if p is not None else None

    def config_view(config):
        return types.SimpleNamespace(
            flags=set(config._flags), pools=dict(config._pools), profiles=[profile_view(p) for p in config._profiles],
            calibration_profile=profile_view(config._calibration_profile),
            timing_cache=types.SimpleNamespace(loaded=config._timing_cache._loaded) if config._timing_cache else None,
            timing_cache_ignore_mismatch=config._ignore_mismatch, default_device_type=config._device.name,
            DLA_core=config._dla_core, hardware_compatibility_level=config._hw.name if config._hw else None,
            int8_calibrator=config._calibrator)

    def network_view(net):
        layers = [types.SimpleNamespace(name=l._name, op=l._op, precision_set=l._precision,
                                        output_types=dict(l._output_types)) for l in net._layers]
        return types.SimpleNamespace(flags=net._flags, layers=layers, model=net._model,
                                     inputs=[(t.name, t.shape) for t in net._inputs])

    @real
    class Builder(_Real):
        _trt = "Builder"

        def __init__(self, logger):
            self._logger = logger

        platform_has_fast_fp16 = property(lambda self: fast_fp16)
        platform_has_fast_int8 = property(lambda self: fast_int8)
        num_DLA_cores = property(lambda self: dla_cores if (major <= 10 or (major, minor, patch) >= (11, 4, 1)) else 0)

        def create_network(self, flags=0):
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            record = {"network": network_view(network), "config": config_view(config),
                      "flags": set(config._flags), "calibration_batches": [], "calibration_cache_read": None}
            fake.builds.append(record)
            calibrator = config._calibrator
            if calibrator is not None:
                self._calibrate(network, calibrator, record)
            inp = network.get_input(0)
            profile = None
            if config._profiles:
                mn, op, mx = config._profiles[0]._shapes[inp.name]
                profile = [mn[0], op[0], mx[0]]
            strong = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
            typed = {"FP16", "INT8", "BF16", "FP8"} & set(config._flags)
            if strong is not None and network._flags & (1 << int(strong)) and typed:
                log("ERROR", f"BuilderFlag {sorted(typed)} cannot be set for a strongly typed network: its "
                             "precision comes from its tensor types")
                return None
            if config._device.name == "DLA" and profile is not None and not profile[0] == profile[1] == profile[2]:
                log("ERROR", f"DLA requires static shapes: the optimisation profile of {inp.name} is {profile} "
                             "(min, opt and max must be equal on DLA)")
                return None
            if fail_build:
                return None
            return serialize_engine(network._model.SerializeToString(), profile, fake_tensorrt=version,
                                    flags=sorted(config._flags), device=config._device.name)

        def _calibrate(self, network, calibrator, record):
            assert getattr(calibrator, "_base_initialised", False), "calibrator did not call the base __init__"
            cache = calibrator.read_calibration_cache()
            record["calibration_cache_read"] = cache
            if cache is not None:
                return
            inp = network.get_input(0)
            bs = calibrator.get_batch_size()
            shape = (bs,) + tuple(inp.shape[1:])
            np_dtype = np.dtype(to_np[inp.dtype.name])
            nbytes = int(np.prod(shape)) * np_dtype.itemsize
            while True:
                ptrs = calibrator.get_batch([inp.name])
                if ptrs is None:
                    break
                raw = gpu.mem[ptrs[0]][:nbytes]
                record["calibration_batches"].append(raw.view(np_dtype).reshape(shape).copy())
            calibrator.write_calibration_cache(b"FAKE-CALIBRATION-CACHE")

    @real
    class IInt8EntropyCalibrator2(_Real):
        _trt = "IInt8EntropyCalibrator2"

        def __init__(self):
            self._base_initialised = True

    # ------------------------------------------------------------------ runtime: the engine runs its ONNX in ORT
    @real
    class ICudaEngine(_Real):
        _trt = "ICudaEngine"

        def __init__(self, header, body):
            import onnxruntime as ort

            self._header = header
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            self._sess = ort.InferenceSession(body, so, providers=["CPUExecutionProvider"])
            np_of = {"tensor(uint8)": (np.uint8, "UINT8"), "tensor(float)": (np.float32, "FLOAT")}
            self._io = []
            for t in self._sess.get_inputs() + self._sess.get_outputs():
                shape = tuple(d if isinstance(d, int) else -1 for d in t.shape)
                np_t, trt_t = np_of[t.type]
                self._io.append((t.name, shape, np_t, dtype(trt_t)))
            self._input_name = self._sess.get_inputs()[0].name

        num_io_tensors = property(lambda self: len(self._io))

        def get_tensor_name(self, index):
            return self._io[index][0]

        def _t(self, name):
            return next(t for t in self._io if t[0] == name)

        def get_tensor_shape(self, name):
            return self._t(name)[1]

        def get_tensor_dtype(self, name):
            return self._t(name)[3]

        def get_tensor_profile_shape(self, name, profile_index):
            rest = self._t(name)[1][1:]
            return [(b,) + rest for b in self._header["profile"]]

        def get_profile_shape(self, profile_index, binding):
            return self.get_tensor_profile_shape(binding, profile_index)

        def create_execution_context(self):
            return IExecutionContext(self)

    @real
    class IExecutionContext(_Real):
        _trt = "IExecutionContext"

        def __init__(self, engine):
            self._engine, self._addr, self._batch = engine, {}, None

        def set_tensor_address(self, name, memory):
            self._addr[name] = int(memory)
            return True

        def set_input_shape(self, name, shape):
            lo, _, hi = self._engine._header["profile"]
            if not lo <= shape[0] <= hi:
                return False
            self._batch = shape[0]
            return True

        def execute_async_v3(self, stream_handle):
            try:  # on the stream: runs now, or is recorded while a graph is captured
                gpu.enqueue(stream_handle, gpu.runtime_device(), self._execute, "IExecutionContext::enqueueV3")
            except FakeCudaError as e:
                log("ERROR", f"IExecutionContext::enqueueV3: {e}")
                return False
            return True

        def _execute(self):
            e = self._engine
            name, shape, np_t, _ = e._t(e._input_name)
            n = self._batch if shape[0] == -1 else shape[0]
            fake.enqueues.append((n, threading.current_thread().name))
            size = n * int(np.prod(shape[1:])) * np.dtype(np_t).itemsize
            x = gpu.mem[self._addr[name]][:size].view(np_t).reshape((n,) + shape[1:])
            for (oname, *_), value in zip(e._io[1:], e._sess.run(None, {name: x})):
                raw = np.ascontiguousarray(value, dtype=np.float32).reshape(-1).view(np.uint8)
                gpu.mem[self._addr[oname]][:raw.size] = raw

    @real
    class Runtime(_Real):
        _trt = "Runtime"

        def __init__(self, logger):
            self._logger = logger
            self._host_code = False

        engine_host_code_allowed = property(lambda self: self._host_code,
                                            lambda self, v: setattr(self, "_host_code", bool(v)))

        def deserialize_cuda_engine(self, serialized_engine):
            # Real TensorRT returns None for a plan it cannot read and logs why (tensorrt.Runtime docs: "The
            # ICudaEngine, or None if it could not be deserialized"); it never raises.
            try:
                head, body = bytes(serialized_engine).split(b"\n", 1)
                header = json.loads(head)
                if not isinstance(header, dict):
                    raise ValueError("header is not an object")
            except ValueError as e:  # no header line, or not JSON (UnicodeDecodeError is a ValueError)
                log("ERROR", f"Error Code 1: Serialization (the plan cannot be read: {e})")
                return None
            flags = set(header.get("flags", ()))
            built = header.get("fake_tensorrt")
            compatible = "VERSION_COMPATIBLE" in flags
            if built and _version_tuple(built) != (major, minor, patch):
                b = _version_tuple(built)
                if not compatible or b[0] != major or b[:2] > (major, minor):
                    log("ERROR", f"The engine plan file is not compatible with this version of TensorRT, expecting "
                                 f"library version {version} got {built}; please rebuild.")
                    return None
            if compatible and "EXCLUDE_LEAN_RUNTIME" not in flags and not self._host_code:
                log("ERROR", "Cannot deserialize engine with lean runtime embedded (host code) unless the runtime "
                             "allows it: set Runtime.engine_host_code_allowed = True")
                return None
            try:
                return ICudaEngine(header, body)
            except Exception as e:  # the plan's body is damaged
                log("ERROR", f"Error Code 1: Serialization (the plan cannot be read: {e})")
                return None

    # ------------------------------------------------------------------ functions
    def nptype(trt_type):
        try:
            return to_np[trt_type.name]
        except (KeyError, AttributeError):
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.") from None

    def volume(iterable):
        vol = 1
        for elem in iterable:
            vol *= elem
        return vol

    functions = {"nptype": nptype, "volume": volume}

    # ------------------------------------------------------------------ fit everything to the snapshot
    for qual, cls in classes.items():
        _fit_class(cls, surface, enums)
    all_classes = dict(classes)
    for qual in surface.classes:
        if qual not in all_classes:
            all_classes[qual] = _placeholder_class(qual, surface, enums)
    for qual, cls in all_classes.items():  # nested types: Logger.Severity, ILogger.Severity, ...
        for attr, target in surface.classes[qual]["nested"].items():
            type.__setattr__(cls, attr, enums.get(target) or all_classes.get(target))
    m = surface.module
    for name in m["classes"] + m["enums"]:  # aliases (another qualified name) are among the values
        if name in all_classes or name in enums:
            setattr(trt, name, all_classes.get(name) or enums[name])
    for name in m["functions"]:
        setattr(trt, name, functions.get(name) or _unmodeled_method("tensorrt", name, surface.version))
    for name in m["modules"]:
        setattr(trt, name, types.ModuleType(name))
    for name, value in m["values"].items():
        owner, _, member = value.rpartition(".")
        if value in enums or value in all_classes:  # aliases (SliceMode -> SampleMode)
            setattr(trt, name, enums.get(value) or all_classes[value])
        elif owner in enums:
            setattr(trt, name, getattr(enums[owner], member))
        else:
            setattr(trt, name, value)
    return trt


__all__ = ["make_fake_tensorrt", "serialize_engine", "engine_onnx", "FakeCuda", "FakeGpu", "FakeCudaError"]
