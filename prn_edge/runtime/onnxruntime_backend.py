"""ONNX Runtime backend: CPU everywhere, CUDA / TensorRT execution providers where onnxruntime-gpu has them."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence, Union

import numpy as np

from ..artefact import OUTPUT_MAP, OUTPUT_SCORE, InputSpec, MetadataError, choose_resize, read_metadata
from ..input_policy import placement
from .base import Engine, EngineError, EngineOptions
from .preprocess import frames_to_model_input

_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# "auto" order; the TensorRT EP is only used when asked for (it builds an engine when the session starts).
_AUTO = ("CUDAExecutionProvider", "CPUExecutionProvider")


def camera_spec_for(model_spec: InputSpec, channel_order: Optional[str], input_hw: Optional[Sequence[int]],
                    resize: str, source: str) -> InputSpec:
    """The frames an engine takes: a uint8 artefact's own spec, or host-converted frames for a float model."""
    if model_spec.format == "uint8":
        given_hw = None if input_hw is None else tuple(int(v) for v in input_hw)
        if (channel_order not in (None, model_spec.channel_order)
                or given_hw not in (None, (model_spec.height, model_spec.width))):
            raise EngineError(
                f"{source} takes {model_spec.channel_order} frames of {model_spec.height}x{model_spec.width} "
                "(fixed at export); drop channel_order/input_hw, or export again for this camera")
        return model_spec
    order = channel_order or "rgb"
    if order not in ("rgb", "bgr", "mono"):
        raise EngineError(f"channel_order={order!r}: choose 'rgb', 'bgr' or 'mono'")
    h, w = model_spec.model_hw if input_hw is None else (int(input_hw[0]), int(input_hw[1]))
    if model_spec.fit == "tiles" and (h, w) != model_spec.model_hw:
        # The caller tiles, not the engine: an Engine maps N frames to N maps (batching, SharedEngine, Triton and
        # the line's queue count on it), and prn_edge.tiling.TileGrid is the one tiling, used by the line
        # (region.tiles) and by evaluation alike. So a tiles model takes tile-size frames and nothing is resized.
        raise EngineError(
            f"{source} takes {model_spec.model_width}x{model_spec.model_height} tiles cut at native resolution "
            f"(input policy tiles), not {w}x{h} frames resized into it; drop input_hw and split images into tiles "
            "(prn_edge.tiling.TileGrid; on the line: region.tiles: true)")
    try:
        where = placement((h, w), model_spec.model_hw, model_spec.fit)
        method = choose_resize((h, w), (where.h, where.w), resize)
    except Exception as e:
        raise EngineError(str(e)) from None
    # the model's own batch, model input, normalization and input policy; the frames' size, channels and resize
    return replace(model_spec, name="frames(host)", format="uint8", layout="NHWC", height=h, width=w,
                   channels=1 if order == "mono" else 3, channel_order=order, resize=method, scale=1.0 / 255.0,
                   value_range=(0.0, 255.0))


def resolve_providers(providers, available: Sequence[str]) -> list:
    """'auto' | name | list of names/aliases/(name, options) -> the list ONNX Runtime takes."""
    if providers in (None, "auto"):
        return [p for p in _AUTO if p in available]
    if isinstance(providers, str):
        providers = [providers]
    out = []
    for p in providers:
        name, opts = (p if isinstance(p, tuple) else (p, None))
        name = _ALIASES.get(str(name).lower(), name)
        if name not in available:
            raise EngineError(f"ONNX Runtime provider {name} is not available here (available: {list(available)}); "
                              "install onnxruntime-gpu for CUDA/TensorRT, or use providers='auto'")
        out.append((name, opts) if opts else name)
    if "CPUExecutionProvider" not in [o if isinstance(o, str) else o[0] for o in out]:
        out.append("CPUExecutionProvider")  # fallback for nodes a GPU provider does not take
    return out


@dataclass(frozen=True)
class OnnxRuntimeOptions(EngineOptions):
    """providers: "auto" (CUDA if available, then CPU), "cpu", "cuda", "tensorrt", or a list (names, aliases,
    or (name, options) tuples). threads: intra-op threads (None or 0: ONNX Runtime's default).
    max_batch: frames per run for dynamic-batch artefacts. trt_cache_dir: the TensorRT provider's engine
    cache (default: beside the ONNX, NAME.ort_trt_cache)."""

    providers: Any = "auto"
    max_batch: Optional[int] = 32
    trt_cache_dir: Optional[Union[str, Path]] = None

    backend: ClassVar[str] = "onnxruntime"

    def validate(self) -> None:
        super().validate()
        self._positive_or_none("max_batch")


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
        resolved = resolve_providers(o.providers, ort.get_available_providers())
        cache = Path(o.trt_cache_dir) if o.trt_cache_dir else path.with_suffix(".ort_trt_cache")
        self.providers = [
            ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                           "trt_timing_cache_enable": True})
            if p == "TensorrtExecutionProvider" else p for p in resolved]
        self.threads = o.threads
        self._session = None

    def _activate(self) -> None:
        ort = self._ort
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=so, providers=self.providers)
        except Exception as e:
            raise EngineError(f"ONNX Runtime cannot load {self.path} ({e.__class__.__name__}: {str(e)[:200]}); "
                              "the file may be corrupt: export it again with `prn-edge export`") from None
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
        """Providers the session runs with (once active: what ONNX Runtime took, not only what was asked for)."""
        asked = [p if isinstance(p, str) else p[0] for p in self.providers]
        return {**super().describe(), "providers": self.active_providers or asked,
                "threads": self.threads or "default"}

    def _run(self, frames: np.ndarray, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        x = frames if self.model_spec.format == "uint8" else frames_to_model_input(frames, self._input_spec)
        t1 = time.perf_counter()
        maps, scores = self._session.run([OUTPUT_MAP, OUTPUT_SCORE], {self.model_spec.name: x})
        t2 = time.perf_counter()
        timings["preprocess"] += t1 - t0
        timings["compute"] += t2 - t1
        return maps[:, 0], scores
