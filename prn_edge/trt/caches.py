"""The timing-cache step (config.create_timing_cache / set_timing_cache before the build, get_timing_cache()
.serialize() after it), and saving the caches a build made. Caches only speed up the next build: they are
written after the engine, and failing to write one is a warning."""
from __future__ import annotations

from typing import Any, Optional

from ..artefact import write_atomic


def load_timing_cache(config: Any, req: Any) -> Any:
    """The timing cache file's content (or a new cache) in the config; None without timing_cache."""
    if req.timing_cache is None:
        return None
    data = req.timing_cache.read_bytes() if req.timing_cache.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    req.log(f"timing cache {req.timing_cache} ({'loaded' if data else 'new'})")
    return cache


def save_caches(config: Any, timing: Any, calibrator: Any, req: Any, art: Any, calibration: Optional[dict]) -> list[str]:
    """After the engine: the timing cache, and a calibration cache TensorRT made. Failing to save one is a
    warning: the engine is fine, the caches only speed up the next build."""
    warnings = []
    if timing is not None:
        try:
            write_atomic(req.timing_cache, bytes(config.get_timing_cache().serialize()))
        except Exception as e:
            warnings.append(f"timing cache not saved: {e}")
    if calibrator is not None and calibrator.new_cache and not calibrator.cache_used:
        try:
            write_atomic(art.run_dir / calibration["cache"], calibrator.new_cache)
        except Exception as e:
            warnings.append(f"calibration cache not saved: {e}")
    return warnings

