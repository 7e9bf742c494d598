"""Reject through a GPIO line with libgpiod (v2 Python bindings, `pip install gpiod`), e.g. a Jetson header pin
driving an opto-isolated relay for a 24 V valve (never the valve directly: the header is 3.3 V).

The chip is opened lazily at open(); `chip_factory` replaces gpiod for tests (see FakeGpioChip).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .. import registry
from ..decision import GOOD, Part
from ..errors import LineConfigError, OutputError
from .base import WHEN, RejectOutput


def _gpiod_request(chip: str, offsets: list[int], consumer: str) -> Any:
    """A libgpiod v2 line request with the offsets as outputs, inactive; returns an object with
    set_value(offset, bool) and release()."""
    try:
        import gpiod
        from gpiod.line import Direction, Value
    except ImportError:
        raise OutputError("GPIO output needs the libgpiod v2 Python bindings: `pip install gpiod` (and a board "
                          "with /dev/gpiochipN, the pin muxed as GPIO); none are available here") from None
    try:
        settings = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.INACTIVE)
        request = gpiod.request_lines(chip, consumer=consumer, config={tuple(offsets): settings})
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot request GPIO lines {offsets} on {chip}: {e}; check the chip path, the line "
                          "offsets (gpioinfo) and permissions (gpio group)") from None

    class _Request:
        def set_value(self, offset: int, on: bool) -> None:
            request.set_value(offset, Value.ACTIVE if on else Value.INACTIVE)

        def release(self) -> None:
            request.release()

    return _Request()


@dataclass
class GpioOptions:
    """outputs: {kind: gpio}: a GPIO line (libgpiod) driving a valve through an opto-isolator or relay."""
    kind: str = "gpio"
    name: str = "gpio"
    chip: str = "/dev/gpiochip0"
    line: int = 0
    pulse_s: float = 0.03
    heartbeat_line: int = -1
    active_low: bool = False
    at: str = "eject"


_P = GpioOptions


class GpioOutput(RejectOutput):
    def __init__(self, chip: str = _P.chip, line: int = _P.line, pulse_s: float = _P.pulse_s,
                 heartbeat_line: int = _P.heartbeat_line, active_low: bool = _P.active_low, at: str = _P.at,
                 name: str = _P.name,
                 chip_factory: Optional[Callable[[str, list[int], str], Any]] = None):
        if at not in WHEN:
            raise LineConfigError(f"outputs.{name}.at={at!r} is not allowed; choose one of {list(WHEN)}")
        if line < 0 or pulse_s <= 0:
            raise LineConfigError(f"outputs.{name}: line must be >= 0 and pulse_s > 0")
        self.chip, self.line, self.pulse_s = chip, line, pulse_s
        self.heartbeat_line, self.active_low, self.at, self.name = heartbeat_line, active_low, at, name
        self._factory = chip_factory or _gpiod_request
        self._req = None

    def open(self) -> None:
        offsets = [self.line] + ([self.heartbeat_line] if self.heartbeat_line >= 0 else [])
        self._req = self._factory(self.chip, offsets, "prn-edge")
        self._set(self.line, False)

    def close(self) -> None:
        if self._req is not None:
            try:
                self._set(self.line, False)
            finally:
                self._req.release()
                self._req = None

    def _set(self, offset: int, on: bool) -> None:
        self._req.set_value(offset, on != self.active_low)

    def actuate(self, part: Part) -> None:
        if part.decision.verdict == GOOD:
            return
        self._set(self.line, True)
        try:
            time.sleep(self.pulse_s)
        finally:
            self._set(self.line, False)

    def heartbeat(self, counter: int) -> None:
        if self.heartbeat_line >= 0:
            self._set(self.heartbeat_line, bool(counter & 1))


registry.output("gpio", GpioOptions, lambda o, ctx: GpioOutput(**registry.kwargs(o)))
