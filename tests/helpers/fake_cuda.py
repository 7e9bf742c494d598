"""A fake of the host-side CUDA helper interface of prn_edge.runtime.tensorrt_backend, for machines without a
GPU: shared by the runtime and build tests. Named as a fake: nothing here touches CUDA."""
from __future__ import annotations

import time

import numpy as np


class FakeCuda:
    """Host-side CUDA API stand-in: 'device' memory is numpy bytes; enqueued work runs at once, or is
    recorded while a stream capture is open (a CUDA graph) and replayed on launch."""

    name = "fake-cuda"
    supports_graphs = True

    def __init__(self, gpu_name: str = "Fake Orin", compute_capability: str = "8.7"):
        self.gpu_name, self.compute_capability = gpu_name, compute_capability
        self.mem: dict[int, np.ndarray] = {}
        self.pinned: list[int] = []
        self.next_ptr = 4096
        self.capturing, self.launches, self.captures = None, 0, 0

    def device_info(self, device):
        return {"gpu_name": self.gpu_name, "compute_capability": self.compute_capability}

    def malloc(self, nbytes):
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + nbytes + 256
        self.mem[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def free(self, ptr):
        del self.mem[ptr]

    def host_empty(self, shape, dtype):
        arr = np.zeros(shape, dtype)
        self.pinned.append(id(arr))
        return id(arr), arr

    def host_free(self, handle):
        self.pinned.remove(handle)

    def stream(self):
        return "stream0"

    def stream_handle(self, stream):
        return 1234

    def stream_free(self, stream):
        pass

    def sync(self, stream):
        pass

    def submit(self, fn):
        if self.capturing is not None:
            self.capturing.append(fn)
        else:
            fn()

    def htod(self, dptr, host, nbytes, stream):
        self.mem[dptr][:nbytes] = np.ascontiguousarray(host).reshape(-1).view(np.uint8)[:nbytes]

    def dtoh(self, host, dptr, nbytes, stream):
        host.reshape(-1).view(np.uint8)[:nbytes] = self.mem[dptr][:nbytes]

    def event(self):
        return [0.0]

    def record(self, event, stream):
        event[0] = time.perf_counter()

    def elapsed(self, start, end):
        return end[0] - start[0]

    def event_free(self, event):
        pass

    def capture_begin(self, stream):
        self.capturing = []

    def capture_end(self, stream):
        graph, self.capturing = self.capturing, None
        self.captures += 1
        return graph, graph

    def launch(self, graph_exec, stream):
        self.launches += 1
        for fn in graph_exec:
            fn()

    def graph_free(self, graph, graph_exec):
        pass
