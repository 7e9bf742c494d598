import json

import pytest

from prn_edge.cli import main
from prn_edge.export.onnx_export import export_onnx
from tests.helpers.prn_artefacts import make_checkpoint


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    ckpt = make_checkpoint(d / "tiny.pt")
    export_onnx(ckpt, d / "b1.onnx", batch=1)
    export_onnx(ckpt, d / "dyn.onnx", batch=None, input_format="uint8", channel_order="bgr")
    return ckpt, d


def test_bench_side_by_side_writes_json_table_and_plot(artefacts, tmp_path, capsys):
    ckpt, d = artefacts
    out = tmp_path / "bench.json"
    rc = main(["bench", f"torch={ckpt}", f"ort-b1={d / 'b1.onnx'}", f"ort-dyn={d / 'dyn.onnx'}", "--batch", "1", "2",
               "--iters", "5", "--warmup", "1", "--threads", "1", "--json", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads(out.read_text())
    rows = {(r["artefact"], r["batch"]): r for r in rep["results"]}
    assert "static batch of 1" in rows[("ort-b1", 2)]["skipped"]
    for key in (("torch", 1), ("torch", 2), ("ort-b1", 1), ("ort-dyn", 1), ("ort-dyn", 2)):
        r = rows[key]
        L = r["latency_ms"]
        assert 0 < L["min"] <= L["p50"] <= L["p90"] <= L["p99"] <= L["max"]
        assert r["throughput_ips"] == pytest.approx(key[1] * 1e3 / L["mean"])
        assert r["decision_agreement"] == 1.0 and r["max_abs_map_diff"] < 1e-4
        assert r["stages_ms"]["compute"] > 0 and r["gflops_per_image"] > 0
        # the fraction of the GEMM peak measured beside it, with the same thread count
        assert r["gemm_peak_gflops"] > 0 and 0 < r["peak_fraction"] < 2
    assert rows[("ort-dyn", 1)]["input"]["format"] == "uint8"
    # what runs, printed before the numbers and kept in the JSON: a wrong install shows at once
    engine = rows[("ort-dyn", 1)]["engine"]
    assert engine["backend"] == "onnxruntime" and engine["providers"][-1] == "CPUExecutionProvider"
    assert engine["threads"] == 1 and rows[("torch", 1)]["engine"]["threads"] == 1
    printed = capsys.readouterr().out
    assert f"ort-dyn: backend onnxruntime, providers {','.join(engine['providers'])}, threads 1" in printed
    assert rep["machine"]["cores"] and rep["machine"]["matmul_peak_gflops"] > 0
    assert rep["gemm_peak"]["threads"] == 1 and "% GEMM peak" in out.with_suffix(".md").read_text()
    # the peak reported is the one measured beside the rounds (batches 1 and 2, 5 rounds each), not a new one
    assert rep["gemm_peak"]["rounds"] == 10
    assert rep["machine"]["versions"]["onnxruntime"]
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "| ort-dyn | onnxruntime | fp32 | 2 |" in out.with_suffix(".md").read_text()
    assert rep["images"] == {"source": "built-in textures", "count": 32, "sizes": {"256x256": 32}}


def test_bench_records_which_images_it_ran_on(artefacts, tmp_path):
    import cv2
    import numpy as np

    ckpt, d = artefacts
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(10):  # two sizes, as a real dataset comes; every other one taller
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((48 if i % 2 else 40, 64, 3), 20 * i, np.uint8))
    out = tmp_path / "bench.json"
    assert main(["bench", f"ort={d / 'b1.onnx'}", "--images", str(folder), "--max-images", "4", "--iters", "2",
                 "--warmup", "1", "--threads", "1", "--json", str(out), "--quiet"]) == 0
    rep = json.loads(out.read_text())
    assert rep["images"]["source"] == str(folder) and rep["images"]["count"] == 4
    assert sum(rep["images"]["sizes"].values()) == 4 and set(rep["images"]["sizes"]) <= {"48x64", "40x64"}
    assert f"4 images from {folder}" in out.with_suffix(".md").read_text()


def test_bench_refuses_a_missing_artefact(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "none.onnx"), "--iters", "1"]) == 2
    assert "none.onnx" in capsys.readouterr().err


def test_bench_of_a_non_square_model(tmp_path):
    # a 64x128 model as checkpoint and as ONNX for uint8 frames: the same frames (64x128), the same maps
    ckpt = make_checkpoint(tmp_path / "wide.pt", overrides={"model": {"image_size": [64, 128]}})
    export_onnx(ckpt, tmp_path / "cam.onnx", batch=None, input_format="uint8")
    out = tmp_path / "bench.json"
    assert main(["bench", f"cam={tmp_path / 'cam.onnx'}", f"torch={ckpt}", "--batch", "2", "--iters", "3",
                 "--warmup", "1", "--threads", "1", "--json", str(out), "--quiet"]) == 0
    rows = {r["artefact"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["cam"]["input"] == {"format": "uint8", "shape": [2, 64, 128, 3]}
    assert rows["torch"]["decision_agreement"] == 1.0 and rows["torch"]["max_abs_map_diff"] < 1e-4


def test_bench_artefact_options_in_the_query():
    """[LABEL=]PATH[@BACKEND][?KEY=VALUE&...]: the backend's options per artefact, values read as YAML."""
    from prn_edge.cli import _bench_artefact
    from prn_edge.errors import PrnEdgeError

    a = _bench_artefact("trt16=engines/m.onnx?providers=tensorrt,cuda&trt_fp16=true&trt_workspace_mb=256", False)
    assert (str(a.path), a.label, a.backend) == ("engines/m.onnx", "trt16", "auto")
    assert a.options == {"providers": "tensorrt,cuda", "trt_fp16": True, "trt_workspace_mb": 256}
    b = _bench_artefact("m.onnx@openvino?device=GPU", False)
    assert (str(b.path), b.backend, b.options, b.label) == ("m.onnx", "openvino", {"device": "GPU"},
                                                            "m.onnx@openvino?device=GPU")
    assert _bench_artefact("x=m.onnx", False).options == {}
    for bad in ("m.onnx?providers", "m.onnx?a=1&a=2"):
        with pytest.raises(PrnEdgeError, match="KEY=VALUE pairs"):
            _bench_artefact(bad, False)


def test_bench_refuses_a_gpu_provider_this_onnxruntime_lacks(artefacts, capsys):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host has the CUDA provider")
    _, d = artefacts
    assert main(["bench", f"gpu={d / 'dyn.onnx'}?providers=cuda", "--iters", "1", "--quiet"]) == 2
    assert "CUDAExecutionProvider is not available here" in capsys.readouterr().err


def test_bench_images_are_spread_over_the_folder(tmp_path):
    # a dataset's test folder sorted: the first 64 files were all of the first defect type
    from prn_edge.data.images import sample_image_files

    for kind, n in (("blowhole", 6), ("good", 10), ("uneven", 4)):
        (tmp_path / kind).mkdir()
        for i in range(n):
            (tmp_path / kind / f"{i:02d}.png").write_bytes(b"")
    (tmp_path / "good" / "._00.png").write_bytes(b"")  # a Mac resource fork is no image
    chosen = sample_image_files(tmp_path, 5)
    assert len(chosen) == 5 and {p.parent.name for p in chosen} == {"blowhole", "good", "uneven"}
    assert len(sample_image_files(tmp_path, 100)) == 20
    assert len(set(sample_image_files(tmp_path, 15))) == 15  # as many as asked for, not every k-th (10 of 15)
