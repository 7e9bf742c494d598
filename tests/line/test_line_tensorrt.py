"""The line and the bench on a TensorRT .engine, end to end through the fake TensorRT (tests/helpers/
fake_tensorrt.py) over the fake CUDA with CUDA's thread rules (tests/helpers/fake_cuda.py): prn_edge.trt's builder
makes the engine from the line tests' tiny ONNX, then `prn-edge run` drives conveyor -> TensorRT on the line's
inference thread -> the simulated PLC (a real Modbus TCP server), two cameras share the engine (SharedEngine
batches their calls on its own thread), and `prn-edge bench` measures it against ONNX Runtime; once with the
cuda-python host layer (the device set on each calling thread) and once with pycuda (its context current only on
the thread that pushed it: a call on a thread without it fails, as in the real driver API)."""
from __future__ import annotations

import json
import sys

import pytest

from prn_edge.artefact import host
from prn_edge.cli import main
from prn_edge.line.outputs import read_decisions
from prn_edge.trt import build_engine
from tests.helpers.fake_cuda import FakeGpu, use_cuda_python, use_pycuda
from tests.helpers.fake_tensorrt import make_fake_tensorrt
from tests.helpers.line_configs import conveyor_config, write_config

HOSTS = {"cuda-python": use_cuda_python, "pycuda": use_pycuda}


@pytest.fixture(params=sorted(HOSTS))
def trt_engine(request, monkeypatch, tmp_path, tiny_onnx):
    """(engine path, fake TensorRT, host layer name): the tiny ONNX built for TensorRT 10.3 on a fake Orin whose
    only host CUDA API is the one of the parameter."""
    gpu = FakeGpu()
    trt = make_fake_tensorrt("10.3.0", cuda=gpu)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(host, "NV_TEGRA_RELEASE", tmp_path / "no_nv_tegra_release")
    HOSTS[request.param](monkeypatch, gpu)
    summary = build_engine(tiny_onnx, tmp_path / "engines" / "tiny.engine", batch_profile=(1, 2, 4),
                           log=lambda m: None)
    assert json.loads((tmp_path / "engines" / "tiny.json").read_text())["cuda_api"] == request.param
    assert summary["batch_profile"] == [1, 2, 4] and gpu.mem == {}  # the build freed what it allocated
    return tmp_path / "engines" / "tiny.engine", trt, request.param


def line_yaml(folder, dataset, engine, plc_port, name="line", seed=0, parts=16, **engine_opts):
    folder.mkdir(exist_ok=True)
    data = conveyor_config(dataset, name=name, engine={"path": str(engine), "warmup": 1, **engine_opts},
                           outputs=[{"kind": "csv", "path": "d.csv"},
                                    {"kind": "modbus", "host": "127.0.0.1", "port": plc_port,
                                     "command_register": 0 if seed == 0 else 30,
                                     "heartbeat_register": 10 if seed == 0 else 40}],
                           monitor={"status_line": False},
                           # what is tested is where the engine runs, not timing (test_line_timing.py): generous
                           # enough for a machine busy with other work
                           timing={"deadline_s": 0.5, "stale_after_s": 0.5, "fire_tolerance_s": 0.2})
    data["source"]["conveyor"].update(rate_hz=25, parts=parts, seed=seed)
    return write_config(folder, data)


def check_decided_and_commanded(folder, summary, parts, plc, command_register):
    """Every part decided once, mostly by the model; every reject commanded on the PLC, nothing lost."""
    assert summary["parts"] == parts and summary["undecided"] == 0 and summary["commands_lost"] == {}
    rows = read_decisions(folder / "d.csv")
    assert sorted(int(r["seq"]) for r in rows) == list(range(parts))
    assert sum(r["cause"] == "model" for r in rows) >= parts - 2  # a loaded machine may push one over the budget
    assert "engine_error" not in summary["fail_safe"], summary["fail_safe"]
    rejects = [r for r in rows if r["verdict"] == "reject"]
    commands = plc.register_writes(command_register)
    assert len(commands) == len(rejects) and all(r["commands"] == "modbus=delivered" for r in rejects)


def test_line_runs_the_engine_on_its_inference_thread_and_commands_the_plc(trt_engine, tmp_path, demo_category,
                                                                          modbus_server):
    engine, trt, cuda_api = trt_engine
    folder = tmp_path / "line"
    path = line_yaml(folder, demo_category, engine, modbus_server.port)
    assert main(["run", "--config", path, "--summary-json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    check_decided_and_commanded(folder, summary, 16, modbus_server, 0)
    assert summary["engine"]["backend"] == "tensorrt" and summary["engine"]["tensorrt"] == "10.3.0"
    # warmed up where the line is opened (the main thread), then run on the line's own inference thread
    enqueues = trt.__fake__.enqueues
    assert {t for _, t in enqueues} == {"MainThread", "line-infer"}, enqueues
    assert sum(n for n, t in enqueues if t == "line-infer") >= 14
    gpu = trt.__fake__.gpu
    assert gpu.mem == {} and set(gpu.pushed.values()) <= {0}  # closed: freed, no context left pushed anywhere
    if cuda_api == "pycuda":
        assert gpu.pushed.keys() >= {"MainThread", "line-infer"}  # each thread pushed the context for itself


def test_two_cameras_share_the_engine_in_batches(trt_engine, tmp_path, demo_category, modbus_server):
    engine, trt, _ = trt_engine
    paths = [line_yaml(tmp_path / f"cam{i}", demo_category, engine, modbus_server.port, name=f"cam{i}", seed=i,
                       share_wait_s=0.02) for i in range(2)]
    assert main(["run", "--config", paths[0], "--config", paths[1], "--summary-json", str(tmp_path / "s.json")]) == 0
    for i, summary in enumerate(json.loads((tmp_path / "s.json").read_text())):
        check_decided_and_commanded(tmp_path / f"cam{i}", summary, 16, modbus_server, 0 if i == 0 else 30)
    enqueues = trt.__fake__.enqueues
    assert {t for _, t in enqueues} == {"line-shared-engine"}  # every call ran on the batching thread
    assert sum(n for n, _ in enqueues if n >= 2) >= 8, enqueues  # the two cameras' frames met in batches
    gpu = trt.__fake__.gpu
    assert gpu.mem == {} and set(gpu.pushed.values()) <= {0}


def test_bench_measures_the_engine_against_onnx_runtime(trt_engine, tmp_path, tiny_onnx, capsys):
    engine, trt, cuda_api = trt_engine
    out = tmp_path / "bench.json"
    assert main(["bench", f"ort={tiny_onnx}", f"trt={engine}", "--batch", "1", "4", "--iters", "3", "--warmup", "1",
                 "--rounds", "1", "--threads", "1", "--json", str(out), "--quiet"]) == 0
    rows = {(r["artefact"], r["batch"]): r for r in json.loads(out.read_text())["results"]}
    for batch in (1, 4):
        r = rows[("trt", batch)]
        assert r["decision_agreement"] == 1.0 and r["max_abs_map_diff"] < 1e-5  # the fake engine runs the ONNX
        assert r["stages_ms"]["compute"] > 0 and r["latency_ms"]["p50"] > 0
    assert rows[("trt", 1)]["engine"]["backend"] == "tensorrt"
    assert "trt: backend tensorrt" in capsys.readouterr().out
    assert {n for n, _ in trt.__fake__.enqueues} >= {1, 4} and trt.__fake__.gpu.mem == {}
