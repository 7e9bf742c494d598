"""Micro-batching across cameras: two lines (two synthetic conveyors) share one engine; calls that meet within
the wait run as one batch, every part of every line still gets exactly one, correct decision."""
from __future__ import annotations

import threading

import pytest

from prn_edge.line import Budget, Line, LoopOptions
from prn_edge.line.config import line_config
from prn_edge.sim.doubles import RecordingOutput, ScriptedEngine
from prn_edge.line.errors import LineConfigError
from prn_edge.line.factory import build_lines
from prn_edge.line.shared import SharedEngine
from prn_edge.line.sources import SyntheticConveyor


class CountingEngine(ScriptedEngine):
    """ScriptedEngine that also counts how often it is opened (a shared engine is opened once)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.opened = 0

    def _activate(self):
        self.opened += 1


def _run_two(category, engine, parts=30, **opts):
    shared = SharedEngine(engine, max_batch=4, wait_s=0.01)
    recs, lines = [], []
    for i in range(2):
        rec = RecordingOutput(f"rec{i}")
        recs.append(rec)
        lines.append(Line(SyntheticConveyor(category, rate_hz=40.0, parts=parts, seed=i), shared.client(), [rec],
                          Budget.from_line(deadline_s=0.1), LoopOptions(warmup=1, fire_tolerance_s=0.05, **opts),
                          name=f"cam{i}"))
    summaries = [None, None]

    def run(i):
        summaries[i] = lines[i].run()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return shared, lines, summaries, recs


def test_two_cameras_share_one_engine_in_batches(demo_category, truth):
    engine = CountingEngine(64, 64, 3, score_fn=truth, delay_s=0.004)
    shared, lines, summaries, recs = _run_two(demo_category, engine)
    assert engine.opened == 1  # opened by the first line, closed by the last
    for s, rec in zip(summaries, recs):
        assert s["parts"] == 30 and s["undecided"] == 0 and s["fail_safe"] == {}
        assert sorted(p.seq for p in rec.parts) == list(range(30))
        for p in rec.parts:
            assert p.decision.verdict == ("reject" if p.label else "good")
    # the two conveyors run at the same rate: most calls carry a frame of each camera
    batched = sum(1 for n in shared.calls if n >= 2)
    assert batched >= 10, shared.calls
    assert engine.frames_seen == sum(shared.calls) and max(shared.calls) <= 4


def test_an_engine_error_in_a_shared_batch_is_fail_safe_on_every_line(demo_category, truth):
    engine = CountingEngine(64, 64, 3, score_fn=truth, delay_s=0.004, fail_on=lambda i: 12 <= i < 16)
    shared, lines, summaries, recs = _run_two(demo_category, engine)
    assert all(s["undecided"] == 0 and s["parts"] == 30 for s in summaries)
    causes = [s["fail_safe"].get("engine_error", 0) for s in summaries]
    assert sum(causes) >= 4 and all(c >= 1 for c in causes), causes  # the failed batches held both cameras' parts
    for rec in recs:
        for p in rec.parts:
            if p.decision.fail_safe:
                assert p.decision.verdict == "reject"


def test_configs_sharing_an_engine_file_get_one_shared_engine(tmp_path, monkeypatch):
    import prn_edge.line.factory as factory

    made = []
    monkeypatch.setattr(factory, "build_engine", lambda cfg: made.append(cfg.engine.path) or ScriptedEngine(8, 8, 3))
    base = {"source": {"kind": "conveyor", "conveyor": {"dataset": str(tmp_path)}},
            "timing": {"deadline_s": 0.1}}
    cfgs = [line_config({**base, "name": n, "engine": {"path": str(tmp_path / e)}})
            for n, e in (("a", "m.onnx"), ("b", "m.onnx"), ("c", "other.onnx"))]
    lines, shared = build_lines(cfgs)
    assert len(lines) == 3 and len(shared) == 1 and made.count(str(tmp_path / "m.onnx")) == 1
    assert lines[0].engine._shared is lines[1].engine._shared is shared[0]
    assert not hasattr(lines[2].engine, "_shared")
    with pytest.raises(LineConfigError, match="repeat"):
        build_lines([cfgs[0], cfgs[0]])
    # the same file run another way (here on the GPU) is another engine, not the first config's
    gpu = line_config({**base, "name": "d", "engine": {"path": str(tmp_path / "m.onnx"), "options": {"providers": "cuda"}}})
    lines, shared = build_lines([cfgs[0], cfgs[1], gpu])
    assert len(shared) == 1 and not hasattr(lines[2].engine, "_shared")


def test_a_hot_swap_on_one_line_swaps_the_engine_every_sharing_line_calls(demo_category):
    import time

    from prn_edge.line import LineError

    old = CountingEngine(64, 64, 3, score_fn=lambda f: 0.0, delay_s=0.002)  # everything good
    new = CountingEngine(64, 64, 3, score_fn=lambda f: 1.0, delay_s=0.002)  # everything rejected
    shared = SharedEngine(old, max_batch=4, wait_s=0.005)
    recs = [RecordingOutput(f"rec{i}") for i in range(2)]
    lines = [Line(SyntheticConveyor(demo_category, rate_hz=40.0, parts=60, seed=i), shared.client(), [recs[i]],
                  Budget.from_line(deadline_s=0.1), LoopOptions(warmup=1), name=f"cam{i}") for i in range(2)]
    result, errors = {}, []

    def swap():
        while len(recs[0].parts) < 15:
            time.sleep(0.005)
        try:  # an engine that takes other frames is refused and the old one keeps answering
            lines[0].swap_engine(CountingEngine(32, 32, 3), "wrong.onnx")
        except LineError as e:
            errors.append(str(e))
        result.update(lines[0].swap_engine(new, "new.onnx@abc"))

    threads = [threading.Thread(target=lines[i].run) for i in range(2)] + [threading.Thread(target=swap)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(errors) == 1 and "refused" in errors[0] and "32" in errors[0]
    assert result["from"] == "shared" and result["to"] == "new.onnx@abc"
    assert shared.engine is new and new.opened == 1 and old.opened == 1
    for rec in recs:  # both lines: good before the swap, rejected after; no part undecided
        parts = sorted((p for p in rec.parts if not p.decision.fail_safe), key=lambda p: p.seq)
        verdicts = [p.decision.verdict for p in parts]
        switch = verdicts.index("reject")
        assert len(rec.parts) == 60 and 0 < switch < 60
        assert set(verdicts[:switch]) == {"good"} and set(verdicts[switch:]) == {"reject"}
