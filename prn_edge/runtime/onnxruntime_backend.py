"""ONNX Runtime backend: CPU everywhere, CUDA / TensorRT execution providers where onnxruntime-gpu has them."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import numpy as np

from ..artefact import (OUTPUT_MAP, OUTPUT_SCORE, InputSpec, MetadataError, read_metadata,
                        sha256_file)
from ..artefact.onnx_header import op_types
from .base import Engine, EngineError, EngineOptions, _whole
from .ort_providers import (CONV_ALGO_SEARCH, GPU_PROVIDERS, TENSORRT, check_active, provider_names,
                            session_providers)
from .preprocess import camera_spec_for, frames_to_model_input


@dataclass(frozen=True)
class OnnxRuntimeOptions(EngineOptions):
    """providers: "auto" (CUDA where this onnxruntime has it, else the CPU), "cpu", "cuda", "tensorrt", or a list
      in priority order ("tensorrt,cuda" or [tensorrt, cuda]); a GPU provider that is asked for and missing, or
      that ONNX Runtime cannot start, is an EngineError, never a silent run on the CPU.
    threads: intra-op threads (None or 0: ONNX Runtime's default). max_batch: frames per run (dynamic batch).
    device_id: the GPU, for the CUDA and TensorRT providers.
    trt_fp16: the TensorRT EP may run layers in FP16 (a choice, like an INT8 artefact: it moves scores). INT8 is
      the artefact's: a Q/DQ model (`prn-edge calibrate --flavour tensorrt`) runs INT8 from its own scales.
    trt_cache_dir: where the TensorRT EP keeps built engines (default: beside the ONNX, NAME.ort_trt_cache), one
      folder per artefact hash and precision inside it, and the GPU's timing cache (trt_timing_cache).
    trt_workspace_mb: TensorRT's workspace (None: ONNX Runtime's default; keep it small on a Jetson, e.g. 256).
    cudnn_conv_algo_search: the CUDA EP's EXHAUSTIVE (its default), HEURISTIC or DEFAULT.
    tf32: the CUDA EP's use_tf32 (None: ONNX Runtime's default, TF32 on Ampere and later, Orin included).
    spinning: whether idle intra-op threads spin waiting for work (ONNX Runtime's default, true: the lowest latency
      when this session has the cores to itself). Off where another runtime shares the cores in turns: a cascade's
      reference spinning after each run slowed the OpenVINO INT8 run next to it from 7.4 to 11.3 ms (2 cores)."""

    providers: Any = "auto"
    max_batch: Optional[int] = 32
    device_id: int = 0
    trt_fp16: bool = False
    trt_cache_dir: Optional[Union[str, Path]] = None
    trt_timing_cache: bool = True
    trt_workspace_mb: Optional[int] = None
    cudnn_conv_algo_search: Optional[str] = None
    tf32: Optional[bool] = None
    spinning: bool = True

    backend: ClassVar[str] = "onnxruntime"
    paths: ClassVar[tuple[str, ...]] = ("trt_cache_dir",)

    def __post_init__(self) -> None:
        # "cuda", ["tensorrt", "cuda"], "tensorrt,cuda" (a URL query, a --set) all mean one list of ONNX Runtime's names
        object.__setattr__(self, "providers", tuple(provider_names(self.providers)))
        if isinstance(self.cudnn_conv_algo_search, str):
            object.__setattr__(self, "cudnn_conv_algo_search", self.cudnn_conv_algo_search.upper())

    def validate(self) -> None:
        super().validate()
        self._positive_or_none("max_batch")
        self._positive_or_none("trt_workspace_mb")
        if not (_whole(self.device_id) and self.device_id >= 0):
            raise EngineError(f"onnxruntime backend: device_id={self.device_id!r}: give a GPU number >= 0")
        for name in ("trt_fp16", "trt_timing_cache", "tf32", "spinning"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (name == "tf32" and value is None)):
                raise EngineError(f"onnxruntime backend: {name}={value!r}: give true or false")
        if self.cudnn_conv_algo_search not in (None,) + CONV_ALGO_SEARCH:
            raise EngineError(f"onnxruntime backend: cudnn_conv_algo_search={self.cudnn_conv_algo_search!r}: choose "
                              f"{', '.join(CONV_ALGO_SEARCH)} or None")
        gpu_only = [n for n, v in (("trt_fp16", self.trt_fp16), ("trt_workspace_mb", self.trt_workspace_mb))
                    if v] if TENSORRT not in self.providers else []
        if gpu_only:
            raise EngineError(f"onnxruntime backend: {', '.join(gpu_only)} is for the TensorRT provider; add "
                              "tensorrt to providers (now: " + ", ".join(self.providers) + ")")


class OnnxRuntimeEngine(Engine):
    """An exported ONNX artefact run by ONNX Runtime; options: OnnxRuntimeOptions (or the same as keywords).

    uint8 artefacts get the frames as they are (preprocessing is in the graph). Float artefacts get them
    converted on the host by prn_edge.runtime.preprocess (the same steps the uint8 graphs run); for those,
    `channel_order` and `input_hw` describe the camera (default: RGB at the model size).
    """

    backend = "onnxruntime"
    Options = OnnxRuntimeOptions

    def __init__(self, path: str | Path, options: Optional[OnnxRuntimeOptions] = None, **opts):
        o = self.options = OnnxRuntimeOptions.of(options, opts)
        path = Path(path)
        try:
            meta = read_metadata(path)
        except MetadataError as e:
            raise EngineError(str(e)) from None
        self.model_spec: InputSpec = meta["input_spec"]
        spec = camera_spec_for(self.model_spec, o.channel_order, o.input_hw, o.resize, path.name)
        super().__init__(path, meta, spec, max_batch=o.max_batch)
        import onnxruntime as ort

        self._ort = ort
        # only the TensorRT EP needs the artefact's hash (its engine cache) and whether it is Q/DQ (INT8)
        trt = TENSORRT in o.providers
        qdq = trt and "QuantizeLinear" in op_types(path.read_bytes())
        self.providers = session_providers(o, ort.get_available_providers(), path, sha256_file(path) if trt else "",
                                           qdq, ort.__version__)
        self.threads = o.threads
        self._session = None

    def _activate(self) -> None:
        ort = self._ort
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
        so.inter_op_num_threads = 1
        if not self.options.spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        asked = [name for name, _ in self.providers]
        # warnings shown when a GPU provider is asked for: ONNX Runtime says there why it could not start one
        so.log_severity_level = 2 if set(asked) & set(GPU_PROVIDERS) else 3
        for name, opts in self.providers:
            if name == TENSORRT:
                Path(opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=so, providers=self.providers)
        except Exception as e:
            if TENSORRT in asked:
                raise EngineError(f"ONNX Runtime's TensorRT provider cannot build {self.path} "
                                  f"({e.__class__.__name__}: {str(e)[:300]}); an INT8 model must be the TensorRT "
                                  "flavour (`prn-edge calibrate --flavour tensorrt`: symmetric INT8); or drop tensorrt "
                                  "from providers") from None
            raise EngineError(f"ONNX Runtime cannot load {self.path} ({e.__class__.__name__}: {str(e)[:200]}); "
                              "the file may be corrupt: export it again with `prn-edge export`") from None
        try:
            check_active(asked, self._session.get_providers())
        except EngineError:
            self._session = None
            raise
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if self.model_spec.name not in inputs or not {OUTPUT_MAP, OUTPUT_SCORE} <= outputs:
            self._session = None
            raise EngineError(f"{self.path}: inputs {list(inputs)} / outputs {sorted(outputs)} do not match its "
                              f"metadata (input {self.model_spec.name!r}, outputs {OUTPUT_MAP}, {OUTPUT_SCORE}); "
                              "export it again")

    def _release(self) -> None:
        self._session = None

    @property
    def active_providers(self) -> list[str]:
        return self._session.get_providers() if self._session is not None else []

    def describe(self) -> dict[str, Any]:
        """Providers the session runs with (once active: what ONNX Runtime took, not only what was asked for), and
        for a GPU provider its device, and the TensorRT EP's precision and engine cache."""
        out = {**super().describe(), "providers": self.active_providers or [n for n, _ in self.providers],
               "threads": self.threads or "default"}
        if not self.options.spinning:
            out["spinning"] = False
        opts = dict(self.providers)
        gpu = next((opts[p] for p in GPU_PROVIDERS if p in opts), None)
        if gpu is not None:
            out["device_id"] = gpu["device_id"]
        if TENSORRT in opts:
            trt = opts[TENSORRT]
            out["trt_precision"] = ("int8 (Q/DQ)" if trt["trt_int8_enable"] else
                                    "fp16" if trt["trt_fp16_enable"] else "fp32")
            out["trt_engine_cache"] = trt["trt_engine_cache_path"]
        return out

    def _run(self, frames: np.ndarray, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        x = frames if self.model_spec.format == "uint8" else frames_to_model_input(frames, self._input_spec)
        t1 = time.perf_counter()
        maps, scores = self._session.run([OUTPUT_MAP, OUTPUT_SCORE], {self.model_spec.name: x})
        t2 = time.perf_counter()
        timings["preprocess"] += t1 - t0
        timings["compute"] += t2 - t1
        return maps[:, 0], scores
