"""GenICam pixel formats to 8-bit mono (H, W, 1) or RGB (H, W, 3) frames, with OpenCV for Bayer and YUV."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import CorruptFrame

MONO_BITS = {"Mono8": 8, "Mono10": 10, "Mono12": 12, "Mono14": 14, "Mono16": 16}
BAYER = {"BayerRG8": cv2.COLOR_BayerRGGB2RGB, "BayerGR8": cv2.COLOR_BayerGRBG2RGB,
         "BayerGB8": cv2.COLOR_BayerGBRG2RGB, "BayerBG8": cv2.COLOR_BayerBGGR2RGB}
RGB_LIKE = {"RGB8": (3, False), "BGR8": (3, True), "RGBa8": (4, False), "BGRa8": (4, True)}
YUV422 = {"YUV422_8": cv2.COLOR_YUV2RGB_YUYV, "YCbCr422_8": cv2.COLOR_YUV2RGB_YUYV,
          "YUV422_8_UYVY": cv2.COLOR_YUV2RGB_UYVY, "YUV422Packed": cv2.COLOR_YUV2RGB_UYVY}
SUPPORTED = tuple(MONO_BITS) + tuple(BAYER) + tuple(RGB_LIKE) + tuple(YUV422)


def channels_of(pixel_format: str) -> int:
    return 1 if pixel_format in MONO_BITS else 3


def _bytes(data: np.ndarray, n: int, what: str) -> np.ndarray:
    raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if raw.size < n:
        raise CorruptFrame(f"{what}: buffer holds {raw.size} bytes, the frame needs {n} (incomplete transfer)")
    return raw[:n]


def to_frame(data: np.ndarray, width: int, height: int, pixel_format: str) -> np.ndarray:
    """A new uint8 (height, width, 1|3) array, RGB for colour formats; raises CorruptFrame for bad buffers and
    unsupported formats (the message lists the supported ones)."""
    what = f"{pixel_format} {width}x{height}"
    n = width * height
    if pixel_format in MONO_BITS:
        bits = MONO_BITS[pixel_format]
        if bits == 8:
            return _bytes(data, n, what).reshape(height, width, 1).copy()
        words = data if data.dtype == np.uint16 else _bytes(data, 2 * n, what).view("<u2")
        words = np.asarray(words).reshape(-1)
        if words.size < n:
            raise CorruptFrame(f"{what}: buffer holds {words.size} pixels, the frame needs {n}")
        return (words[:n] >> (bits - 8)).astype(np.uint8).reshape(height, width, 1)
    if pixel_format in BAYER:
        return cv2.cvtColor(_bytes(data, n, what).reshape(height, width), BAYER[pixel_format])
    if pixel_format in RGB_LIKE:
        c, reverse = RGB_LIKE[pixel_format]
        px = _bytes(data, c * n, what).reshape(height, width, c)[..., :3]
        return np.ascontiguousarray(px[..., ::-1] if reverse else px)
    if pixel_format in YUV422:
        return cv2.cvtColor(_bytes(data, 2 * n, what).reshape(height, width, 2), YUV422[pixel_format])
    raise CorruptFrame(f"pixel format {pixel_format!r} is not supported; set the camera to one of {list(SUPPORTED)} "
                       "(source.genicam.pixel_format)")
