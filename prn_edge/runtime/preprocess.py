"""Host-side reference of the camera preprocessing that uint8 artefacts do inside their graph.

frames uint8 (N, H, W, C) in `channel_order` -> float32 (N, 3, Hm, Wm) RGB in [0, 1] at the model input:

1. convert to float32 (0..255);
2. resize to Hm x Wm (letterbox: to the aspect-keeping size inside it, then pad black to Hm x Wm):
   "separable" = prn_edge.input_policy.resample (per axis: area averaging when shrinking, linear when enlarging),
   what training applies to its images and the graph computes as two MatMuls; "area" (integer shrink factors
   only) = the mean of each kh x kw block, the same resampling, which ONNX AveragePool(kernel = stride = factor)
   computes; "bilinear" = cv2.INTER_LINEAR on float32 (half-pixel centres, edge clamp, no antialiasing), which is ONNX
   Resize(linear, half_pixel) and torch's bilinear with align_corners=False; "none" when sizes match;
3. reorder channels to RGB (bgr: reverse; mono: replicate);
4. divide by 255, layout NCHW.

Backends that feed float artefacts (ONNX with `image` input, PyTorch checkpoints) run exactly this; the uint8
graphs are tested against it. Only numpy and OpenCV: no torch here.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import numpy as np

from ..artefact import InputSpec, choose_resize
from ..errors import ConfigError
from ..input_policy import PAD_VALUE, as_hw, placement, resample
from .base import EngineError


def resize_frames(x: np.ndarray, size, method: str) -> np.ndarray:
    """float32 (N, H, W, C) -> (N, th, tw, C) by `method` (artefact.RESIZE_METHODS); size = S or (th, tw)."""
    n, h, w, c = x.shape
    th, tw = as_hw(size)
    if method == "none" or (h, w) == (th, tw):
        return x
    if method == "area":
        if h % th or w % tw:
            raise ValueError(f"area resize needs integer factors, got {h}x{w} -> {th}x{tw}")
        kh, kw = h // th, w // tw
        return x.reshape(n, th, kh, tw, kw, c).mean(axis=(2, 4), dtype=np.float32)
    if method == "separable":
        return np.stack([resample(f, (th, tw)) for f in x]).astype(np.float32, copy=False)
    if method == "bilinear":
        import cv2

        out = np.empty((n, th, tw, c), np.float32)
        for i in range(n):
            r = cv2.resize(x[i], (tw, th), interpolation=cv2.INTER_LINEAR)
            out[i] = r.reshape(th, tw, c)  # cv2 drops a single channel axis
        return out
    raise ValueError(f"unknown resize method {method!r}")


def frames_to_model_input(frames: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 camera frames described by `spec` -> the model tensor float32 (N, 3, Hm, Wm), RGB in [0, 1]."""
    where = spec.placement()
    x = resize_frames(np.asarray(frames).astype(np.float32), (where.h, where.w), spec.resize)
    top, bottom, left, right = where.pads
    if top or bottom or left or right:  # letterbox: black padding, as training (data.fit.PAD_VALUE)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=PAD_VALUE)
    if spec.channel_order == "bgr":
        x = x[..., ::-1]
    elif spec.channel_order == "mono":
        x = np.repeat(x, 3, axis=-1)
    x = x / np.float32(255.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def fit_to_frame(img: np.ndarray, spec: InputSpec):
    """(the image at the size of `spec`'s frames, fitted as training fits its images, and its placement:
    data.fit.fit_image). Frames that are the model input take the input policy (letterbox pads as training did);
    camera-size frames are stretched to the camera's size, as the line's region.resize does, and the graph applies
    the policy."""
    from ..data.fit import fit_image

    frame_hw = (spec.height, spec.width)
    return fit_image(img, frame_hw, spec.fit if frame_hw == tuple(spec.model_hw) else "stretch")


def rgb_to_frames(images, spec: InputSpec) -> np.ndarray:
    """RGB uint8 images (any size) -> camera frames for `spec` (size, channel order): what threshold fitting,
    INT8 calibration, verification and `predict` feed an engine.

    An image of another size than the frames is fitted as training fits its images (data.fit.fit_image: the
    model's input policy, stretched or letterboxed, by input_policy.resample) when the frames are the model
    input; for frames of a camera's own size (a uint8 artefact that resizes inside its graph) it is stretched to
    that size by the same resampling. A tiles artefact takes tiles (refused otherwise); mono uses OpenCV's
    RGB->gray weights.
    """
    import cv2

    out = []
    for img in images:
        img = np.asarray(img)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        if img.shape[:2] != (spec.height, spec.width) and spec.fit == "tiles":
            raise ConfigError(f"a tiles artefact takes {spec.width}x{spec.height} tiles cut at native resolution, not "
                             f"a {img.shape[1]}x{img.shape[0]} image resized; split it first (prn_edge.tiling.TileGrid)")
        if img.shape[:2] != (spec.height, spec.width):
            img = fit_to_frame(img, spec)[0]
        if spec.channel_order == "bgr":
            img = img[..., ::-1]
        elif spec.channel_order == "mono":
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
        out.append(np.ascontiguousarray(img, dtype=np.uint8))
    return np.stack(out)


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
