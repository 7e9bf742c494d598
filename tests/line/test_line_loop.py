"""The loop end to end with the synthetic conveyor and scripted engines: every part gets exactly one decision,
faults are decided fail-safe and counted by cause, no model verdict is actuated late."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from prn_edge.line import Budget, Line, LoopOptions
from prn_edge.sim.doubles import NullEngine, RecordingOutput, ScriptedEngine
from prn_edge.line.outputs import CsvOutput, read_decisions
from prn_edge.line.sources import SyntheticConveyor

TOLERANCE = 0.05  # actuation lateness allowed in tests (shared CI machine); the line's default is 10 ms


def run(category, engine, parts=40, rate=100.0, deadline=0.06, faults=None, outputs=None, **opts):
    source = SyntheticConveyor(category, rate_hz=rate, parts=parts, faults=faults)
    rec = RecordingOutput()
    outs = [rec] + (outputs or [])
    opts.setdefault("fire_tolerance_s", TOLERANCE)
    opts.setdefault("warmup", 1)
    line = Line(source, engine, outs, Budget.from_line(deadline_s=deadline), LoopOptions(**opts))
    summary = line.run()
    return line, summary, rec


def check_one_decision_each(line, summary, rec, parts):
    assert summary["parts"] == parts and summary["undecided"] == 0 and summary["finalized"] == parts
    seqs = [p.seq for p in rec.parts]
    assert sorted(seqs) == list(range(parts))  # each part actuated exactly once
    assert sum(summary["decisions"].values()) == parts
    for p, t in zip(rec.parts, rec.times):
        assert t >= p.t_fire - 1e-6, f"part {p.seq} actuated before its fire time"
        assert p.decision.t_decided <= p.t_released + 1e-6
        assert p.t_released <= p.t_fired + 1e-6 and p.t_fired >= p.t_fire - 1e-6, "t_fired is the actuation itself"
        if not p.decision.fail_safe:
            assert p.decision.t_decided <= p.t_ready + 1e-6, f"model verdict of part {p.seq} came after t_ready"
            assert t - p.t_fire < TOLERANCE, (f"model verdict of part {p.seq} actuated {t - p.t_fire:.3f} s late "
                                              f"(fired {p.t_fired - p.t_fire:.3f} s late)")


def test_every_part_one_decision_matching_ground_truth(demo_category, truth, tmp_path):
    csv_path = tmp_path / "d.csv"
    line, summary, rec = run(demo_category, ScriptedEngine(64, 64, 3, score_fn=truth), parts=40,
                             outputs=[CsvOutput(csv_path)])
    check_one_decision_each(line, summary, rec, 40)
    assert summary["fail_safe"] == {} and summary["late_actuations"]["model"] == 0
    for p in rec.parts:
        assert p.decision.verdict == ("reject" if p.label else "good"), p
    rows = read_decisions(csv_path)
    assert [int(r["seq"]) for r in rows] == sorted(int(r["seq"]) for r in rows) == list(range(40))
    assert {r["cause"] for r in rows} == {"model"}
    assert all(r["defect"] for r in rows)  # ground truth travels to the audit trail
    for r in rows:  # the audit trail's t_fired is when the command went out, not when it was handed over
        # (the hand-over is early unless the scheduler itself was late; the actuation never precedes either)
        assert float(r["t_fire"]) <= float(r["t_fired"]) + 1e-6 and float(r["t_released"]) <= float(r["t_fired"]) + 1e-6
        assert float(r["t_fired"]) - float(r["t_fire"]) < TOLERANCE
    assert rec.heartbeats[:3] == [1, 2, 3] and 0 not in rec.heartbeats
    stages = {k for p in line.records for k in p.times}
    assert {"capture_to_queue", "queue_wait", "preprocess", "inference", "postprocess", "actuation"} <= stages


def test_camera_faults_are_fail_safe_by_cause(demo_category, truth):
    faults = {"drop": [3, 39], "timeout": [7], "corrupt": [11]}
    line, summary, rec = run(demo_category, ScriptedEngine(64, 64, 3, score_fn=truth), parts=40, faults=faults)
    check_one_decision_each(line, summary, rec, 40)
    by_frame = {p.frame_id: p.decision for p in rec.parts}
    assert by_frame[3].cause == by_frame[39].cause == "missing_frame"
    assert by_frame[7].cause == "camera_timeout"
    assert by_frame[11].cause == "corrupt_frame"
    assert all(by_frame[i].verdict == "reject" for i in (3, 7, 11, 39))
    assert summary["fail_safe"] == {"missing_frame": 2, "camera_timeout": 1, "corrupt_frame": 1}


def test_engine_errors_are_fail_safe_and_the_line_goes_on(demo_category, truth, caplog):
    failing = lambda i: i in (5, 6) or i >= 30  # noqa: E731 - call 0 is the warm-up, call i is part i - 1
    engine = ScriptedEngine(64, 64, 3, score_fn=truth, fail_on=failing)
    with caplog.at_level(logging.WARNING, logger="prn_edge.line.loop"):
        line, summary, rec = run(demo_category, engine, parts=40)
    check_one_decision_each(line, summary, rec, 40)
    assert summary["fail_safe"]["engine_error"] == 2 + 11
    assert "ALARM engine failed" in caplog.text
    assert all(p.decision.verdict == "reject" for p in rec.parts if p.decision.fail_safe)


def test_engine_slower_than_the_budget(demo_category, truth):
    """Calls 12-14 take 3x the deadline: those parts and the ones queued behind them are decided fail-safe (late
    or over budget), no model verdict is actuated late, and the line recovers once the engine is fast again."""
    engine = ScriptedEngine(64, 64, 3, score_fn=truth, delay_s=lambda i: 0.15 if 12 <= i <= 14 else 0.0)
    line, summary, rec = run(demo_category, engine, parts=200, deadline=0.05, p99_age_s=0.5)
    check_one_decision_each(line, summary, rec, 200)
    causes = summary["fail_safe"]
    assert causes.get("late_verdict", 0) >= 1 and causes.get("over_budget", 0) >= 1
    assert summary["deadline_misses"] == causes["late_verdict"]
    assert summary["late_actuations"]["model"] == 0
    tail = [p for p in rec.parts if p.seq >= 170]
    assert tail and all(not p.decision.fail_safe for p in tail), "the line did not recover after the slow spell"


def test_hung_engine_stops_the_heartbeat(demo_category):
    engine = ScriptedEngine(64, 64, 3, delay_s=lambda i: 0.8 if i == 5 else 0.0)
    line, summary, rec = run(demo_category, engine, parts=60, watchdog_s=0.3, heartbeat_s=0.05)
    check_one_decision_each(line, summary, rec, 60)
    assert line.metrics.value("prn_line_watchdog_trips_total") >= 1
    # The counter paused while the engine hung and went on afterwards, never sending 0.
    assert rec.heartbeats == list(range(1, len(rec.heartbeats) + 1))


def test_uncertain_band_gives_recheck_and_fail_safe_can_be_recheck(demo_category, truth):
    # defects score at the threshold (normalized 0.5): inside the band
    engine = ScriptedEngine(64, 64, 3, score_fn=lambda f: 0.5 * truth(f))
    line, summary, rec = run(demo_category, engine, parts=30, faults={"timeout": [4]},
                             uncertain_band=(0.4, 0.6), fail_safe="recheck")
    check_one_decision_each(line, summary, rec, 30)
    for p in rec.parts:
        if p.frame_id == 4:
            assert (p.decision.verdict, p.decision.cause) == ("recheck", "camera_timeout")
        else:
            assert p.decision.verdict == ("recheck" if p.label else "good")


def test_full_queue_and_micro_batches(demo_category):
    engine = ScriptedEngine(64, 64, 3, delay_s=0.03)
    line, summary, rec = run(demo_category, engine, parts=60, rate=150, deadline=0.2, queue_size=2,
                             max_batch=2)
    check_one_decision_each(line, summary, rec, 60)
    assert summary["fail_safe"].get("queue_full", 0) >= 1
    assert engine.calls - 2 < 60  # batches of two (2 warm-up calls per batch size)


def test_duration_stops_an_endless_source(demo_category):
    source = SyntheticConveyor(demo_category, rate_hz=200, parts=0)
    rec = RecordingOutput()
    line = Line(source, NullEngine(64, 64, 3), [rec], Budget.from_line(deadline_s=0.03), LoopOptions(warmup=1))
    summary = line.run(duration_s=0.4)
    assert 20 <= summary["parts"] and summary["undecided"] == 0
    assert sorted(p.seq for p in rec.parts) == list(range(summary["parts"]))


def test_max_parts_and_wrong_model_size(demo_category):
    source = SyntheticConveyor(demo_category, rate_hz=200, parts=0)
    line = Line(source, NullEngine(64, 64, 3), [], Budget.from_line(deadline_s=0.03), LoopOptions(warmup=1))
    assert line.run(max_parts=15)["parts"] == 15
    from prn_edge.line import LineConfigError

    bad = Line(SyntheticConveyor(demo_category, parts=5), NullEngine(32, 48, 3), [], Budget.from_line(deadline_s=0.1))
    with pytest.raises(LineConfigError,
                       match=r"model takes 48x32 frames \(width x height\) but the camera region is 64x64"):
        bad.run()


def test_options_are_validated():
    from prn_edge.line import LineConfigError

    with pytest.raises(LineConfigError, match="uncertain_band"):
        LoopOptions(uncertain_band=(0.6, 0.4)).validate()
    with pytest.raises(LineConfigError, match=r"fail_safe='accept' is not allowed; choose one of \['reject', 'recheck'\]"):
        LoopOptions(fail_safe="accept").validate()


def test_maps_are_stitched_when_kept(demo_category):
    engine = ScriptedEngine(32, 32, 3, score_fn=lambda f: float(f.mean()) / 255)
    source = SyntheticConveyor(demo_category, rate_hz=100, parts=5)
    seen = []
    line = Line(source, engine, [], Budget.from_line(deadline_s=0.1),
                LoopOptions(tiles=True, overlap=8, keep_maps=True, warmup=1))
    final = line._on_final  # look at each part's map before the record drops it
    line.scheduler._on_final = lambda p: (seen.append(None if p.amap is None else p.amap.shape), final(p))
    summary = line.run()
    assert summary["undecided"] == 0 and seen == [(64, 64)] * 5
    assert line.prep.frames_per_part == 9  # 32 px tiles with >= 8 px overlap over 64 px: starts 0, 24, 32
    assert np.isfinite([p.decision.score for p in line.records]).all()


def test_young_collections_move_to_idle_moments_and_the_gc_settings_come_back(demo_category, truth, monkeypatch):
    """While the line runs, automatic collections only start after gc_backstop allocations (memory stays
    bounded); the scheduler collects the young generations when nothing is due. Afterwards gc is as before."""
    import gc

    before = gc.get_threshold()
    collections = []
    real_collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda generation=2: collections.append(generation) or real_collect(generation))
    monkeypatch.setattr("prn_edge.line.loop.YOUNG_GC_MIN", 1)  # collect at every idle moment, however few objects
    line, summary, rec = run(demo_category, ScriptedEngine(64, 64, 3, score_fn=truth), parts=60, rate=50.0)
    check_one_decision_each(line, summary, rec, 60)
    assert gc.get_threshold() == before
    assert collections[0] == 2 and collections.count(2) == 1  # the one before freezing; never during the run
    assert len(collections) >= 5  # young collections in idle moments (the run lasts over a second)
