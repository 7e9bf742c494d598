#!/usr/bin/env python3
"""Fault soak: a running line (`prn-edge run`, real ONNX Runtime engine, simulated conveyor) against the faults a
plant meets, in one run, with real processes: the PLC (a pymodbus server in its own process) killed and restarted,
the PLC stalled (SIGSTOP/SIGCONT), the disk holding the CSV and evidence filled (a small tmpfs), SIGTERM mid-run
with the line restarted as systemd would, and a NaN in a config refused.

    python tools/bench_faults.py --out runs/bench_faults

Reports (JSON + a table): parts seen and decided exactly once, reject commands by outcome on the appliance side
and what the PLC did with them (acted on in time, refused as stale, acted on late: must be 0), CSV rows whole and
accounted for, the heartbeat after each stop. Targets: 0 undecided, 0 commands acted on late, 0 torn CSV rows,
every loss counted.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

PY = sys.executable
STALE_S = 0.05
RUN_TIMEOUT_S = 120


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class PlcProcess:
    """The simulated PLC as its own process: kill -9, SIGSTOP/SIGCONT and restart it like a real one."""

    def __init__(self, port: int, log: Path):
        self.port, self.log, self.proc, self.starts = port, log, None, 0

    def start(self) -> None:
        out = self.log.with_suffix(".out")
        with open(out, "a") as f:  # a pipe nobody reads would fill up and block the PLC
            self.proc = subprocess.Popen([PY, "-m", "prn_edge.sim.plc", "--port", str(self.port), "--log",
                                          str(self.log)], stdout=f, stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + 30
        while time.monotonic() < end and self.proc.poll() is None:
            if out.is_file() and out.read_text().count("PLC on") > self.starts:
                self.starts += 1
                return
            time.sleep(0.05)
        raise RuntimeError(f"the simulated PLC did not start: {out.read_text()[-500:]}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)

    def events(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by kill -9
                pass
        return out


def _config(path: Path, dataset: Path, engine: Path, disk: Path, port: int, deadline_s: float | str = 0.3,
            rate_hz: float = 40.0) -> Path:
    data = {"name": "soak", "engine": {"path": str(engine), "backend": "onnxruntime", "threads": 1, "warmup": 1},
            "source": {"kind": "conveyor", "conveyor": {"dataset": str(dataset), "rate_hz": rate_hz, "parts": 0}},
            "timing": {"deadline_s": deadline_s, "stale_after_s": STALE_S},
            "outputs": [{"kind": "csv", "path": str(disk / "decisions.csv")},
                        {"kind": "modbus", "host": "127.0.0.1", "port": port, "command_register": 0,
                         "heartbeat_register": 10, "timeout_s": 0.2, "backoff_s": 0.1, "backoff_max_s": 0.5}],
            "monitor": {"status_line": False, "evidence_dir": str(disk / "evidence"), "evidence_quota_mb": 100,
                        "evidence_reserve_mb": 1}}
    path.write_text(yaml.safe_dump(data))
    return path


def _start_line(cfg: Path, summary: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "prn_edge.cli", "run", "--config", str(cfg), "--summary-json", str(summary)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), env={**os.environ,
                                                                                   "PYTHONUNBUFFERED": "1"})


def _wait_rows(csv: Path, n: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the line ended early (exit {proc.returncode})")
        if csv.is_file() and csv.read_text().count("\n") > n:
            return
        time.sleep(0.1)
    raise RuntimeError("the line decided no parts in time")


def _mount_disk(path: Path, size_mb: int) -> str:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], capture_output=True,
                       text=True)
    return "" if r.returncode == 0 else r.stderr.strip() or "mount failed"


def _fill(disk: Path, seconds: float) -> int:
    """Another program fills the disk to the last byte for `seconds`, taking whatever gets freed at once (the
    evidence store gives up its oldest sets for its reserve); returns the bytes it held at the end."""
    n = 0
    end = time.monotonic() + seconds
    with open(disk / "filler", "ab", buffering=0) as f:
        while time.monotonic() < end:
            n += _fill_once(f)
            time.sleep(0.02)
    return n


def _fill_once(f) -> int:
    n = 0
    for size in (64 << 10, 4096, 512, 1):  # down to the last bytes
        while True:
            try:
                n += f.write(b"\0" * size)
            except OSError:
                break
    return n


def _nan_config(cfg: Path, out: Path) -> dict:
    data = yaml.safe_load(cfg.read_text())
    data["timing"]["deadline_s"] = float("nan")
    data["outputs"][0]["path"] = str(out / "nan_decisions.csv")
    bad = out / "nan.yaml"
    bad.write_text(yaml.safe_dump(data))
    r = subprocess.run([PY, "-m", "prn_edge.cli", "run", "--config", str(bad)], capture_output=True, text=True,
                       timeout=60)
    err = r.stderr.strip().splitlines()
    return {"exit_code": r.returncode, "message": err[-1] if err else "", "traceback": "Traceback" in r.stderr,
            "csv_written": (out / "nan_decisions.csv").exists(), "refused": r.returncode == 2}


def _csv_check(path: Path) -> dict:
    from prn_edge.line.outputs.csvlog import COLUMNS
    import csv

    files = sorted(path.parent.glob(path.stem + "*" + path.suffix))
    rows, torn = [], 0
    for f in files:
        data = f.read_bytes()
        if data and not data.endswith(b"\n"):
            torn += 1
        for rec in csv.reader(data.decode(errors="replace").splitlines()[1:]):
            if len(rec) != len(COLUMNS):
                torn += 1
                continue
            rows.append(dict(zip(COLUMNS, rec)))
    return {"files": len(files), "rows": rows, "torn_rows": torn}


def _analyse_run(run: dict, rows: list[dict], plc_events: list[dict]) -> dict:
    s = run["summary"] or {}
    mine = [r for r in rows if r["run_id"] == run["run_id"]]
    seqs = [int(r["seq"]) for r in mine]
    csv_lost = sum((s.get("commands_lost") or {}).get("csv", {}).values())
    by_seq = {int(r["seq"]): r for r in mine}
    cmds = [e for e in plc_events if e["kind"] == "command" and run["t_start"] <= e["t"] <= run["t_end"] + 1.0]
    acted = [e for e in cmds if e["acted"]]
    # Independent of the PLC's own rule: the part's fire time from the appliance's CSV, the PLC's own clock
    # (CLOCK_MONOTONIC, shared by processes on one machine)
    late = [e for e in acted if e["seq"] in by_seq and by_seq[e["seq"]]["t_fire"]
            and e["t"] > float(by_seq[e["seq"]]["t_fire"]) + STALE_S + 0.002]
    unjoined = [e for e in acted if e["seq"] not in by_seq]
    beats = [e for e in plc_events if e["kind"] == "heartbeat" and e["t"] <= run["t_end"] + 1.0]
    modbus = (s.get("commands") or {}).get("modbus", {})
    return {
        "exit_code": run["exit_code"], "stopped_by": s.get("stopped_by"), "parts": s.get("parts"),
        "undecided": s.get("undecided"), "finalized": s.get("finalized"),
        "csv_rows": len(mine), "csv_rows_duplicated": len(seqs) - len(set(seqs)),
        "csv_rows_failed_counted": csv_lost,
        "csv_accounted": s.get("parts") is not None and len(set(seqs)) + csv_lost == s.get("parts"),
        "commands_appliance": modbus,
        "commands_lost": s.get("commands_lost"),
        "plc_commands_processed": len(cmds), "plc_acted_in_time": len(acted) - len(late),
        "plc_refused_stale": len(cmds) - len(acted), "plc_acted_late": len(late),
        "plc_acted_without_csv_row": len(unjoined),
        "heartbeat_after_stop": beats[-1]["counter"] if beats else None,
        "evidence": s.get("evidence"), "fail_safe": s.get("fail_safe"),
        "output_errors_failing_at_end": s.get("output_failing"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench_faults")
    ap.add_argument("--phase-s", type=float, default=4.0, help="healthy running between faults")
    ap.add_argument("--rate", type=float, default=40.0, help="conveyor parts/s")
    args = ap.parse_args()

    from prn_edge.artefact import write_json
    from prn_edge.bench.machine import machine_info
    from prn_edge.sim.line_bench import demo_line
    from prn_edge.sim.plc import free_port

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dataset, engine = demo_line(out)
    disk = out / "disk"
    if disk.is_mount():
        subprocess.run(["umount", "-l", str(disk)], check=False)
    why = _mount_disk(disk, 8)
    if why:
        _log(f"no tmpfs ({why}): the disk-full fault is skipped, CSV and evidence go to a plain folder")
    for f in ("plc.jsonl",):
        (out / f).unlink(missing_ok=True)
    port = free_port()
    plc = PlcProcess(port, out / "plc.jsonl")
    cfg = _config(out / "line.yaml", dataset, engine, disk, port, rate_hz=args.rate)
    report: dict = {"machine": machine_info(), "targets": {"undecided": 0, "plc_acted_late": 0, "torn_csv_rows": 0,
                                                           "every_loss_counted": True},
                    "faults": [], "runs": []}
    runs = []
    try:
        report["nan_config"] = _nan_config(cfg, out)
        _log(f"NaN config: exit {report['nan_config']['exit_code']}: {report['nan_config']['message']}")
        plc.start()
        fault = lambda name, **kw: report["faults"].append({"fault": name, "t": time.monotonic(), **kw})  # noqa

        for i, script in enumerate(("faults", "restart")):
            summary_path = out / f"summary{i + 1}.json"
            summary_path.unlink(missing_ok=True)
            t_start = time.monotonic()
            proc = _start_line(cfg, summary_path, out / f"line{i + 1}.log")
            _wait_rows(disk / "decisions.csv", 5 if i == 0 else sum(r["csv_rows"] for r in runs) + 5, proc)
            _log(f"line run {i + 1} is up")
            time.sleep(args.phase_s)
            if script == "faults":
                fault("plc_killed")
                plc.kill()
                _log("PLC killed (kill -9) for 3.5 s")
                time.sleep(3.5)
                plc.start()
                fault("plc_restarted")
                time.sleep(args.phase_s)
                fault("plc_stalled", seconds=3.0)
                plc.signal(signal.SIGSTOP)
                _log("PLC stalled (SIGSTOP) for 3 s")
                time.sleep(3.0)
                plc.signal(signal.SIGCONT)
                fault("plc_resumed")
                time.sleep(args.phase_s)
                if not why:
                    fault("disk_full", seconds=3.0)
                    _log("disk full (another program takes every free byte) for 3 s")
                    n = _fill(disk, 3.0)
                    report["faults"][-1]["filler_bytes"] = n
                    (disk / "filler").unlink()
                    fault("disk_freed")
                    time.sleep(args.phase_s)
            fault("sigterm", run=i + 1)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            t_end = time.monotonic()
            summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
            run_ids = {r["run_id"] for r in _csv_check(disk / "decisions.csv")["rows"]} - {r["run_id"] for r in runs}
            runs.append({"exit_code": proc.returncode, "summary": summary, "t_start": t_start, "t_end": t_end,
                         "run_id": next(iter(run_ids), ""), "csv_rows": 0})
            runs[-1]["csv_rows"] = sum(1 for r in _csv_check(disk / "decisions.csv")["rows"]
                                       if r["run_id"] == runs[-1]["run_id"])
            _log(f"line run {i + 1} stopped by SIGTERM: exit {proc.returncode}, "
                 f"{(summary or {}).get('parts')} parts")
            time.sleep(0.5)
    finally:
        plc.stop()
        csv_state = _csv_check(disk / "decisions.csv")
        events = plc.events() if (out / "plc.jsonl").exists() else []
        if not why:
            import shutil

            keep = out / "disk_copy"
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(disk, keep)
            subprocess.run(["umount", "-l", str(disk)], check=False)

    t0 = runs[0]["t_start"] if runs else 0.0
    for f in report["faults"]:
        f["t"] = round(f["t"] - t0, 2)
    report["runs"] = [_analyse_run(r, csv_state["rows"], events) for r in runs]
    report["csv"] = {"files": csv_state["files"], "rows": len(csv_state["rows"]), "torn_rows": csv_state["torn_rows"]}
    undecided = sum(r["undecided"] or 0 for r in report["runs"]) if runs else None
    acted_late = sum(r["plc_acted_late"] for r in report["runs"])
    report["verdict"] = {
        "undecided": undecided, "plc_acted_late": acted_late, "torn_csv_rows": csv_state["torn_rows"],
        # every part has a CSV row or a counted CSV failure; a command the PLC carried out for a part without a
        # row can only be one whose row was lost to the full disk (counted)
        "every_loss_counted": all(r["csv_accounted"] and r["plc_acted_without_csv_row"] <= r["csv_rows_failed_counted"]
                                  for r in report["runs"]),
        "nan_config_refused": report.get("nan_config", {}).get("refused"),
        "heartbeat_0_after_each_stop": all(r["heartbeat_after_stop"] == 0 for r in report["runs"]),
        "disk_fault": "skipped: " + why if why else "run",
    }
    report["verdict"]["pass"] = (undecided == 0 and acted_late == 0 and csv_state["torn_rows"] == 0
                                 and report["verdict"]["every_loss_counted"]
                                 and bool(report["verdict"]["nan_config_refused"])
                                 and report["verdict"]["heartbeat_0_after_each_stop"] and len(runs) == 2)
    write_json(out / "bench_faults.json", report)
    print(f"\n{'run':>3} {'exit':>4} {'parts':>6} {'undec':>5} {'csv':>5} {'csv lost':>8} {'delivered':>9} "
          f"{'stale':>5} {'failed':>6} {'late':>4} {'PLC acted':>9} {'PLC stale':>9} {'PLC late':>8} {'beat':>4}")
    for i, r in enumerate(report["runs"]):
        c = r["commands_appliance"]
        print(f"{i + 1:>3} {r['exit_code']:>4} {r['parts']!s:>6} {r['undecided']!s:>5} {r['csv_rows']:>5} "
              f"{r['csv_rows_failed_counted']:>8} {c.get('delivered', 0):>9} {c.get('stale', 0):>5} "
              f"{c.get('failed', 0):>6} {c.get('late', 0):>4} {r['plc_acted_in_time']:>9} {r['plc_refused_stale']:>9} "
              f"{r['plc_acted_late']:>8} {r['heartbeat_after_stop']!s:>4}")
    print(json.dumps(report["verdict"], indent=2))
    print(f"report: {out / 'bench_faults.json'}")
    return 0 if report["verdict"]["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
