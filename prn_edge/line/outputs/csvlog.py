"""The default outputs: one CSV row per part (the line's audit trail) and a log line per reject."""
from __future__ import annotations

import csv
import io
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import registry
from ..decision import Part
from ..errors import OutputError
from .base import RejectOutput

log = logging.getLogger("prn_edge.line.rejects")

COLUMNS = ("run_id", "wall_time", "seq", "part_id", "frame_id", "verdict", "cause", "score", "normalized", "label",
           "defect", "t_capture", "t_decided", "t_released", "t_fire", "t_fired", "position", "eject_position",
           "commands", "artefact", "origin")


def _row(part: Part, run_id: str) -> list:
    d = part.decision
    num = lambda v: "" if v is None or v != v else f"{v:.6f}"  # noqa: E731 - blank for NaN/None
    wall = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return [run_id, wall, part.seq, "" if part.part_id is None else part.part_id,
            "" if part.frame_id is None else part.frame_id,
            d.verdict, d.cause, num(d.score), num(d.normalized), "" if part.label is None else part.label,
            part.defect or "", num(part.t_capture), num(d.t_decided), num(part.t_released),
            num(part.t_fire), num(part.t_fired), num(part.position), num(part.eject_position),
            ";".join(f"{k}={v}" for k, v in sorted(part.commands.items())), part.artefact, part.origin]


def _line(values: list) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode()


class CsvOutput(RejectOutput):
    """Appends every decision (good ones too) to a CSV file: the line's audit trail.

    Whole rows only: each row is one write() on an append-only descriptor, and a write that fails (full disk)
    is cut back to the last whole row and reported as an output failure. A torn last row left by a crash or a
    power cut is dropped when the file is opened again. Every row carries the run id (sequence numbers restart
    at 0 each run) and a UTC wall-clock time. The file is rotated by size and by day (decisions.csv ->
    decisions.<UTC time>.csv), and when its columns are from another version. The `commands` column gives each
    other output's outcome for the part (e.g. `modbus=delivered`, `modbus=stale`); `origin` names the image file a
    folder source replayed (blank for cameras).
    """

    name = "csv"
    at = "eject"
    audit = True  # written once the other outputs have their outcome: the row says whether the PLC got it

    def __init__(self, path: str | Path, name: str = "csv", rotate_mb: float = 100.0, rotate_daily: bool = True):
        """rotate_mb: start a new file past this size (0 = never); rotate_daily: and on a new UTC day."""
        self.path = Path(path)
        self.name = name
        self.rotate_bytes = int(rotate_mb * 1e6) if rotate_mb > 0 else 0
        self.rotate_daily = rotate_daily
        self.run_id = ""
        self._fd: int | None = None
        self._size = 0
        self._day = None

    def open(self) -> None:
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._repair()
            self._open_file()
        except OSError as e:
            raise OutputError(f"cannot write decisions to {self.path}: {e}; choose a writable path") from None
        log.info("decisions to %s, run id %s", self.path, self.run_id)

    def _repair(self) -> None:
        """Drop a torn last row; rotate a file whose header is not ours."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                f.truncate(keep)
                log.warning("%s: dropped a torn last row (%d bytes) left by an earlier run", self.path,
                            len(data) - keep)
                data = data[:keep]
        if data and data.split(b"\n", 1)[0] + b"\n" != _line(list(COLUMNS)):
            self._rotate("its columns are from another version")

    def _rotate(self, why: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
        os.replace(self.path, target)
        log.info("%s rotated to %s (%s)", self.path, target.name, why)

    def _open_file(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._day = datetime.fromtimestamp(os.fstat(self._fd).st_mtime, timezone.utc).date() if self._size else \
            datetime.now(timezone.utc).date()
        if self._size == 0:
            self._append(_line(list(COLUMNS)))

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self._open_file()  # an earlier reopen failed: try again, the row is not dropped silently
        try:
            n = os.write(self._fd, data)
            if n != len(data):
                raise OSError(f"short write ({n} of {len(data)} bytes)")
        except OSError as e:
            try:
                os.ftruncate(self._fd, self._size)  # back to the last whole row
            except OSError:
                pass
            raise OutputError(f"{self.path}: could not write a decision row ({e}); free disk space or choose "
                              "another path") from None
        self._size += len(data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def actuate(self, part: Part) -> None:
        today = datetime.now(timezone.utc).date()
        if (self.rotate_bytes and self._size >= self.rotate_bytes) or (self.rotate_daily and today != self._day):
            self.close()
            try:
                self._rotate("size" if self.rotate_bytes and self._size >= self.rotate_bytes else "a new day")
            except OSError as e:  # e.g. logrotate moved it already: keep writing where the path points
                log.warning("%s: rotation failed (%s); continuing in the current file", self.path, e)
            try:
                self._open_file()
            except OSError as e:
                raise OutputError(f"cannot write decisions to {self.path}: {e}; check the folder") from None
        self._append(_line(_row(part, self.run_id)))


class LogOutput(RejectOutput):
    """A log line (logger prn_edge.line.rejects) for each part that leaves the good stream."""

    name = "log"
    at = "eject"

    def __init__(self, name: str = "log"):
        self.name = name

    def actuate(self, part: Part) -> None:
        d = part.decision
        if d.rejects:
            log.info("%s part seq=%d part_id=%s cause=%s score=%.4f", d.verdict.upper(), part.seq, part.part_id,
                     d.cause, d.score)


def read_decisions(path: str | Path) -> list[dict]:
    """The rows a CsvOutput wrote, as dicts of strings (for reports and tests)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@dataclass
class CsvOptions:
    """outputs: {kind: csv}: one row per part, the line's audit trail."""
    kind: str = "csv"
    name: str = "csv"
    path: str = "decisions.csv"
    rotate_mb: float = 100.0  # start a new file past this size (0 = never)
    rotate_daily: bool = True  # ... and at the first part of a new UTC day


@dataclass
class LogOptions:
    """outputs: {kind: log}: a log line per reject."""
    kind: str = "log"
    name: str = "log"


registry.output("csv", CsvOptions, lambda o, ctx: CsvOutput(**registry.kwargs(o)), paths=("path",))
registry.output("log", LogOptions, lambda o, ctx: LogOutput(o.name))
