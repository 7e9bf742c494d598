"""Stopping a running line the way systemd, Docker and an operator do: SIGTERM and Ctrl-C, once or twice, with one
camera or several. Every part already imaged is decided, the CSV holds whole rows, the summary is written, the
PLC's heartbeat register is left at 0 (not healthy), and the exit code says whether every part was decided."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from prn_edge.line.outputs import read_decisions


def _config(folder, dataset, engine, plc_port, name="line1"):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"name": name, "engine": {"path": str(engine), "backend": "onnxruntime", "threads": 1, "warmup": 1},
            "source": {"kind": "conveyor", "conveyor": {"dataset": str(dataset), "rate_hz": 40, "parts": 0}},
            "timing": {"deadline_s": 0.3},
            "outputs": [{"kind": "csv", "path": "d.csv"},
                        {"kind": "modbus", "host": "127.0.0.1", "port": plc_port, "command_register": 0,
                         "heartbeat_register": 10}],
            "monitor": {"status_line": False}}
    path = folder / "line.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _start(configs, summary):
    args = [sys.executable, "-m", "prn_edge.cli", "run", "--summary-json", str(summary)]
    for c in configs:
        args += ["--config", str(c)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_rows(csv_paths, n, proc, timeout=90.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"the line ended early: {proc.communicate()[1][-2000:]}")
        if all(p.is_file() and len(p.read_text().splitlines()) > n for p in csv_paths):
            return
        time.sleep(0.1)
    pytest.fail("the line decided too few parts in time")


def _check_whole(csv_path, summary):
    text = csv_path.read_text()
    assert text.endswith("\n")  # no torn last row
    rows = read_decisions(csv_path)
    assert sorted(int(r["seq"]) for r in rows) == list(range(summary["parts"]))  # each part once, none missing
    assert summary["undecided"] == 0 and summary["finalized"] == summary["parts"]


@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGTERM, signal.SIGTERM), (signal.SIGINT,)],
                         ids=["sigterm", "sigterm-twice", "sigint"])
def test_a_signal_stops_the_line_and_loses_nothing(tmp_path, demo_category, tiny_onnx, modbus_server, signals):
    cfg = _config(tmp_path / "cam", demo_category, tiny_onnx, modbus_server.port)
    proc = _start([cfg], tmp_path / "s.json")
    _wait_rows([tmp_path / "cam" / "d.csv"], 10, proc)
    for s in signals:
        proc.send_signal(s)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stopped_by"] == signals[0].name
    _check_whole(tmp_path / "cam" / "d.csv", summary)
    beats = modbus_server.register_writes(10)
    assert len(beats) > 1 and beats[-1][0] == 0 and all(b[0] > 0 for b in beats[:-1])  # 0 only at the stop


def test_sigterm_stops_every_camera_of_a_multi_line_process(tmp_path, demo_category, tiny_onnx, modbus_server):
    cfgs = [_config(tmp_path / f"cam{i}", demo_category, tiny_onnx, modbus_server.port, name=f"cam{i}")
            for i in range(2)]
    proc = _start(cfgs, tmp_path / "s.json")
    _wait_rows([tmp_path / f"cam{i}" / "d.csv" for i in range(2)], 5, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    summaries = json.loads((tmp_path / "s.json").read_text())
    assert [s["line"] for s in summaries] == ["cam0", "cam1"]
    for i, s in enumerate(summaries):
        assert s["stopped_by"] == "SIGTERM"
        _check_whole(tmp_path / f"cam{i}" / "d.csv", s)


def test_a_run_whose_plc_never_got_its_commands_exits_3(tmp_path, demo_category, tiny_onnx, dead_port):
    """Every part decided, but the PLC (never there) got none of its commands: not a success (exit 3), and the
    summary and each CSV row say what became of the commands."""
    cfg = _config(tmp_path / "cam", demo_category, tiny_onnx, dead_port)
    data = yaml.safe_load(cfg.read_text())
    data["source"]["conveyor"]["parts"] = 12
    data["outputs"][1].update(write_good=True, require_at_start=False, timeout_s=0.05)  # every part needs one
    cfg.write_text(yaml.safe_dump(data))
    proc = _start([cfg], tmp_path / "s.json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    assert "commands_lost" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["undecided"] == 0 and sum(summary["commands_lost"]["modbus"].values()) == 12
    rows = read_decisions(tmp_path / "cam" / "d.csv")
    assert len(rows) == 12 and all(r["commands"] in ("modbus=failed", "modbus=stale") for r in rows)
