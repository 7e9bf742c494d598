"""A simulated PLC on loopback for the demo and the tests: a real Modbus TCP server, not a mock."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque

MASK32 = 0xFFFFFFFF


def _signed32(v: int) -> int:
    v &= MASK32
    return v - (1 << 32) if v >= 1 << 31 else v


class Ladder:
    """The PLC program docs/plc.md asks for, run on every write the simulated PLC processes (in its own time):

    - heartbeat block [counter, clock hi, clock lo]: keep offset = min over the last `window` beats of
      (own clock ms - appliance clock ms); a write that waited in a buffer only ever makes the difference larger,
      so the minimum stays the true offset plus the fastest delivery.
    - command block [seq hi, seq lo, verdict, valid-until hi, lo], on a new seq: stale when the own encoder count
      (encoder lines) or own clock (else, through the offset; no offset yet = stale) is past valid-until. A stale
      command is ignored and counted; the part it named gets the PLC's default (divert).
    """

    def __init__(self, command_register: int = 0, heartbeat_register: int = 10, window: int = 50,
                 encoder=None, on_event=None):
        self.command_register, self.heartbeat_register = command_register, heartbeat_register
        self.encoder = encoder  # callable -> the PLC's own encoder count (encoder-timed lines)
        self._offsets: deque = deque(maxlen=window)
        self._last_seq = None
        self.on_event = on_event  # called with a dict per heartbeat and command (the PLC process logs them)
        self.acted: list[tuple[float, int, int]] = []  # (PLC time, seq, verdict) commands carried out
        self.stale: list[tuple[float, int, int]] = []  # (PLC time, seq, ms or counts past valid-until)

    def on_write(self, t: float, address: int, values: list) -> None:
        own_ms = int(round(t * 1000))
        if address == self.heartbeat_register and len(values) >= 3:
            if values[0]:
                self._offsets.append(_signed32(own_ms - (values[1] << 16 | values[2])))
            if self.on_event is not None:
                self.on_event({"t": t, "kind": "heartbeat", "counter": values[0]})
        elif address == self.command_register and len(values) >= 5:
            seq = values[0] << 16 | values[1]
            if seq == self._last_seq:
                return
            self._last_seq = seq
            valid = values[3] << 16 | values[4]
            if self.encoder is not None:
                past = _signed32(int(self.encoder()) - valid)
            elif self._offsets:
                past = _signed32(own_ms - (valid + min(self._offsets)))
            else:
                past = 1  # no appliance clock seen yet: cannot tell, so the command is not trusted
            if past > 0:
                self.stale.append((t, seq, past))
            else:
                self.acted.append((t, seq, values[2]))
            if self.on_event is not None:
                self.on_event({"t": t, "kind": "command", "seq": seq, "verdict": values[2], "valid_until": valid,
                               "acted": past <= 0, "past": past})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SimulatedPlc:
    """A PLC stand-in: a real pymodbus TCP server (SimDevice with separate coil and register tables) on
    127.0.0.1 that records every write as (monotonic time, function code, address, values). Used by the demo
    and the tests; stop() and start() keep the port, so a PLC can go down and come back."""

    def __init__(self, port: int | None = None, registers: int = 64, encoder_register: int = 20,
                 belt_counts_per_s: float = 0.0, command_register: int = 0, heartbeat_register: int = 10,
                 ladder_by_encoder: bool = False, on_event=None):
        self.port = port or free_port()
        self.registers = registers
        self.writes: list[tuple[float, int, int, list]] = []
        # The PLC's high-speed counter of the belt encoder, in input registers encoder_register (high word) and
        # encoder_register + 1 (low word); the belt runs at belt_counts_per_s (set_belt_speed changes it).
        from ..line.encoder import ClockEncoder

        self.encoder_register = encoder_register
        self.belt = ClockEncoder(belt_counts_per_s)
        self.encoder_reads = 0
        self.ladder = Ladder(command_register, heartbeat_register,
                             encoder=self.encoder_count if ladder_by_encoder else None, on_event=on_event)
        self._loop = None
        self._thread = None
        self._server = None

    def set_belt_speed(self, counts_per_s: float) -> None:
        self.belt.set_speed(counts_per_s)

    def encoder_count(self) -> int:
        return self.belt.read()

    async def _action(self, function_code, start_address, address, count, current, values):
        if values is not None:
            t = time.monotonic()
            self.writes.append((t, function_code, address, list(values)))
            if function_code == 16:
                self.ladder.on_write(t, address, list(values))
        elif function_code == 4:  # input registers: the encoder counter is live
            c = self.encoder_count()
            for i, word in ((self.encoder_register, c >> 16), (self.encoder_register + 1, c & 0xFFFF)):
                if address <= i < address + count and 0 <= i - start_address < len(current):
                    current[i - start_address] = word
            self.encoder_reads += 1
        return None

    def start(self) -> "SimulatedPlc":
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        ready = threading.Event()
        errors: list = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def main():
                bits = lambda: [SimData(0, count=self.registers, datatype=DataType.BITS)]  # noqa: E731
                regs = lambda: [SimData(0, count=self.registers, datatype=DataType.REGISTERS)]  # noqa: E731
                device = SimDevice(id=1, simdata=(bits(), bits(), regs(), regs()), action=self._action)
                self._server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
                await self._server.serve_forever(background=True)
                ready.set()
                await self._server.serving

            try:
                loop.run_until_complete(main())
            except Exception as e:  # noqa: BLE001 - re-raised in start()
                errors.append(e)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError(f"simulated PLC did not start on 127.0.0.1:{self.port}")
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(5)
        self._thread.join(5)
        self._thread = None

    def stall(self, seconds: float) -> None:
        """The PLC stops serving for a while (a long scan, a PLC busy with something else): its event loop blocks,
        requests wait in its TCP buffer and are processed late, in a burst, when it resumes."""
        self._loop.call_soon_threadsafe(time.sleep, seconds)

    def register_writes(self, address: int) -> list[list[int]]:
        return [v for _, fc, a, v in self.writes if fc in (6, 16) and a == address]

    def coil_writes(self, address: int) -> list[tuple[float, bool]]:
        return [(t, v[0]) for t, fc, a, v in self.writes if fc in (5, 15) and a == address]


def main(argv: list[str] | None = None) -> int:
    """A simulated PLC as its own process (benchmarks kill, stop and restart it like a real one):
    python -m prn_edge.sim.plc --port 5020 --log plc.jsonl   (one JSON line per heartbeat and command)."""
    import argparse
    import json
    import signal

    ap = argparse.ArgumentParser(prog="python -m prn_edge.sim.plc", description=main.__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True, help="JSON lines: every heartbeat and command the ladder processed")
    args = ap.parse_args(argv)
    import logging

    logging.getLogger("pymodbus").setLevel(logging.ERROR)  # no per-request chatter from a long-running PLC
    log_file = open(args.log, "a", buffering=1)
    plc = SimulatedPlc(args.port, on_event=lambda e: log_file.write(json.dumps(e) + "\n"))
    plc.start()
    print(f"PLC on 127.0.0.1:{plc.port}", flush=True)
    done = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: done.set())
    done.wait()
    plc.stop()
    log_file.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
