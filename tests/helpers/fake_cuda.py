"""Fakes of CUDA for machines without a GPU, shared by the runtime and build tests. Named as fakes: nothing here
touches CUDA. Three layers:

- FakeGpu: devices with numpy 'device memory', streams, events and stream capture, and CUDA's thread rules:
  a context is current on the thread that made it current, never on another (driver API: calls on a thread
  without a current context fail with CUDA_ERROR_INVALID_CONTEXT); the runtime API keeps a current device per
  thread (cudaSetDevice affects the calling thread only; a thread that never called it uses device 0 through
  that device's primary context); work on a stream of another device than the thread's current one fails
  (cudaErrorInvalidResourceHandle). The fake TensorRT enqueues its work here.
- fake_pycuda(gpu) / fake_cudart(gpu): the `pycuda.driver` and `cuda.bindings.runtime` modules over a FakeGpu,
  covering what prn_edge.trt.cuda_host's PyCuda and CudaPython call, so their real code runs under those
  rules (use_pycuda / use_cuda_python install them in sys.modules).
- FakeCuda: a stand-in for the host-CUDA layer itself (what cuda_host.host_cuda() returns), behaving like a
  correct host on device 0; the simple choice for tests of the engine plumbing (use_host installs it).
"""
from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
import time
import types
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


class FakeCudaError(RuntimeError):
    """A CUDA call the real driver/runtime would fail; `code` is CUDA's error name."""

    def __init__(self, code: str, msg: str):
        super().__init__(f"{code}: {msg}")
        self.code = code


@dataclass(eq=False)
class FakeContext:
    device: int
    primary: bool = True


@dataclass(eq=False)
class _Stream:
    device: int
    capture: Optional[list] = None


@dataclass
class _Graph:
    device: int
    work: list = field(default_factory=list)


class FakeGpu:
    """Devices, memory and the per-thread context rules of CUDA (see the module docstring)."""

    def __init__(self, gpu_name: str = "Fake Orin", compute_capability: str = "8.7", devices: int = 1):
        self.gpu_name, self.compute_capability, self.devices = gpu_name, compute_capability, devices
        self.mem: dict[int, np.ndarray] = {}
        self.mem_device: dict[int, int] = {}  # device pointer -> device it was allocated on
        self.streams: dict[int, _Stream] = {}
        self.primary = [FakeContext(d) for d in range(devices)]
        self._tls = threading.local()
        self._next = 4096
        self._lock = threading.Lock()
        self.captures = self.launches = 0
        self.pushed: Counter = Counter()  # thread name -> contexts it pushed and has not popped (0: balanced)

    # ------------------------------------------------------------------ contexts
    def _stack(self) -> list:
        if not hasattr(self._tls, "stack"):
            self._tls.stack = []
        return self._tls.stack

    def context_stack(self) -> list[FakeContext]:
        """The calling thread's context stack (driver API), current last."""
        return list(self._stack())

    def push(self, ctx: FakeContext) -> None:
        self._stack().append(ctx)
        self.pushed[threading.current_thread().name] += 1

    def pop(self) -> FakeContext:
        stack = self._stack()
        if not stack:
            raise FakeCudaError("CUDA_ERROR_INVALID_CONTEXT", "cuCtxPopCurrent: no context is current on this thread")
        self.pushed[threading.current_thread().name] -= 1
        return stack.pop()

    def driver_current(self, call: str) -> FakeContext:
        """Driver API: the thread's current context, or the error CUDA gives on a thread without one."""
        stack = self._stack()
        if not stack:
            raise FakeCudaError("CUDA_ERROR_INVALID_CONTEXT",
                                f"{call}: invalid device context (no CUDA context is current on thread "
                                f"{threading.current_thread().name!r}; a context is current only on the thread that "
                                "made it current)")
        return stack[-1]

    def set_device(self, device: int) -> None:
        """Runtime API cudaSetDevice: the calling thread's current device (its primary context)."""
        if not 0 <= device < self.devices:
            raise FakeCudaError("cudaErrorInvalidDevice", f"cudaSetDevice({device}): {self.devices} device(s)")
        stack = self._stack()
        if stack:
            stack[-1] = self.primary[device]
        else:
            stack.append(self.primary[device])

    def runtime_device(self) -> int:
        """Runtime API: the thread's device; a thread that set none gets device 0's primary context."""
        stack = self._stack()
        if not stack:
            stack.append(self.primary[0])
        return stack[-1].device

    # ------------------------------------------------------------------ memory and streams
    def malloc(self, nbytes: int, device: int) -> int:
        with self._lock:
            ptr, self._next = self._next, self._next + nbytes + 256
        self.mem[ptr] = np.zeros(nbytes, np.uint8)
        self.mem_device[ptr] = device
        return ptr

    def free(self, ptr: int) -> None:
        if ptr not in self.mem:
            raise FakeCudaError("cudaErrorInvalidValue", f"free of unknown device pointer {ptr}")
        del self.mem[ptr], self.mem_device[ptr]

    def stream_create(self, device: int) -> int:
        with self._lock:
            handle, self._next = self._next, self._next + 16
        self.streams[handle] = _Stream(device)
        return handle

    def stream(self, handle: int, device: int, call: str) -> _Stream:
        s = self.streams.get(int(handle))
        if s is None:
            raise FakeCudaError("cudaErrorInvalidResourceHandle", f"{call}: unknown stream {handle}")
        if s.device != device:
            raise FakeCudaError("cudaErrorInvalidResourceHandle",
                                f"{call}: stream of device {s.device} used on thread {threading.current_thread().name!r} "
                                f"whose current device is {device}")
        return s

    def enqueue(self, handle: int, device: int, fn: Callable[[], None], call: str = "launch") -> None:
        """Work on a stream: runs now, or is recorded while the stream is being captured (a CUDA graph)."""
        s = self.stream(handle, device, call)
        if s.capture is not None:
            s.capture.append(fn)
        else:
            fn()

    def begin_capture(self, handle: int, device: int) -> None:
        self.stream(handle, device, "cudaStreamBeginCapture").capture = []

    def end_capture(self, handle: int, device: int) -> _Graph:
        s = self.stream(handle, device, "cudaStreamEndCapture")
        graph, s.capture = _Graph(device, s.capture or []), None
        self.captures += 1
        return graph

    def launch(self, graph: _Graph, handle: int, device: int) -> None:
        self.stream(handle, device, "cudaGraphLaunch")
        self.launches += 1
        for fn in graph.work:
            fn()


# ---------------------------------------------------------------------------------------------- pycuda.driver
def fake_pycuda(gpu: FakeGpu) -> types.ModuleType:
    """A `pycuda.driver` module over gpu (driver API: every call needs a context current on the calling thread).
    Install: sys.modules["pycuda"] = module.__parent__ (has .driver) and sys.modules["pycuda.driver"] = module."""
    drv = types.ModuleType("pycuda.driver")

    class LogicError(RuntimeError):
        pass

    def current(call):
        try:
            return gpu.driver_current(call)
        except FakeCudaError as e:
            raise LogicError(f"{call} failed: invalid device context ({e})") from None

    class Context:
        def __init__(self, ctx: FakeContext):
            self._ctx = ctx

        def push(self):
            gpu.push(self._ctx)

        @staticmethod
        def pop():
            gpu.pop()

        def get_device(self):
            return Device(self._ctx.device)

        def detach(self):  # releases a retained primary context; the fake's primary contexts live on
            pass

    class Device:
        def __init__(self, n):
            if not 0 <= n < gpu.devices:
                raise LogicError(f"cuDeviceGet failed: invalid device ordinal {n}")
            self.n = n

        def retain_primary_context(self):
            return Context(gpu.primary[self.n])

        def compute_capability(self):
            major, minor = gpu.compute_capability.split(".")
            return int(major), int(minor)

        def name(self):
            return gpu.gpu_name

    class DeviceAllocation:
        def __init__(self, nbytes):
            self.ptr = gpu.malloc(nbytes, current("cuMemAlloc").device)

        def __int__(self):
            return self.ptr

        def free(self):
            current("cuMemFree")
            gpu.free(self.ptr)

    class Stream:
        def __init__(self):
            self.handle = gpu.stream_create(current("cuStreamCreate").device)

        def synchronize(self):
            current("cuStreamSynchronize")

    class Event:
        def __init__(self):
            current("cuEventCreate")
            self.t = 0.0

        def record(self, stream=None):
            if stream is not None:
                gpu.stream(stream.handle, current("cuEventRecord").device, "cuEventRecord")
            self.t = time.perf_counter()
            return self

        def time_since(self, start):
            return (self.t - start.t) * 1e3

    def memcpy_htod_async(dest, src, stream=None):
        dev = current("cuMemcpyHtoDAsync").device
        if stream is not None:
            gpu.stream(stream.handle, dev, "cuMemcpyHtoDAsync")
        raw = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
        gpu.mem[int(dest)][:raw.size] = raw

    def memcpy_dtoh_async(dest, src, stream=None):
        dev = current("cuMemcpyDtoHAsync").device
        if stream is not None:
            gpu.stream(stream.handle, dev, "cuMemcpyDtoHAsync")
        out = dest.reshape(-1).view(np.uint8)
        out[:] = gpu.mem[int(src)][:out.size]

    def pagelocked_empty(shape, dtype):
        current("cuMemHostAlloc")
        return np.zeros(shape, dtype)

    drv.init = lambda: None
    drv.LogicError, drv.Context, drv.Device, drv.DeviceAllocation, drv.Stream, drv.Event = (
        LogicError, Context, Device, DeviceAllocation, Stream, Event)
    drv.mem_alloc = DeviceAllocation
    drv.memcpy_htod_async, drv.memcpy_dtoh_async, drv.pagelocked_empty = (
        memcpy_htod_async, memcpy_dtoh_async, pagelocked_empty)
    parent = types.ModuleType("pycuda")
    parent.driver = drv
    drv.__parent__ = parent
    return drv


# ---------------------------------------------------------------------------------------------- cuda-python
def fake_cudart(gpu: FakeGpu) -> types.ModuleType:
    """A `cuda.bindings.runtime` module over gpu (runtime API: per-thread current device, default 0).
    Install: sys.modules["cuda"], ["cuda.bindings"], ["cuda.bindings.runtime"] = the parents and the module
    (module.__parents__)."""
    rt = types.ModuleType("cuda.bindings.runtime")

    class _Enum:
        def __init__(self, name, value):
            self.name, self.value = name, value

        def __eq__(self, other):
            return isinstance(other, _Enum) and other.value == self.value

        def __hash__(self):
            return hash(self.value)

        def __repr__(self):
            return f"<{self.name}: {self.value}>"

    errors = {n: _Enum(n, i) for i, n in enumerate(
        ["cudaSuccess", "cudaErrorInvalidValue", "cudaErrorInvalidDevice", "cudaErrorInvalidResourceHandle"])}
    rt.cudaError_t = types.SimpleNamespace(**errors)
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    rt.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeGlobal=0)
    ok = errors["cudaSuccess"]
    pinned: dict[int, object] = {}
    events: dict[int, list] = {}
    rt.calls = []  # (call, thread name, device) of every call: what ran where

    def call(fn):
        def wrapper(*args):
            try:
                rt.calls.append((fn.__name__, threading.current_thread().name, gpu.runtime_device()))
                out = fn(*args)
            except FakeCudaError as e:
                return (errors.get(e.code, errors["cudaErrorInvalidValue"]),) + ((None,) if fn.__name__ not in
                                                                                  _NO_VALUE else ())
            return (ok,) if out is None else (ok, out)

        wrapper.__name__ = fn.__name__
        setattr(rt, fn.__name__, wrapper)
        return wrapper

    _NO_VALUE = {"cudaSetDevice", "cudaFree", "cudaFreeHost", "cudaStreamDestroy", "cudaStreamSynchronize",
                 "cudaMemcpyAsync", "cudaEventRecord", "cudaEventDestroy", "cudaStreamBeginCapture",
                 "cudaGraphLaunch", "cudaGraphExecDestroy", "cudaGraphDestroy"}

    rt.cudaGetErrorString = lambda err: (ok, err.name.encode())

    @call
    def cudaSetDevice(device):
        gpu.set_device(device)

    @call
    def cudaGetDeviceProperties(device):
        major, minor = gpu.compute_capability.split(".")
        return types.SimpleNamespace(name=gpu.gpu_name.encode(), major=int(major), minor=int(minor))

    @call
    def cudaMalloc(nbytes):
        return gpu.malloc(nbytes, gpu.runtime_device())

    @call
    def cudaFree(ptr):
        gpu.free(int(ptr))

    @call
    def cudaMallocHost(nbytes):
        buf = ctypes.create_string_buffer(max(1, nbytes))
        pinned[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    @call
    def cudaFreeHost(ptr):
        pinned.pop(int(ptr))

    @call
    def cudaStreamCreate():
        return gpu.stream_create(gpu.runtime_device())

    @call
    def cudaStreamDestroy(stream):
        gpu.stream(stream, gpu.runtime_device(), "cudaStreamDestroy")
        del gpu.streams[int(stream)]

    @call
    def cudaStreamSynchronize(stream):
        gpu.stream(stream, gpu.runtime_device(), "cudaStreamSynchronize")

    @call
    def cudaMemcpyAsync(dst, src, nbytes, kind, stream):
        gpu.stream(stream, gpu.runtime_device(), "cudaMemcpyAsync")
        if kind == 1:  # host to device
            gpu.mem[int(dst)][:nbytes] = np.frombuffer(ctypes.string_at(int(src), nbytes), np.uint8)
        else:
            ctypes.memmove(int(dst), gpu.mem[int(src)].ctypes.data, nbytes)

    @call
    def cudaEventCreate():
        ev = len(events) + 1
        events[ev] = [0.0, gpu.runtime_device()]
        return ev

    @call
    def cudaEventRecord(event, stream):
        gpu.stream(stream, gpu.runtime_device(), "cudaEventRecord")
        events[event][0] = time.perf_counter()

    @call
    def cudaEventElapsedTime(start, end):
        return (events[end][0] - events[start][0]) * 1e3

    @call
    def cudaEventDestroy(event):
        events.pop(event)

    @call
    def cudaStreamBeginCapture(stream, mode):
        gpu.begin_capture(stream, gpu.runtime_device())

    @call
    def cudaStreamEndCapture(stream):
        return gpu.end_capture(stream, gpu.runtime_device())

    @call
    def cudaGraphInstantiate(graph, flags):
        return graph

    @call
    def cudaGraphLaunch(graph_exec, stream):
        gpu.launch(graph_exec, stream, gpu.runtime_device())

    @call
    def cudaGraphExecDestroy(graph_exec):
        pass

    @call
    def cudaGraphDestroy(graph):
        pass

    cuda_pkg, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda_pkg.bindings, bindings.runtime = bindings, rt
    rt.__parents__ = (cuda_pkg, bindings)
    rt.pinned = pinned
    return rt


def use_pycuda(monkeypatch, gpu: FakeGpu) -> types.ModuleType:
    """The fake pycuda over gpu as `pycuda.driver`, and no cuda-python: cuda_host's "auto" falls back to pycuda."""
    drv = fake_pycuda(gpu)
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "pycuda", drv.__parent__)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    return drv


def use_cuda_python(monkeypatch, gpu: FakeGpu) -> types.ModuleType:
    """The fake cuda-python over gpu as `cuda.bindings.runtime` (cuda_host's first choice)."""
    rt = fake_cudart(gpu)
    cuda_pkg, bindings = rt.__parents__
    monkeypatch.setitem(sys.modules, "cuda", cuda_pkg)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    return rt


def use_host(monkeypatch, host) -> None:
    """`host` (a FakeCuda) as the host CUDA layer of every build and engine (prn_edge.trt.cuda_host.host_cuda)."""
    from prn_edge.trt import cuda_host

    monkeypatch.setattr(cuda_host, "host_cuda", lambda device=0, api="auto": host)


# ---------------------------------------------------------------------------------------------- helper fake
class FakeCuda:
    """The host CUDA layer interface of prn_edge.trt.cuda_host (device_info, malloc, streams,
    copies, events, graphs), as a correct helper on device 0 of its own FakeGpu (`.gpu`)."""

    name = "fake-cuda"
    supports_graphs = True

    def __init__(self, gpu_name: str = "Fake Orin", compute_capability: str = "8.7"):
        self.gpu = FakeGpu(gpu_name, compute_capability)
        self.pinned: list[int] = []
        self.closed = 0

    # the GPU's identity and memory, for tests and the fake TensorRT
    gpu_name = property(lambda self: self.gpu.gpu_name, lambda self, v: setattr(self.gpu, "gpu_name", v))
    compute_capability = property(lambda self: self.gpu.compute_capability,
                                  lambda self, v: setattr(self.gpu, "compute_capability", v))
    mem = property(lambda self: self.gpu.mem)
    captures = property(lambda self: self.gpu.captures)
    launches = property(lambda self: self.gpu.launches)

    def device_info(self, device):
        return {"gpu_name": self.gpu.gpu_name, "compute_capability": self.gpu.compute_capability}

    def current(self):  # device 0 is current on every thread (runtime API default)
        return contextlib.nullcontext()

    def close(self):
        self.closed += 1

    def malloc(self, nbytes):
        return self.gpu.malloc(nbytes, self.gpu.runtime_device())

    def free(self, ptr):
        self.gpu.free(ptr)

    def host_empty(self, shape, dtype):
        arr = np.zeros(shape, dtype)
        self.pinned.append(id(arr))
        return id(arr), arr

    def host_free(self, handle):
        self.pinned.remove(handle)

    def stream(self):
        return self.gpu.stream_create(self.gpu.runtime_device())

    def stream_handle(self, stream):
        return int(stream)

    def stream_free(self, stream):
        del self.gpu.streams[int(stream)]

    def sync(self, stream):
        self.gpu.stream(stream, self.gpu.runtime_device(), "sync")

    def htod(self, dptr, host, nbytes, stream):
        self.gpu.mem[dptr][:nbytes] = np.ascontiguousarray(host).reshape(-1).view(np.uint8)[:nbytes]

    def dtoh(self, host, dptr, nbytes, stream):
        host.reshape(-1).view(np.uint8)[:nbytes] = self.gpu.mem[dptr][:nbytes]

    def event(self):
        return [0.0]

    def record(self, event, stream):
        event[0] = time.perf_counter()

    def elapsed(self, start, end):
        return end[0] - start[0]

    def event_free(self, event):
        pass

    def capture_begin(self, stream):
        self.gpu.begin_capture(stream, self.gpu.runtime_device())

    def capture_end(self, stream):
        graph = self.gpu.end_capture(stream, self.gpu.runtime_device())
        return graph, graph

    def launch(self, graph_exec, stream):
        self.gpu.launch(graph_exec, stream, self.gpu.runtime_device())

    def graph_free(self, graph, graph_exec):
        pass
