"""Latency budget, engine-time estimates and the reject scheduler on their own."""
from __future__ import annotations

import time

import numpy as np
import pytest

from prn_edge.line import Budget, LineConfigError
from prn_edge.line.decision import model_verdict
from prn_edge.line.timing import EngineTimer, RejectScheduler, RollingQuantile, Watchdog


def test_budget_from_conveyor_or_deadline():
    b = Budget.from_line(speed_m_s=0.5, distance_m=0.3, actuator_lead_s=0.03, margin_s=0.005)
    assert b.fire_delay_s == pytest.approx(0.57)
    p = b.part(7, 100.0)
    assert (p.seq, p.t_fire, p.t_ready) == (7, pytest.approx(100.57), pytest.approx(100.565))
    assert Budget.from_line(deadline_s=0.2).fire_delay_s == 0.2


@pytest.mark.parametrize("kwargs, message", [
    ({}, "set deadline_s > 0, or speed_m_s and distance_m"),
    ({"speed_m_s": 1.0, "distance_m": 0.5, "deadline_s": 0.1}, "not both"),
    ({"speed_m_s": 1.0}, r"timing.speed_m_s=1.0 and timing.distance_m=0.0: both must be > 0"),
    ({"speed_m_s": 2.0, "distance_m": 0.1, "actuator_lead_s": 0.05}, "leaves no time to decide"),
])
def test_budget_errors(kwargs, message):
    with pytest.raises(LineConfigError, match=message):
        Budget.from_line(**kwargs)


def test_rolling_quantile_window_and_age():
    q = RollingQuantile(window=100, max_age_s=1.0)
    for i in range(200):
        q.add(float(i), now=10.0)
    assert len(q) == 100 and q.quantile(0.5, now=10.0) == pytest.approx(149.5)
    assert q.quantile(0.99, default=-1.0, now=11.5) == -1.0  # all expired


def test_rolling_quantile_matches_numpy_on_the_live_samples():
    rng = np.random.default_rng(3)
    q = RollingQuantile(window=50, max_age_s=2.0)
    values, times = rng.exponential(0.01, 400), np.arange(400) * 0.01
    for i, (v, t) in enumerate(zip(values, times)):
        q.add(v, now=t)
        if i % 37 == 0:
            now = t + 1.995  # some samples of the window have aged out already
            live = [x for x, tx in zip(values[max(0, i - 49):i + 1], times[max(0, i - 49):i + 1]) if now - tx <= 2.0]
            for qq in (0.0, 0.5, 0.9, 0.99, 1.0):
                assert q.quantile(qq, now=now) == pytest.approx(np.quantile(live, qq)), (i, qq)


def test_engine_timer_estimates_unseen_batch_sizes():
    t = EngineTimer(window=10, q=0.99, max_age_s=0)
    assert t.estimate(4) == 0.0
    for _ in range(10):
        t.add(2, 0.010)
    assert t.estimate(2) == pytest.approx(0.010)
    assert t.estimate(4) == pytest.approx(0.020)  # scaled from the nearest smaller size
    assert t.estimate(1) == pytest.approx(0.010)  # never less than a measured larger call


def test_model_verdict_and_band():
    assert model_verdict(True, 0.9, ()) == "reject"
    assert model_verdict(False, 0.1, (0.4, 0.6)) == "good"
    assert model_verdict(True, 0.55, (0.4, 0.6)) == "recheck"
    assert model_verdict(False, 0.45, (0.4, 0.6)) == "recheck"


def test_watchdog():
    w = Watchdog(timeout_s=0.05)
    w.beat("a")
    assert w.healthy()
    camera_ok = [True]
    w.extra.append(lambda: camera_ok[0])
    camera_ok[0] = False
    assert not w.healthy()
    camera_ok[0] = True
    assert w.stale(time.monotonic() + 0.1) == ["a"]
    w.forget("a")
    assert w.healthy(time.monotonic() + 0.1)


def test_scheduler_fires_in_time_order_once_each_and_refuses_late_verdicts():
    fired, finals, beats = [], [], []
    s = RejectScheduler("reject", lambda p, when: fired.append((p.seq, when, time.monotonic())),
                        finals.append, heartbeat=lambda: beats.append(1), heartbeat_s=0.01)
    b = Budget.from_line(deadline_s=0.15, margin_s=0.04)
    now = time.monotonic()
    parts = [b.part(i, now - 0.01 * i) for i in range(4)]  # part 3 is due first
    for p in parts:
        s.register(p)
    with pytest.raises(ValueError):
        s.register(parts[0])
    s.start()
    try:
        assert s.decide(0, "good") and s.decide(1, "reject")
        assert not s.decide(0, "reject")  # a second verdict for a decided part is discarded
        time.sleep(parts[2].t_ready + 0.01 - time.monotonic())  # past part 2's t_ready, 30 ms before its t_fire
        assert not s.decide(2, "good")  # too late: decided fail-safe at once instead
        assert s.drain(1.0)
    finally:
        s.stop()
    ejects = [(seq, t) for seq, when, t in fired if when == "eject"]
    assert [seq for seq, _ in ejects] == [3, 2, 1, 0]
    for seq, t in ejects:
        assert t >= parts[seq].t_fire
    d = {p.seq: p.decision for p in finals}
    assert (d[0].verdict, d[0].cause) == ("good", "model")
    assert (d[2].verdict, d[2].cause) == ("reject", "late_verdict")
    assert (d[3].verdict, d[3].cause) == ("reject", "late_verdict")  # never decided
    assert s.late_results == 1 and len(beats) >= 3
    # "decision" dispatches: once per part, when decided (or at fire for the never-decided one)
    assert sorted(seq for seq, when, _ in fired if when == "decision") == [0, 1, 2, 3]


def test_scheduler_with_a_lead_hands_over_final_decisions_early_and_outputs_wait_for_the_fire_time():
    """lead_s: eject dispatch comes lead_s before t_fire (never before t_ready) with the decision final, so the
    scheduler's wake-up jitter is spent before the fire time; OutputSet holds the call until t_fire itself."""
    from prn_edge.sim.doubles import RecordingOutput
    from prn_edge.line.outputs.base import OutputSet

    rec, now_out = RecordingOutput(), RecordingOutput("now", at="decision")
    dispatched, finals = [], []
    with OutputSet([rec, now_out], lambda *a: None, lambda *a: None) as outs:
        def dispatch(p, when):
            dispatched.append((p.seq, when, time.monotonic(), p.decision))
            outs.dispatch(p, when)

        s = RejectScheduler("reject", dispatch, finals.append, lead_s=0.02)
        b = Budget.from_line(deadline_s=0.1, margin_s=0.01)  # lead capped by the margin: release at t_ready
        b2 = Budget.from_line(deadline_s=0.1, margin_s=0.05)
        now = time.monotonic()
        parts = [b.part(0, now), b2.part(1, now), b2.part(2, now + 0.001)]
        for p in parts:
            s.register(p)
        s.start()
        try:
            assert s.decide(0, "good") and s.decide(1, "good")  # part 2 is never decided
            assert s.drain(1.0)
        finally:
            s.stop()
    ejects = {seq: (t, d) for seq, when, t, d in dispatched if when == "eject"}
    assert parts[0].t_ready <= ejects[0][0] < parts[0].t_fire  # released at t_ready, not 20 ms before t_fire
    for seq in (1, 2):
        assert parts[seq].t_fire - 0.02 <= ejects[seq][0] < parts[seq].t_fire
    assert (ejects[2][1].verdict, ejects[2][1].cause) == ("reject", "late_verdict")  # final when handed over
    assert not s.decide(2, "good")
    got = dict(zip([p.seq for p in rec.parts], rec.times))
    assert sorted(got) == [0, 1, 2]
    for p in parts:
        assert p.t_fire <= got[p.seq] < p.t_fire + 0.01, f"part {p.seq} actuated {got[p.seq] - p.t_fire:+.4f} s"
    assert sorted(p.seq for p in now_out.parts) == [0, 1, 2]  # decision-mode output: at once, not held
    assert sorted(p.seq for p in finals) == [0, 1, 2]  # in release order: 1, 2 (lead 20 ms), then 0


def test_scheduler_runs_idle_housekeeping_only_when_nothing_is_due():
    calls = []
    s = RejectScheduler("reject", lambda p, when: None, lambda p: None,
                        idle=lambda: calls.append(time.monotonic()), idle_min_s=0.005, idle_every_s=0.01)
    b = Budget.from_line(deadline_s=0.1, margin_s=0.01)
    s.start()
    try:
        time.sleep(0.1)
        n_idle = len(calls)
        t0 = time.monotonic()
        parts = [b.part(i, t0 - 0.1 + 0.002 * i) for i in range(40)]  # due every 2 ms from now on
        for p in parts:
            s.register(p)
        assert s.drain(1.0)
    finally:
        s.stop()
    assert 3 <= n_idle <= 12  # at most every idle_every_s
    busy = [t for t in calls if t0 + 0.001 < t < parts[-1].t_fire - 0.005]
    assert not busy, "housekeeping ran while parts were due within idle_min_s"


def test_overdue_sees_a_part_past_its_fire_time_or_with_none():
    # The watchdog asks this: a scheduler that holds a part it can never fire (a NaN fire time from a bad
    # config, a stuck output) must make the line unhealthy, so the heartbeat stops and the PLC diverts.
    from prn_edge.line.decision import Part

    s = RejectScheduler("reject", lambda p, when: None, lambda p: None)  # not started: nothing fires
    now = time.monotonic()
    assert not s.overdue(0.5)  # nothing waiting
    s.register(Part(0, now, now + 1.0, now + 2.0))
    assert not s.overdue(0.5)
    s.register(Part(1, now, now, now - 1.0))  # a younger part is late, but the oldest is what is checked first
    assert not s.overdue(0.5)
    stuck = RejectScheduler("reject", lambda p, when: None, lambda p: None)
    stuck.register(Part(0, now, now - 2.0, now - 1.0))
    assert stuck.overdue(0.5) and not stuck.overdue(5.0)
    nan = RejectScheduler("reject", lambda p, when: None, lambda p: None)
    nan.register(Part(0, now, float("nan"), float("nan")))
    assert nan.overdue(0.5)
