"""Running as a systemd service: the sd_notify protocol (READY, WATCHDOG, STATUS, STOPPING) fed by the lines' own
health, and the unit file `prn-edge service install` writes.

systemd passes NOTIFY_SOCKET (a datagram socket path, '@' for the abstract namespace) and, with WatchdogSec=,
WATCHDOG_USEC. The protocol is one datagram of newline-separated KEY=VALUE pairs; the standard library speaks it.
Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)


class Notifier:
    """sd_notify for a process running one or more lines.

    READY=1 once every line runs; WATCHDOG=1 at half the watchdog interval, only while every line reports itself
    healthy (a line whose heartbeat to the PLC stopped also stops feeding systemd's watchdog, which then restarts
    the service); STOPPING=1 when a stop begins; STATUS= a short human line for `systemctl status`.
    """

    def __init__(self, lines: list[str], env: Optional[dict] = None):
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET", "")
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else 0.0
        self._health = {name: (False, 0.0) for name in lines}
        self._ready: set[str] = set()
        self._last_ping = 0.0
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self.sent: list[str] = []  # every message sent (tests and debugging)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields) -> bool:
        """One datagram KEY=VALUE per line; False (logged once) when the socket is gone."""
        if not self.address:
            return False
        text = "\n".join(f"{k.upper()}={v}" for k, v in fields.items())
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode(), target)
        except OSError as e:
            log.warning("sd_notify to %s failed: %s", self.address, e)
            return False
        self.sent.append(text)
        return True

    def line_ready(self, name: str) -> None:
        with self._lock:
            self._ready.add(name)
            all_ready = self._ready >= set(self._health)
        if all_ready:
            self.send(ready=1, status=f"running {len(self._health)} line(s)")

    def line_health(self, name: str, healthy: bool) -> None:
        """Called at every heartbeat of a line; pings the watchdog when all lines are healthy and it is due."""
        now = time.monotonic()
        with self._lock:
            self._health[name] = (healthy, now)
            fresh = self.watchdog_s or 5.0
            ok = self._ready >= set(self._health) and all(h and now - t < fresh for h, t in self._health.values())
            due = self.watchdog_s > 0 and now - self._last_ping >= self.watchdog_s / 2
            if ok and due:
                self._last_ping = now
        if ok and due:
            self.send(watchdog=1)

    def status(self, text: str) -> None:
        self.send(status=text)

    def stopping(self) -> None:
        self.send(stopping=1, status="stopping: deciding the parts already seen")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


UNIT = """\
# prn-edge line as a systemd service (written by `prn-edge service install`).
# systemctl daemon-reload && systemctl enable --now {name}
[Unit]
Description=prn_edge inspection line ({config})
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exe} --log-format json run --config {config} --summary-json {state}/summary.json
# systemctl reload: the engine artefact named in the config is swapped in without stopping capture
ExecReload=/bin/kill -HUP $MAINPID
WorkingDirectory={state}
User={user}
Group={user}
SupplementaryGroups=video
# A line that stops deciding stops feeding the watchdog: systemd restarts it.
WatchdogSec={watchdog}
Restart=always
RestartSec=2
# SIGTERM: no new frames, parts already imaged are decided, CSV and summary written, PLC heartbeat set to 0.
KillSignal=SIGTERM
TimeoutStopSec={stop_timeout}
StateDirectory={state_name}
LogsDirectory={state_name}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths={writable}
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=multi-user.target
"""


def render_unit(config: str | Path, exe: str, user: str = "prn-edge", watchdog_s: int = 10,
                stop_timeout_s: int = 30, state_name: str = "prn-edge", name: str = "prn-edge",
                writable: tuple = ()) -> str:
    """The unit text for a line config (absolute paths: systemd does not resolve relative ones). `writable`: the
    folders the line writes (decisions CSV, evidence), made writable under ProtectSystem=strict."""
    state = f"/var/lib/{state_name}"
    folders = []
    for f in sorted({state} | {str(Path(w).resolve()) for w in writable}):
        if not any(Path(f).is_relative_to(k) for k in folders):  # a folder inside one already writable
            folders.append(f)
    return UNIT.format(config=Path(config).resolve(), exe=exe, user=user, watchdog=watchdog_s,
                       stop_timeout=stop_timeout_s, state=state, state_name=state_name, name=name,
                       writable=" ".join(folders))


def written_folders(cfg) -> list[str]:
    """The folders a line config writes to: each CSV output's folder and the evidence folder."""
    out = [str(Path(o.path).parent) for o in cfg.outputs if getattr(o, "kind", "") == "csv" and getattr(o, "path", "")]
    if cfg.monitor.evidence_dir:
        out.append(cfg.monitor.evidence_dir)
    return out


HIDDEN = ("/tmp", "/var/tmp", "/home", "/root", "/run/user")  # PrivateTmp= and ProtectHome= hide these


def hidden_paths(paths) -> list[str]:
    """The paths the unit's sandbox hides from the service (it would fail at start and restart forever)."""
    return [str(p) for p in paths if p and any(Path(str(p)).resolve().is_relative_to(h) for h in HIDDEN)]


# ---------------------------------------------------------------------------------------------- pid file, reload
def _prn_edge_process(pid: int) -> Optional[bool]:
    """Whether `pid` is a running prn-edge process: True, False (gone, or another program: a pid taken over
    after a crash), or None where this cannot be told beyond "some process" (no /proc)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None if not Path("/proc/self").exists() else False
    except OSError:
        return None
    return b"prn-edge" in cmdline or b"prn_edge" in cmdline


class PidFile:
    """The running line's process id in a file (`prn-edge run --pid-file`), for `prn-edge reload` and scripts:
    written once the line's signal handlers are in place, removed when the run ends.

        with PidFile("/run/prn-edge/cam0.pid"):
            line.run()

    A file left by a process that is gone is replaced; one naming a running prn-edge refuses the start (two lines
    on one camera and one CSV)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self) -> "PidFile":
        from ..artefact.files import write_atomic
        from .errors import LineError

        other = _read_pid(self.path)
        if other is not None and other != os.getpid() and _prn_edge_process(other) is not False:
            raise LineError(f"{self.path} names pid {other}, a prn-edge that is still running: stop it first, or "
                            "give this line its own --pid-file")
        try:
            write_atomic(self.path, f"{os.getpid()}\n".encode())
        except OSError as e:
            raise LineError(f"cannot write the pid file {self.path}: {e}; choose a writable --pid-file") from None
        return self

    def __exit__(self, *exc) -> None:
        if _read_pid(self.path) == os.getpid():  # not another process's file written since
            self.path.unlink(missing_ok=True)


def _read_pid(path: Path) -> Optional[int]:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        from .errors import LineError

        raise LineError(f"cannot read the pid file {path}: {e}") from None
    return int(text) if text.isdigit() else None


def reload_line(pid_file: str | Path) -> int:
    """`prn-edge reload`: SIGHUP to the prn-edge that wrote `pid_file`, which then reads its config again and swaps
    in the engine artefact it names (prn_edge.line.cli.reload_on_sighup). Returns the pid signalled. Refuses a
    file naming no running prn-edge: SIGHUP ends a process that does not handle it."""
    import signal

    from .errors import LineError

    path = Path(pid_file)
    pid = _read_pid(path)
    if pid is None:
        raise LineError(f"{path} does not exist or holds no process id: start the line with `prn-edge run "
                        f"--pid-file {path}` (under systemd: `systemctl reload <unit>`)")
    alive = _prn_edge_process(pid)
    if alive is False:
        raise LineError(f"{path} names pid {pid}, which is not a running prn-edge (the line ended without removing "
                        "it, or was killed); nothing was signalled")
    os.kill(pid, signal.SIGHUP)
    return pid
