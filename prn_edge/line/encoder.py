"""Part positions from a conveyor encoder: parts are ejected by belt position, not by the clock.

A line with a variable-speed belt cannot eject by time: the part reaches the ejector after a fixed number of
encoder counts. The PLC usually counts the encoder pulses in a high-speed counter and exposes the count in
two 16-bit registers; EncoderTracker polls it on its own thread, unwraps the 32-bit counter and keeps recent
(time, count) samples, so any moment maps to a belt position and any position to a predicted time.

EncoderBudget is the latency budget in counts: a part captured at count c0 is ejected when the belt has moved
distance_counts; the command goes out actuator_lead_s earlier (converted with the current speed). Its fire
time is a prediction that the reject scheduler re-checks when it comes due (retime): if the belt slowed or
stopped, the part is put back until its position is really reached; when the belt runs faster than the speed
the prediction assumed, the scheduler would fire late, so predictions assume up to `speed_headroom` x the
current speed and are refined on each re-check (the last one lands within a poll interval).

Readers: ModbusEncoder (the PLC's counter registers, pymodbus) and ClockEncoder (a simulated encoder for lines
without one: counts at a fixed rate; used by the demo and tests, and named as what it is).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Optional, Protocol

from .decision import Part
from .errors import LineConfigError, PlcError

log = logging.getLogger(__name__)

WRAP = 1 << 32


class EncoderReader(Protocol):
    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self) -> int:
        """The raw counter, 0 .. 2**32 - 1 (wraps); raises PlcError when it cannot be read."""
        ...


class ClockEncoder:
    """A simulated encoder: counts_per_s counts per second (set_speed changes it while running). Stands in for
    a real encoder where the line has none (demo, tests) and is the belt of the simulated PLC. It keeps its
    speed history (`segments`), so count_at(t) gives the true count at any past moment (benchmarks, tests)."""

    name = "clock"

    def __init__(self, counts_per_s: float, start: int = 0):
        if counts_per_s < 0:
            raise LineConfigError(f"timing.encoder.counts_per_s={counts_per_s} must be >= 0")
        self.segments: list[tuple[float, float, float]] = [(time.monotonic(), float(start), float(counts_per_s))]
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:  # counting starts now
            self.segments = [(time.monotonic(),) + self.segments[-1][1:]]

    def close(self) -> None:
        pass

    def set_speed(self, counts_per_s: float) -> None:
        with self._lock:
            now = time.monotonic()
            self.segments.append((now, self._count_at(now), float(counts_per_s)))

    def _count_at(self, t: float) -> float:
        t0, c0, v = next((seg for seg in reversed(self.segments) if seg[0] <= t), self.segments[0])
        return c0 + max(0.0, t - t0) * v

    def count_at(self, t: float) -> float:
        """The count at monotonic time t, not wrapped."""
        with self._lock:
            return self._count_at(t)

    def read(self) -> int:
        return int(self.count_at(time.monotonic())) % WRAP


class ModbusEncoder:
    """The PLC's encoder counter: two registers (high word first) read over Modbus TCP."""

    name = "modbus"

    def __init__(self, host: str = "127.0.0.1", port: int = 502, device_id: int = 1, register: int = 20,
                 table: str = "input", timeout_s: float = 0.2):
        if table not in ("input", "holding"):
            raise LineConfigError(f"timing.encoder.table={table!r} is not allowed; choose one of ['input', 'holding']")
        if not 0 <= register <= 65534:
            raise LineConfigError(f"timing.encoder.register={register} must be within 0..65534 (two registers)")
        self.host, self.port, self.device_id, self.register, self.table = host, int(port), device_id, register, table
        self.timeout_s = timeout_s
        self._client = None

    def open(self) -> None:
        from pymodbus.client import ModbusTcpClient

        self._client = ModbusTcpClient(self.host, port=self.port, timeout=self.timeout_s, retries=0,
                                       reconnect_delay=0, reconnect_delay_max=0)
        if not self._client.connect():
            self._client.close()
            self._client = None
            raise PlcError(f"encoder: no Modbus server at {self.host}:{self.port}; check the PLC address and that "
                           "it is running (timing.encoder.host / port)")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def read(self) -> int:
        if self._client is None:
            self.open()
        fn = self._client.read_input_registers if self.table == "input" else self._client.read_holding_registers
        try:
            r = fn(self.register, count=2, device_id=self.device_id)
        except Exception as e:
            self.close()  # reconnect on the next read
            raise PlcError(f"encoder read from {self.host}:{self.port} failed: {e}") from None
        if r.isError():
            raise PlcError(f"encoder registers {self.register}..{self.register + 1} ({self.table}) at "
                           f"{self.host}:{self.port}: {r}; check timing.encoder.register and table")
        hi, lo = r.registers
        return (hi << 16) | lo


class EncoderTracker:
    """Polls an encoder on its own thread: unwrapped position, position at any time, speed, time of a position."""

    def __init__(self, reader: EncoderReader, poll_s: float = 0.005, speed_window_s: float = 0.03,
                 stale_s: float = 0.5):
        self.reader = reader
        self.poll_s = poll_s
        self.speed_window_s = speed_window_s
        self.stale_s = stale_s
        self._samples: deque[tuple[float, int]] = deque(maxlen=4096)
        self._raw: Optional[int] = None
        self._pos = 0
        self.origin: Optional[int] = None  # raw count at the first read: position p is raw (origin + p) mod 2**32
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.errors = 0

    def __enter__(self) -> "EncoderTracker":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        self.reader.open()
        self._sample()  # the first read must work: a line must not start without its belt position
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="line-encoder", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        self.reader.close()

    def _sample(self) -> None:
        t0 = time.monotonic()
        raw = self.reader.read()
        now = (t0 + time.monotonic()) / 2  # the counter was latched somewhere inside the round trip
        with self._lock:
            if self._raw is not None:
                self._pos += (raw - self._raw) % WRAP  # the belt only moves forward; wraps at 2**32
            else:
                self.origin = raw
            self._raw = raw
            self._samples.append((now, self._pos))

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._sample()
            except Exception as e:  # counted; `healthy` turns false once the samples are stale
                self.errors += 1
                if self.errors in (1, 10, 100, 1000):
                    log.warning("ALARM encoder read failed (%d so far): %s", self.errors, e)

    @property
    def healthy(self) -> bool:
        with self._lock:
            return bool(self._samples) and time.monotonic() - self._samples[-1][0] < self.stale_s

    def speed(self) -> float:
        """Counts per second over the last speed_window_s (0 when stopped or unknown)."""
        with self._lock:
            if len(self._samples) < 2:
                return 0.0
            t1, p1 = self._samples[-1]
            for t0, p0 in reversed(self._samples):
                if t1 - t0 >= self.speed_window_s:
                    break
            return (p1 - p0) / (t1 - t0) if t1 > t0 else 0.0

    def position_at(self, t: float) -> float:
        """Belt position at monotonic time t: interpolated between samples, extrapolated after the last one."""
        with self._lock:
            s = self._samples
            if not s:
                return 0.0
            if t >= s[-1][0]:
                last = s[-1]
            else:
                for i in range(len(s) - 1, 0, -1):
                    (ta, pa), (tb, pb) = s[i - 1], s[i]
                    if ta <= t:
                        return pa + (pb - pa) * (t - ta) / (tb - ta) if tb > ta else float(pb)
                return float(s[0][1])
        # Beyond the last sample: extrapolate at the current speed, for at most two poll intervals (a stalled
        # poll must not move the belt on paper; the next sample will).
        return last[1] + self.speed() * min(t - last[0], 2 * self.poll_s)

    def time_of(self, position: float, speed_factor: float = 1.0) -> float:
        """Predicted time the belt reaches position (inf while it stands still)."""
        with self._lock:
            t_last, p_last = self._samples[-1] if self._samples else (time.monotonic(), 0)
        if position <= p_last:
            return t_last
        v = self.speed() * speed_factor
        return t_last + (position - p_last) / v if v > 0 else math.inf


class EncoderBudget:
    """The latency budget in encoder counts (see the module doc). Used like Budget: part(seq, t_capture)."""

    def __init__(self, tracker: EncoderTracker, distance_counts: int, actuator_lead_s: float = 0.0,
                 margin_s: float = 0.005, speed_headroom: float = 1.25, max_wait_s: float = 60.0,
                 recheck_s: float = 0.02):
        if distance_counts <= 0:
            raise LineConfigError(f"timing.encoder.distance_counts={distance_counts} must be > 0 (camera-to-ejector "
                                  "distance in encoder counts)")
        if actuator_lead_s < 0 or margin_s < 0:
            raise LineConfigError("timing.actuator_lead_s and timing.margin_s must be >= 0")
        if speed_headroom < 1:
            raise LineConfigError(f"timing.encoder.speed_headroom={speed_headroom} must be >= 1")
        self.tracker = tracker
        self.distance_counts = int(distance_counts)
        self.actuator_lead_s = actuator_lead_s
        self.margin_s = margin_s
        self.speed_headroom = speed_headroom
        self.max_wait_s = max_wait_s
        self.recheck_s = recheck_s  # the scheduler looks at each part at least this often

    def __enter__(self) -> "EncoderBudget":
        self.tracker.open()
        return self

    def __exit__(self, *exc) -> None:
        self.tracker.close()

    @property
    def healthy(self) -> bool:  # without its belt position the line must divert everything (watchdog)
        return self.tracker.healthy

    @property
    def fire_delay_s(self) -> float:
        """Capture -> command at the current speed (bounded by max_wait_s while the belt stands)."""
        v = self.tracker.speed()
        return min(self.max_wait_s, self.distance_counts / v - self.actuator_lead_s) if v > 0 else self.max_wait_s

    def _predict(self, target: float) -> float:
        return self.tracker.time_of(target, self.speed_headroom) - self.actuator_lead_s

    def part(self, seq: int, t_capture: float) -> Part:
        pos = self.tracker.position_at(t_capture)
        target = pos + self.distance_counts
        t_fire = self._predict(target)
        part = Part(seq, t_capture, t_fire - self.margin_s, t_fire)
        part.position, part.eject_position = pos, target
        return part

    def retime(self, part: Part, now: float, lead_s: float = 0.0) -> Optional[float]:
        """Called by the scheduler when the part comes due (lead_s before its predicted fire time).

        None: the eject position is near; part.t_fire is set to the best prediction (the outputs wait for it).
        Otherwise a new, earlier-than-likely fire time to look again at (the belt slowed, or the first guess
        assumed headroom)."""
        t1 = self.tracker.time_of(part.eject_position) - self.actuator_lead_s  # at the current speed
        if t1 <= now + lead_s + self.tracker.poll_s:
            part.t_fire = max(t1, now)
            return None
        t_next = max(now + self.tracker.poll_s, self._predict(part.eject_position))  # allows a faster belt
        if part.decision is None:  # a slower belt leaves the model more time
            part.t_ready = max(part.t_ready, t_next - self.margin_s)
        return t_next
