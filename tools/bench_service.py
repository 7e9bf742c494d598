#!/usr/bin/env python3
"""Service benchmark: what an integrator waits for. Time from process start (what `systemctl start` does) to the
first decision, and a hot swap under load (SIGHUP to a running `prn-edge run` at --rate parts/s): parts decided
during the swap, capture-to-decision latency p99 before and during it, 0 undecided. With --runtime-venv, the
runtime-only install (no torch) is measured too: its size and `import prn_edge.line` time.

    python tools/bench_service.py --out runs/bench_service [--runtime-venv /tmp/rt]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml


def _rows(csv: Path) -> list[dict]:
    from prn_edge.line.outputs.csvlog import read_decisions

    try:
        return read_decisions(csv) if csv.is_file() else []
    except Exception:  # a row being written
        return []


def _p(values, q) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if len(values) else None


def _venv_size_mb(venv: Path) -> float:
    return round(sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 1e6, 1)


def _import_s(python: str, module: str, repeat: int = 3) -> float:
    best = 1e9
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([python, "-c", f"import {module}"], check=True)
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench_service")
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--before-s", type=float, default=5.0)
    ap.add_argument("--after-s", type=float, default=5.0)
    ap.add_argument("--runtime-venv", help="a venv with only the runtime install, to measure size and import time")
    args = ap.parse_args()

    from prn_edge.artefact import write_json
    from prn_edge.bench.machine import machine_info
    from prn_edge.sim.line_bench import demo_line, with_threshold

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dataset, tiny = demo_line(out)
    a = with_threshold(tiny, out / "a.onnx", -1e9)
    b = with_threshold(tiny, out / "b.onnx", 1e9)
    csv = out / "decisions.csv"
    for f in (csv, out / "summary.json"):
        f.unlink(missing_ok=True)
    data = {"name": "bench", "engine": {"path": str(a), "threads": 1, "warmup": 3},
            "source": {"kind": "conveyor", "conveyor": {"dataset": str(dataset), "rate_hz": args.rate, "parts": 0}},
            "timing": {"deadline_s": 0.3}, "outputs": [{"kind": "csv", "path": str(csv)}],
            "monitor": {"status_line": False}}
    cfg = out / "line.yaml"
    cfg.write_text(yaml.safe_dump(data))

    t_start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "prn_edge.cli", "run", "--config", str(cfg), "--summary-json",
                             str(out / "summary.json")], stdout=subprocess.DEVNULL, stderr=open(out / "line.log", "w"),
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first = None
    while first is None:
        if proc.poll() is not None:
            raise SystemExit(f"the line ended early: {(out / 'line.log').read_text()[-2000:]}")
        r = _rows(csv)
        if r:
            first = datetime.fromisoformat(r[0]["wall_time"]).timestamp() - t_start
        time.sleep(0.02)
    print(f"process start -> first decision: {first:.2f} s", flush=True)
    time.sleep(args.before_s)
    data["engine"]["path"] = str(b)
    cfg.write_text(yaml.safe_dump(data))
    t_hup = time.monotonic()
    proc.send_signal(signal.SIGHUP)
    time.sleep(args.after_s)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    summary = json.loads((out / "summary.json").read_text())
    rows = _rows(csv)
    model = [r for r in rows if r["cause"] == "model"]
    t_switch = min(float(r["t_decided"]) for r in model if r["artefact"].startswith("b.onnx@"))
    lat = lambda rs: [float(r["t_decided"]) - float(r["t_capture"]) for r in rs]  # noqa: E731
    before = [r for r in model if float(r["t_capture"]) < t_hup]
    during = [r for r in rows if t_hup <= float(r["t_capture"]) <= t_switch + 0.5]
    report = {
        "machine": machine_info(), "rate_hz": args.rate,
        "start_to_first_decision_s": round(first, 2),
        "swap": {"sighup_to_switch_s": round(t_switch - t_hup, 3), "reload": summary.get("reloads"),
                 "parts_during_swap": len(during),
                 "decided_by_model_during_swap": sum(r["cause"] == "model" for r in during),
                 "fail_safe_during_swap": sum(r["cause"] != "model" for r in during),
                 "latency_ms_before": {"p50": _p(lat(before), 50), "p99": _p(lat(before), 99)},
                 "latency_ms_during": {"p50": _p(lat([r for r in during if r["cause"] == "model"]), 50),
                                       "p99": _p(lat([r for r in during if r["cause"] == "model"]), 99)}},
        "parts": summary["parts"], "undecided": summary["undecided"], "exit_code": proc.returncode,
        "targets": {"undecided": 0, "fail_safe_during_swap": 0},
    }
    if args.runtime_venv:
        venv = Path(args.runtime_venv)
        py = str(venv / "bin" / "python")
        report["install"] = {"runtime_venv_mb": _venv_size_mb(venv),
                             "runtime_import_prn_edge_line_s": _import_s(py, "prn_edge.line"),
                             "full_venv_mb": _venv_size_mb(Path(sys.prefix)),
                             "full_import_prn_edge_line_s": _import_s(sys.executable, "prn_edge.line")}
    write_json(out / "bench_service.json", report)
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    return 0 if report["undecided"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
