"""PyTorch backend: the reference every exported artefact is compared with, straight from a checkpoint."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Optional

import numpy as np

from .. import __version__
from ..artefact import InputSpec, build_metadata, sha256_file
from ..errors import PrnEdgeError
from .base import Engine, EngineError, EngineOptions
from .preprocess import camera_spec_for
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


@contextlib.contextmanager
def _engine_errors() -> Iterator[None]:
    """A checkpoint the model layer refuses: EngineError, as the Engine contract raises."""
    try:
        yield
    except PrnEdgeError as e:
        raise EngineError(str(e)) from None


class TorchEngine(Engine):
    """A checkpoint run by PyTorch on the CPU; frames are converted on the host (prn_edge.runtime.preprocess).
    Options: TorchOptions (or the same as keywords).

    Making one reads the checkpoint's config and decision metadata, and builds no model; activation builds the
    model and loads its weights (the first one also counts its FLOPs: metadata["model"]["gflops_per_image"])."""

    backend = "torch"
    Options = TorchOptions

    def __init__(self, path: str | Path, options: Optional[TorchOptions] = None, **opts):
        from ..model.backbones import normalization  # torch only once a torch engine is made
        from ..model.checkpoint import checkpoint_config, read_checkpoint
        from ..model.prn import describe_config

        o = self.options = TorchOptions.of(options, opts)
        path = Path(path)
        self.threads = o.threads
        with _engine_errors():
            state = read_checkpoint(path)
            cfg, num_prototypes = checkpoint_config(path, state)
        meta = state.get("meta", {})
        if meta.get("image_threshold") is None or meta.get("score_spread") is None:
            raise EngineError(f"{path} carries no image_threshold/score_spread: use the best checkpoint written by "
                              "`prn-edge train` (the resume file last.pt has no decision thresholds)")
        self._model = None
        h, w = cfg.model.hw
        mean, std = normalization(cfg.model.backbone)
        model_spec = InputSpec(name="image", format="float", layout="NCHW", batch=None, height=h, width=w,
                               channels=3, channel_order="rgb", model_height=h, model_width=w, mean=mean, std=std,
                               fit=cfg.model.input_policy)
        spec = camera_spec_for(model_spec, o.channel_order, o.input_hw, o.resize, path.name)
        md = build_metadata(toolkit_version=__version__, variant=cfg.variant, ckpt_meta=meta, input_spec=model_spec,
                            model=describe_config(cfg.model, num_prototypes),
                            checkpoint_sha256=sha256_file(path), opset=None, exporter="none (checkpoint)")
        md["input_spec"] = model_spec
        super().__init__(path, md, spec, max_batch=o.max_batch)

    def _activate(self) -> None:
        import torch

        from ..model.checkpoint import load_model
        from ..model.prn import describe

        if self.threads:
            torch.set_num_threads(int(self.threads))
        with _engine_errors():
            self._model = load_model(self.path)[0]
        if "gflops_per_image" not in self._metadata["model"]:
            self._metadata["model"] = describe(self._model)

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
