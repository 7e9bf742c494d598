"""Stand-ins for what a line talks to, for tests, demos and benchmarks: never configure them on a production line.

- doubles: ScriptedEngine / NullEngine (TEST DOUBLES of the runtime's Engine contract), RecordingOutput, and
  FakeGpioChip (a FAKE of a libgpiod line request: no GPIO chip exists on our machines);
- plc: SimulatedPlc, a real Modbus TCP server on loopback with the ladder logic of docs/plc.md
  (`python -m prn_edge.sim.plc` runs it as its own process);
- line_bench: the loop benchmark harness behind tools/bench_line.py and a tiny real ONNX model for tests.
"""
