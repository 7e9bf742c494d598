"""The appliance install: only the runtime (`pip install '.[cpu,line]'`, no torch, onnx, scipy, matplotlib),
on Python 3.10 as on JetPack 6, runs a line on an ONNX artefact, benchmarks it and re-tunes its threshold; none of
the training stack gets imported. The venv is built once per test session (pip's cache keeps it short)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
def _python310():
    """A working Python 3.10 (a pyenv shim may exist without that version being selected)."""
    candidates = sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))
    candidates += [c for c in [shutil.which("python3.10")] if c]
    for c in candidates:
        if subprocess.run([c, "-c", "pass"], capture_output=True).returncode == 0:
            return c
    return None


PY310 = _python310()
HEAVY = ("torch", "onnx", "scipy", "matplotlib", "tifffile", "skimage", "sklearn")


@pytest.fixture(scope="session")
def runtime_venv(tmp_path_factory) -> Path:
    if PY310 is None:
        pytest.skip("no Python 3.10 here (JetPack 6's Python); the runtime install is checked where it exists")
    venv = tmp_path_factory.mktemp("rt") / "venv"
    subprocess.run([PY310, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{ROOT}[cpu,line]"], capture_output=True,
                       text=True, timeout=900)
    if r.returncode:
        pytest.fail(f"the runtime install failed:\n{r.stderr[-3000:]}")
    return venv


def test_the_runtime_install_pulls_no_training_stack(runtime_venv):
    r = subprocess.run([str(runtime_venv / "bin" / "pip"), "list", "--format", "json"], capture_output=True,
                       text=True, check=True)
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(r.stdout)}
    assert not installed & {"torch", "onnx", "scipy", "matplotlib", "scikit-image", "scikit-learn", "tifffile"}
    assert {"onnxruntime", "numpy", "opencv-python-headless", "pymodbus", "prometheus-client"} <= installed


def test_run_bench_and_threshold_on_the_runtime_install(runtime_venv, tmp_path, demo_category, tiny_onnx):
    bin_ = runtime_venv / "bin"
    cfg = tmp_path / "line.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "rt", "engine": {"path": str(tiny_onnx), "threads": 1, "warmup": 1},
        "source": {"kind": "conveyor", "conveyor": {"dataset": str(demo_category), "rate_hz": 50, "parts": 20}},
        "timing": {"deadline_s": 0.3}, "outputs": [{"kind": "csv", "path": "d.csv"}],
        "monitor": {"status_line": False}}))
    probe = ("import sys, json; from prn_edge.line.cli import run_line; s = run_line(sys.argv[1]); "
             f"print(json.dumps({{'undecided': s['undecided'], 'parts': s['parts'], "
             f"'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    r = subprocess.run([str(bin_ / "python"), "-c", probe, str(cfg)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"undecided": 0, "parts": 20, "heavy": []}

    good = tmp_path / "good"  # the line's own good parts: enough of them for a threshold
    good.mkdir()
    for i in range(2):
        for f in sorted((demo_category / "test" / "good").iterdir()):
            shutil.copy(f, good / f"{i}_{f.name}")
    r = subprocess.run([str(bin_ / "prn-edge"), "bench", str(tiny_onnx), "--images", str(good), "--iters", "3",
                        "--rounds", "1", "--warmup", "1", "--quiet", "--json", str(tmp_path / "b.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "b.json").read_text())

    r = subprocess.run([str(bin_ / "prn-edge"), "threshold", str(tiny_onnx), "--good", str(good), "-o",
                        str(tmp_path / "retuned.onnx"), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "retuned.onnx").is_file() and "threshold" in json.loads(r.stdout)

    # verdicts and heat maps for files, on the appliance (no tifffile, no matplotlib, no torch there)
    r = subprocess.run([str(bin_ / "prn-edge"), "predict", str(tiny_onnx), str(good), "-o", str(tmp_path / "p"),
                        "--overlays", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["images"] == len(list(good.iterdir())) and len(report["overlays"]) == 2
    assert all(Path(p).is_file() for p in report["overlays"]) and (tmp_path / "p" / "predictions.csv").is_file()
