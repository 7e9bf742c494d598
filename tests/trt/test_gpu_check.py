"""tools/gpu_check: one JSON + one markdown record of every backend and precision a host can run. Here (no GPU) the
GPU rows are skipped with their reason while the ONNX Runtime CPU rows are measured for real; against the FAKE
tensorrt (engines that run their ONNX with ONNX Runtime) the TensorRT rows' build/compare/benchmark path runs."""
import json
import os
import sys
from pathlib import Path

import pytest

from prn_edge.artefact import host
from tests.helpers.fake_cuda import use_host
from tests.helpers.fake_tensorrt import FakeCuda, make_fake_tensorrt
from tests.helpers.tools import load_tool

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpu_check"
QUICK = ["--check-images", "4", "--calib-images", "8", "--iters", "3", "--warmup", "1",
         "--bench-s", "1", "--max-batch", "4", "--threads", "1"]
GPU_ROWS = {"trt/fp32", "trt/fp16", "trt/int8-qdq", "trt/int8-implicit", "ort-cuda/fp32", "ort-trt/fp32",
            "ort-trt/fp16", "ort-trt/int8-qdq"}


def run(tool, tmp_path, ckpt, *more):
    out = tmp_path / "out"
    argv = ["--out", str(out), "--checkpoint", str(ckpt)] + QUICK
    rc = tool.main(argv + list(more))
    return rc, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text(), out


def test_gpu_check_is_an_executable_script():
    assert TOOL.is_file() and os.access(TOOL, os.X_OK)
    assert TOOL.read_text().startswith("#!/usr/bin/env python3")


@pytest.fixture
def cpu_only_host(monkeypatch):
    """This host as any GPU-less one: no tensorrt module, an onnxruntime with the CPU provider only."""
    import onnxruntime

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])


def test_without_a_gpu_the_cpu_rows_are_measured_and_every_gpu_row_says_why_not(cpu_only_host, tmp_path, tiny_ckpt):
    rc, report, md, out = run(load_tool("gpu_check"), tmp_path, tiny_ckpt)
    assert rc == 2  # nothing GPU could be checked here; the record is written all the same
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["gpu_check.json", "gpu_check.md"]
    rows = {r["row"]: r for r in report["rows"]}
    assert set(rows) == GPU_ROWS | {"ort-cpu/fp32", "ort-cpu/int8-qdq"}
    for name in GPU_ROWS:
        r = rows[name]
        assert (r["built"], r["result"]) == (False, "skipped") and "latency_b1" not in r, r
        assert r["target"]["met"].startswith("not measured here: ")
    assert rows["trt/fp16"]["reason"].startswith("TensorRT is not installed here (cannot import tensorrt")
    assert "no CUDAExecutionProvider" in rows["ort-cuda/fp32"]["reason"]
    assert "no TensorrtExecutionProvider" in rows["ort-trt/int8-qdq"]["reason"]
    assert "onnxruntime-gpu" in rows["ort-trt/fp16"]["reason"] and "JetPack wheel" in rows["ort-trt/fp16"]["reason"]
    ref, q = rows["ort-cpu/fp32"], rows["ort-cpu/int8-qdq"]
    assert (ref["built"], ref["result"], q["built"], q["result"]) == (True, "reference", True, "recorded")
    for r in (ref, q):  # measured for real
        lat = r["latency_b1"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] and lat["iters"] == 3
        assert r["throughput_bmax"]["batch"] == 4 and r["throughput_bmax"]["images_per_s"] > 0
        assert r["engine"]["providers"] == ["CPUExecutionProvider"] and r["engine_bytes"] > 1000
        assert r["parity"]["images"] == 4
    assert ref["parity"]["max_abs_map_diff"] == 0.0 and ref["parity"]["decision_agreement"] == 1.0
    assert q["parity_own_onnx"]["max_abs_map_diff"] == 0.0  # the Q/DQ model against itself: the same session
    assert report["host"]["tensorrt"] is None and "cannot import tensorrt" in report["host"]["tensorrt_missing"]
    assert report["verdict"].startswith("NO GPU") and not report["passed"]
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert len(table) == len(rows)
    assert "| ort-cpu/fp32 | yes |" in md and "| trt/int8-qdq | no |" in md and "skipped: TensorRT is not" in md


def test_full_run_against_fake_tensorrt(cpu_only_host, monkeypatch, tmp_path, tiny_ckpt):
    cuda = FakeCuda("Fake Orin", "8.7")
    cuda.supports_graphs = False  # a host CUDA API without graphs: the graph measurement says it is unavailable
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0", cuda=cuda))
    use_host(monkeypatch, cuda)
    monkeypatch.setattr(host, "NV_TEGRA_RELEASE", tmp_path / "none")
    rc, report, md, _ = run(load_tool("gpu_check"), tmp_path, tiny_ckpt)
    rows = {r["row"]: r for r in report["rows"]}
    trt_rows = ("trt/fp32", "trt/fp16", "trt/int8-qdq", "trt/int8-implicit")
    assert [rows[n]["result"] for n in trt_rows] == ["pass"] * 4, {n: rows[n] for n in trt_rows}
    assert rc == 0 and report["passed"] and report["verdict"] == "PASSED"
    # the fake engines run the ONNX they were built from: identical to ONNX Runtime
    assert rows["trt/fp32"]["parity"]["max_abs_map_diff"] == 0.0
    assert rows["trt/int8-qdq"]["parity_own_onnx"]["max_abs_map_diff"] == 0.0
    assert rows["trt/fp16"]["build_s"] >= 0 and rows["trt/fp16"]["engine_bytes"] > 0
    assert str(rows["trt/fp16"]["latency_b1_cuda_graph"]).startswith("unavailable")
    assert rows["trt/fp32"]["target"]["met"] in (True, False)  # measured: the target is judged
    assert rows["ort-cuda/fp32"]["result"] == "skipped"  # the fake has TensorRT, not onnxruntime-gpu
    assert report["host"]["gpu"]["gpu_name"] == "Fake Orin" and report["host"]["tensorrt"] == "10.3.0"
    assert "| trt/fp16 | yes |" in md and "Fake Orin" in md


def test_an_appliance_checks_the_onnx_files_it_was_given_on_its_own_images(cpu_only_host, tmp_path, onnx_models):
    """A Jetson's runtime install has no torch or onnx: the FP32 and Q/DQ models come exported, the images from the
    line; nothing is made or quantized here."""
    import cv2

    from tests.helpers.prn_artefacts import real_images

    folder = tmp_path / "captures"
    folder.mkdir()
    for i, img in enumerate(real_images(5, 80)):
        cv2.imwrite(str(folder / f"part{i}.png"), img[..., ::-1])
    out = tmp_path / "out"
    rc = load_tool("gpu_check").main(["--out", str(out), "--onnx", str(onnx_models["dyn"]), "--int8-onnx",
                                      str(onnx_models["qdq"]), "--images", str(folder)] + QUICK)
    report = json.loads((out / "gpu_check.json").read_text())
    assert rc == 2 and report["model"] == {"onnx": str(onnx_models["dyn"]), "int8_onnx": str(onnx_models["qdq"]),
                                           "input": "float 64x64"}
    assert report["images"] == 4 and sorted(p.name for p in (out / "work").iterdir()) == []
    rows = {r["row"]: r for r in report["rows"]}
    assert rows["ort-cpu/int8-qdq"]["engine_bytes"] == onnx_models["qdq"].stat().st_size
    assert rows["ort-cpu/fp32"]["latency_b1"]["p50"] > 0
