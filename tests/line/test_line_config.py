"""Line YAML: validation that names the bad key and the allowed values, relative paths, building a line from it,
and run_line end to end through the real ONNX Runtime engine with an exported tiny model."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from prn_edge.errors import ConfigError
from prn_edge.line import LineConfigError, build_line, line_config, load_line_config
from prn_edge.line.outputs.csvlog import CsvOptions as CsvOutputConfig
from prn_edge.line.outputs.modbus import ModbusOptions as ModbusOutputConfig
from prn_edge.sim.doubles import ScriptedEngine
from prn_edge.line.outputs import read_decisions
from tests.helpers.line_configs import conveyor_config, write_config


def test_defaults_relative_paths_and_outputs(tmp_path, demo_category):
    data = conveyor_config(demo_category, outputs=[{"kind": "csv", "path": "out/d.csv"},
                                        {"kind": "modbus", "host": "10.0.0.5", "port": 1502, "at": "decision"}])
    cfg = load_line_config(write_config(tmp_path, data))
    assert cfg.engine.path == str(tmp_path / "model.onnx")
    assert isinstance(cfg.outputs[0], CsvOutputConfig) and cfg.outputs[0].path == str(tmp_path / "out/d.csv")
    m = cfg.outputs[1]
    assert isinstance(m, ModbusOutputConfig) and (m.host, m.port, m.at, m.name) == ("10.0.0.5", 1502, "decision",
                                                                                    "modbus")
    assert isinstance(line_config(conveyor_config(demo_category)).outputs[0], CsvOutputConfig)  # default output


@pytest.mark.parametrize("patch, message", [
    ({"sorce": {}}, r"unknown key sorce; allowed: \['decision', 'engine', 'monitor', 'name', 'outputs'"),
    ({"source": {"kind": "usb"}}, r"source.kind='usb' is not allowed; choose one of \['genicam', 'folder', 'video'"),
    ({"timing": {"deadline_s": "soon"}}, r"timing.deadline_s: expected a number, got 'soon'"),
    ({"source": {"kind": "conveyor", "conveyor": {"rate": 5}}}, r"unknown key source.conveyor.rate; allowed: .*rate_hz"),
    ({"outputs": [{"kind": "relay"}]}, r"outputs\[0\].kind='relay' is not allowed; choose one of \['camera_io', 'csv'"),
    ({"outputs": [{"kind": "modbus", "hots": "x"}]}, r"unknown key outputs\[0\].hots; allowed: .*host"),
    ({"outputs": [{"kind": "csv"}, {"kind": "csv"}]}, "names .* repeat"),
    ({"decision": {"fail_safe": "accept"}}, r"decision.fail_safe='accept' is not allowed"),
    ({"source": {"kind": "folder"}}, "source.kind='folder' needs source.folder.path"),
    ({"monitor": {"port": 70000}}, "monitor.port=70000"),
    ({"region": {"tiles": "yes"}}, "region.tiles: expected true or false"),
])
def test_errors_name_the_key_and_the_allowed_values(tmp_path, demo_category, patch, message):
    data = conveyor_config(demo_category)
    data.update(patch)
    with pytest.raises(LineConfigError, match=message) as e:
        load_line_config(write_config(tmp_path, data))
    assert isinstance(e.value, ConfigError)  # the CLI prints ConfigErrors without a traceback


def test_engine_options_are_the_backends_checked_when_the_config_is_read(tmp_path, demo_category):
    """engine.options reach the backend's options dataclass (here ONNX Runtime's GPU providers): checked when the
    YAML is read, before any engine is opened; a path option is taken from the config's folder."""
    from prn_edge.runtime import engine_options

    gpu = {"providers": ["tensorrt", "cuda"], "trt_fp16": True, "trt_cache_dir": "trt-cache"}
    cfg = load_line_config(write_config(tmp_path, conveyor_config(demo_category, engine={"path": "m.onnx", "threads": 2,
                                                                       "options": gpu})))
    opts = cfg.backend_options()
    assert opts == {"providers": ["tensorrt", "cuda"], "trt_fp16": True, "trt_cache_dir": str(tmp_path / "trt-cache"),
                    "threads": 2}
    assert engine_options("onnxruntime", **opts).providers == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    for engine, match in [
        ({"path": "m.onnx", "options": {"providers": "rocm"}}, "engine.options: .*'rocm' is not one of cpu, cuda"),
        ({"path": "m.onnx", "options": {"trt_fp16": True}}, "engine.options: .*add tensorrt to providers"),
        ({"path": "m.onnx", "options": {"use_cuda_graph": True}}, "engine.options: onnxruntime backend: unknown option"),
        ({"path": "m.engine", "options": {"providers": "cuda"}}, "engine.options: tensorrt backend: unknown option"),
        ({"path": "m.onnx", "options": {"threads": 2}}, "engine.options.threads: give it as engine.threads"),
        # a misspelt backend with options beside it: the name is reported (was a KeyError)
        ({"path": "m.onnx", "backend": "onnxruntme", "options": {"spinning": False}}, "engine.backend='onnxruntme'"),
        ({"path": "m.onnx", "options": ["cuda"]}, "engine.options: expected a mapping"),
    ]:
        with pytest.raises(LineConfigError, match=match):
            line_config(conveyor_config(demo_category, engine=engine), tmp_path)


def test_timing_and_geometry_errors_come_before_the_line_starts(demo_category):
    cfg = line_config(conveyor_config(demo_category, timing={}))
    with pytest.raises(LineConfigError, match="set deadline_s > 0"):
        build_line(cfg, engine=ScriptedEngine(64, 64))
    cfg = line_config(conveyor_config(demo_category))
    line = build_line(cfg, engine=ScriptedEngine(256, 256), outputs=[])
    with pytest.raises(LineConfigError,
                       match=r"model takes 256x256 frames \(width x height\) but the camera region is 64x64"):
        line.run()
    with pytest.raises(LineConfigError, match="does not exist"):
        load_line_config("/nonexistent/line.yaml")


def test_build_line_with_evidence_and_csv(tmp_path, demo_category):
    data = conveyor_config(demo_category, outputs=[{"kind": "csv", "path": "d.csv"}, {"kind": "log"}],
                monitor={"evidence_dir": "ev", "evidence_quota_mb": 5, "status_line": False},
                region={"tiles": True, "overlap": 16})
    cfg = load_line_config(write_config(tmp_path, data))
    # about a third of the tiles are "defects" (any tile makes its part a reject)
    engine = ScriptedEngine(32, 32, 3, score_fn=lambda f: float(zlib.crc32(f.tobytes()) % 7 == 0))
    summary = build_line(cfg, engine=engine).run()
    assert summary["parts"] == 30 and summary["undecided"] == 0
    rows = read_decisions(tmp_path / "d.csv")
    assert len(rows) == 30
    rejects = [r for r in rows if r["verdict"] == "reject"]
    evidence = sorted((tmp_path / "ev").glob("*.json"))
    assert len(evidence) == len(rejects) > 0
    assert json.loads(evidence[0].read_text())["verdict"] == "reject"
    assert len(list((tmp_path / "ev").glob("*_overlay.png"))) == len(evidence)


def test_run_line_with_the_onnx_runtime_engine(tmp_path, demo_category, tiny_onnx):
    from prn_edge.line.cli import run_line

    data = conveyor_config(demo_category, engine={"path": str(tiny_onnx), "backend": "onnxruntime", "threads": 1, "warmup": 2},
                outputs=[{"kind": "csv", "path": "d.csv"}], monitor={"status_line": False, "port": 0},
                timing={"deadline_s": 0.25, "max_batch": 2})
    data["source"]["conveyor"].update(rate_hz=40, parts=24)
    summary = run_line(write_config(tmp_path, data), summary_json=tmp_path / "s.json")
    assert summary["parts"] == 24 and summary["undecided"] == 0
    assert json.loads((tmp_path / "s.json").read_text())["parts"] == 24
    rows = read_decisions(tmp_path / "d.csv")
    assert sorted(int(r["seq"]) for r in rows) == list(range(24))
    model_rows = [r for r in rows if r["cause"] == "model"]
    assert len(model_rows) >= 20  # a loaded machine may push a few parts over the budget
    assert all(np.isfinite(float(r["score"])) for r in model_rows)
    assert {r["verdict"] for r in model_rows} <= {"good", "reject"}


def test_two_cameras_share_the_onnx_runtime_engine_from_the_cli(tmp_path, demo_category, tiny_onnx, capsys):
    """`prn-edge run --config cam1.yaml --config cam2.yaml`: one line per camera, one shared ONNX Runtime session."""
    from prn_edge.cli import main

    paths = []
    for i in range(2):
        d = tmp_path / f"cam{i}"
        d.mkdir()
        data = conveyor_config(demo_category, engine={"path": str(tiny_onnx), "backend": "onnxruntime", "threads": 1,
                                           "warmup": 1, "share_wait_s": 0.01},
                    outputs=[{"kind": "csv", "path": "d.csv"}], monitor={"status_line": False},
                    timing={"deadline_s": 0.3})
        data["name"] = f"cam{i}"
        data["source"]["conveyor"].update(rate_hz=30, parts=16, seed=i)
        paths.append(write_config(d, data))
    assert main(["run", "--config", str(paths[0]), "--config", str(paths[1]),
                 "--summary-json", str(tmp_path / "s.json")]) == 0
    summaries = json.loads((tmp_path / "s.json").read_text())
    assert [s["line"] for s in summaries] == ["cam0", "cam1"]
    for i, s in enumerate(summaries):
        assert s["parts"] == 16 and s["undecided"] == 0
        rows = read_decisions(tmp_path / f"cam{i}" / "d.csv")
        assert sorted(int(r["seq"]) for r in rows) == list(range(16))
        assert sum(r["cause"] == "model" for r in rows) >= 12


def test_folder_source_with_line_scan_from_config(tmp_path, demo_category):
    """An image folder replayed as a line-scan camera: 64-line images cut into 32-line part frames."""
    data = {"source": {"kind": "folder", "folder": {"path": str(demo_category / "test"), "rate_hz": 200},
                       "linescan": {"enabled": True, "frame_height": 32}},
            "timing": {"deadline_s": 0.1}, "outputs": [{"kind": "csv", "path": "d.csv"}],
            "engine": {"warmup": 1}, "monitor": {"status_line": False}}
    cfg = load_line_config(write_config(tmp_path, data))
    summary = build_line(cfg, engine=ScriptedEngine(32, 64, 3)).run()
    assert summary["parts"] == 22 and summary["undecided"] == 0  # 11 images x 2 halves
    rows = read_decisions(tmp_path / "d.csv")
    assert len(rows) == 22
    # each image's two line-scan frames name the file they were cut from
    origins = sorted(r["origin"] for r in rows)
    assert len(set(origins)) == 11 and origins[::2] == origins[1::2] and all(o.endswith(".png") for o in origins)


@pytest.mark.parametrize("section,key,value", [("timing", "deadline_s", float("nan")),
                                               ("timing", "deadline_s", float("inf")),
                                               ("timing", "heartbeat_s", float("-inf")),
                                               ("decision", "uncertain_band", [0.4, float("nan")])])
def test_non_finite_numbers_are_refused_in_every_section(tmp_path, demo_category, section, key, value):
    data = conveyor_config(demo_category)
    data.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=rf"{key}.*finite number"):
        load_line_config(write_config(tmp_path, data))


def test_list_elements_are_typed(tmp_path, demo_category):
    data = conveyor_config(demo_category, decision={"uncertain_band": ["x", "y"]})
    with pytest.raises(ConfigError, match=r"uncertain_band\[0\]: expected a number, got 'x'"):
        load_line_config(write_config(tmp_path, data))


def test_metrics_endpoint_beyond_loopback_needs_an_explicit_opt_in(tmp_path, demo_category):
    data = conveyor_config(demo_category, monitor={"port": 0, "bind": "0.0.0.0"})
    with pytest.raises(LineConfigError, match="monitor.expose: true"):
        load_line_config(write_config(tmp_path, data))
    data["monitor"]["expose"] = True
    assert load_line_config(write_config(tmp_path, data)).monitor.bind == "0.0.0.0"
    data["monitor"] = {"port": 0, "bind": "127.0.0.2"}
    assert load_line_config(write_config(tmp_path, data)).monitor.bind == "127.0.0.2"
