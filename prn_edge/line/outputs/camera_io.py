"""Reject through a camera's digital output, driven over its GenICam node map (SFNC digital I/O).

Setup: LineSelector=<line>, LineMode=Output, LineSource=<user_output>, UserOutputSelector=<user_output>.
A reject sets UserOutputValue True for pulse_s, then False. Each node write is a register write over the camera
link (a network round trip on GigE), so the pulse width is only as exact as that link: for short pulses prefer
the camera's hardware-timed outputs or the PLC.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .. import registry
from ..decision import GOOD, Part
from ..errors import LineConfigError, OutputError
from .base import WHEN, RejectOutput

NODES = ("LineSelector", "LineMode", "LineSource", "UserOutputSelector", "UserOutputValue")


@dataclass
class CameraIoOptions:
    """outputs: {kind: camera_io}: a digital output line of the line's own GenICam camera."""
    kind: str = "camera_io"
    name: str = "camera_io"
    line: str = "Line1"
    user_output: str = "UserOutput1"
    pulse_s: float = 0.02
    heartbeat_output: str = ""
    at: str = "eject"


_C = CameraIoOptions


class CameraOutput(RejectOutput):
    def __init__(self, node_map: Callable[[], Any] | Any, line: str = _C.line, user_output: str = _C.user_output,
                 pulse_s: float = _C.pulse_s, heartbeat_output: str = _C.heartbeat_output, at: str = _C.at,
                 name: str = _C.name):
        """node_map: a GenICam node map, or a callable returning one (e.g. the line's camera source's
        `lambda: source.node_map`, resolved at open). heartbeat_output: a second user output toggled with
        each heartbeat (wire it to the PLC's watchdog input), "" for none."""
        if at not in WHEN:
            raise LineConfigError(f"outputs.{name}.at={at!r} is not allowed; choose one of {list(WHEN)}")
        if pulse_s <= 0:
            raise LineConfigError(f"outputs.{name}.pulse_s={pulse_s} must be > 0")
        self._node_map_ref = node_map
        self.line, self.user_output, self.pulse_s = line, user_output, pulse_s
        self.heartbeat_output, self.at, self.name = heartbeat_output, at, name
        self._nm = None
        self._lock = threading.Lock()  # selector + value writes must not interleave (pulse vs heartbeat)
        self.pulses = 0

    def _set(self, node: str, value: Any) -> None:
        if not hasattr(self._nm, node):
            raise OutputError(f"{self.name}: the camera has no {node} node (needs the SFNC digital I/O nodes "
                              f"{list(NODES)}); use a PLC or GPIO output instead")
        try:
            getattr(self._nm, node).value = value
        except Exception as e:
            allowed = getattr(getattr(self._nm, node), "symbolics", None)
            raise OutputError(f"{self.name}: {node}={value!r} refused ({e.__class__.__name__}: {e})"
                              + (f"; allowed: {list(allowed)}" if allowed else "")) from None

    def _resolve(self) -> None:
        """The current node map; after a camera reconnect it is a new one, and the line setup is done again."""
        if not callable(self._node_map_ref):
            nm = self._node_map_ref
        else:
            try:
                nm = self._node_map_ref()
            except Exception as e:
                raise OutputError(f"{self.name}: the camera is not reachable ({e})") from None
        if nm is self._nm:
            return
        self._nm = nm
        for output in filter(None, (self.user_output, self.heartbeat_output)):
            self._set("UserOutputSelector", output)
            self._set("UserOutputValue", False)
        self._set("LineSelector", self.line)
        self._set("LineMode", "Output")
        self._set("LineSource", self.user_output)

    def open(self) -> None:
        self._nm = None
        with self._lock:
            self._resolve()

    def close(self) -> None:
        if self._nm is not None:
            try:
                self._write(self.user_output, False)
            finally:
                self._nm = None

    def _write(self, output: str, value: bool) -> None:
        with self._lock:
            self._resolve()
            self._set("UserOutputSelector", output)
            self._set("UserOutputValue", value)

    def actuate(self, part: Part) -> None:
        if part.decision.verdict == GOOD:
            return
        self._write(self.user_output, True)
        try:
            time.sleep(self.pulse_s)
        finally:
            self._write(self.user_output, False)
        self.pulses += 1

    def heartbeat(self, counter: int) -> None:
        if self.heartbeat_output:
            self._write(self.heartbeat_output, bool(counter & 1))


def _camera_output(o: CameraIoOptions, ctx: dict) -> CameraOutput:
    source = ctx.get("source")
    camera = getattr(source, "source", source)  # under a line-scan assembler
    if not hasattr(camera, "node_map"):
        raise LineConfigError(f"outputs.{o.name}: kind camera_io needs source.kind genicam (the output is a line of "
                              "that camera)")
    return CameraOutput(lambda: camera.node_map, **registry.kwargs(o))


registry.output("camera_io", CameraIoOptions, _camera_output)
