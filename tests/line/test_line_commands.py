"""Every reject command either reaches its output in time or is counted: never delivered late, never lost
silently. A real pymodbus server as the PLC (stalled: requests wait in its TCP buffer), the PLC's stale check
(docs/plc.md) run by the simulated PLC, and the decisions CSV saying what became of each command."""
from __future__ import annotations

import threading
import time

from prn_edge.line import Budget, Line, LoopOptions
from prn_edge.line.decision import Decision, Part
from prn_edge.sim.doubles import RecordingOutput, ScriptedEngine
from prn_edge.line.outputs import CsvOutput, ModbusOutput, read_decisions
from prn_edge.line.outputs.base import OutputSet, RejectOutput
from prn_edge.sim.plc import SimulatedPlc
from prn_edge.line.sources import SyntheticConveyor


class SlowActuator(RejectOutput):
    """An actuator whose first call blocks (a device that hangs once)."""

    name = "slow"

    def __init__(self, block_s: float):
        self.block_s = block_s
        self.calls: list[int] = []

    def actuate(self, part: Part) -> None:
        self.calls.append(part.seq)
        if len(self.calls) == 1:
            time.sleep(self.block_s)


def _decided(seq: int, t_fire: float, verdict: str = "reject") -> Part:
    p = Part(seq, t_fire - 0.02, t_fire - 0.01, t_fire)
    p.decision = Decision(seq, verdict, "model", t_fire - 0.01)
    return p


def test_a_command_that_cannot_start_in_time_is_dropped_and_the_audit_says_so(tmp_path):
    slow, audit = SlowActuator(block_s=0.3), RecordingOutput("audit")
    outcomes = []
    outputs = OutputSet([slow, audit], lambda *a: None, lambda *a: None, stale_after_s=0.05,
                        on_outcome=lambda name, part, outcome: outcomes.append((name, part.seq, outcome)))
    now = time.monotonic()
    parts = [_decided(0, now + 0.02), _decided(1, now + 0.05), _decided(2, now + 0.6)]
    with outputs:
        for p in parts:
            outputs.dispatch(p, "decision")
        for p in parts:
            outputs.dispatch(p, "eject")
        time.sleep(0.8)
    # part 0 blocked the actuator past its own deadline (late); part 1 could not start before its deadline
    # (dropped, never sent); part 2 came after the device recovered (delivered)
    assert slow.calls == [0, 2]
    assert [p.commands["slow"] for p in parts] == ["late", "stale", "delivered"]
    assert [p.seq for p in audit.parts] == [0, 1, 2]  # the audit output got every part, after the actuator
    assert outputs.lost() == {"slow": {"late": 1, "stale": 1}}
    assert ("audit", 1, "delivered") in outcomes


def test_a_stalled_plc_acts_on_no_stale_command_and_every_loss_is_counted(tmp_path, demo_category):
    plc = SimulatedPlc().start()
    try:
        modbus = ModbusOutput(port=plc.port, timeout_s=0.1, backoff_s=0.05, backoff_max_s=0.1)
        csv = CsvOutput(tmp_path / "d.csv")
        line = Line(SyntheticConveyor(demo_category, rate_hz=100, parts=150),
                    ScriptedEngine(64, 64, 3, score_fn=lambda frame: 1.0),  # every part is a reject: a command each
                    [modbus, csv], Budget.from_line(deadline_s=0.05),
                    # one heartbeat (at start: the PLC learns the clock), so the request that waits in the stalled
                    # PLC's buffer is a reject command, not a heartbeat
                    LoopOptions(warmup=1, heartbeat_s=30.0, stale_after_s=0.05))

        def stall():
            while len(plc.ladder.acted) < 10:
                time.sleep(0.005)
            plc.stall(0.5)

        t = threading.Thread(target=stall)
        t.start()
        summary = line.run()
        t.join()
    finally:
        plc.stop()
    assert summary["parts"] == 150 and summary["undecided"] == 0
    parts = {p.seq: p for p in line.records}
    # The PLC carried out only commands that were still valid when it processed them ...
    assert len(plc.ladder.acted) >= 10
    for t_plc, seq, verdict in plc.ladder.acted:
        # within the clock offset's uncertainty (the fastest heartbeat delivery, ms on a busy machine); the stale
        # ones below came 0.1-0.5 s late
        assert t_plc <= parts[seq].t_valid + 0.02 and verdict == 1
    # ... the requests that waited in its buffer during the stall arrived after their time and were ignored
    assert plc.ladder.stale
    # The appliance counted every command that did not arrive in time, per output, and the CSV says which
    lost = summary["commands_lost"]["modbus"]
    outcomes = [p.commands["modbus"] for p in parts.values()]
    assert sum(lost.values()) == len(outcomes) - outcomes.count("delivered") > 0
    assert summary["commands"]["modbus"]["delivered"] == outcomes.count("delivered")
    acted = {seq for _, seq, _ in plc.ladder.acted}
    delivered = {s for s, p in parts.items() if p.commands["modbus"] == "delivered"}
    assert acted <= delivered | {s for s, p in parts.items() if p.commands["modbus"] in ("late", "failed")}
    rows = read_decisions(tmp_path / "d.csv")
    assert len(rows) == 150
    assert all(r["commands"] == f"modbus={parts[int(r['seq'])].commands['modbus']}" for r in rows)
    assert any(r["commands"] in ("modbus=stale", "modbus=failed") for r in rows)
    assert line.metrics.value("prn_line_commands_total", output="modbus", outcome="delivered") == len(delivered)


def test_good_parts_need_no_command_and_are_not_counted_lost(tmp_path, demo_category, modbus_server):
    modbus = ModbusOutput(port=modbus_server.port)
    line = Line(SyntheticConveyor(demo_category, rate_hz=50, parts=20), ScriptedEngine(64, 64, 3),
                [modbus, CsvOutput(tmp_path / "d.csv")], Budget.from_line(deadline_s=0.1), LoopOptions(warmup=1))
    summary = line.run(max_parts=20)
    assert summary["commands"]["modbus"] == {"none": 20} and summary["commands_lost"] == {}
    assert summary["stopped_by"] == "max_parts"
    assert {r["commands"] for r in read_decisions(tmp_path / "d.csv")} == {"modbus=none"}
    assert modbus_server.register_writes(0) == []
