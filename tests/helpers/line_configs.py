"""Line configurations for tests that run lines from YAML (`prn-edge run --config`, run_line): a conveyor of a
dataset's test images and the file it is read from."""
from __future__ import annotations

import yaml


def write_config(folder, data: dict, name: str = "line.yaml") -> str:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def conveyor_config(dataset, **more) -> dict:
    """A line on a simulated conveyor of `dataset`'s test images (30 parts at 100 Hz, deadline 80 ms); `more`
    replaces whole sections."""
    cfg = {"source": {"kind": "conveyor", "conveyor": {"dataset": str(dataset), "rate_hz": 100, "parts": 30}},
           "timing": {"deadline_s": 0.08}, "engine": {"path": "model.onnx", "warmup": 1}}
    cfg.update(more)
    return cfg
