"""A fast artefact that screens every frame and a reference that decides the borderline ones.

An INT8 artefact moves every image score by a little noise (its calibration run measures it: `score_noise`); a
part whose FP32 score lies near the threshold can then be decided the other way. On real categories many parts do
(Magnetic Tile Defect: a fifth of the test scores within 0.05 of the threshold), so INT8 alone decided 4% of the
test parts otherwise than FP32 (docs/openvino-int8.md). The cascade runs the fast artefact on every frame and runs
the reference (the run's FP32 model) again on the frames whose fast score lies within `margin` of the fast
artefact's threshold, and those frames take the reference's map, score and decision. A frame outside the band is
decided otherwise than the reference would only when INT8 moved its score by more than the margin, so the margin
sets the agreement; its cost is the reference's time on the borderline share of the parts.

    with open_engine("calibration/mtd/model.int8.xml", backend="cascade") as engine:  # reference: model.fp32.onnx
        result = engine.infer(frames)
        engine.last_rerun                         # how many of those frames the reference decided

The margin comes from the calibration run (the fast artefact's `cascade_margin`: the smallest that lets the
validation scores expect the run's cascade agreement, 99% by default), or is given. Options: the common ones
(threads, channel_order, input_hw, resize) go to both engines; `reference` (default: model.fp32.onnx beside the
fast artefact, as a calibration run writes it), `reference_backend` and `fast_backend` ("auto": by suffix, and the
reference of an OpenVINO fast part on OpenVINO).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from ..artefact import sha256_file
from .base import Engine, EngineError, EngineOptions, InferResult, zero_timings

DEFAULT_REFERENCE = "model.fp32.onnx"  # what a calibration run writes beside its INT8 artefact


def _frames_and_maps(spec) -> tuple:
    return spec.height, spec.width, spec.channels, spec.channel_order, spec.model_height, spec.model_width


def _describe(spec) -> str:
    return (f"{spec.height}x{spec.width}x{spec.channels} {spec.channel_order} frames (maps "
            f"{spec.model_height}x{spec.model_width})")


def _part(path: Path, backend: str, o: "CascadeOptions", **kw) -> Engine:
    """One of the two engines, with the common options. The two take the cores in turns: ONNX Runtime's threads
    spinning for work after a run would slow the other's next run (OpenVINO INT8 7.4 -> 11.3 ms on 2 cores), so an
    ONNX Runtime part does not spin."""
    from . import backend_for, open_engine

    name = backend if backend != "auto" else backend_for(path)
    quiet = {"spinning": False} if name == "onnxruntime" else {}
    return open_engine(path, backend=name, **o.common(), **quiet, **kw)


def _reference_backend(asked: str, fast: Engine, reference: Path) -> str:
    """"auto": an OpenVINO fast part's FP32 model runs on OpenVINO too (it reads the ONNX; its decisions are ONNX
    Runtime's on every MTD test image, and the two share one runtime: the reference's runs cost 10.4 ms against
    ONNX Runtime's 14, measured in a cascade, docs/openvino-int8.md); otherwise by the reference's suffix."""
    if asked == "auto" and fast.backend == "openvino" and reference.suffix.lower() in (".onnx", ".xml"):
        return "openvino"
    return asked


@dataclass(frozen=True)
class CascadeOptions(EngineOptions):
    reference: Optional[str] = None
    reference_backend: str = "auto"
    fast_backend: str = "auto"
    margin: Optional[float] = None

    backend: ClassVar[str] = "cascade"
    paths: ClassVar[tuple[str, ...]] = ("reference",)

    def validate(self) -> None:
        super().validate()
        m = self.margin
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m < 1):
            raise EngineError(f"cascade backend: margin={m!r}: must be in [0, 1), a distance in image score from 0 "
                              "(the fast artefact decides everything); leave it out for the calibration run's")
        for name in ("reference_backend", "fast_backend"):
            if getattr(self, name) == "cascade":
                raise EngineError(f"cascade backend: {name}='cascade': a cascade's parts are single artefacts")

    def common(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in EngineOptions.names()}


class CascadeEngine(Engine):
    backend = "cascade"
    Options = CascadeOptions

    def __init__(self, path: str | Path, options: Optional[CascadeOptions] = None, **opts):
        o = CascadeOptions.of(options, opts)
        path = Path(path)
        reference = Path(o.reference) if o.reference else path.parent / DEFAULT_REFERENCE
        if not reference.is_file():
            raise EngineError(f"cascade backend: the reference artefact {reference} does not exist; give "
                              "reference=... (the FP32 model the fast artefact was calibrated from; a relative path "
                              "is taken from the current folder, in a line config from the config's folder)")
        if reference.resolve() == path.resolve():
            raise EngineError(f"cascade backend: {path} is its own reference; give the fast (INT8) artefact and "
                              "its FP32 model")
        # The gate of the fast artefact is checked on the cascade (its metadata) by open_engine, with the caller's
        # allow_failed_gate; the reference is the FP32 model.
        self.fast = _part(path, o.fast_backend, o, allow_failed_gate=True)
        self.reference = _part(reference, _reference_backend(o.reference_backend, self.fast, reference), o)
        ours, theirs = (e.metadata.get("checkpoint_sha256") for e in (self.fast, self.reference))
        if ours and theirs and ours != theirs:
            raise EngineError(f"cascade backend: the reference {reference} was exported from another checkpoint than "
                              f"{path.name} (checkpoint_sha256 {theirs[:12]} against {ours[:12]}): it would decide "
                              "the borderline parts with another model; give the FP32 model of the same calibration "
                              "run (its model.fp32.onnx)")
        a, b = self.fast.input_spec, self.reference.input_spec
        if _frames_and_maps(a) != _frames_and_maps(b):
            raise EngineError(f"cascade backend: {path.name} takes {_describe(a)} but its reference {reference.name} "
                              f"{_describe(b)}: both must take the same camera frames and give maps of one size "
                              "(the INT8 artefact and the FP32 model of one calibration run do)")
        margin = o.margin if o.margin is not None else self.fast.metadata.get("cascade_margin")
        if margin is None:
            raise EngineError(f"cascade backend: {path.name} carries no cascade_margin (a calibration run before "
                              "the cascade wrote none): give the margin (engine.options.margin in a line config, "
                              "PATH@cascade?margin=M in prn-edge bench), e.g. 1.25 x the score_noise of the kept "
                              "attempt in the run's manifest.json, or calibrate again")
        self.margin = float(margin)
        self.last_rerun = 0
        self._reference_label = f"{reference.name}@{sha256_file(reference)[:12]}"
        meta = dict(self.fast.metadata)
        meta["cascade"] = {"reference": reference.name, "margin": self.margin,
                           "reference_threshold": float(self.reference.metadata["image_threshold"])}
        precisions = [e.metadata.get("precision", "fp32") for e in (self.fast, self.reference)]
        meta["precision"] = f"{precisions[0]}, {precisions[1]} within {self.margin:.3g} of the threshold"
        super().__init__(path, meta, a)

    def _activate(self) -> None:
        self.fast.activate()
        self.reference.activate()
        # A warm-up of the cascade (the line's, on blank frames) rarely lands in the band: the reference's first
        # borderline part would pay its cold start (64 ms against 37 warm, measured). It is warmed here.
        s = self.reference.input_spec
        self.reference.infer(np.zeros((s.batch or 1, s.height, s.width, s.channels), np.uint8))

    def _release(self) -> None:
        try:
            self.fast.close()
        finally:
            self.reference.close()

    def _run(self, frames: np.ndarray, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError("the cascade decides in infer: its frames take two artefacts' thresholds")

    def describe(self) -> dict[str, Any]:
        """Both engines, the margin, and which reference file decides (name@sha256 prefix, for the records)."""
        return {"backend": self.backend, "precision": self.metadata["precision"], "margin": self.margin,
                "reference_artefact": self._reference_label, "fast": self.fast.describe(),
                "reference": self.reference.describe()}

    def infer(self, frames: np.ndarray) -> InferResult:
        """The fast artefact's result, with the frames whose fast score lies within the margin of its threshold
        replaced by the reference's result (map, score, normalized score and decision by the reference's own
        threshold). `last_rerun` says how many frames that was."""
        if not self._active:
            raise EngineError(f"{self.path.name}: engine is not active; use `with open_engine(...) as engine:` "
                              "or call engine.activate() first")
        frames = self.check_frames(frames)
        out = self.fast.infer(frames)
        timings = dict(self.fast.last_timings)
        near = np.abs(out.scores.astype(np.float64) - float(self.fast.metadata["image_threshold"])) < self.margin
        self.last_rerun = int(near.sum())
        if self.last_rerun:
            ref = self.reference.infer(frames[near])
            t = time.perf_counter()
            for name in ("maps", "scores", "normalized_scores", "decisions"):
                getattr(out, name)[near] = getattr(ref, name)
            for stage, seconds in self.reference.last_timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
            timings["postprocess"] += time.perf_counter() - t
        self.last_timings = {**zero_timings(), **timings}
        return out

