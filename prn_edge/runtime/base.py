"""One inference contract for every backend (PyTorch, ONNX Runtime, TensorRT), in the manner of Polygraphy.

    with open_engine("model.onnx") as engine:       # __enter__ loads/activates, __exit__ frees
        result = engine.infer(frames)                # uint8 (N, H, W, C) camera frames
        result.maps, result.scores, result.normalized_scores, result.decisions
        engine.last_timings                          # seconds per stage of that call

Backends implement `_activate`, `_release` and `_run(frames, timings) -> (maps (n, Hm, Wm), scores (n,))`;
validation and batching live here, and the artefact's one normalization and decision rule
(prn_edge.artefact.decision) is applied here, so every backend decides alike.
"""
from __future__ import annotations

import abc
import dataclasses
import difflib
import logging
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence, TypeVar

import numpy as np

from ..artefact import InputSpec, decide, normalize_scores
from ..errors import PrnEdgeError

STAGES = ("preprocess", "h2d", "compute", "d2h", "postprocess")


class EngineError(PrnEdgeError):
    """An artefact cannot be loaded or run here, or the frames do not fit it; the message says what to do."""


_O = TypeVar("_O", bound="EngineOptions")


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class EngineOptions:
    """What every backend accepts (the line and bench pass them whatever the backend); a backend's options
    dataclass, beside its implementation, extends this with its own fields, defaults and checks.

    threads: CPU threads for backends that compute on the CPU (None: the backend's default).
    channel_order / input_hw / resize: the camera frames, for float-input artefacts (converted on the host);
      uint8 artefacts take the frames fixed at export and refuse a different description.
    A backend lists in `ignored` the common options it has no use for (with why): they are accepted, and a
    value given for one is logged, not refused, so one config serves every backend.
    """

    threads: Optional[int] = None
    channel_order: Optional[str] = None
    input_hw: Optional[Sequence[int]] = None
    resize: str = "auto"

    backend: ClassVar[str] = "?"
    ignored: ClassVar[Mapping[str, str]] = {}  # common option -> why this backend does not use it
    paths: ClassVar[tuple[str, ...]] = ()  # options that are paths: a line config takes them from its folder

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_kwargs(cls: type[_O], opts: Mapping[str, Any]) -> _O:
        """Options from keyword arguments: an unknown name or a bad value is an EngineError naming it."""
        allowed = cls.names()
        for name in opts:
            if name not in allowed:
                near = difflib.get_close_matches(str(name), allowed, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise EngineError(f"{cls.backend} backend: unknown option {name!r}{hint}; allowed: {', '.join(allowed)}")
        options = cls(**opts)
        options.validate()
        for name, why in cls.ignored.items():
            if opts.get(name) is not None:
                logging.getLogger(__name__).info("%s backend: option %s=%r ignored (%s)", cls.backend, name,
                                                 opts[name], why)
        return options

    def validate(self) -> None:
        """Checks that need no artefact (the artefact's own checks come when the engine is made)."""
        if self.threads is not None and not (_whole(self.threads) and self.threads >= 0):
            raise EngineError(f"{self.backend} backend: threads={self.threads!r}: give a whole number >= 0 "
                              "(0 or None: the backend's default)")
        if self.channel_order not in (None, "rgb", "bgr", "mono"):
            raise EngineError(f"{self.backend} backend: channel_order={self.channel_order!r}: choose 'rgb', 'bgr' "
                              "or 'mono'")
        if self.input_hw is not None and (len(self.input_hw) != 2 or not all(_whole(v) and v > 0
                                                                             for v in self.input_hw)):
            raise EngineError(f"{self.backend} backend: input_hw={self.input_hw!r}: give (height, width) in pixels")

    def _positive_or_none(self, name: str) -> None:
        value = getattr(self, name)
        if value is not None and not (_whole(value) and value >= 1):
            raise EngineError(f"{self.backend} backend: {name}={value!r}: give a whole number >= 1, or None")

    @classmethod
    def for_target(cls: type[_O], target: str, opts: Mapping[str, Any]) -> _O:
        """The options open_engine gives the engine of `target`: the keyword options; a backend addressed by URL
        may also take some from the URL (its query)."""
        return cls.from_kwargs(opts)

    @classmethod
    def of(cls: type[_O], options: Optional[_O], opts: Mapping[str, Any]) -> _O:
        """An engine constructor's options: a ready options object, or keyword arguments (not both)."""
        if options is None:
            return cls.from_kwargs(opts)
        if opts:
            raise EngineError(f"{cls.backend} backend: give an options object or keyword options, not both "
                              f"(got {sorted(opts)} besides it)")
        if not isinstance(options, cls):
            raise EngineError(f"{cls.backend} backend: options must be {cls.__name__}, not {type(options).__name__}")
        options.validate()
        return options


@dataclass
class InferResult:
    maps: np.ndarray  # float32 (N, Hm, Wm) anomaly probabilities at model resolution (the spec's model_hw)
    scores: np.ndarray  # float32 (N,) raw image scores
    normalized_scores: np.ndarray  # float32 (N,) clip((score - image_threshold) / score_spread + 0.5, 0, 1)
    decisions: np.ndarray  # bool (N,) True = anomalous (score >= image_threshold)

    def __len__(self) -> int:
        return len(self.scores)


def describe_line(info: Mapping[str, Any]) -> str:
    """Engine.describe() as one line: `backend onnxruntime, providers CPUExecutionProvider, threads 2`."""
    def text(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    return ", ".join(f"{k} {text(v)}" for k, v in info.items())


def zero_timings() -> dict[str, float]:
    return dict.fromkeys(STAGES, 0.0)


class Engine(abc.ABC):
    """Base of all backends. Making one reads what the artefact says about itself and checks that it can run
    here: `metadata` and `input_spec` are available before activation (a wrapper may serve them from what it
    wraps by overriding the properties: infer reads them through the properties). The heavy work waits for
    activation: a session, a deserialized engine, a model and its weights, device memory, a connection."""

    backend: str = "?"
    # Whether metadata from a calibration run that failed its accuracy gate may decide: open_engine checks the
    # artefact it opens and sets this; an engine whose artefact changes while it runs (a server's new model
    # version) checks each new one against it.
    allow_failed_gate: bool = False

    def __init__(self, path: str | Path, metadata: dict[str, Any], input_spec: InputSpec,
                 max_batch: Optional[int] = None):
        self.path = Path(path)
        self._metadata = metadata
        self._input_spec = input_spec
        self._max_batch = max_batch  # chunk size for dynamic-batch artefacts (None: everything at once)
        self._active = False
        self.last_timings: dict[str, float] = zero_timings()

    # ------------------------------------------------------------------ lifecycle
    @property
    def metadata(self) -> dict[str, Any]:
        """The artefact's prn_edge metadata (thresholds, score normalization, data hashes, input spec...)."""
        return self._metadata

    @property
    def input_spec(self) -> InputSpec:
        """The camera frames `infer` takes: uint8, NHWC, height x width x channels in channel_order."""
        return self._input_spec

    @property
    def active(self) -> bool:
        return self._active

    @property
    def served_artefact(self) -> Optional[str]:
        """For an engine whose server chooses the model version (Triton): which version decided the last call, as
        a label for the records (a rollout on the server changes it between two calls). None for an engine that
        runs its own artefact file."""
        return None

    def activate(self) -> "Engine":
        if not self._active:
            try:
                self._activate()
            except BaseException:
                try:
                    self._release()  # free whatever was set up before the failure
                except Exception:
                    pass
                raise
            self._active = True
        return self

    def close(self) -> None:
        if self._active:
            try:
                self._release()
            finally:
                self._active = False

    def __enter__(self) -> "Engine":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.input_spec
        return (f"<{type(self).__name__} {self.path.name} {s.height}x{s.width}x{s.channels} {s.channel_order} "
                f"batch={s.batch or 'dynamic'} {'active' if self._active else 'inactive'}>")

    def describe(self) -> dict[str, Any]:
        """What actually runs, for the log, `prn-edge run`'s summary and `prn-edge bench`: the backend and what it
        chose (ONNX Runtime's providers in use, threads, the TensorRT engine, the Triton model version...), so a
        wrong install (the CPU provider on a GPU box) shows at once. A backend adds its own to this."""
        out: dict[str, Any] = {"backend": self.backend}
        if self.metadata.get("precision"):
            out["precision"] = self.metadata["precision"]
        return out

    @abc.abstractmethod
    def _activate(self) -> None:
        ...

    @abc.abstractmethod
    def _release(self) -> None:
        ...

    @abc.abstractmethod
    def _run(self, frames: np.ndarray, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """frames: valid uint8 (n, H, W, C), n fitting the artefact's batch; returns maps (n, Hm, Wm), scores (n,)."""

    # ------------------------------------------------------------------ inference
    def check_frames(self, frames: Any) -> np.ndarray:
        """Validate camera frames against input_spec; returns a C-contiguous uint8 (N, H, W, C) array."""
        s = self.input_spec
        want = f"uint8 (N, {s.height}, {s.width}, {s.channels}) {s.channel_order} frames"
        if not isinstance(frames, np.ndarray):
            raise EngineError(f"{self.path.name} takes a numpy array of {want}, got {type(frames).__name__}")
        if frames.dtype != np.uint8:
            raise EngineError(
                f"{self.path.name} takes {want}, got dtype {frames.dtype}: pass the camera's 8-bit frames as they "
                "are (scaling to [0, 1] happens inside the engine)")
        if frames.ndim == 3 and s.channels == 1 and frames.shape[1:] == (s.height, s.width):
            frames = frames[..., None]  # a stack of mono frames without the channel axis
        if frames.ndim != 4:
            hint = "; for a single frame pass frame[None]" if frames.ndim == 3 else ""
            raise EngineError(f"{self.path.name} takes {want}, got shape {frames.shape}{hint}")
        n, h, w, c = frames.shape
        if n == 0:
            raise EngineError(f"{self.path.name}: no frames given (N = 0)")
        if (h, w) != (s.height, s.width):
            raise EngineError(
                f"frames are {h}x{w} but {self.path.name} takes {s.height}x{s.width} frames: resize on the host, "
                f"or export the model for this camera (`prn-edge export ... --input-format uint8 --input-size {h}x{w}`)")
        if c != s.channels:
            raise EngineError(
                f"frames have {c} channel(s) but {self.path.name} takes {s.channels} ({s.channel_order}); "
                + ("convert the camera to mono8 or export with channel_order='bgr'/'rgb'" if s.channels == 1 else
                   "give colour frames, or export with channel_order='mono' for a mono camera"))
        return np.ascontiguousarray(frames)

    def infer(self, frames: np.ndarray) -> InferResult:
        """Anomaly maps, scores, normalized scores and decisions for uint8 camera frames (N, H, W, C)."""
        if not self._active:
            raise EngineError(f"{self.path.name}: engine is not active; use `with open_engine(...) as engine:` "
                              "or call engine.activate() first")
        frames = self.check_frames(frames)
        timings = zero_timings()
        n = len(frames)
        step = self.input_spec.batch or self._max_batch or n
        maps, scores = [], []
        for i in range(0, n, step):
            chunk = frames[i:i + step]
            real = len(chunk)
            if self.input_spec.batch is not None and real < step:  # static batch: pad with the last frame
                pad = np.repeat(chunk[-1:], step - real, axis=0)
                chunk = np.concatenate([chunk, pad])
            m, s = self._run(chunk, timings)
            maps.append(np.asarray(m)[:real])
            scores.append(np.asarray(s)[:real])
        t = time.perf_counter()
        out_maps = np.ascontiguousarray(np.concatenate(maps), dtype=np.float32)
        if out_maps.ndim == 4:
            out_maps = out_maps[:, 0]
        out_scores = np.concatenate(scores).astype(np.float32).reshape(n)
        result = InferResult(out_maps, out_scores, normalize_scores(out_scores, self.metadata),
                             decide(out_scores, self.metadata))
        timings["postprocess"] += time.perf_counter() - t
        self.last_timings = timings
        return result
