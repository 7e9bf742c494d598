"""Reject outputs with real peers: CSV files, a pymodbus TCP server on 127.0.0.1, a GenICam node map with the SFNC
digital-output nodes over a recording port, and GPIO (a fake chip; libgpiod cannot run here)."""
from __future__ import annotations

import threading
import time
import types

import pytest

from prn_edge.line import Budget, Line, LineConfigError, LoopOptions, OutputError, PlcError
from prn_edge.line.decision import Decision, Part
from prn_edge.sim.doubles import FakeGpioChip, RecordingOutput, ScriptedEngine
from prn_edge.line.outputs import CsvOutput, ModbusOutput, read_decisions
from prn_edge.line.outputs.camera_io import CameraOutput
from prn_edge.line.outputs.gpio import GpioOutput
from prn_edge.line.sources import SyntheticConveyor



def part(seq: int, verdict: str = "reject", cause: str = "model") -> Part:
    now = time.monotonic()
    p = Part(seq, now, now + 0.01, now + 0.02, frame_id=seq)
    p.decision = Decision(seq, verdict, cause, now, 0.7, 0.6)
    return p


def test_csv_appends_one_row_per_part_with_one_header(tmp_path):
    path = tmp_path / "out" / "d.csv"
    with CsvOutput(path) as out:
        out.actuate(part(0, "good"))
        out.actuate(part(1, "reject", "camera_timeout"))
    with CsvOutput(path) as out:
        out.actuate(part(2))
    rows = read_decisions(path)
    assert [(r["seq"], r["verdict"], r["cause"]) for r in rows] == [
        ("0", "good", "model"), ("1", "reject", "camera_timeout"), ("2", "reject", "model")]
    assert path.read_text().count("seq,") == 1
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OutputError, match="cannot write decisions"):
        CsvOutput(tmp_path / "a_file" / "x.csv").open()


def test_modbus_reject_command_heartbeat_and_coil_pulse(modbus_server):
    out = ModbusOutput(port=modbus_server.port, command_register=0, heartbeat_register=10, coil=3, pulse_s=0.03)
    parts = [part(70000), part(5, "good"), part(6, "recheck")]
    parts[2].t_valid = parts[2].t_fire + 0.05
    t0 = time.monotonic()
    with out:
        out.actuate(parts[0])  # seq above 16 bits: high word 1, low word 4464
        out.actuate(parts[1])  # good parts write nothing
        out.actuate(parts[2])
        out.heartbeat(7)
    t1 = time.monotonic()
    stamp = lambda t: [(round(t * 1000) >> 16) & 0xFFFF, round(t * 1000) & 0xFFFF]  # noqa: E731
    # [seq hi, seq lo, verdict, valid-until hi, lo]: valid-until is t_valid (else t_fire) on the appliance clock
    assert modbus_server.register_writes(0) == [[1, 4464, 1] + stamp(parts[0].t_fire),
                                                [0, 6, 2] + stamp(parts[2].t_valid)]
    beats = modbus_server.register_writes(10)  # [counter, clock hi, clock lo]: the count, then 0 at close
    assert [b[0] for b in beats] == [7, 0]
    assert all(round(t0 * 1000) <= (b[1] << 16 | b[2]) <= round(t1 * 1000) for b in beats)
    coil = modbus_server.coil_writes(3)
    assert [v for _, v in coil] == [True, False, True, False]
    assert coil[1][0] - coil[0][0] >= 0.03 and coil[3][0] - coil[2][0] >= 0.03


@pytest.mark.parametrize("kwargs, message", [
    ({"coil": 1, "pulse_s": 0.005}, "at least 0.02 s"),
    ({"heartbeat_register": 1}, r"registers 1..3\) overlaps the command registers 0..4"),
    ({"command_register": 12}, r"heartbeat_register=10 \(registers 10..12\) overlaps"),
    ({"command_register": 65532}, "register blocks must lie within 0..65535"),
    ({"at": "now"}, r"at='now' is not allowed; choose one of \['eject', 'decision'\]"),
])
def test_modbus_config_errors(kwargs, message):
    with pytest.raises(LineConfigError, match=message):
        ModbusOutput(**kwargs)


def test_dead_plc_at_start_is_an_error_unless_allowed(dead_port):
    port = dead_port
    with pytest.raises(PlcError, match=f"cannot connect to the PLC at 127.0.0.1:{port}"):
        ModbusOutput(port=port, timeout_s=0.1).open()
    out = ModbusOutput(port=port, timeout_s=0.1, require_at_start=False, backoff_s=10)
    out.open()
    with pytest.raises(PlcError, match="unreachable; next reconnect in"):
        out.actuate(part(1))  # no new connect attempt during the backoff
    out.close()


def test_plc_down_and_back_while_the_line_runs(demo_category, truth, modbus_server):
    """Parts keep being decided while the PLC is gone; failures are counted; commands and heartbeat resume."""
    plc = ModbusOutput(port=modbus_server.port, timeout_s=0.1, backoff_s=0.05, backoff_max_s=0.1)
    rec = RecordingOutput()
    line = Line(SyntheticConveyor(demo_category, rate_hz=100, parts=150),
                ScriptedEngine(64, 64, 3, score_fn=truth), [rec, plc], Budget.from_line(deadline_s=0.05),
                LoopOptions(warmup=1, heartbeat_s=0.02))
    marks = {}

    def outage():
        while not modbus_server.register_writes(0):  # the line is up and commanding
            time.sleep(0.01)
        time.sleep(0.1)
        modbus_server.stop()
        marks["down"] = time.monotonic()
        time.sleep(0.3)
        modbus_server.start()
        marks["up"] = time.monotonic()

    t = threading.Thread(target=outage)
    t.start()
    summary = line.run()
    t.join()
    assert summary["parts"] == 150 and summary["undecided"] == 0
    assert sorted(p.seq for p in rec.parts) == list(range(150))
    errors = line.metrics.value("prn_line_output_errors_total", output="modbus", call="actuate") + \
        line.metrics.value("prn_line_output_errors_total", output="modbus", call="heartbeat")
    assert errors >= 1
    commands = [(ts, v) for ts, fc, a, v in modbus_server.writes if fc == 16 and a == 0]
    before = [v for ts, v in commands if ts < marks["down"]]
    after = [v for ts, v in commands if ts > marks["up"]]
    assert before and after, "reject commands before the outage and after the PLC came back"
    rejected = {p.seq for p in rec.parts if p.decision.verdict == "reject"}
    assert {v[0] << 16 | v[1] for v in before + after} <= rejected
    beats = [(ts, v[0]) for ts, fc, a, v in modbus_server.writes if fc == 16 and a == 10]
    assert any(ts > marks["up"] for ts, _ in beats) and all(v > 0 for _, v in beats[:-1])
    assert beats[-1][1] == 0  # 0 (not healthy) once the line stops
    # Every reject needed a command: each has exactly one outcome, and the ones that did not arrive are counted
    outcomes = [p.commands.get("modbus") for p in rec.parts if p.decision.verdict == "reject"]
    assert None not in outcomes
    arrived = outcomes.count("delivered") + outcomes.count("late")  # a failed call may still have been written
    assert arrived <= len(before + after) <= arrived + outcomes.count("failed")
    lost = summary["commands_lost"]["modbus"]
    assert sum(lost.values()) == len(outcomes) - outcomes.count("delivered") > 0
    assert lost.get("failed", 0) + lost.get("stale", 0) > 0 and summary["commands"]["modbus"]["none"] == \
        150 - len(outcomes)


def test_camera_output_through_a_genicam_node_map(io_camera):
    node_map, port = io_camera
    out = CameraOutput(node_map, line="Line2", user_output="UserOutput1", pulse_s=0.02)
    with out:
        setup = [(a, v) for _, a, v in port.writes]
        # LineSelector=Line2, LineMode[Line2]=Output, LineSource[Line2]=UserOutput1, and the output starts low
        assert (0x0, 2) in setup and (0x100 + 2 * 4, 1) in setup and (0x200 + 2 * 4, 1) in setup
        assert (0x300, 1) in setup and (0x400 + 4, 0) in setup
        n = len(port.writes)
        out.actuate(part(1, "good"))
        assert len(port.writes) == n  # good parts do not pulse
        out.actuate(part(2))
    value_writes = [(t, v) for t, a, v in port.writes[n:] if a == 0x400 + 4]
    assert [v for _, v in value_writes][:2] == [1, 0]
    assert value_writes[1][0] - value_writes[0][0] >= 0.02
    assert node_map.LineMode.value == "Output" and node_map.LineSource.value == "UserOutput1"


def test_camera_output_sets_up_a_reconnected_camera_again(io_camera, io_camera_factory):
    first, second = io_camera, io_camera_factory()
    current = [first]
    out = CameraOutput(lambda: current[0][0], line="Line2")
    with out:
        current[0] = second  # the camera came back with a fresh node map (and maybe reset lines)
        out.actuate(part(1))
    setup = [(a, v) for _, a, v in second[1].writes]
    assert (0x100 + 2 * 4, 1) in setup and (0x200 + 2 * 4, 1) in setup  # LineMode/LineSource again
    assert [v for _, a, v in second[1].writes if a == 0x400 + 4][-3:] == [1, 0, 0]  # pulse, then low at close


def test_camera_output_names_a_missing_node():
    with pytest.raises(OutputError, match="has no UserOutputSelector node"):
        CameraOutput(types.SimpleNamespace()).open()


def test_camera_output_in_a_running_line(demo_category, truth, io_camera):
    node_map, port = io_camera
    out = CameraOutput(node_map, line="Line1", pulse_s=0.02)
    rec = RecordingOutput()
    line = Line(SyntheticConveyor(demo_category, rate_hz=20, parts=12), ScriptedEngine(64, 64, 3, score_fn=truth),
                [rec, out], Budget.from_line(deadline_s=0.1), LoopOptions(warmup=1))
    line.run()
    assert out.pulses == sum(p.decision.verdict == "reject" for p in rec.parts) > 0


def test_gpio_without_libgpiod_errors_clearly():
    import importlib.util

    if importlib.util.find_spec("gpiod") is not None:
        pytest.skip("gpiod is installed here; this checks the message where it is not")
    with pytest.raises(OutputError, match="libgpiod v2 Python bindings"):
        GpioOutput(line=17).open()


def test_gpio_pulse_and_heartbeat_on_a_fake_chip():
    chip = FakeGpioChip()
    out = GpioOutput("/dev/gpiochip0", line=17, pulse_s=0.02, heartbeat_line=18, active_low=True,
                     chip_factory=chip.factory)
    with out:
        out.actuate(part(1))
        out.actuate(part(2, "good"))
        out.heartbeat(1)
        out.heartbeat(2)
    assert chip.requested == [17, 18] and chip.released
    line17 = [(t, v) for t, o, v in chip.writes if o == 17]
    # active low: idle high, pulse low, back high, and high again at close
    assert [v for _, v in line17] == [True, False, True, True]
    assert line17[2][0] - line17[1][0] >= 0.02
    assert [v for _, o, v in chip.writes if o == 18] == [False, True]


def test_an_output_whose_actuation_fails_but_heartbeat_works_alarms_once(caplog):
    """The heartbeat of a dead actuator may still go through: that must not flap the output between failing and
    working (a log line and a lost GIL slice per part), only a working actuation clears the alarm."""
    from prn_edge.line.outputs.base import OutputSet

    rec = RecordingOutput("flaky", at="decision")
    errors = []
    rec.fail = True
    caplog.set_level("WARNING", logger="prn_edge.line.outputs.base")
    with OutputSet([rec], lambda *a: errors.append(a[1]), lambda *a: None) as outs:
        for i in range(5):
            outs.dispatch(part(i), "decision")
            time.sleep(0.01)
            rec.fail = False
            outs.heartbeat(i + 1)  # goes through
            time.sleep(0.01)
            assert outs.failing == ["flaky"]
            rec.fail = True
        rec.fail = False
        outs.dispatch(part(9), "decision")
        time.sleep(0.05)
        assert outs.failing == []
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("ALARM output flaky failed" in m for m in msgs) == 1
    assert sum("works again" in m for m in msgs) == 1
    assert errors == ["actuate"] * 5 and [p.seq for p in rec.parts] == [9]


def test_csv_keeps_whole_rows_repairs_a_torn_one_and_rotates(tmp_path):
    path = tmp_path / "d.csv"
    with CsvOutput(path) as out:
        out.actuate(part(0, "good"))
        first_run = out.run_id
    with open(path, "ab") as f:
        f.write(b"run,2026-12-02T00:00,1,3,re")  # a crash mid-row (power cut)
    with CsvOutput(path) as out:
        out.actuate(part(1))
        assert out.run_id != first_run
    rows = read_decisions(path)
    assert [r["seq"] for r in rows] == ["0", "1"] and [r["run_id"] for r in rows] == [first_run, out.run_id]
    assert all(r["wall_time"].endswith("+00:00") for r in rows)
    # size rotation: a new file past rotate_mb, the old one kept beside it with a time stamp
    with CsvOutput(path, rotate_mb=1e-4) as out:  # 100 bytes
        for i in range(2, 5):
            out.actuate(part(i))
    rotated = sorted(tmp_path.glob("d.*.csv"))
    assert rotated and all(p.read_text().startswith("run_id,") for p in rotated + [path])
    seqs = sorted(int(r["seq"]) for p in rotated + [path] for r in read_decisions(p))
    assert seqs == [0, 1, 2, 3, 4]  # nothing lost across files
    # an old file with other columns is rotated away, not appended to
    old = tmp_path / "old.csv"
    old.write_text("seq,verdict\n1,good\n")
    with CsvOutput(old) as out:
        out.actuate(part(9))
    assert read_decisions(old)[0]["seq"] == "9" and len(list(tmp_path.glob("old.*.csv"))) == 1


def test_csv_on_a_full_disk_fails_the_output_and_leaves_whole_rows(tmp_path):
    # /dev/full answers every write with ENOSPC: the real errno of a full disk
    import os

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    out = CsvOutput(tmp_path / "d.csv")
    with out:
        out.actuate(part(0))
        os.dup2(os.open("/dev/full", os.O_WRONLY), out._fd)  # the disk fills up under the open file
        with pytest.raises(OutputError, match="could not write a decision row.*No space left"):
            out.actuate(part(1))
    assert [r["seq"] for r in read_decisions(tmp_path / "d.csv")] == ["0"]
    assert (tmp_path / "d.csv").read_text().endswith("\n")


def test_a_port_that_is_not_modbus_is_refused_at_open():
    # An HTTP server where the PLC should be: TCP connects, Modbus does not answer.
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = ModbusOutput(port=server.server_address[1], command_register=0, heartbeat_register=10, timeout_s=0.3)
        with pytest.raises(PlcError, match="does not answer Modbus TCP"):
            out.open()
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_rotation_keeps_the_audit_trail_going(tmp_path, monkeypatch):
    path = tmp_path / "d.csv"
    out = CsvOutput(path, rotate_mb=1e-4)
    with out:
        out.actuate(part(0))

        def gone(why):  # logrotate moved the file already
            raise FileNotFoundError(path)

        monkeypatch.setattr(out, "_rotate", gone)
        for i in range(1, 4):
            out.actuate(part(i))
    assert [r["seq"] for r in read_decisions(path)] == ["0", "1", "2", "3"]
