"""The line as a systemd service: sd_notify over a real datagram socket (READY once every line runs, WATCHDOG only
while healthy, STOPPING on SIGTERM), the unit file `prn-edge service install` writes (checked by systemd-analyze
where it exists), and logging configured once (JSON lines; the `log` output really logs)."""
from __future__ import annotations

import configparser
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from prn_edge.line.decision import Decision, Part
from prn_edge.line.outputs.csvlog import LogOutput
from prn_edge.line.service import Notifier
from prn_edge.logs import configure_logging


@pytest.fixture()
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.05)
    yield path, sock
    sock.close()


def _drain(sock, seconds: float = 0.0) -> list[str]:
    end = time.monotonic() + seconds
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except socket.timeout:
            if time.monotonic() >= end:
                return out


def test_ready_once_every_line_runs_and_watchdog_only_while_all_are_healthy(notify_socket):
    path, sock = notify_socket
    n = Notifier(["cam0", "cam1"], env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    assert n.enabled and n.watchdog_s == 0.2
    n.line_health("cam0", True)
    n.line_health("cam1", True)
    assert _drain(sock) == []  # no watchdog ping before READY
    n.line_ready("cam0")
    assert _drain(sock) == []  # not ready while cam1 is still starting
    n.line_ready("cam1")
    assert _drain(sock) == ["READY=1\nSTATUS=running 2 line(s)"]
    n.line_health("cam1", False)
    n.line_health("cam0", True)
    assert _drain(sock) == []  # one line unhealthy: systemd's watchdog is not fed
    n.line_health("cam1", True)
    n.line_health("cam0", True)  # within half the interval of the last ping: no second ping
    assert _drain(sock) == ["WATCHDOG=1"]
    time.sleep(0.11)
    n.line_health("cam0", True)
    assert _drain(sock) == ["WATCHDOG=1"]
    n.stopping()
    assert _drain(sock)[0].startswith("STOPPING=1")


def test_outside_systemd_nothing_is_sent_and_another_pids_watchdog_is_ignored(notify_socket):
    path, sock = notify_socket
    assert not Notifier(["a"], env={}).send(ready=1)
    n = Notifier(["a"], env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    assert n.watchdog_s == 0.0  # the watchdog is another process's
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"prn-edge-test-{os.getpid()}"
    abstract.bind("\0" + name)
    abstract.settimeout(1.0)
    try:
        assert Notifier(["a"], env={"NOTIFY_SOCKET": "@" + name}).send(status="hello")
        assert abstract.recv(100) == b"STATUS=hello"
    finally:
        abstract.close()


def test_a_running_line_notifies_systemd_and_stops_on_sigterm(tmp_path, demo_category, tiny_onnx, notify_socket):
    path, sock = notify_socket
    cfg = tmp_path / "line.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "svc", "engine": {"path": str(tiny_onnx), "threads": 1, "warmup": 1},
        "source": {"kind": "conveyor", "conveyor": {"dataset": str(demo_category), "rate_hz": 40, "parts": 0}},
        "timing": {"deadline_s": 0.3}, "outputs": [{"kind": "csv", "path": "d.csv"}],
        "monitor": {"status_line": False}}))
    proc = subprocess.Popen([sys.executable, "-m", "prn_edge.cli", "--log-format", "json", "run", "--config",
                             str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    try:
        got = []
        end = time.monotonic() + 60
        while time.monotonic() < end and got.count("WATCHDOG=1") < 3:
            got += _drain(sock)
            assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert got and got[0].startswith("READY=1") and got.count("WATCHDOG=1") >= 3
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert any(m.startswith("STOPPING=1") for m in _drain(sock, 0.2))
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert records and {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["level"] == "warning" and "SIGTERM" in r["message"] for r in records)


def test_service_install_writes_a_unit_systemd_accepts(tmp_path, demo_category, tiny_onnx):
    cfg = tmp_path / "etc" / "line.yaml"
    cfg.parent.mkdir()
    cfg.write_text(yaml.safe_dump({
        "name": "svc", "engine": {"path": str(tiny_onnx)},
        "source": {"kind": "conveyor", "conveyor": {"dataset": str(demo_category)}},
        "timing": {"deadline_s": 0.3}, "outputs": [{"kind": "csv", "path": str(tmp_path / "out" / "d.csv")}],
        "monitor": {"evidence_dir": str(tmp_path / "ev")}}))
    units = tmp_path / "units"
    r = subprocess.run([sys.executable, "-m", "prn_edge.cli", "service", "install", "--config", str(cfg),
                        "--unit-dir", str(units), "--watchdog-s", "7"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "lie under /tmp or /home, which the unit hides" in r.stderr  # pytest's tmp_path is under /tmp
    unit = units / "prn-edge.service"
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read(unit)
    svc = parser["Service"]
    assert svc["Type"] == "notify" and svc["WatchdogSec"] == "7" and svc["Restart"] == "always"
    assert svc["KillSignal"] == "SIGTERM" and svc["User"] == "prn-edge"
    assert f"--log-format json run --config {cfg}" in svc["ExecStart"]
    assert set(svc["ReadWritePaths"].split()) == {"/var/lib/prn-edge", str(tmp_path / "out"), str(tmp_path / "ev")}
    if shutil.which("systemd-analyze"):
        v = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert v.returncode == 0, v.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsource: {kind: nope}\n")
    r = subprocess.run([sys.executable, "-m", "prn_edge.cli", "service", "install", "--config", str(bad),
                        "--unit-dir", str(units / "b")], capture_output=True, text=True)
    assert r.returncode == 2 and not (units / "b").exists()  # a service that cannot start is not installed


def test_the_log_output_logs_once_logging_is_configured():
    stream = io.StringIO()
    try:
        configure_logging("info", "json", stream=stream)
        now = time.monotonic()
        p = Part(7, now, now, now)
        p.decision = Decision(7, "reject", "model", now, 0.9, 0.8)
        LogOutput().actuate(p)
    finally:
        configure_logging("warning", "plain")
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["logger"] == "prn_edge.line.rejects" and record["level"] == "info"
    assert record["message"].startswith("REJECT part seq=7")
    assert logging.getLogger("pymodbus").level >= logging.WARNING


def test_under_json_logging_every_stderr_line_is_json(tmp_path, demo_category, tiny_onnx, capsys, monkeypatch):
    """What the command line says itself (a run that lost commands: exit 3; a user error: exit 2; an unexpected
    error; a Python warning) is a JSON record like every other stderr line; the plain format keeps its bare lines."""
    import warnings

    from prn_edge import cli
    from prn_edge.sim.plc import free_port

    cfg = tmp_path / "line.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "json", "engine": {"path": str(tiny_onnx), "threads": 1, "warmup": 1},
        "source": {"kind": "conveyor", "conveyor": {"dataset": str(demo_category), "rate_hz": 30, "parts": 4}},
        "timing": {"deadline_s": 0.3}, "decision": {"fail_safe": "reject"},
        "outputs": [{"kind": "csv", "path": "d.csv"},  # a PLC that never answers: every reject command is lost
                    {"kind": "modbus", "port": free_port(), "require_at_start": False}]}))

    def broken(args):
        warnings.warn("a library's deprecation", UserWarning)
        raise RuntimeError("a bug")

    def read() -> tuple[list[dict], str]:
        out = capsys.readouterr()
        return [json.loads(line) for line in out.err.splitlines()], out.out  # every stderr line parses

    # pytest puts warnings.showwarning back after each test while logging believes it still captures them
    logging.captureWarnings(False)
    try:
        assert cli.main(["--log-format", "json", "run", "--config", str(cfg)]) == 3
        got, stdout = read()
        assert got[-1]["level"] == "error" and got[-1]["message"].startswith("prn-edge run: some reject commands")
        # what runs: in the log at start and in the summary
        assert any(r["message"].endswith("backend onnxruntime, providers CPUExecutionProvider, threads 1")
                   for r in got)
        engine = json.loads(stdout)["engine"]
        assert engine["providers"] == ["CPUExecutionProvider"] and engine["threads"] == 1
        assert cli.main(["--log-format", "json", "run", "--config", str(tmp_path / "none.yaml")]) == 2
        assert read()[0][-1]["message"].startswith("prn-edge run: error: config file")
        monkeypatch.setattr(cli, "cmd_bench", broken)
        assert cli.main(["--log-format", "json", "bench", "x.onnx"]) == 1
        got = read()[0]
        assert any(r["logger"] == "py.warnings" and "a library's deprecation" in r["message"] for r in got)
        assert got[-1]["level"] == "critical" and "RuntimeError: a bug" in got[-1]["exception"]
        assert cli.main(["run", "--config", str(tmp_path / "none.yaml")]) == 2
        assert capsys.readouterr().err.startswith("prn-edge run: error: config file")  # plain: the bare line
    finally:
        configure_logging("warning", "plain")


def test_pid_file_and_reload_refuse_what_is_not_a_running_line(tmp_path):
    """`prn-edge reload` signals only a running prn-edge (SIGHUP ends a process that does not handle it); a line
    does not start over the pid file of one still running, and replaces one left by a process that is gone."""
    from prn_edge.line.errors import LineError
    from prn_edge.line.service import PidFile, reload_line

    pid_file = tmp_path / "run" / "line.pid"
    with pytest.raises(LineError, match="start the line with `prn-edge run --pid-file"):
        reload_line(pid_file)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pid_file.parent.mkdir()
    pid_file.write_text(f"{gone.pid}\n")
    with pytest.raises(LineError, match=f"names pid {gone.pid}, which is not a running prn-edge"):
        reload_line(pid_file)
    # SIGHUP's default action restored: a test run under nohup would otherwise hand its children SIG_IGN
    sleeper = [sys.executable, "-c",
               "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); time.sleep(60)"]
    other, line = subprocess.Popen(sleeper), subprocess.Popen(sleeper + ["prn_edge"])  # the latter: a stand-in line
    try:
        pid_file.write_text(f"{other.pid}\n")  # a pid taken over by another program after a crash
        with pytest.raises(LineError, match="not a running prn-edge"):
            reload_line(pid_file)
        time.sleep(0.2)
        assert other.poll() is None  # not signalled
        with PidFile(pid_file):  # replaces the stale file, removes its own at the end
            assert pid_file.read_text() == f"{os.getpid()}\n"
        assert not pid_file.exists()
        pid_file.write_text(f"{line.pid}\n")
        with pytest.raises(LineError, match=f"names pid {line.pid}, a prn-edge that is still running"):
            PidFile(pid_file).__enter__()
        assert reload_line(pid_file) == line.pid
        assert line.wait(10) == -signal.SIGHUP  # the stand-in has no handler: SIGHUP ended it
    finally:
        for proc in (other, line):
            proc.kill()
            proc.wait()
