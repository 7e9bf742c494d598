"""Functions behind the `prn-edge line` / `prn-edge list-cameras` verbs (wired in prn_edge/cli.py)."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Optional

from ..artefact.files import check_writable
from ..logs import json_logging
from .config import load_line_config
from .factory import build_line
from .monitor import StatusLine

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals(lines: list, notifier=None):
    """SIGTERM (systemd, Docker) and SIGINT (Ctrl-C) stop every line gracefully: no new frames, the parts already
    imaged are decided (fail-safe where they cannot make it), outputs flushed, summary written. A second signal
    only says so: the drain is bounded (each line's longest fire delay + 5 s), so the CSV and summary stay whole;
    a third ends the process at once (the way out of a stuck start-up).
    Records which signal stopped the run in `stopped_by`."""
    stopped_by: list[str] = []

    def handler(signum, _frame):
        name = signal.Signals(signum).name
        if len(stopped_by) >= 2:  # a third signal: the operator means it (a stuck start-up or drain)
            log.error("%s a third time: exiting now; parts in flight are not decided by this process", name)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if stopped_by:
            log.warning("%s again: already stopping; deciding the parts already seen (bounded drain)", name)
        else:
            log.warning("%s: stopping; deciding the parts already seen, then writing the summary", name)
        stopped_by.append(name)
        if notifier is not None and len(stopped_by) == 1:
            notifier.stopping()
        for line in lines:
            line.stop(name)

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stopped_by
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stopped_by
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def reload_on_sighup(lines: list, config_paths: list):
    """SIGHUP (`systemctl reload`, `kill -HUP`): each line's config is read again and its engine artefact
    (engine.path: a new export, a re-tuned threshold) swapped in without stopping capture (Line.swap_engine).
    Other changed sections need a restart (said in the log). A failed reload keeps the running engine."""
    import dataclasses

    from .factory import build_engine

    wake = threading.Event()
    done = threading.Event()
    results: list[dict] = []

    def reload_all() -> None:
        seen_shared: dict[int, str] = {}
        for line, path in zip(lines, config_paths):
            try:
                cfg = load_line_config(path)
                if dataclasses.replace(cfg, engine=line.config.engine) != line.config:
                    log.warning("%s: only the engine is reloaded on SIGHUP; other changes need a restart", path)
                shared = getattr(line.engine, "_shared", None)
                if shared is not None and id(shared) in seen_shared:
                    line.note_swap(seen_shared[id(shared)])
                    continue
                info = line.swap_engine(build_engine(cfg))
                if shared is not None:
                    seen_shared[id(shared)] = line.artefact
                line.config = dataclasses.replace(line.config, engine=cfg.engine)
                results.append({"line": line.name, **info})
            except Exception as e:  # the line keeps its engine
                log.error("reload of %s failed: %s", path, e)
                results.append({"line": line.name, "error": str(e)})

    def worker() -> None:
        while True:
            wake.wait()
            if done.is_set():
                return
            wake.clear()
            reload_all()

    def handler(signum, _frame):
        log.warning("SIGHUP: reloading the engine artefact of %d line(s)", len(lines))
        wake.set()

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        yield results
        return
    thread = threading.Thread(target=worker, name="line-reload", daemon=True)
    thread.start()
    previous = signal.signal(signal.SIGHUP, handler)
    try:
        yield results
    finally:
        signal.signal(signal.SIGHUP, previous)
        done.set()
        wake.set()


def _pid_file(path: Optional[str | Path]):
    from .service import PidFile

    return PidFile(path) if path else nullcontext()


def run_line(config_path: str | Path, duration_s: Optional[float] = None, max_parts: Optional[int] = None,
             summary_json: Optional[str | Path] = None, pid_file: Optional[str | Path] = None) -> dict:
    """Run the line of a YAML config until its source ends, Ctrl-C, duration_s or max_parts; return the summary.

    Configuration errors (bad keys, a model input the camera cannot give, unreachable PLC...) raise before the
    first frame is taken. pid_file: where the process id goes once SIGHUP reloads (`prn-edge reload`).
    """
    if summary_json:
        check_writable(summary_json, "--summary-json")
    cfg = load_line_config(config_path)
    # the live status line is for a terminal; under JSON logging stderr carries JSON lines only
    status = StatusLine(sys.stderr) if cfg.monitor.status_line and not json_logging() else None
    line = build_line(cfg, status=status)
    notifier = _notify([line])
    if cfg.monitor.port >= 0:
        port = line.metrics.serve(cfg.monitor.port, cfg.monitor.bind)
        log.info("metrics on http://%s:%d/metrics", cfg.monitor.bind, port)
    try:
        with stop_on_signals([line], notifier) as stopped_by, reload_on_sighup([line], [config_path]) as reloads, \
                _pid_file(pid_file):
            summary = line.run(duration_s=duration_s, max_parts=max_parts)
        summary["stopped_by"] = stopped_by[0] if stopped_by else summary.get("stopped_by")
        summary["reloads"] = reloads
    finally:
        line.metrics.close()
        notifier.close()
    if summary_json:
        Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _notify(lines: list):
    """Tell systemd (Type=notify) when every line runs and, with WatchdogSec=, that each is still healthy."""
    from .service import Notifier

    notifier = Notifier([line.name for line in lines])
    if notifier.enabled:
        log.info("systemd notify socket %s, watchdog %.1f s", notifier.address, notifier.watchdog_s)
        for line in lines:
            line.on_ready.append(lambda name=line.name: notifier.line_ready(name))
            line.on_health.append(lambda healthy, name=line.name: notifier.line_health(name, healthy))
    return notifier


def list_cameras(cti: str = "", features: bool = False) -> list[dict]:
    """The cameras a GenTL producer sees (cti, or every .cti in GENICAM_GENTL64_PATH when empty), with their main
    features when asked (each camera is opened for that, so a camera in use elsewhere reports an error)."""
    from .sources.genicam import list_devices

    return list_devices(cti, features=features)


def run_lines(config_paths: list[str | Path], duration_s: Optional[float] = None, max_parts: Optional[int] = None,
              summary_json: Optional[str | Path] = None, pid_file: Optional[str | Path] = None) -> list[dict]:
    """Several lines (cameras) at once, each on its own threads; lines with the same engine file share it and
    their inference calls are batched together. Returns one summary per line."""
    from .factory import build_lines

    if summary_json:
        check_writable(summary_json, "--summary-json")
    cfgs = [load_line_config(p) for p in config_paths]
    lines, _ = build_lines(cfgs)
    notifier = _notify(lines)
    endpoint = None
    served = [c.monitor for c in cfgs if c.monitor.port >= 0]
    if served:  # one endpoint for the process: every line's series with its `line` label
        from .monitor import MetricsEndpoint

        if len({(m.port, m.bind) for m in served}) > 1:
            log.warning("monitor.port/bind differ between the configs; serving every line on %s:%d",
                        served[0].bind, served[0].port)
        endpoint = MetricsEndpoint([line.metrics for line in lines], served[0].port, served[0].bind)
        log.info("metrics of %d lines on http://%s:%d/metrics", len(lines), endpoint.bind, endpoint.port)
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = lines[i].run(duration_s=duration_s, max_parts=max_parts)
        except BaseException as e:  # reported after every line has finished
            errors.append(e)
            log.error("line %s failed: %s", lines[i].name, e)

    threads = [threading.Thread(target=run, args=(i,), name=f"line-{c.name}") for i, c in enumerate(cfgs)]
    with stop_on_signals(lines, notifier) as stopped_by, reload_on_sighup(lines, list(config_paths)) as reloads, \
            _pid_file(pid_file):
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():  # a timed join: the main thread stays free to take the signal handlers' calls
                t.join(0.2)
    notifier.close()
    if endpoint is not None:
        endpoint.close()
    for summary in results.values():
        summary["stopped_by"] = stopped_by[0] if stopped_by else summary.get("stopped_by")
        summary["reloads"] = [r for r in reloads if r["line"] == summary["line"]]
    if errors:
        raise errors[0]
    summaries = [results[i] for i in range(len(cfgs))]
    if summary_json:
        Path(summary_json).write_text(json.dumps(summaries, indent=2) + "\n")
    return summaries
