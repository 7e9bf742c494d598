"""Hot swap: a new engine artefact takes over a running line without stopping capture. Parts in flight finish on
the old engine, every decision records its artefact, a swap that cannot work keeps the old engine. In process
with scripted engines, and through `prn-edge run --pid-file` + `prn-edge reload` (SIGHUP) with two real ONNX
artefacts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from prn_edge.line import Budget, Line, LineError, LoopOptions
from prn_edge.sim.doubles import RecordingOutput, ScriptedEngine
from prn_edge.sim.line_bench import with_threshold
from prn_edge.line.outputs import CsvOutput, read_decisions
from prn_edge.line.sources import SyntheticConveyor


def test_swap_under_load_decides_every_part_and_records_the_artefact(tmp_path, demo_category):
    old = ScriptedEngine(64, 64, 3, score_fn=lambda f: 0.0, delay_s=0.002)  # everything good
    new = ScriptedEngine(64, 64, 3, score_fn=lambda f: 1.0, delay_s=0.002)  # everything rejected
    wrong = ScriptedEngine(32, 32, 3)
    rec = RecordingOutput()
    line = Line(SyntheticConveyor(demo_category, rate_hz=100, parts=200), old, [rec, CsvOutput(tmp_path / "d.csv")],
                Budget.from_line(deadline_s=0.1), LoopOptions(warmup=1))
    result = {}

    def swap():
        while len(rec.parts) < 50:
            time.sleep(0.005)
        assert line.swap_engine(ScriptedEngine(64, 64, 3), "ScriptedEngine")["unchanged"]  # same artefact: kept
        with pytest.raises(LineError, match="refused.*takes .*32.*still running ScriptedEngine"):
            line.swap_engine(wrong, "wrong.onnx")
        result.update(line.swap_engine(new, "new.onnx@abc"))

    t = threading.Thread(target=swap)
    t.start()
    summary = line.run()
    t.join()
    assert summary["undecided"] == 0 and summary["parts"] == 200 and summary["stopped_by"] == "source_end"
    assert result["from"] == "ScriptedEngine" and result["to"] == "new.onnx@abc"
    model = sorted((p for p in rec.parts if not p.decision.fail_safe), key=lambda p: p.seq)
    labels = [p.artefact for p in model]
    switch = labels.index("new.onnx@abc")
    assert 50 <= switch and set(labels[:switch]) == {"ScriptedEngine"} and set(labels[switch:]) == {"new.onnx@abc"}
    assert all(p.decision.verdict == "good" for p in model[:switch])
    assert all(p.decision.verdict == "reject" for p in model[switch:])
    rows = {int(r["seq"]): r["artefact"] for r in read_decisions(tmp_path / "d.csv")}
    assert all(rows[p.seq] == p.artefact for p in model)
    assert line.metrics.value("prn_line_engine_swaps_total", result="ok") == 1
    assert line.metrics.value("prn_line_engine_swaps_total", result="failed") == 1
    assert line.metrics.value("prn_line_artefact_info", artefact="new.onnx@abc") == 1
    assert line.metrics.value("prn_line_artefact_info", artefact="ScriptedEngine") == 0
    with pytest.raises(LineError, match="not running"):
        line.swap_engine(new)


class ServedEngine(ScriptedEngine):
    """Stands in for a triton:// engine (prn_edge.runtime.triton_backend): the server answers with model version 2
    from the 30th call on; scores follow the version (1: all good, 2: all rejected)."""

    def __init__(self):
        super().__init__(64, 64, 3, score_fn=lambda f: 1.0 if self.calls > 30 else 0.0, delay_s=0.002)

    @property
    def served_artefact(self) -> str:
        return f"coin/{2 if self.calls > 30 else 1}:coin_v{2 if self.calls > 30 else 1}.onnx@abc"


def test_a_server_side_rollout_is_recorded_per_part_without_a_swap(tmp_path, demo_category):
    """The model version the server answered with decides each part: CSV column `artefact`, the info gauge follows
    it, prn_line_model_decisions counts each version's parts; the line swapped nothing itself."""
    rec = RecordingOutput()
    line = Line(SyntheticConveyor(demo_category, rate_hz=100, parts=80), ServedEngine(),
                [rec, CsvOutput(tmp_path / "d.csv")], Budget.from_line(deadline_s=0.1), LoopOptions(warmup=1))
    assert line.artefact == "coin/1:coin_v1.onnx@abc"  # known before the first call
    summary = line.run()
    assert summary["undecided"] == 0
    model = sorted((p for p in rec.parts if not p.decision.fail_safe), key=lambda p: p.seq)
    labels = [p.artefact for p in model]
    switch = labels.index("coin/2:coin_v2.onnx@abc")
    assert switch >= 10 and set(labels[:switch]) == {"coin/1:coin_v1.onnx@abc"}
    assert set(labels[switch:]) == {"coin/2:coin_v2.onnx@abc"}
    assert all(p.decision.verdict == ("good" if p.artefact.startswith("coin/1") else "reject") for p in model)
    rows = {int(r["seq"]): r["artefact"] for r in read_decisions(tmp_path / "d.csv")}
    assert all(rows[p.seq] == p.artefact for p in model)
    m = line.metrics
    assert m.value("prn_line_artefact_info", artefact="coin/2:coin_v2.onnx@abc") == 1
    assert m.value("prn_line_artefact_info", artefact="coin/1:coin_v1.onnx@abc") == 0
    assert summary["model_decisions_by_artefact"] == {"coin/1:coin_v1.onnx@abc": switch,
                                                      "coin/2:coin_v2.onnx@abc": len(model) - switch}
    assert m.value("prn_line_engine_swaps_total", result="ok") == 0
    assert summary["engine"]["artefact"] == "coin/2:coin_v2.onnx@abc"


def test_sighup_swaps_in_the_artefact_the_config_now_names(tmp_path, demo_category, tiny_onnx):
    strict = with_threshold(tiny_onnx, tmp_path / "strict.onnx", -1e9)  # rejects everything
    lenient = with_threshold(tiny_onnx, tmp_path / "lenient.onnx", 1e9)  # accepts everything
    cfg = tmp_path / "line.yaml"
    data = {"name": "swap", "engine": {"path": str(strict), "threads": 1, "warmup": 1},
            "source": {"kind": "conveyor", "conveyor": {"dataset": str(demo_category), "rate_hz": 30, "parts": 0}},
            "timing": {"deadline_s": 0.3}, "outputs": [{"kind": "csv", "path": "d.csv"}],
            "monitor": {"status_line": False}}
    cfg.write_text(yaml.safe_dump(data))
    pid_file = tmp_path / "run" / "line.pid"
    proc = subprocess.Popen([sys.executable, "-m", "prn_edge.cli", "run", "--config", str(cfg), "--summary-json",
                             str(tmp_path / "s.json"), "--pid-file", str(pid_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    csv = tmp_path / "d.csv"

    def rows():
        return read_decisions(csv) if csv.is_file() else []

    try:
        end = time.monotonic() + 90
        while len(rows()) < 10 and time.monotonic() < end:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        data["engine"]["path"] = str(lenient)
        cfg.write_text(yaml.safe_dump(data))
        assert pid_file.read_text() == f"{proc.pid}\n"
        r = subprocess.run([sys.executable, "-m", "prn_edge.cli", "reload", "--pid-file", str(pid_file)],
                           capture_output=True, text=True)  # SIGHUP, as systemctl reload sends it
        assert r.returncode == 0 and f"SIGHUP sent to prn-edge pid {proc.pid}" in r.stdout, r.stderr
        n = len(rows())
        while time.monotonic() < end and not any(r["artefact"].startswith("lenient.onnx@") for r in rows()[n:]):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert not pid_file.exists()  # removed when the run ended
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["undecided"] == 0 and len(summary["reloads"]) == 1
    assert summary["reloads"][0]["to"].startswith("lenient.onnx@")
    model = [r for r in rows() if r["cause"] == "model"]
    first = next(i for i, r in enumerate(model) if r["artefact"].startswith("lenient"))
    assert first >= 10 and all(r["artefact"].startswith("strict.onnx@") and r["verdict"] == "reject"
                               for r in model[:first])
    assert all(r["artefact"].startswith("lenient.onnx@") and r["verdict"] == "good" for r in model[first:])
    assert "hot swap" in err
