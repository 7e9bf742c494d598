"""PyTorch backend: the reference every exported artefact is compared with, straight from a checkpoint."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from .. import __version__
from ..artefact import InputSpec, build_metadata, sha256_file
from ..errors import PrnEdgeError
from .base import Engine, EngineError, EngineOptions
from .onnxruntime_backend import camera_spec_for
from .preprocess import frames_to_model_input


@dataclass(frozen=True)
class TorchOptions(EngineOptions):
    """channel_order / input_hw / resize describe the camera frames (default: RGB at the model size).
    threads: torch intra-op threads (process-wide; None or 0 leaves torch's setting alone).
    max_batch: frames per forward pass."""

    max_batch: Optional[int] = 16

    backend: ClassVar[str] = "torch"

    def validate(self) -> None:
        super().validate()
        self._positive_or_none("max_batch")


class TorchEngine(Engine):
    """A checkpoint run by PyTorch on the CPU; frames are converted on the host (prn_edge.runtime.preprocess).
    Options: TorchOptions (or the same as keywords)."""

    backend = "torch"
    Options = TorchOptions

    def __init__(self, path: str | Path, options: Optional[TorchOptions] = None, **opts):
        o = self.options = TorchOptions.of(options, opts)
        path = Path(path)
        self.threads = o.threads
        model, cfg, meta = self._load(path)
        if meta.get("image_threshold") is None or meta.get("score_spread") is None:
            raise EngineError(f"{path} carries no image_threshold/score_spread: use the best checkpoint written by "
                              "`prn-edge train` (the resume file last.pt has no decision thresholds)")
        self._model = model
        h, w = cfg.model.hw
        model_spec = InputSpec(name="image", format="float", layout="NCHW", batch=None, height=h, width=w,
                               channels=3, channel_order="rgb", model_height=h, model_width=w,
                               mean=tuple(model.encoder.mean), std=tuple(model.encoder.std),
                               fit=cfg.model.input_policy)
        spec = camera_spec_for(model_spec, o.channel_order, o.input_hw, o.resize, path.name)
        from ..model.prn import describe  # torch only once a torch engine is made

        md = build_metadata(toolkit_version=__version__, variant=cfg.variant, ckpt_meta=meta, input_spec=model_spec,
                            model=describe(model), checkpoint_sha256=sha256_file(path), opset=None, exporter="none (checkpoint)")
        md["input_spec"] = model_spec
        super().__init__(path, md, spec, max_batch=o.max_batch)

    @staticmethod
    def _load(path: Path):
        from ..model.checkpoint import load_model

        try:
            return load_model(path)
        except PrnEdgeError as e:
            raise EngineError(str(e)) from None

    def _activate(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(int(self.threads))
        if self._model is None:
            self._model = self._load(self.path)[0]
        self._model.eval()

    def _release(self) -> None:
        self._model = None

    def describe(self) -> dict[str, Any]:
        import torch  # imported already: the engine was made

        return {**super().describe(), "device": "cpu", "threads": torch.get_num_threads()}

    def _run(self, frames: np.ndarray, timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        t0 = time.perf_counter()
        x = torch.from_numpy(frames_to_model_input(frames, self._input_spec))
        t1 = time.perf_counter()
        with torch.inference_mode():
            prob, score = self._model.predict(x)
        t2 = time.perf_counter()
        timings["preprocess"] += t1 - t0
        timings["compute"] += t2 - t1
        return prob[:, 0].numpy(), score.numpy()
