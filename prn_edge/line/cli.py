"""Functions behind the `prn-edge line` / `prn-edge list-cameras` verbs (wired in prn_edge/cli.py)."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

from .config import load_line_config
from .factory import build_line
from .monitor import StatusLine

log = logging.getLogger(__name__)


def run_line(config_path: str | Path, duration_s: Optional[float] = None, max_parts: Optional[int] = None,
             summary_json: Optional[str | Path] = None) -> dict:
    """Run the line of a YAML config until its source ends, Ctrl-C, duration_s or max_parts; return the summary.

    Configuration errors (bad keys, a model input the camera cannot give, unreachable PLC...) raise before the
    first frame is taken.
    """
    cfg = load_line_config(config_path)
    status = StatusLine(sys.stderr) if cfg.monitor.status_line else None
    line = build_line(cfg, status=status)
    if cfg.monitor.port >= 0:
        port = line.metrics.serve(cfg.monitor.port, cfg.monitor.bind)
        log.info("metrics on http://%s:%d/metrics", cfg.monitor.bind, port)
    try:
        summary = line.run(duration_s=duration_s, max_parts=max_parts)
    finally:
        line.metrics.close()
    if summary_json:
        Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def list_cameras(cti: str = "", features: bool = False) -> list[dict]:
    """The cameras a GenTL producer sees (cti, or every .cti in GENICAM_GENTL64_PATH when empty), with their main
    features when asked (each camera is opened for that, so a camera in use elsewhere reports an error)."""
    from .sources.genicam import list_devices

    return list_devices(cti, features=features)


def run_lines(config_paths: list[str | Path], duration_s: Optional[float] = None, max_parts: Optional[int] = None,
              summary_json: Optional[str | Path] = None) -> list[dict]:
    """Several lines (cameras) at once, each on its own threads; lines with the same engine file share it and
    their inference calls are batched together. Returns one summary per line."""
    import threading

    from .factory import build_lines

    cfgs = [load_line_config(p) for p in config_paths]
    lines, _ = build_lines(cfgs)
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = lines[i].run(duration_s=duration_s, max_parts=max_parts)
        except BaseException as e:  # reported after every line has finished
            errors.append(e)
            log.error("line %s failed: %s", lines[i].name, e)

    threads = [threading.Thread(target=run, args=(i,), name=f"line-{c.name}") for i, c in enumerate(cfgs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    summaries = [results[i] for i in range(len(cfgs))]
    if summary_json:
        Path(summary_json).write_text(json.dumps(summaries, indent=2) + "\n")
    return summaries
