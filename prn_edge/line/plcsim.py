"""A simulated PLC on loopback for the demo and the tests: a real Modbus TCP server, not a mock."""
from __future__ import annotations

import asyncio
import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SimulatedPlc:
    """A PLC stand-in: a real pymodbus TCP server (SimDevice with separate coil and register tables) on
    127.0.0.1 that records every write as (monotonic time, function code, address, values). Used by the demo
    and the tests; stop() and start() keep the port, so a PLC can go down and come back."""

    def __init__(self, port: int | None = None, registers: int = 64, encoder_register: int = 20,
                 belt_counts_per_s: float = 0.0):
        self.port = port or free_port()
        self.registers = registers
        self.writes: list[tuple[float, int, int, list]] = []
        # The PLC's high-speed counter of the belt encoder, in input registers encoder_register (high word) and
        # encoder_register + 1 (low word); the belt runs at belt_counts_per_s (set_belt_speed changes it).
        from .encoder import ClockEncoder

        self.encoder_register = encoder_register
        self.belt = ClockEncoder(belt_counts_per_s)
        self.encoder_reads = 0
        self._loop = None
        self._thread = None
        self._server = None

    def set_belt_speed(self, counts_per_s: float) -> None:
        self.belt.set_speed(counts_per_s)

    def encoder_count(self) -> int:
        return self.belt.read()

    async def _action(self, function_code, start_address, address, count, current, values):
        if values is not None:
            self.writes.append((time.monotonic(), function_code, address, list(values)))
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

    def register_writes(self, address: int) -> list[list[int]]:
        return [v for _, fc, a, v in self.writes if fc in (6, 16) and a == address]

    def coil_writes(self, address: int) -> list[tuple[float, bool]]:
        return [(t, v[0]) for t, fc, a, v in self.writes if fc in (5, 15) and a == address]
