"""What an exported artefact says about itself: the input it expects and how its scores are decided.

Torch-free on purpose: the runtime reads these on machines that only have onnx/onnxruntime/TensorRT.
Every value is stored in the ONNX `metadata_props` as a string under a `prn_edge.` key; structured values
(the input spec, the backbone record, thresholds that may be null) are JSON.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from .. import FORMAT_VERSION
from ..errors import PrnEdgeError
from ..files import sha256_file  # noqa: F401 - re-exported for the runtime

PREFIX = "prn_edge."
KIND = "prn_edge.onnx"
# The package-wide format version (checkpoints and exported artefacts carry it; see prn_edge/__init__.py).
ONNX_FORMAT_VERSION = FORMAT_VERSION

INPUT_NAME_UINT8 = "frames"
INPUT_NAME_FLOAT = "image"
OUTPUT_MAP = "anomaly_map"
OUTPUT_SCORE = "score"

CHANNEL_ORDERS = ("rgb", "bgr", "mono")
RESIZE_METHODS = ("none", "area", "bilinear")
SCORE_NORMALIZATION = "normalized = clip((score - image_threshold) / score_spread + 0.5, 0, 1)"
DECISION_RULE = "anomalous = score >= image_threshold"

# Keys that hold JSON; every other key holds a plain string.
_JSON_KEYS = {"input", "outputs", "model", "backbone", "image_threshold", "pixel_threshold", "score_spread",
              "format_version", "opset"}
REQUIRED_KEYS = ("kind", "format_version", "toolkit_version", "variant", "input", "image_threshold",
                 "score_spread")


class ExportError(PrnEdgeError):
    """An export, lint or parity check failed; the message names the file, node or value and the fix."""


class MetadataError(ExportError):
    """An artefact carries no (or unreadable) prn_edge metadata."""


@dataclass
class InputSpec:
    """The tensor an artefact takes, and what it does to it before the model sees RGB in [0, 1].

    uint8 artefacts take camera frames (N, H, W, C) in `channel_order`, at `height` x `width`; the graph
    converts, reorders, resizes (`resize`) and scales them. Float artefacts take the model tensor itself:
    (N, 3, S, S) RGB in [0, 1]; anything else is the host's job (see prn_edge.runtime.preprocess).
    `mean`/`std` are the backbone's normalization, always applied inside the graph.
    """

    name: str
    format: str  # "uint8" | "float"
    layout: str  # "NHWC" | "NCHW"
    batch: Optional[int]  # None = dynamic
    height: int
    width: int
    channels: int
    channel_order: str  # "rgb" | "bgr" | "mono"
    model_size: int
    resize: str = "none"  # "none" | "area" | "bilinear"
    scale: float = 1.0  # multiplied inside the graph (1/255 for uint8 frames)
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    value_range: tuple = (0.0, 1.0)
    fit: str = "stretch"  # input policy (prn_edge.data.fit): "stretch" or "letterbox" (resize inside, pad black)

    def placement(self):
        """Where a frame lands in the model input: resize to (placement.h, placement.w), then pad."""
        from ..input_policy import placement

        return placement((self.height, self.width), (self.model_size, self.model_size), self.fit)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        d = dict(d)
        for k in ("mean", "std", "value_range"):
            if k in d and d[k] is not None:
                d[k] = tuple(d[k])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one camera frame this spec accepts."""
        return self.height, self.width, self.channels


def choose_resize(src_hw: tuple[int, int], size, method: str = "auto") -> str:
    """Resize method from frame size to the model's square input (size) or to (h, w) inside it (letterbox).

    "auto": none when equal; area averaging when both sides shrink by an integer factor (what training's
    cv2.INTER_AREA does there, and an exact AveragePool in the graph); bilinear otherwise.
    """
    h, w = src_hw
    th, tw = (size, size) if isinstance(size, int) else size
    if (h, w) == (th, tw):
        return "none"
    integer_down = h % th == 0 and w % tw == 0 and h >= th and w >= tw
    if method == "auto":
        return "area" if integer_down else "bilinear"
    if method == "area" and not integer_down:
        raise ExportError(f"resize='area' needs frame sides that are integer multiples of {th}x{tw}, "
                          f"got {h}x{w}; use resize='bilinear' or 'auto'")
    if method not in ("area", "bilinear"):
        raise ExportError(f"resize={method!r}: choose 'auto', 'area' or 'bilinear'")
    return method


def build_metadata(*, toolkit_version: str, variant: str, ckpt_meta: dict, input_spec: InputSpec,
                   model: dict, checkpoint_sha256: Optional[str], opset: Optional[int],
                   exporter: str) -> dict[str, Any]:
    """The metadata dict (unprefixed keys, Python values) shared by ONNX artefacts and the torch backend."""
    return {
        "kind": KIND,
        "format_version": ONNX_FORMAT_VERSION,
        "toolkit_version": toolkit_version,
        "variant": variant,
        "category": str(ckpt_meta.get("category", "")),
        "input": asdict(input_spec),
        "outputs": {
            OUTPUT_MAP: "float32 (N, 1, S, S) anomaly probability per pixel, model resolution",
            OUTPUT_SCORE: "float32 (N,) image score: mean of the top-k map probabilities",
        },
        "model": model,
        "image_threshold": _num(ckpt_meta.get("image_threshold")),
        "pixel_threshold": _num(ckpt_meta.get("pixel_threshold")),
        "score_spread": _num(ckpt_meta.get("score_spread")),
        "score_normalization": SCORE_NORMALIZATION,
        "decision": DECISION_RULE,
        "train_images_sha256": str(ckpt_meta.get("train_images_sha256") or ""),
        "prototypes_sha256": str(ckpt_meta.get("prototypes_sha256") or ""),
        "checkpoint_sha256": checkpoint_sha256 or "",
        "backbone": ckpt_meta.get("backbone") or {},
        "opset": opset,
        "exporter": exporter,
    }


def _num(v: Any) -> Optional[float]:
    return None if v is None else float(v)


def encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """Prefixed string key/values for ONNX metadata_props."""
    out = {}
    for k, v in meta.items():
        out[PREFIX + k] = json.dumps(v, sort_keys=True) if k in _JSON_KEYS else str(v)
    return out


def decode_metadata(props: dict[str, str], source: str) -> dict[str, Any]:
    """Inverse of encode_metadata; raises MetadataError naming `source` when prn_edge keys are missing."""
    meta: dict[str, Any] = {}
    for k, v in props.items():
        if not k.startswith(PREFIX):
            continue
        key = k[len(PREFIX):]
        if key in _JSON_KEYS:
            try:
                meta[key] = json.loads(v)
            except ValueError:
                raise MetadataError(f"{source}: metadata {k} is not valid JSON ({v[:80]!r}); re-export the model "
                                    "with `prn-edge export`") from None
        else:
            meta[key] = v
    if meta.get("kind") != KIND:
        raise MetadataError(
            f"{source} carries no prn_edge metadata (no '{PREFIX}kind' = '{KIND}' entry): it was not written by "
            "prn_edge.export. Export it from a checkpoint with `prn-edge export CKPT --out MODEL.onnx` "
            "(prn_edge.export.export_onnx)")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise MetadataError(f"{source}: prn_edge metadata is incomplete (missing {missing}); re-export it")
    if meta["format_version"] != ONNX_FORMAT_VERSION:
        raise MetadataError(
            f"{source} has prn_edge artefact format {meta['format_version']}, this prn_edge reads format "
            f"{ONNX_FORMAT_VERSION}; re-export it with this version (toolkit {meta.get('toolkit_version', '?')} "
            "wrote it)")
    if meta.get("image_threshold") is None or meta.get("score_spread") is None:
        raise MetadataError(f"{source}: no image_threshold/score_spread in its metadata; export from a checkpoint "
                            "written by `prn-edge train` (the best checkpoint carries the thresholds)")
    meta["input_spec"] = InputSpec.from_dict(meta["input"])
    return meta


def read_metadata(onnx_path: str | Path) -> dict[str, Any]:
    """prn_edge metadata of an exported ONNX (weights are not needed, only the header is parsed).

    Returns the decoded dict (plus "input_spec" as an InputSpec). Raises MetadataError for a file that is
    missing, not ONNX, truncated, or has no prn_edge metadata.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise MetadataError(f"{path} does not exist; export one with `prn-edge export CKPT --out {path}`")
    import onnx  # local: keep `import prn_edge.runtime` light

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # DecodeError, truncated protobuf, a different file type
        raise MetadataError(
            f"{path} is not a readable ONNX model ({e.__class__.__name__}: {str(e)[:160]}). It may be truncated "
            "or corrupt: export it again with `prn-edge export`, or copy it again") from None
    _check_external_data(model, path)
    return decode_metadata({p.key: p.value for p in model.metadata_props}, str(path))


def _check_external_data(model, path: Path) -> None:
    """Refuse weights stored outside the model's own folder (an absolute path or '..' in an external-data
    location reads any file the process can; CVE-2024-27318 was onnx's own version of this)."""
    folder = path.resolve().parent
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    for t in tensors:
        if t.data_location != 1:  # TensorProto.EXTERNAL
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or folder not in target.parents:
            raise MetadataError(f"{path}: tensor {t.name!r} keeps its data at {location!r}, outside the model's "
                                f"folder {folder}; refused. Keep external data files beside the model")


def normalize_scores(scores, meta: dict):
    """clip((score - image_threshold) / score_spread + 0.5, 0, 1), as float32 numpy."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    out = np.clip((s - float(meta["image_threshold"])) / float(meta["score_spread"]) + 0.5, 0.0, 1.0)
    return out.astype(np.float32)


def decide(scores, meta: dict):
    """True = anomalous (score >= image_threshold), the rule every backend and the evaluation share."""
    import numpy as np

    return np.asarray(scores, dtype=np.float64) >= float(meta["image_threshold"])


__all__ = ["InputSpec", "ExportError", "MetadataError", "read_metadata", "build_metadata", "encode_metadata",
           "decode_metadata", "choose_resize", "normalize_scores", "decide", "sha256_file"]
