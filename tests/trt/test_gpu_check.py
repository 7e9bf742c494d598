"""tools/gpu_check: the no-TensorRT exit here, and a full run against the FAKE tensorrt (engines that run their
ONNX with ONNX Runtime), which exercises the script's build/compare/benchmark/report logic without a GPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

from prn_edge.artefact import host
from tests.helpers.fake_cuda import use_host
from tests.helpers.fake_tensorrt import FakeCuda, make_fake_tensorrt
from tests.helpers.tools import load_tool

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpu_check"


def test_gpu_check_is_an_executable_script():
    assert TOOL.is_file() and os.access(TOOL, os.X_OK)
    assert TOOL.read_text().startswith("#!/usr/bin/env python3")


def test_without_tensorrt_exits_2_with_a_clear_message(tmp_path):
    # a `tensorrt` that fails to import, first on the path: the same on hosts that do have TensorRT
    blocker = tmp_path / "blocker" / "tensorrt"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('blocked for this test')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "blocker"))
    r = subprocess.run([sys.executable, str(TOOL), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "TensorRT is not installed here (cannot import tensorrt)" in r.stderr
    assert "pip install tensorrt cuda-python" in r.stderr and "python3-libnvinfer" in r.stderr
    assert not (tmp_path / "out").exists()


def test_full_run_against_fake_tensorrt(monkeypatch, tmp_path, capsys, trt_ckpt):
    cuda = FakeCuda("Fake Orin", "8.7")
    cuda.supports_graphs = False  # a host CUDA API without graphs: the graph benchmark says it is unavailable
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0", cuda=cuda))
    use_host(monkeypatch, cuda)
    monkeypatch.setattr(host, "NV_TEGRA_RELEASE", tmp_path / "none")
    tool = load_tool("gpu_check")
    rc = tool.main(["--out", str(tmp_path / "out"), "--checkpoint", str(trt_ckpt), "--images", "4", "--calib-images", "8", "--iters", "3",
                    "--warmup", "1", "--bench-s", "1", "--max-batch", "4"])
    text = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    rows = {r["name"]: r for r in report["results"]}
    assert set(rows) == {"fp32", "fp16", "int8-qdq", "int8-implicit", "onnxruntime-cpu"}, report
    assert rc == 0 and report["passed"], {k: r["result"] for k, r in rows.items()}
    # the fake engines run the ONNX they were built from: identical to ONNX Runtime
    assert rows["fp32"]["compare"]["max_abs_map_diff"] == 0.0 and rows["fp32"]["compare"]["decision_agreement"] == 1.0
    assert rows["fp16"]["compare"]["max_abs_map_diff"] < 2e-2  # the fake 10.x FP16 engine is the FP32 graph
    assert "compare_vs_fp32_onnx" in rows["int8-qdq"]
    assert rows["fp16"]["bench"]["bmax"]["batch"] == 4 and rows["fp16"]["bench"]["b1"]["p50_ms"] > 0
    assert str(rows["fp16"]["bench_cuda_graph"]).startswith("unavailable")
    assert report["device"]["gpu_name"] == "Fake Orin" and report["tensorrt_version"] == "10.3.0"
    assert "| fp16 |" in text and "PASSED" in text
