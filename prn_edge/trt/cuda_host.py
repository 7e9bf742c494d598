"""The host side of CUDA for TensorRT: device memory, pinned host buffers, streams, events, copies and CUDA graphs,
behind one small interface with two implementations, cuda-python (NVIDIA's current samples) and pycuda (older
samples; hard to install on Jetson). Nothing imports either until a host is made.

The interface (what the runner, the builder and the INT8 calibrator call): `current()` (a context manager: every
other call runs inside it, on the calling thread), `close()`, `device_info`, `malloc`/`free`, `host_empty`/
`host_free`, `stream`/`stream_handle`/`stream_free`, `sync`, `htod`/`dtoh`, `event`/`record`/`elapsed`/
`event_free`, and with `supports_graphs` `capture_begin`/`capture_end`/`launch`/`graph_free`.

CUDA binds what is current to a host thread, and an engine is used from several: the line makes it on the main
thread, runs it on its inference thread (a SharedEngine on its batching thread) and closes it on whichever leaves
last. So nothing stays current between calls: each thread makes the device (cuda-python) or the context (pycuda)
current for itself inside `current()`.
"""
from __future__ import annotations

import contextlib
import ctypes
from typing import Any, Iterator

import numpy as np

from ..runtime.base import EngineError


class CudaPython:
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


class PyCuda:
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



HOSTS = {"cuda-python": CudaPython, "pycuda": PyCuda}  # "auto" tries them in this order
CUDA_APIS = ("auto",) + tuple(HOSTS)


def host_cuda(device: int = 0, api: str = "auto"):
    """A host for `device` through `api` ("auto": the first of cuda-python, pycuda that imports)."""
    if api != "auto" and api not in HOSTS:
        raise EngineError(f"cuda_api={api!r}: choose one of {CUDA_APIS}")
    errors = []
    for name in HOSTS if api == "auto" else (api,):
        try:
            return HOSTS[name](device)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    wanted = ("install cuda-python matching the driver's CUDA major (CUDA 12, e.g. JetPack 6: pip install "
              "'cuda-python>=12,<13'; CUDA 13: 'cuda-python>=13') or pycuda") if api == "auto" else \
        f"install {api}, or let prn_edge choose (cuda_api 'auto')"
    raise EngineError(f"no host-side CUDA API for TensorRT: {wanted} ({'; '.join(errors)})")
