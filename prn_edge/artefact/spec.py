"""The input an artefact takes (InputSpec) and the names of its graph's inputs and outputs."""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass
from typing import Optional

from ..input_policy import as_hw
from .errors import MetadataError, SpecError

INPUT_NAME_UINT8 = "frames"
INPUT_NAME_FLOAT = "image"
OUTPUT_MAP = "anomaly_map"
OUTPUT_SCORE = "score"

CHANNEL_ORDERS = ("rgb", "bgr", "mono")
RESIZE_METHODS = ("none", "area", "separable", "bilinear")


@dataclass
class InputSpec:
    """The tensor an artefact takes, and what it does to it before the model sees RGB in [0, 1].

    uint8 artefacts take camera frames (N, H, W, C) in `channel_order`, at `height` x `width`; the graph
    converts, reorders, resizes (`resize`) and scales them to the model input `model_height` x `model_width`.
    Float artefacts take the model tensor itself: (N, 3, model_height, model_width) RGB in [0, 1]; anything else
    is the host's job (see prn_edge.runtime.preprocess). `mean`/`std` are the backbone's normalization, always
    applied inside the graph.

    In the metadata (to_dict / from_dict) a square model input is written as one `model_size`, as artefact
    format 1 had it, so every earlier prn_edge reads it; only a non-square one needs `model_height`/`model_width`
    (format 2, see prn_edge.artefact.metadata).
    """

    name: str
    format: str  # "uint8" | "float"
    layout: str  # "NHWC" | "NCHW"
    batch: Optional[int]  # None = dynamic
    height: int
    width: int
    channels: int
    channel_order: str  # "rgb" | "bgr" | "mono"
    model_height: int
    model_width: int
    resize: str = "none"  # RESIZE_METHODS: "none" | "area" | "separable" | "bilinear" (choose_resize says which)
    scale: float = 1.0  # multiplied inside the graph (1/255 for uint8 frames)
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    value_range: tuple = (0.0, 1.0)
    # input policy (prn_edge.input_policy): "stretch", "letterbox" (resize inside, pad black) or "tiles" (frames are
    # tiles of the model size cut at native resolution: nothing resized)
    fit: str = "stretch"

    @property
    def model_hw(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.model_height, self.model_width

    @property
    def square(self) -> bool:
        return self.model_height == self.model_width

    def placement(self):
        """Where a frame lands in the model input: resize to (placement.h, placement.w), then pad."""
        from ..input_policy import placement

        return placement((self.height, self.width), self.model_hw, self.fit)

    def to_dict(self) -> dict:
        """The metadata record: a square model input as one `model_size` (format 1's layout), else its height and
        width."""
        d = asdict(self)
        if self.square:
            d["model_size"] = d.pop("model_height")
            del d["model_width"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        d = dict(d)
        for k in ("mean", "std", "value_range"):
            if k in d and d[k] is not None:
                d[k] = tuple(d[k])
        if "model_size" in d:  # a square model input (every format-1 artefact)
            d.setdefault("model_height", d["model_size"])
            d.setdefault("model_width", d["model_size"])
        known = {f for f in cls.__dataclass_fields__}
        missing = sorted(k for k in known - set(d) if cls.__dataclass_fields__[k].default is MISSING)
        if missing:
            raise MetadataError(f"its input spec has no {missing}; export the model again with `prn-edge export`")
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one camera frame this spec accepts."""
        return self.height, self.width, self.channels


def choose_resize(src_hw: tuple[int, int], size, method: str = "auto") -> str:
    """Resize method from frame size to `size`: the model input (one side, or (h, w)) or (h, w) inside it
    (letterbox).

    "auto": none when equal; "area" when both sides shrink by an integer factor (an AveragePool in the graph);
    "separable" otherwise: per axis, area averaging when shrinking and linear interpolation when enlarging, as two
    MatMuls by prn_edge.input_policy.axis_weights, which is exactly what training applies to its images
    (data.fit). "area" is that same resampling for integer factors. "bilinear" (ONNX Resize, linear, half-pixel;
    what artefacts before "separable" used) stays selectable but differs from training when shrinking.
    """
    h, w = src_hw
    th, tw = as_hw(size)
    if (h, w) == (th, tw):
        return "none"
    integer_down = h % th == 0 and w % tw == 0 and h >= th and w >= tw
    if method == "auto":
        return "area" if integer_down else "separable"
    if method == "area" and not integer_down:
        raise SpecError(f"resize='area' needs frame sides that are integer multiples of {th}x{tw}, "
                        f"got {h}x{w}; use resize='separable' or 'auto'")
    if method not in RESIZE_METHODS[1:]:
        raise SpecError(f"resize={method!r}: choose 'auto', 'area', 'separable' or 'bilinear'")
    return method
