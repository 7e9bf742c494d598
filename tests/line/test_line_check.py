"""`prn-edge run --check`: every problem of a line config at once (each section on its own, did-you-mean for
unknown keys), then the engine, source, outputs (a real Modbus peer must answer) and folders, without running."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml


def _check(cfg, *extra):
    return subprocess.run([sys.executable, "-m", "prn_edge.cli", "run", "--check", "--config", str(cfg), *extra],
                          capture_output=True, text=True, timeout=120)


def _config(tmp_path, demo_category, tiny_onnx, **changes):
    data = {"name": "chk", "engine": {"path": str(tiny_onnx), "threads": 1},
            "source": {"kind": "conveyor", "conveyor": {"dataset": str(demo_category)}},
            "timing": {"deadline_s": 0.3}, "outputs": [{"kind": "csv", "path": "out/d.csv"}]}
    data.update(changes)
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_config_problem_is_reported_at_once(tmp_path, demo_category, tiny_onnx):
    cfg = _config(tmp_path, demo_category, tiny_onnx, timing={"deadline_S": 0.3}, decision={"fail_safe": "rejct"},
                  source={"kind": "conveyor", "convayor": {}},
                  engine={"path": str(tiny_onnx), "options": {"spining": False}},
                  monitor={"port": 70000})
    r = _check(cfg, "--json")
    assert r.returncode == 2 and "5 problem(s)" in r.stderr
    found = {c["what"]: c for c in json.loads(r.stdout)[str(cfg)]}
    assert "did you mean 'deadline_s'?" in found["config: timing"]["detail"]
    assert "did you mean 'conveyor'?" in found["config: source"]["detail"]
    assert "fail_safe='rejct'" in found["config: decision"]["detail"]
    # checks of a section that come after the source's (a path the trial config lacks) were skipped before
    assert "unknown option 'spining'" in found["config: engine"]["detail"]
    assert "monitor.port=70000" in found["config: monitor"]["detail"]
    assert "engine" not in found  # nothing is opened while the config is broken
    r = subprocess.run([sys.executable, "-m", "prn_edge.cli", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "--check` lists every problem" in r.stderr


def test_the_time_budget_is_checked_as_run_derives_it(tmp_path, demo_category, tiny_onnx):
    """The review's config had no timing section: --check said every item ok, then `run` refused it."""
    data = yaml.safe_load(_config(tmp_path, demo_category, tiny_onnx).read_text())
    del data["timing"]
    (tmp_path / "line.yaml").write_text(yaml.safe_dump(data))
    r = _check(tmp_path / "line.yaml", "--json")
    found = {c["what"]: c for c in json.loads(r.stdout)[str(tmp_path / "line.yaml")]}
    assert r.returncode == 2 and not found["timing"]["ok"] and "set deadline_s > 0" in found["timing"]["detail"]
    ok = _check(_config(tmp_path, demo_category, tiny_onnx), "--json")
    found = {c["what"]: c for c in json.loads(ok.stdout)[str(tmp_path / "line.yaml")]}
    assert found["timing"]["ok"] and "decided within 0.29" in found["timing"]["detail"]


def test_a_whole_config_opens_engine_source_and_outputs(tmp_path, demo_category, tiny_onnx, modbus_server, dead_port):
    cfg = _config(tmp_path, demo_category, tiny_onnx, outputs=[
        {"kind": "csv", "path": "out/d.csv"},
        {"kind": "modbus", "port": modbus_server.port, "name": "plc"},
        {"kind": "modbus", "port": dead_port, "name": "gone", "timeout_s": 0.1, "require_at_start": False}])
    r = _check(cfg, "--json")
    found = {c["what"]: c for c in json.loads(r.stdout)[str(cfg)]}
    assert found["engine"]["ok"] and "backend onnxruntime" in found["engine"]["detail"]
    assert found["source"]["ok"] and "64x64x3" in found["source"]["detail"]
    assert found["output: plc"]["ok"] and found["output: csv"]["ok"]
    assert modbus_server.writes == []  # read-only: a running line's PLC sees no heartbeat 0, no command
    # unreachable is reported even for a PLC the line would start without
    assert not found["output: gone"]["ok"] and "cannot connect to the PLC" in found["output: gone"]["detail"]
    assert r.returncode == 2 and not (tmp_path / "out" / "d.csv").exists()  # checked, not created
    ok = _check(_config(tmp_path, demo_category, tiny_onnx))
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_the_region_is_planned_as_the_running_line_plans_it(tmp_path, demo_category, tiny_onnx):
    """The review's --check said every item ok for a camera whose frames the model does not take; `run` then
    refused. The check now plans the region from the opened engine and source."""
    import cv2
    import numpy as np

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.full((96, 80, 3), 90, np.uint8))
    source = {"kind": "folder", "folder": {"path": str(frames)}}
    r = _check(_config(tmp_path, demo_category, tiny_onnx, source=source), "--json")
    found = {c["what"]: c for c in json.loads(r.stdout)[next(iter(json.loads(r.stdout)))]}
    assert r.returncode == 2 and not found["region"]["ok"]
    assert "model takes 64x64 frames (width x height) but the camera region is 80x96" in found["region"]["detail"]
    r = _check(_config(tmp_path, demo_category, tiny_onnx, source=source, region={"resize": True}), "--json")
    found = {c["what"]: c for c in json.loads(r.stdout)[next(iter(json.loads(r.stdout)))]}
    assert r.returncode == 0 and found["region"]["ok"] and "96x80 -> model input (resized)" in found["region"]["detail"]
