"""The input an artefact takes (InputSpec) and the names of its graph's inputs and outputs."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Optional

from .errors import SpecError

INPUT_NAME_UINT8 = "frames"
INPUT_NAME_FLOAT = "image"
OUTPUT_MAP = "anomaly_map"
OUTPUT_SCORE = "score"

CHANNEL_ORDERS = ("rgb", "bgr", "mono")
RESIZE_METHODS = ("none", "area", "bilinear")


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
    fit: str = "stretch"  # input policy (prn_edge.input_policy): "stretch" or "letterbox" (resize inside, pad black)

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
        raise SpecError(f"resize='area' needs frame sides that are integer multiples of {th}x{tw}, "
                        f"got {h}x{w}; use resize='bilinear' or 'auto'")
    if method not in ("area", "bilinear"):
        raise SpecError(f"resize={method!r}: choose 'auto', 'area' or 'bilinear'")
    return method
