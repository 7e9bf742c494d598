"""The line runtime: capture frames (GenICam, files, simulated conveyor), decide each part with an Engine within
its latency budget, fire rejects (CSV, Modbus PLC, camera output, GPIO), and monitor it all.

    from prn_edge.line import load_line_config, build_line
    summary = build_line(load_line_config("line.yaml")).run()

harvesters, genicam, pymodbus and gpiod are imported only by the source or output that uses them.
"""
from .config import LineConfig, line_config, load_line_config
from .decision import GOOD, RECHECK, REJECT, Decision, Part
from .errors import (CameraError, CameraTimeout, CorruptFrame, LineConfigError, LineError, OutputError, PlcError,
                     SourceExhausted)
from .factory import build_line
from .loop import Line, LoopOptions
from .timing import Budget

__all__ = ["LineConfig", "line_config", "load_line_config", "GOOD", "RECHECK", "REJECT", "Decision", "Part",
           "CameraError", "CameraTimeout", "CorruptFrame", "LineConfigError", "LineError", "OutputError", "PlcError",
           "SourceExhausted", "build_line", "Line", "LoopOptions", "Budget"]
