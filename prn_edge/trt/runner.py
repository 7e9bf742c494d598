"""The TensorRT runner (8.5 .. 10.x and 11.x): a serialized engine plus its manifest `NAME.json` beside it, behind
the one Engine contract (prn_edge.runtime.base), registered in prn_edge.runtime as the "tensorrt" backend.

Nothing here imports tensorrt or CUDA at module level: `TensorRTEngine(...)` does, and says what to do when
they are missing. Before either is imported, the engine file is checked against its manifest (sha256), and the
manifest against this host's TensorRT and GPU (compatibility.py). The run follows the 8.5+ name-based API (the
only one left in 10/11): set_tensor_address once per buffer, set_input_shape for a dynamic batch,
execute_async_v3 on one stream, pinned host buffers with async copies on that stream, and optionally a CUDA graph
per batch size (captured after one warm-up enqueue, as TensorRT's docs require). Host-side CUDA is cuda_host's
(cuda-python or pycuda, `cuda_api`); every CUDA call runs inside its `current()` on the calling thread.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

import numpy as np

from ..artefact import OUTPUT_MAP, OUTPUT_SCORE, InputSpec, ManifestError, MetadataError, decode_metadata
from ..artefact.manifest import engine_manifest_path, read_engine_manifest
from ..runtime.base import Engine, EngineError, EngineOptions
from ..runtime.preprocess import camera_spec_for
from ..runtime.preprocess import frames_to_model_input
from . import cuda_host
from .capability import capabilities
from .compatibility import check_manifest, verified_plan

_NOT_INSTALLED = ("TensorRT is not installed (cannot import tensorrt) on this host, so {path} cannot run here: "
                  "use the onnxruntime backend with the ONNX it was built from (open_engine('MODEL.onnx')), "
                  "or install tensorrt on a GPU host (JetPack ships it; on x86: pip install tensorrt cuda-python)")


def read_manifest(engine_path: str | Path) -> dict:
    try:
        return read_engine_manifest(engine_path)
    except ManifestError as e:
        raise EngineError(str(e)) from None


def _import_tensorrt(path) -> Any:
    try:
        import tensorrt as trt  # noqa: WPS433 (import inside: tensorrt is optional)
    except ImportError:
        raise EngineError(_NOT_INSTALLED.format(path=path)) from None
    return trt


def current_device_info(device: int = 0, trt=None, cuda=None) -> dict:
    """{"tensorrt_version", "compute_capability", "gpu_name", "cuda_api"} of this host (needs TensorRT and CUDA)."""
    trt = trt or _import_tensorrt("this engine")
    cuda = cuda or cuda_host.host_cuda(device)
    return {"tensorrt_version": trt.__version__, **cuda.device_info(device), "cuda_api": cuda.name}


# ---------------------------------------------------------------------------------------------- engine
@dataclass(frozen=True)
class TensorRTOptions(EngineOptions):
    """device: the CUDA device the engine runs on (set in every thread that uses it).
    use_cuda_graph: capture the enqueue of each batch size once and replay it (cuda-python only).
    cuda_api: the host CUDA layer: "auto" (cuda-python, else pycuda), "cuda-python" or "pycuda".
    channel_order / input_hw / resize: camera description for float-input engines (as the onnxruntime backend).
    threads is accepted for a uniform config and ignored: the engine computes on the GPU."""

    device: int = 0
    use_cuda_graph: bool = False
    cuda_api: str = "auto"

    backend: ClassVar[str] = "tensorrt"
    ignored: ClassVar[Mapping[str, str]] = {"threads": "TensorRT computes on the GPU; it has no CPU thread count"}

    def validate(self) -> None:
        super().validate()
        if isinstance(self.device, bool) or not isinstance(self.device, int) or self.device < 0:
            raise EngineError(f"tensorrt backend: device={self.device!r}: give a CUDA device number (0, 1, ...)")
        if not isinstance(self.use_cuda_graph, bool):  # a YAML string such as "no" would be truthy
            raise EngineError(f"tensorrt backend: use_cuda_graph={self.use_cuda_graph!r}: give true or false")
        if self.cuda_api not in cuda_host.CUDA_APIS:
            raise EngineError(f"tensorrt backend: cuda_api={self.cuda_api!r}: choose one of {cuda_host.CUDA_APIS}")


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
        verified_plan(path, manifest)  # before any TensorRT or CUDA code runs
        try:
            meta = decode_metadata(manifest.get("metadata") or {}, f"manifest {engine_manifest_path(path).name}")
        except MetadataError as e:
            raise EngineError(str(e)) from None
        self.manifest = manifest
        self.model_spec: InputSpec = meta["input_spec"]
        spec = camera_spec_for(self.model_spec, o.channel_order, o.input_hw, o.resize, path.name)
        super().__init__(path, meta, spec)
        self._trt = _import_tensorrt(path)
        self._cuda = cuda_host.host_cuda(o.device, o.cuda_api)
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
        if self.manifest.get("version_compatible") and capabilities(trt.__version__).version_compatible:
            # A version-compatible engine built without EXCLUDE_LEAN_RUNTIME embeds the lean runtime (host code);
            # TensorRT refuses to deserialize it unless the runtime allows host code (TensorRT docs, "Version
            # Compatibility", docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/advanced.html; the
            # attribute exists from 8.6, as version compatibility does). Only our own manifest asks for it.
            self._runtime.engine_host_code_allowed = True
        # the bytes TensorRT gets are the ones checked against the manifest (the file may change after opening)
        engine = self._runtime.deserialize_cuda_engine(verified_plan(self.path, self.manifest))
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
