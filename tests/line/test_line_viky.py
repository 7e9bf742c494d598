"""GenicamSource against a second real GenTL producer: viky.cti from genicam 1.6 (a bouncing-ball camera with
AcquisitionFrameRate and the producer-side NewestOnly buffer mode). genicam 1.6 has no TLSimu, so the venv keeps
1.5 and `make` installs 1.6 into .venv/genicam16; the observations come from tests/line/viky_probe.py, run in a
subprocess with that folder first on the path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
GENICAM16 = Path(os.environ.get("PRN_EDGE_GENICAM16", Path(sys.prefix) / "genicam16"))


@pytest.fixture(scope="module")
def viky() -> dict:
    if not (GENICAM16 / "genicam" / "viky.cti").is_file():
        pytest.skip(f"genicam 1.6 (viky.cti) is not installed at {GENICAM16}: run `make venv` (it installs it with "
                    "pip install --no-deps --target .venv/genicam16 genicam==1.6.0) or set PRN_EDGE_GENICAM16")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(GENICAM16), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, str(HERE / "viky_probe.py")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_probe_ran_genicam_16(viky):
    assert str(GENICAM16) in viky["genicam"]


def test_newest_only_on_the_producer_gives_fresh_frames_to_a_slow_consumer(viky):
    n = viky["newest"]
    assert n["producer_newest_only"] is True  # StreamBufferHandlingMode=NewestOnly accepted by the producer
    assert n["shape"] == [400, 400, 3] and n["image_shape"] == [400, 400, 3] and n["dtype"] == "uint8"  # RGBa8 -> RGB
    steps = np.diff(n["ids"])
    # camera at 200 fps, consumer every 50 ms: ~10 frames pass between grabs; an OldestFirst queue would give 1
    assert steps.min() >= 1 and np.median(steps) >= 5, n["ids"]
    # The frame handed over is recent, not a queued one: younger than the consumer's own period (50 ms), with
    # room for a busy machine (25 ms failed under load; a queued frame would age by 45 ms per grab).
    assert np.median(n["ages_ms"]) < 50, n["ages_ms"]
    assert n["frames_that_changed"] >= len(n["ids"]) - 2  # the ball moves: real frames, not one repeated buffer


def test_frame_rate_is_applied_in_free_run(viky):
    assert 40 <= viky["rate_50"] <= 55, viky["rate_50"]


def test_features_the_camera_lacks_or_refuses_are_clear_errors(viky):
    e = viky["errors"]
    assert "no ExposureTime node" in e["exposure"] and "remove exposure_us" in e["exposure"]
    assert "pixel_format='Mono12'" in e["pixel_format"] and "RGBa8" in e["pixel_format"]
    assert "frame_rate_hz=5000.0" in e["frame_rate"] and "1.0..200.0" in e["frame_rate"]
    assert e["mono8_shape"] == [400, 400, 1]
