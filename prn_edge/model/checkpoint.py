"""Checkpoints: plain tensors and primitive types only, so loading works with torch.load(weights_only=True).

Part of the model layer: training writes checkpoints; evaluation, export, calibration and the runtimes read them.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Iterator

import torch

from .. import FORMAT_VERSION, __version__
from ..artefact import write_atomic
from ..config import make_config, Config
from ..errors import CheckpointError, PrnEdgeError
from .prn import PRN, build_prn

KIND = "prn_edge.checkpoint"


def save_checkpoint(path: Path, model: PRN, cfg: Config, meta: dict[str, Any], extra: dict | None = None) -> None:
    """Write atomically (a unique temp file, then rename) so an interrupted save never leaves a half checkpoint."""
    state = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "toolkit_version": __version__,
        "torch_version": str(torch.__version__),
        "variant": cfg.variant,
        "config": cfg.to_dict(),
        "num_prototypes": int(model.prototypes[0].protos.shape[0]),
        "model": model.state_dict(),
        "meta": meta,
    }
    if extra:
        state.update(extra)
    buf = io.BytesIO()
    torch.save(state, buf)
    write_atomic(Path(path), buf.getvalue())


ARTEFACT_SUFFIXES = (".onnx", ".xml", ".bin", ".engine", ".plan")  # what export, calibrate and build write


def _why_unreadable(e: Exception) -> str:
    """torch.load's failure in one clause (its own messages run to paragraphs of advice that does not apply)."""
    text = str(e)
    if "central directory" in text or "zip archive" in text:
        return "it is not a complete zip archive (cut short by an interrupted copy or a full disk, or not a torch file)"
    if "Weights only load failed" in text:
        if "global" in text.lower():
            return ("it holds Python objects a weights-only load refuses (a pickle that would run code, or a file "
                    "not written by prn_edge); nothing in it was run")
        return "its bytes are neither a torch zip archive nor a weights-only pickle (corrupt, or not a torch file)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{e.__class__.__name__}: {first[:160]}" if first else e.__class__.__name__


def read_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with `prn-edge train --data DIR --out {path}`")
    if path.suffix.lower() in ARTEFACT_SUFFIXES:
        raise CheckpointError(f"{path} is an exported artefact ({path.suffix}), not a training checkpoint: this "
                              "command takes the .pt file `prn-edge train` wrote (the artefact was made from it)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable prn_edge checkpoint: {_why_unreadable(e)}. Retrain, or copy "
                              "it again") from None
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise CheckpointError(f"{path} is a torch file but not a prn_edge checkpoint (no '{KIND}' marker); "
                              "pass a file written by `prn-edge train`")
    fv = state.get("format_version")
    if fv != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {fv}, this prn_edge ({__version__}) reads format {FORMAT_VERSION}; "
            f"retrain with this version or use prn_edge {state.get('toolkit_version', '?')}"
        )
    return state


def checkpoint_config(path: Path, state: dict) -> tuple[Config, int]:
    """The validated config a checkpoint was trained with (`state` from read_checkpoint) and its number of
    prototypes: what describes the model without building it."""
    with _content_errors(path):
        return stored_config(state), int(state["num_prototypes"])


def load_model(path: Path) -> tuple[PRN, Config, dict]:
    """Model (eval mode), its config and the checkpoint's meta (thresholds, normalization, data hashes...)."""
    state = read_checkpoint(path)
    cfg, num_prototypes = checkpoint_config(path, state)
    with _content_errors(path):
        # Weights come from the checkpoint itself: no backbone file is needed to load it.
        model, _ = build_prn(stored_config(state, pretrained=False).model, num_prototypes=num_prototypes)
        # Checkpoints from before the distance map or the decoder calibration lack their buffers: they then stay
        # off (not calibrated), and the model predicts as it did when it was written.
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        # (only those: a joint distance memory missing from a checkpoint that says it has one is refused)
        old = ("distance.loc", "distance.temp", "distance.fitted")
        if unexpected or any(k not in old and not k.startswith("decoder_cal.") for k in missing):
            raise RuntimeError(f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    return model.eval(), cfg, state.get("meta", {})


def stored_config(state: dict, **model: Any) -> Config:
    """The config a checkpoint's `state` was written with, keys added since then at the values of its time (not
    today's defaults), with `model` settings changed; ConfigError when it is not valid for this prn_edge."""
    cfg_dict = dict(state["config"])
    variant = cfg_dict.pop("variant")
    # Checkpoints from before the distance memory measured the distance against the prototypes, and those from
    # before the joint memory kept one per scale, those from before the gated map and the map contrast output
    # the map as fused, and those from before the border correction did not correct it: keep them so.
    stored = {"distance_memory": 0, "distance_features": "per_scale", "map_decoder": "weighted", "map_contrast": 0.0,
              "border_correction": 0,
              **cfg_dict["model"]}
    return make_config(variant, {**cfg_dict, "model": {**stored, **model}})


@contextlib.contextmanager
def _content_errors(path: Path) -> Iterator[None]:
    """A checkpoint whose content this prn_edge cannot use: CheckpointError saying why."""
    try:
        yield
    except PrnEdgeError as e:
        raise CheckpointError(f"{path}: its configuration is not valid for this prn_edge: {e}") from None
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint content does not match the model it describes ({e}); "
                              "it may come from an incompatible version. Retrain.") from None
