"""Run in a subprocess with genicam 1.6 first on sys.path (its viky.cti producer): our GenicamSource against
a second real GenTL producer. Prints one JSON object of observations; test_line_viky.py asserts on them."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import genicam

from prn_edge.line.errors import CameraError, LineConfigError
from prn_edge.line.sources.genicam import GenicamSource

CTI = str(Path(genicam.__file__).parent / "viky.cti")


def newest_only(rate_hz: float, consumer_period_s: float, n: int) -> dict:
    src = GenicamSource(CTI, index=0, frame_rate_hz=rate_hz, buffer_mode="newest")
    with src:
        shape = src.geometry()
        ids, ages, images = [], [], []
        src.grab(2.0)
        for _ in range(n):
            time.sleep(consumer_period_s)  # a slow consumer: the producer keeps only the newest frame
            f = src.grab(2.0)
            ids.append(f.frame_id)
            ages.append(time.monotonic() - f.host_ts)
            images.append(f.image)
        newest = src.stream_newest_only
    moving = sum(int((a != b).any()) for a, b in zip(images, images[1:]))
    return {"shape": list(shape), "image_shape": list(images[0].shape), "dtype": str(images[0].dtype),
            "ids": ids, "ages_ms": [round(a * 1000, 2) for a in ages], "producer_newest_only": newest,
            "frames_that_changed": moving}


def free_run_rate(rate_hz: float, seconds: float) -> float:
    src = GenicamSource(CTI, index=1, frame_rate_hz=rate_hz, buffer_mode="all", queue_size=64)
    with src:
        first = src.grab(2.0)
        end = time.monotonic() + seconds
        last = first
        while time.monotonic() < end:
            last = src.grab(2.0)
    return (last.frame_id - first.frame_id) / (last.host_ts - first.host_ts)


def errors() -> dict:
    out = {}
    for key, kwargs in (("exposure", {"exposure_us": 500.0}), ("pixel_format", {"pixel_format": "Mono12"}),
                        ("frame_rate", {"frame_rate_hz": 5000.0})):
        try:
            with GenicamSource(CTI, index=2, **kwargs):
                out[key] = "no error"
        except (CameraError, LineConfigError) as e:
            out[key] = f"{e.__class__.__name__}: {e}"
    with GenicamSource(CTI, index=2, pixel_format="Mono8") as src:
        out["mono8_shape"] = list(src.grab(2.0).image.shape)
    return out


if __name__ == "__main__":
    print(json.dumps({"genicam": genicam.__file__, "newest": newest_only(200.0, 0.05, 10),
                      "rate_50": free_run_rate(50.0, 1.0), "errors": errors()}))
    sys.stdout.flush()
