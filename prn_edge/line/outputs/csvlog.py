"""The default outputs: one CSV row per part (the line's audit trail) and a log line per reject."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from ..decision import Part
from ..errors import OutputError
from .base import RejectOutput

log = logging.getLogger("prn_edge.line.rejects")

COLUMNS = ("seq", "part_id", "frame_id", "verdict", "cause", "score", "normalized", "label", "defect",
           "t_capture", "t_decided", "t_released", "t_fire", "t_fired", "position", "eject_position")


def _row(part: Part) -> list:
    d = part.decision
    num = lambda v: "" if v is None or v != v else f"{v:.6f}"  # noqa: E731 - blank for NaN/None
    return [part.seq, "" if part.part_id is None else part.part_id, "" if part.frame_id is None else part.frame_id,
            d.verdict, d.cause, num(d.score), num(d.normalized), "" if part.label is None else part.label,
            part.defect or "", num(part.t_capture), num(d.t_decided), num(part.t_released),
            num(part.t_fire), num(part.t_fired), num(part.position), num(part.eject_position)]


class CsvOutput(RejectOutput):
    """Appends every decision (good ones too) to a CSV file, flushed per row so a crash loses nothing."""

    name = "csv"
    at = "eject"

    def __init__(self, path: str | Path, name: str = "csv"):
        self.path = Path(path)
        self.name = name
        self._f = None

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._f = open(self.path, "a", newline="")
        except OSError as e:
            raise OutputError(f"cannot write decisions to {self.path}: {e}; choose a writable path") from None
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(COLUMNS)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def actuate(self, part: Part) -> None:
        self._w.writerow(_row(part))
        self._f.flush()


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
