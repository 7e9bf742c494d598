"""Reject commands to a PLC over Modbus TCP (pymodbus client).

The command block, holding registers from `command_register`, written in one request so the PLC sees a new
command atomically and owns the valve timing (a coil pulse of a few ms can fall between two PLC scans):

    +0 seq high word   +1 seq low word   +2 verdict (0 good, 1 reject, 2 recheck)
    +3 valid-until high word   +4 valid-until low word

valid-until says when the command is stale: the encoder count at the ejector on encoder-timed lines, else the
appliance's clock in ms (32 bits, wrapping) at the part's fire time + stale_after_s. The heartbeat block from
`heartbeat_register`: [counter 1..65535, clock high word, clock low word]; the counter is 0 when the appliance
stops or is not healthy. A request that waited in a stalled PLC's TCP buffer arrives late and cannot be called
back, so the PLC checks valid-until itself (docs/plc.md: what the ladder logic does). Optionally a coil is
pulsed for at least min_pulse_s. A dead PLC raises PlcError (counted and alarmed by the worker); reconnects
back off up to backoff_max_s.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .. import registry
from ..decision import GOOD, RECHECK, REJECT, Part
from ..errors import LineConfigError, PlcError
from .base import WHEN, RejectOutput

VERDICT_CODES = {GOOD: 0, REJECT: 1, RECHECK: 2}
MIN_PULSE_S = 0.02  # a 2-10 ms PLC scan must see the coil high at least twice
COMMAND_WORDS = 5  # seq (2), verdict, valid-until (2)
HEARTBEAT_WORDS = 3  # counter, clock ms (2)


def clock_ms(t: float | None = None) -> int:
    """The appliance clock the PLC sees: time.monotonic() in ms, 32 bits (wraps every 49.7 days)."""
    return int(round((time.monotonic() if t is None else t) * 1000)) & 0xFFFFFFFF


def valid_until(part: Part) -> int:
    """The command's stale stamp: the ejector's encoder count (encoder lines) or the appliance clock in ms."""
    if part.eject_position is not None:
        return int(round(part.eject_position)) & 0xFFFFFFFF
    return clock_ms(part.t_valid if part.t_valid is not None else part.t_fire)


def words32(v: int) -> list[int]:
    return [(v >> 16) & 0xFFFF, v & 0xFFFF]

log = logging.getLogger(__name__)


@dataclass
class ModbusOptions:
    """outputs: {kind: modbus}: reject commands and a heartbeat to a PLC over Modbus TCP (docs/plc.md)."""
    kind: str = "modbus"
    name: str = "modbus"
    host: str = "127.0.0.1"
    port: int = 502
    device_id: int = 1
    command_register: int = 0
    heartbeat_register: int = 10  # -1 = none
    coil: int = -1  # -1 = no coil pulse
    pulse_s: float = 0.05
    timeout_s: float = 0.2
    backoff_s: float = 0.1
    backoff_max_s: float = 5.0
    at: str = "eject"  # eject | decision
    write_good: bool = False
    require_at_start: bool = True


_M = ModbusOptions


class ModbusOutput(RejectOutput):
    def __init__(self, host: str = _M.host, port: int = _M.port, device_id: int = _M.device_id,
                 command_register: int = _M.command_register, heartbeat_register: int = _M.heartbeat_register,
                 coil: int = _M.coil, pulse_s: float = _M.pulse_s, timeout_s: float = _M.timeout_s,
                 backoff_s: float = _M.backoff_s, backoff_max_s: float = _M.backoff_max_s, at: str = _M.at,
                 write_good: bool = _M.write_good, require_at_start: bool = _M.require_at_start,
                 name: str = _M.name, client_factory: Optional[Callable[..., object]] = None):
        if at not in WHEN:
            raise LineConfigError(f"outputs.{name}.at={at!r} is not allowed; choose one of {list(WHEN)}")
        if coil >= 0 and pulse_s < MIN_PULSE_S:
            raise LineConfigError(f"outputs.{name}.pulse_s={pulse_s}: at least {MIN_PULSE_S} s, or a PLC scan can "
                                  "miss the pulse; better, let the PLC time the valve from the command registers")
        if not 0 <= command_register <= 65536 - COMMAND_WORDS or \
                not -1 <= heartbeat_register <= 65536 - HEARTBEAT_WORDS:
            raise LineConfigError(f"outputs.{name}: register blocks must lie within 0..65535 (command "
                                  f"{COMMAND_WORDS} registers, heartbeat {HEARTBEAT_WORDS})")
        if heartbeat_register >= 0 and heartbeat_register < command_register + COMMAND_WORDS and \
                command_register < heartbeat_register + HEARTBEAT_WORDS:
            raise LineConfigError(f"outputs.{name}.heartbeat_register={heartbeat_register} (registers "
                                  f"{heartbeat_register}..{heartbeat_register + HEARTBEAT_WORDS - 1}) overlaps the "
                                  f"command registers {command_register}..{command_register + COMMAND_WORDS - 1}")
        self.host, self.port, self.device_id = host, int(port), int(device_id)
        self.command_register, self.heartbeat_register = command_register, heartbeat_register
        self.coil, self.pulse_s = coil, pulse_s
        self.timeout_s = timeout_s
        self.backoff_min, self.backoff_max = backoff_s, backoff_max_s
        self.at, self.write_good, self.require_at_start, self.name = at, write_good, require_at_start, name
        self._factory = client_factory
        self._client = None
        self._backoff = backoff_s
        self._retry_at = 0.0
        self._lock = threading.Lock()  # the worker is the only caller; the lock guards close() from another thread
        self.commands = 0

    # ------------------------------------------------------------ connection
    def _new_client(self):
        if self._factory is not None:
            return self._factory(self.host, port=self.port, timeout=self.timeout_s)
        from pymodbus.client import ModbusTcpClient

        return ModbusTcpClient(self.host, port=self.port, timeout=self.timeout_s, retries=0,
                               reconnect_delay=0, reconnect_delay_max=0)

    def open(self) -> None:
        self._retry_at = 0.0
        try:
            self._connected()
        except PlcError:
            if self.require_at_start:
                raise

    def check(self) -> None:
        """Connect and prove the peer speaks Modbus (one read), writing nothing: what `run --check` does, safe
        beside a running line (no heartbeat 0, no command)."""
        client = self._new_client()
        try:
            try:
                ok = client.connect()
            except Exception as e:
                raise PlcError(f"cannot connect to the PLC at {self.host}:{self.port} ({e})") from None
            if not ok:
                raise PlcError(f"cannot connect to the PLC at {self.host}:{self.port} (connection refused or timed "
                               "out); check its address, port and network, and that Modbus TCP is enabled")
            self._probe(client)
        finally:
            try:
                client.close()
            except Exception:
                pass

    def close(self) -> None:
        """A stopping appliance says so: the heartbeat register gets 0 (not healthy) rather than keeping its last
        count, whatever ended the run; then the connection goes."""
        if self.heartbeat_register >= 0:
            try:
                words = [0] + words32(clock_ms())
                self._call("heartbeat 0 at stop",
                           lambda c: c.write_registers(self.heartbeat_register, words, device_id=self.device_id))
            except PlcError as e:
                log.warning("%s: could not write heartbeat 0 at stop (%s); the PLC sees the count stop instead",
                            self.name, e)
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None

    def _connected(self):
        if self._client is not None and getattr(self._client, "connected", True):
            return self._client
        now = time.monotonic()
        if now < self._retry_at:
            raise PlcError(f"PLC {self.host}:{self.port} is unreachable; next reconnect in {self._retry_at - now:.2f} s")
        self._drop()
        client = self._new_client()
        try:
            ok = client.connect()
        except Exception as e:
            ok, why = False, e
        else:
            why = "connection refused or timed out"
        if not ok:
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_max)
            try:
                client.close()
            except Exception:
                pass
            raise PlcError(f"cannot connect to the PLC at {self.host}:{self.port} ({why}); check its address, "
                           "port and network, and that Modbus TCP is enabled")
        self._probe(client)
        self._client = client
        self._backoff = self.backoff_min
        return client

    def _probe(self, client) -> None:
        """A TCP port that accepts is not yet a PLC: one read round trip proves the peer speaks Modbus (an
        exception reply, e.g. for a register it does not map, still does)."""
        try:
            rr = client.read_holding_registers(self.command_register, count=1, device_id=self.device_id)
            speaks = rr is not None and (not rr.isError() or hasattr(rr, "exception_code"))
            why = "" if speaks else f"no valid reply: {rr}"
        except Exception as e:
            speaks, why = False, f"{e.__class__.__name__}: {e}"
        if not speaks:
            try:
                client.close()
            except Exception:
                pass
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_max)
            raise PlcError(f"{self.host}:{self.port} accepts connections but does not answer Modbus TCP ({why}); "
                           "check that this is the PLC's Modbus port (502 by default), not another service")

    def _call(self, what: str, fn: Callable[[object], object]) -> None:
        with self._lock:
            client = self._connected()
            try:
                rr = fn(client)
            except Exception as e:
                self._drop()
                self._retry_at = time.monotonic() + self._backoff
                raise PlcError(f"PLC {self.host}:{self.port}: {what} failed ({e.__class__.__name__}: {e})") from None
            if rr is None or (hasattr(rr, "isError") and rr.isError()):
                raise PlcError(f"PLC {self.host}:{self.port} refused {what}: {rr}; check the register map "
                               f"(device id {self.device_id})")

    # ------------------------------------------------------------ contract
    def wants(self, part: Part) -> bool:
        return part.decision.verdict != GOOD or self.write_good

    def actuate(self, part: Part) -> None:
        d = part.decision
        if not self.wants(part):
            return
        words = words32(part.seq & 0xFFFFFFFF) + [VERDICT_CODES[d.verdict]] + words32(valid_until(part))
        self._call(f"reject command for part {part.seq}",
                   lambda c: c.write_registers(self.command_register, words, device_id=self.device_id))
        self.commands += 1
        if self.coil >= 0 and d.verdict != GOOD:
            self._call("coil on", lambda c: c.write_coil(self.coil, True, device_id=self.device_id))
            time.sleep(self.pulse_s)
            self._call("coil off", lambda c: c.write_coil(self.coil, False, device_id=self.device_id))

    def heartbeat(self, counter: int) -> None:
        if self.heartbeat_register >= 0:
            words = [counter] + words32(clock_ms())
            self._call("heartbeat",
                       lambda c: c.write_registers(self.heartbeat_register, words, device_id=self.device_id))


registry.output("modbus", ModbusOptions, lambda o, ctx: ModbusOutput(**registry.kwargs(o)))
