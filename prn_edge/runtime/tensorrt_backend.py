"""TensorRT backend (8.5 .. 10.x and 11.x): a serialized engine plus its manifest `NAME.json` beside it.

Nothing here imports tensorrt or CUDA at module level: `TensorRTEngine(...)` does, and says what to do when
they are missing. The run follows the 8.5+ name-based API (the only one left in 10/11):
set_tensor_address once per buffer, set_input_shape for a dynamic batch, execute_async_v3 on one stream,
pinned host buffers with async copies on that stream, and optionally a CUDA graph per batch size
(captured after one warm-up enqueue, as TensorRT's docs require). Host-side CUDA comes from cuda-python
(`cuda.bindings.runtime`, or the older `cuda.cudart`) or pycuda, whichever imports.

An engine is tied to the TensorRT version and the GPU's compute capability it was built with (unless built
version-compatible or with a hardware-compatibility level): the manifest (prn_edge.artefact.manifest) records
both and `check_manifest` refuses a mismatch before TensorRT is asked to deserialize it.
"""
from __future__ import annotations

import contextlib
import ctypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Optional

import numpy as np

from ..artefact import OUTPUT_MAP, OUTPUT_SCORE, InputSpec, ManifestError, MetadataError, decode_metadata
from ..artefact.manifest import engine_manifest_path as manifest_path
from ..artefact.manifest import make_engine_manifest as make_manifest  # noqa: F401 - the old name, for tests
from ..artefact.manifest import read_engine_manifest
from .base import Engine, EngineError, EngineOptions
from .onnxruntime_backend import camera_spec_for
from .preprocess import frames_to_model_input

ENGINE_SUFFIXES = (".engine", ".plan")
_NOT_INSTALLED = ("TensorRT is not installed (cannot import tensorrt) on this host, so {path} cannot run here: "
                  "use the onnxruntime backend with the ONNX it was built from (open_engine('MODEL.onnx')), "
                  "or install tensorrt on a GPU host (JetPack ships it; on x86: pip install tensorrt cuda-python)")


# ---------------------------------------------------------------------------------------------- manifest
# The manifest's format is prn_edge.artefact.manifest; this backend adds what it means for an engine to run here.
def read_manifest(engine_path: str | Path) -> dict:
    try:
        return read_engine_manifest(engine_path)
    except ManifestError as e:
        raise EngineError(str(e)) from None


def _version_tuple(v: str, n: int = 3) -> tuple[int, ...]:
    parts = []
    for p in str(v).split(".")[:n]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (n - len(parts)))


def _cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = str(cc).partition(".")
    return int(major), int(minor or 0)


def check_manifest(manifest: dict, current: dict, engine_path: str | Path) -> list[str]:
    """Refuse an engine built for another TensorRT version or GPU; return warnings for tolerated differences.

    current: {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "gpu_name": "..."} of this host.
    Rules (TensorRT's own): same major.minor.patch, unless built version-compatible (then same major and this
    TensorRT not older); same compute capability, unless built with hardware compatibility "ampere_plus"
    (then any GPU of compute capability >= 8.0). A different GPU name with the same capability is a warning.
    """
    name = Path(engine_path).name
    rebuild = (f"rebuild it on this host from its ONNX (`prn-edge build MODEL.onnx --out {name}`), "
               "or run the ONNX with the onnxruntime backend")
    built_v, cur_v = manifest.get("tensorrt_version"), current.get("tensorrt_version")
    if not built_v or not cur_v:
        raise EngineError(f"{name}: TensorRT version unknown (manifest {built_v!r}, host {cur_v!r}); {rebuild}")
    b, c = _version_tuple(built_v), _version_tuple(cur_v)
    if manifest.get("version_compatible"):
        if b[0] != c[0] or c[:2] < b[:2]:
            raise EngineError(f"{name} was built version-compatible with TensorRT {built_v}, which does not cover "
                              f"TensorRT {cur_v} on this host (same major, not older); {rebuild}")
    elif b != c:
        raise EngineError(f"{name} was built with TensorRT {built_v} but this host has TensorRT {cur_v}: engines "
                          f"only load in the TensorRT version that built them; {rebuild}")
    built_cc, cur_cc = manifest.get("compute_capability"), current.get("compute_capability")
    if not built_cc or not cur_cc:
        raise EngineError(f"{name}: GPU compute capability unknown (manifest {built_cc!r}, host {cur_cc!r}); {rebuild}")
    hw = str(manifest.get("hardware_compatibility", "none")).lower()
    if hw == "ampere_plus":
        if _cc_tuple(cur_cc) < (8, 0):
            raise EngineError(f"{name} was built for Ampere or newer GPUs (hardware compatibility ampere_plus) but "
                              f"this GPU has compute capability {cur_cc}; {rebuild}")
    elif _cc_tuple(built_cc) != _cc_tuple(cur_cc):
        raise EngineError(f"{name} was built for a GPU of compute capability {built_cc} "
                          f"({manifest.get('gpu_name', '?')}) but this GPU ({current.get('gpu_name', '?')}) has "
                          f"{cur_cc}: TensorRT engines are specific to the GPU that built them; {rebuild}")
    warnings = []
    if manifest.get("gpu_name") and current.get("gpu_name") and manifest["gpu_name"] != current["gpu_name"]:
        warnings.append(f"{name} was built on {manifest['gpu_name']}, this is {current['gpu_name']} (same compute "
                        "capability): it loads, but tactics were timed on the other GPU; rebuild for best latency")
    return warnings


# ---------------------------------------------------------------------------------------------- host CUDA
class _CudaPython:
    """cuda-python runtime API (cuda.bindings.runtime, or cuda.cudart before cuda-python 12.6).

    The runtime API keeps the current device per host thread (cudaSetDevice "sets device as the current device
    for the calling host thread", CUDA Runtime API docs), so `current()` sets it again in whichever thread uses
    the engine (the line infers on its own thread, a SharedEngine on another)."""

    name = "cuda-python"

    def __init__(self, device: int):
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            from cuda import cudart as rt  # older cuda-python
        self.rt = rt
        self.device = device
        self._ok(rt.cudaSetDevice(device))  # fails early on a bad device number

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Make this helper's device current on the calling thread for the calls inside."""
        self._ok(self.rt.cudaSetDevice(self.device))
        yield

    def close(self) -> None:
        """Nothing is held beyond what the engine frees (the device's primary context stays with the runtime)."""

    def _ok(self, result):
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self.rt.cudaError_t.cudaSuccess:
            msg = self.rt.cudaGetErrorString(err)[1] if hasattr(self.rt, "cudaGetErrorString") else b""
            raise EngineError(f"CUDA error {err}: {msg.decode() if isinstance(msg, bytes) else msg}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def device_info(self, device: int) -> dict:
        prop = self._ok(self.rt.cudaGetDeviceProperties(device))
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return {"gpu_name": name.strip("\x00 "), "compute_capability": f"{prop.major}.{prop.minor}"}

    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self.rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._ok(self.rt.cudaFree(ptr))

    def host_empty(self, shape, dtype) -> tuple[Any, np.ndarray]:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self._ok(self.rt.cudaMallocHost(nbytes)))
        arr = np.frombuffer((ctypes.c_byte * nbytes).from_address(ptr), dtype=dtype).reshape(shape)
        return ptr, arr

    def host_free(self, handle) -> None:
        self._ok(self.rt.cudaFreeHost(handle))

    def stream(self):
        return self._ok(self.rt.cudaStreamCreate())

    def stream_handle(self, stream) -> int:
        return int(stream)

    def stream_free(self, stream) -> None:
        self._ok(self.rt.cudaStreamDestroy(stream))

    def sync(self, stream) -> None:
        self._ok(self.rt.cudaStreamSynchronize(stream))

    def htod(self, dptr: int, host: np.ndarray, nbytes: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(dptr, host.ctypes.data, nbytes, kind, stream))

    def dtoh(self, host: np.ndarray, dptr: int, nbytes: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, dptr, nbytes, kind, stream))

    def event(self):
        return self._ok(self.rt.cudaEventCreate())

    def record(self, event, stream) -> None:
        self._ok(self.rt.cudaEventRecord(event, stream))

    def elapsed(self, start, end) -> float:
        return float(self._ok(self.rt.cudaEventElapsedTime(start, end))) / 1000.0

    def event_free(self, event) -> None:
        self._ok(self.rt.cudaEventDestroy(event))

    supports_graphs = True

    def capture_begin(self, stream) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self._ok(self.rt.cudaStreamBeginCapture(stream, mode))

    def capture_end(self, stream):
        graph = self._ok(self.rt.cudaStreamEndCapture(stream))
        try:
            graph_exec = self._ok(self.rt.cudaGraphInstantiate(graph, 0))  # CUDA 12 signature
        except TypeError:
            graph_exec = self._ok(self.rt.cudaGraphInstantiate(graph, b"", 0))[0]  # CUDA 11 bindings
        return graph, graph_exec

    def launch(self, graph_exec, stream) -> None:
        self._ok(self.rt.cudaGraphLaunch(graph_exec, stream))

    def graph_free(self, graph, graph_exec) -> None:
        self._ok(self.rt.cudaGraphExecDestroy(graph_exec))
        self._ok(self.rt.cudaGraphDestroy(graph))


class _PyCuda:
    """pycuda (driver API, the device's primary context).

    A driver-API context is current only on the thread that pushed it; a popped context "may then be made
    current to a different CPU thread by calling cuCtxPushCurrent()", and a retained primary context "is not
    pushed onto the stack" (CUDA driver API, cuCtxPopCurrent / cuDevicePrimaryCtxRetain), so `current()` pushes the
    primary context around each use on the calling thread and pops it after; nothing stays pushed between
    calls, whichever thread makes, activates, runs or closes the engine. `close()` releases the retained
    primary context (Context.detach)."""

    name = "pycuda"
    supports_graphs = False

    def __init__(self, device: int):
        import pycuda.driver as drv

        drv.init()
        self.drv = drv
        self.device = device
        self.ctx = None

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Push the device's primary context on the calling thread for the calls inside, then pop it."""
        if self.ctx is None:
            self.ctx = self.drv.Device(self.device).retain_primary_context()
        self.ctx.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def device_info(self, device: int) -> dict:
        dev = self.drv.Device(device)
        major, minor = dev.compute_capability()
        return {"gpu_name": dev.name(), "compute_capability": f"{major}.{minor}"}

    def malloc(self, nbytes: int):
        return self.drv.mem_alloc(nbytes)

    def free(self, ptr) -> None:
        ptr.free()

    def host_empty(self, shape, dtype):
        arr = self.drv.pagelocked_empty(shape, dtype)
        return arr, arr

    def host_free(self, handle) -> None:
        base = getattr(handle, "base", None)
        if base is not None and hasattr(base, "free"):
            base.free()

    def stream(self):
        return self.drv.Stream()

    def stream_handle(self, stream) -> int:
        return int(stream.handle)

    def stream_free(self, stream) -> None:
        pass

    def sync(self, stream) -> None:
        stream.synchronize()

    def htod(self, dptr, host: np.ndarray, nbytes: int, stream) -> None:
        self.drv.memcpy_htod_async(dptr, host.reshape(-1).view(np.uint8)[:nbytes], stream)

    def dtoh(self, host: np.ndarray, dptr, nbytes: int, stream) -> None:
        self.drv.memcpy_dtoh_async(host.reshape(-1).view(np.uint8)[:nbytes], dptr, stream)

    def event(self):
        return self.drv.Event()

    def record(self, event, stream) -> None:
        event.record(stream)

    def elapsed(self, start, end) -> float:
        return end.time_since(start) / 1000.0

    def event_free(self, event) -> None:
        pass

    def close(self) -> None:
        if self.ctx is not None:
            ctx, self.ctx = self.ctx, None
            ctx.detach()


def host_cuda(device: int = 0):
    """The first host-side CUDA API that imports: cuda-python, then pycuda."""
    errors = []
    for cls in (_CudaPython, _PyCuda):
        try:
            return cls(device)
        except ImportError as e:
            errors.append(f"{cls.name}: {e}")
    raise EngineError("no host-side CUDA API for TensorRT: install cuda-python (pip install cuda-python) or "
                      f"pycuda ({'; '.join(errors)})")


def _import_tensorrt(path) -> Any:
    try:
        import tensorrt as trt  # noqa: WPS433 (import inside: tensorrt is optional)
    except ImportError:
        raise EngineError(_NOT_INSTALLED.format(path=path)) from None
    return trt


def current_device_info(device: int = 0, trt=None, cuda=None) -> dict:
    """{"tensorrt_version", "compute_capability", "gpu_name", "cuda_api"} of this host (needs TensorRT and CUDA)."""
    trt = trt or _import_tensorrt("this engine")
    cuda = cuda or host_cuda(device)
    return {"tensorrt_version": trt.__version__, **cuda.device_info(device), "cuda_api": cuda.name}


# ---------------------------------------------------------------------------------------------- engine
@dataclass(frozen=True)
class TensorRTOptions(EngineOptions):
    """device: the CUDA device the engine runs on (set in every thread that uses it).
    use_cuda_graph: capture the enqueue of each batch size once and replay it (cuda-python only).
    channel_order / input_hw / resize: camera description for float-input engines (as the onnxruntime backend).
    threads is accepted for a uniform config and ignored: the engine computes on the GPU."""

    device: int = 0
    use_cuda_graph: bool = False

    backend: ClassVar[str] = "tensorrt"
    ignored: ClassVar[Mapping[str, str]] = {"threads": "TensorRT computes on the GPU; it has no CPU thread count"}

    def validate(self) -> None:
        super().validate()
        if isinstance(self.device, bool) or not isinstance(self.device, int) or self.device < 0:
            raise EngineError(f"tensorrt backend: device={self.device!r}: give a CUDA device number (0, 1, ...)")


class TensorRTEngine(Engine):
    """A serialized TensorRT engine with its manifest; options: TensorRTOptions (or the same as keywords).

    Every CUDA call runs inside the host helper's `current()` on the calling thread, so the engine can be
    made on one thread, activated on another and run on a third (the line, a SharedEngine).
    """

    backend = "tensorrt"
    Options = TensorRTOptions

    def __init__(self, path: str | Path, options: Optional[TensorRTOptions] = None, **opts):
        o = self.options = TensorRTOptions.of(options, opts)
        path = Path(path)
        if not path.is_file():
            raise EngineError(f"engine {path} does not exist; build it from the ONNX with `prn-edge build`")
        manifest = read_manifest(path)
        try:
            meta = decode_metadata(manifest.get("metadata") or {}, f"manifest {manifest_path(path).name}")
        except MetadataError as e:
            raise EngineError(str(e)) from None
        self.manifest = manifest
        self.model_spec: InputSpec = meta["input_spec"]
        spec = camera_spec_for(self.model_spec, o.channel_order, o.input_hw, o.resize, path.name)
        super().__init__(path, meta, spec)
        self._trt = _import_tensorrt(path)
        self._cuda = host_cuda(o.device)
        self.device_info = current_device_info(o.device, self._trt, self._cuda)
        self.warnings = check_manifest(manifest, self.device_info, path)
        if o.use_cuda_graph and not getattr(self._cuda, "supports_graphs", False):
            raise EngineError(f"CUDA graphs need cuda-python ({self._cuda.name} is in use): pip install cuda-python, "
                              "or use_cuda_graph=False")
        self.use_cuda_graph = o.use_cuda_graph
        self._engine = self._context = self._stream = None
        self._buffers: dict[str, dict] = {}
        self._graphs: dict[int, tuple] = {}
        self._events: list = []

    # -------------------------------------------------------------- lifecycle
    def _activate(self) -> None:
        with self._cuda.current():
            self._load()

    def _load(self) -> None:
        trt = self._trt
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if self.manifest.get("version_compatible") and hasattr(self._runtime, "engine_host_code_allowed"):
            # A version-compatible engine built without EXCLUDE_LEAN_RUNTIME embeds the lean runtime (host code);
            # TensorRT refuses to deserialize it unless the runtime allows host code (TensorRT docs, "Version
            # Compatibility", docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/advanced.html; the
            # attribute exists from 8.6, as version compatibility does). Only our own manifest asks for it.
            self._runtime.engine_host_code_allowed = True
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise EngineError(f"TensorRT could not deserialize {self.path} (corrupt file, or built by another "
                              "TensorRT/GPU despite its manifest); rebuild it on this host")
        self._engine = engine
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        expected = {self.model_spec.name, OUTPUT_MAP, OUTPUT_SCORE}
        if set(names) != expected:
            raise EngineError(f"{self.path} has I/O tensors {names}, expected {sorted(expected)}; rebuild it from a "
                              "prn_edge ONNX")
        in_shape = tuple(engine.get_tensor_shape(self.model_spec.name))
        if in_shape[0] == -1:
            self._min_batch, self._max_batch = self._profile_batches(engine, self.model_spec.name)
        else:
            self._min_batch = self._max_batch = in_shape[0]
        self._stream = self._cuda.stream()
        for name in names:
            shape = list(engine.get_tensor_shape(name))
            shape[0] = self._max_batch
            if any(d < 0 for d in shape):
                raise EngineError(f"{self.path}: tensor {name} has dynamic dimensions {shape} besides the batch")
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host_handle, host = self._cuda.host_empty(tuple(shape), dtype)
            nbytes = host.nbytes
            dptr = self._cuda.malloc(nbytes)
            self._context.set_tensor_address(name, int(dptr))
            self._buffers[name] = {"host": host, "host_handle": host_handle, "device": dptr,
                                   "item_bytes": nbytes // self._max_batch, "shape": tuple(shape), "dtype": dtype}
        self._events = [self._cuda.event() for _ in range(4)]
        self._set_batch(self._max_batch if in_shape[0] == -1 else in_shape[0])

    def _profile_batches(self, engine, name: str) -> tuple[int, int]:
        """(min, max) batch of the optimisation profile (min = max for a DLA engine: static shapes)."""
        if hasattr(engine, "get_tensor_profile_shape"):  # 8.5+ / 10.x
            shapes = engine.get_tensor_profile_shape(name, 0)
        else:
            shapes = engine.get_profile_shape(0, name)
        return int(shapes[0][0]), int(shapes[2][0])

    def _set_batch(self, n: int) -> None:
        spec = self.model_spec
        shape = self._buffers[spec.name]["shape"]
        if self._engine.get_tensor_shape(spec.name)[0] == -1:
            if not self._context.set_input_shape(spec.name, (n,) + tuple(shape[1:])):
                raise EngineError(f"{self.path}: batch {n} is outside the engine's optimisation profile")
        self._batch = n

    def _release(self) -> None:
        try:
            with self._cuda.current():
                self._free()
        finally:
            self._cuda.close()

    def describe(self) -> dict[str, Any]:
        """The engine file, the TensorRT it runs on and the GPU (threads: none, it computes on the GPU)."""
        info = self.device_info
        return {**super().describe(), "engine": self.path.name,
                "precision": self.manifest.get("precision") or self.metadata.get("precision") or "?",
                "tensorrt": info.get("tensorrt_version"),
                "device": f"{self.options.device} ({info.get('gpu_name', '?')}, sm {info.get('compute_capability')})"}

    def _free(self) -> None:
        cuda = self._cuda
        for graph, graph_exec in self._graphs.values():
            cuda.graph_free(graph, graph_exec)
        self._graphs.clear()
        if self._stream is not None:
            cuda.sync(self._stream)
        for buf in self._buffers.values():
            cuda.free(buf["device"])
            cuda.host_free(buf["host_handle"])
        self._buffers.clear()
        for e in self._events:
            cuda.event_free(e)
        self._events = []
        if self._stream is not None:
            cuda.stream_free(self._stream)
        self._context = self._engine = self._stream = self._runtime = None

    # -------------------------------------------------------------- run
    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._cuda.stream_handle(self._stream)):
            raise EngineError(f"{self.path}: TensorRT enqueue failed (see the TensorRT log above)")

    def _run(self, frames: np.ndarray, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        with self._cuda.current():
            return self._run_here(frames, timings)

    def _run_here(self, frames: np.ndarray, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        if len(frames) < self._min_batch:  # below the profile (a fixed-batch DLA profile): pad, Engine.infer trims
            frames = np.concatenate([frames, np.repeat(frames[-1:], self._min_batch - len(frames), axis=0)])
        cuda, spec, n = self._cuda, self.model_spec, len(frames)
        if n != self._batch:
            self._set_batch(n)
        t0 = time.perf_counter()
        inp = self._buffers[spec.name]
        x = frames if spec.format == "uint8" else frames_to_model_input(frames, self._input_spec)
        np.copyto(inp["host"][:n], x, casting="same_kind" if inp["dtype"] == x.dtype else "unsafe")
        timings["preprocess"] += time.perf_counter() - t0
        e0, e1, e2, e3 = self._events
        s = self._stream
        cuda.record(e0, s)
        cuda.htod(inp["device"], inp["host"], n * inp["item_bytes"], s)
        cuda.record(e1, s)
        if self.use_cuda_graph:
            if n not in self._graphs:
                self._enqueue()  # warm-up enqueue before capture
                cuda.sync(s)
                cuda.capture_begin(s)
                self._enqueue()
                self._graphs[n] = cuda.capture_end(s)
            cuda.launch(self._graphs[n][1], s)
        else:
            self._enqueue()
        cuda.record(e2, s)
        outs = {}
        for name in (OUTPUT_MAP, OUTPUT_SCORE):
            buf = self._buffers[name]
            cuda.dtoh(buf["host"], buf["device"], n * buf["item_bytes"], s)
        cuda.record(e3, s)
        cuda.sync(s)
        timings["h2d"] += cuda.elapsed(e0, e1)
        timings["compute"] += cuda.elapsed(e1, e2)
        timings["d2h"] += cuda.elapsed(e2, e3)
        for name in (OUTPUT_MAP, OUTPUT_SCORE):
            outs[name] = np.array(self._buffers[name]["host"][:n], dtype=np.float32)  # copy out of pinned memory
        return outs[OUTPUT_MAP][:, 0], outs[OUTPUT_SCORE]
