"""What a benchmark ran on: recorded with every result, since numbers without the machine mean nothing."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

from ..artefact import jetson_info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _gpu() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    jetson = jetson_info(probe=True)  # L4T, JetPack, power mode and clocks on a Jetson
    return {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(), "load_average": load, "gpu": _gpu(),
        "jetson": jetson if jetson["l4t_release"] else None,
        "versions": {m: _version(m) for m in ("prn-edge", "torch", "onnxruntime", "onnx", "tensorrt", "numpy")},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def gemm_peak_gflops(threads: int | None = None, n: int = 1024, repeat: int = 5) -> dict:
    """This machine's float32 GEMM rate (numpy's BLAS, best of `repeat` n x n products), the yardstick for the
    GFLOP/s an artefact reaches: measured with the artefacts' thread count (threadpoolctl limits BLAS to
    `threads`; without it BLAS uses its default and "threads" says so)."""
    import contextlib

    import numpy as np

    limit, used = contextlib.nullcontext(), "blas default"
    if threads:
        try:
            from threadpoolctl import threadpool_limits

            limit, used = threadpool_limits(limits=int(threads), user_api="blas"), int(threads)
        except ImportError:
            pass
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.T.copy()
    best = float("inf")
    with limit:
        a @ b
        for _ in range(repeat):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    return {"gflops": 2 * n ** 3 / best / 1e9, "threads": used, "n": n}
