"""OpenVINO backend: an OpenVINO IR (.xml + .bin, `prn-edge export --to openvino`) or one of our ONNX artefacts
(backend "openvino") on an Intel CPU, iGPU or whatever OpenVINO's AUTO device picks."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from ..artefact import OUTPUT_MAP, OUTPUT_SCORE, InputSpec, MetadataError, read_ir_metadata, read_metadata
from .base import Engine, EngineError, EngineOptions
from .preprocess import camera_spec_for
from .preprocess import frames_to_model_input

NOT_INSTALLED = ("the openvino backend needs OpenVINO, which is not installed here: pip install '.[openvino]' in "
                 "the prn-edge source folder (or pip install openvino)")
# A physical device (CPU, GPU, GPU.1, NPU) or a virtual one over a list of them (AUTO, AUTO:GPU,CPU, MULTI:...).
_DEVICE = re.compile(r"^(?:[A-Z]+(?:\.\d+)?|(?:AUTO|MULTI|HETERO)(?::[A-Z]+(?:\.\d+)?(?:,[A-Z]+(?:\.\d+)?)*)?)$")
HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
PRECISIONS = ("f32", "bf16", "f16")


@dataclass(frozen=True)
class OpenVINOOptions(EngineOptions):
    """device: "CPU" (default), "GPU" (the iGPU; "GPU.1" for a second one), "AUTO" or "AUTO:GPU,CPU"; checked
    against the devices OpenVINO sees when the engine is made.
    threads: the CPU's INFERENCE_NUM_THREADS (None or 0: OpenVINO's default, every core).
    streams: NUM_STREAMS, parallel inference streams (None: what the performance hint chooses).
    performance_hint: "LATENCY" (default: one frame at a time, as the line runs), "THROUGHPUT",
      "CUMULATIVE_THROUGHPUT" (AUTO only), or None for the device's default.
    inference_precision: "f32" (default), "bf16" or "f16", or None for the device's default. f32 by default
      because the CPU runs bf16 by itself on AMX/AVX512-BF16 CPUs and a GPU runs f16, which moves scores and can
      flip decisions: a lower precision is a choice, like an INT8 artefact.
    max_batch: frames per run for dynamic-batch artefacts."""

    device: str = "CPU"
    streams: Optional[int] = None
    performance_hint: Optional[str] = "LATENCY"
    inference_precision: Optional[str] = "f32"
    max_batch: Optional[int] = 32

    backend: ClassVar[str] = "openvino"

    def __post_init__(self) -> None:
        if isinstance(self.device, str):  # OpenVINO spells devices in capitals; "cpu" means the same
            object.__setattr__(self, "device", self.device.strip().upper())

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise EngineError(f"openvino backend: device={self.device!r}: give CPU, GPU, GPU.N, NPU, AUTO or "
                              "AUTO:DEV1,DEV2")
        self._positive_or_none("streams")
        self._positive_or_none("max_batch")
        if self.performance_hint is not None and self.performance_hint not in HINTS:
            raise EngineError(f"openvino backend: performance_hint={self.performance_hint!r}: choose "
                              f"{', '.join(HINTS)} or None")
        if self.performance_hint == "CUMULATIVE_THROUGHPUT" and not self.device.startswith(("AUTO", "MULTI")):
            raise EngineError(f"openvino backend: performance_hint='CUMULATIVE_THROUGHPUT' needs device AUTO or "
                              f"MULTI (it spreads requests over devices), not {self.device}")
        if self.inference_precision is not None and self.inference_precision not in PRECISIONS:
            raise EngineError(f"openvino backend: inference_precision={self.inference_precision!r}: choose "
                              f"{', '.join(PRECISIONS)} or None")

    def devices(self) -> list[str]:
        """The physical devices named (AUTO alone names none: it chooses among all)."""
        _, _, listed = self.device.partition(":")
        if self.device.startswith(("AUTO", "MULTI", "HETERO")):
            return [d for d in listed.split(",") if d]
        return [self.device]

    def config(self) -> dict[str, Any]:
        """compile_model properties; threads and precision are the CPU's/GPU's, not a virtual device's own."""
        out: dict[str, Any] = {}
        if self.performance_hint:
            out["PERFORMANCE_HINT"] = self.performance_hint
        if self.streams:
            out["NUM_STREAMS"] = int(self.streams)
        physical = {}
        if self.threads:
            physical["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.inference_precision:
            physical["INFERENCE_PRECISION_HINT"] = self.inference_precision
        if not self.device.startswith(("AUTO", "MULTI", "HETERO")):
            if self.device.startswith("GPU"):
                physical.pop("INFERENCE_NUM_THREADS", None)  # CPU threads mean nothing to a GPU
            return {**out, **physical}
        # a virtual device passes per-device properties on to the devices it uses
        return {**out, "DEVICE_PROPERTIES": {d: ({k: v for k, v in physical.items() if k != "INFERENCE_NUM_THREADS"}
                                                 if d.startswith("GPU") else dict(physical))
                                             for d in (self.devices() or ["CPU"])}}


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise EngineError(NOT_INSTALLED) from None
    return openvino


class OpenVINOEngine(Engine):
    """An OpenVINO IR, or an ONNX artefact, run by OpenVINO; options: OpenVINOOptions (or the same as keywords).

    The artefact's metadata (thresholds, input spec) comes from the IR's rt_info or the ONNX metadata; an IR
    without it is refused. uint8 artefacts get the frames as they are; float artefacts get them converted on the
    host, as the ONNX Runtime backend does."""

    backend = "openvino"
    Options = OpenVINOOptions

    def __init__(self, path: str | Path, options: Optional[OpenVINOOptions] = None, **opts):
        o = self.options = OpenVINOOptions.of(options, opts)
        path = Path(path)
        try:
            meta = read_ir_metadata(path) if path.suffix.lower() == ".xml" else read_metadata(path)
        except MetadataError as e:
            raise EngineError(str(e)) from None
        self.model_spec: InputSpec = meta["input_spec"]
        spec = camera_spec_for(self.model_spec, o.channel_order, o.input_hw, o.resize, path.name)
        super().__init__(path, meta, spec, max_batch=o.max_batch)
        ov = _import_openvino()
        self._core = ov.Core()
        self.version = ov.get_version()
        available = list(self._core.available_devices)
        # "GPU" names the first GPU also where there are several (GPU.0, GPU.1)
        unknown = [d for d in o.devices() if d not in available and d not in {a.split(".")[0] for a in available}]
        if unknown:
            raise EngineError(f"openvino backend: device {', '.join(unknown)} is not available here (available: "
                              f"{', '.join(available) or 'none'}); choose one of them, or AUTO. An Intel iGPU "
                              "needs its OpenCL driver (intel-opencl-icd) to show as GPU")
        self._compiled = None
        self._request = None

    def _activate(self) -> None:
        try:
            model = self._core.read_model(str(self.path))
            self._compiled = self._core.compile_model(model, self.options.device, self.options.config())
        except Exception as e:
            raise EngineError(f"OpenVINO cannot load {self.path} on {self.options.device} ({e.__class__.__name__}: "
                              f"{str(e).strip()[:300]}); if the file is fine, try another device or "
                              "performance_hint") from None
        inputs = {n for i in self._compiled.inputs for n in i.get_names()}
        outputs = {n for o in self._compiled.outputs for n in o.get_names()}
        if self.model_spec.name not in inputs or not {OUTPUT_MAP, OUTPUT_SCORE} <= outputs:
            self._compiled = None
            raise EngineError(f"{self.path}: inputs {sorted(inputs)} / outputs {sorted(outputs)} do not match its "
                              f"metadata (input {self.model_spec.name!r}, outputs {OUTPUT_MAP}, {OUTPUT_SCORE}); "
                              "export it again")
        self._request = self._compiled.create_infer_request()

    def _release(self) -> None:
        self._request = None
        self._compiled = None

    def _property(self, name: str) -> Any:
        try:
            value = self._compiled.get_property(name)
        except Exception:  # not every device reports every property
            return None
        if hasattr(value, "get_type_name"):  # an element type (inference precision): f32, bf16...
            return value.get_type_name()
        return str(value).split(".")[-1] if not isinstance(value, (int, float, str, list)) else value  # an enum

    def describe(self) -> dict[str, Any]:
        """Device(s) OpenVINO runs on, threads, streams, hint and inference precision (once active: what the
        compiled model reports, not only what was asked for)."""
        o = self.options
        out = {**super().describe(), "openvino": self.version.split("-")[0], "device": o.device}
        if self._compiled is None:
            return {**out, "threads": o.threads or "default", "streams": o.streams or "auto",
                    "hint": o.performance_hint or "default", "inference_precision": o.inference_precision or "default"}
        devices = self._property("EXECUTION_DEVICES")
        threads = self._property("INFERENCE_NUM_THREADS")
        return {**out, "execution_devices": devices or o.device,
                "threads": threads if threads else (o.threads or "default"),
                "streams": self._property("NUM_STREAMS") or o.streams or "auto",
                "hint": self._property("PERFORMANCE_HINT") or o.performance_hint or "default",
                "inference_precision": self._property("INFERENCE_PRECISION_HINT") or o.inference_precision or "default"}

    def _run(self, frames: np.ndarray, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        x = frames if self.model_spec.format == "uint8" else frames_to_model_input(frames, self._input_spec)
        t1 = time.perf_counter()
        result = self._request.infer({self.model_spec.name: x})
        maps, scores = result[OUTPUT_MAP], result[OUTPUT_SCORE]
        t2 = time.perf_counter()
        timings["preprocess"] += t1 - t0
        timings["compute"] += t2 - t1
        return maps[:, 0], scores
