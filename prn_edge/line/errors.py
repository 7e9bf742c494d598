"""Errors of the line runtime, under the toolkit's one hierarchy (prn_edge.errors)."""
from __future__ import annotations

from typing import Optional

from ..errors import ConfigError, PrnEdgeError


class LineError(PrnEdgeError):
    """The line runtime cannot start or continue; the message says what to change."""


class LineConfigError(ConfigError):
    """A line configuration key is missing, unknown or has a value the line cannot use."""


class CameraError(LineError):
    """A frame source failed. `part_expected` says whether a part was on its way (then it is decided fail-safe)."""

    def __init__(self, message: str, *, frame_id: Optional[int] = None, part_expected: bool = False,
                 t_expected: Optional[float] = None):
        super().__init__(message)
        self.frame_id = frame_id
        self.part_expected = part_expected
        self.t_expected = t_expected  # monotonic time the missing part was seen (trigger / schedule), if known


class CameraTimeout(CameraError):
    """No frame arrived within the grab timeout."""


class CorruptFrame(CameraError):
    """A frame arrived but its pixels cannot be used (incomplete buffer, wrong size, undecodable format)."""


class SourceExhausted(LineError):
    """A finite source (folder, video, conveyor with a part count) has no more frames.

    `frame_id`: the last frame id the source should have delivered, so a lost last frame is still a part."""

    def __init__(self, message: str, *, frame_id: Optional[int] = None):
        super().__init__(message)
        self.frame_id = frame_id


class OutputError(LineError):
    """A reject output cannot actuate; the part stays decided and the failure is counted and alarmed."""


class PlcError(OutputError):
    """The PLC does not answer or refuses a write."""
