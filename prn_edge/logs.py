"""Logging for the command line and the service: configured once, plain or JSON lines, with timestamps."""
from __future__ import annotations

import json
import logging
import sys
import time

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("plain", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line (journald, Loki, Elastic take it as it is)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "thread": record.threadName,
               "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(level: str = "info", fmt: str = "plain", stream=None) -> None:
    """Root logging to stderr; third-party chatter (pymodbus per request, urllib3...) stays at warnings."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_prn_edge", False):
            root.removeHandler(h)
    handler._prn_edge = True
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    for noisy in ("urllib3", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # pymodbus logs every failed connect as an error; the Modbus output reports (and counts) those itself
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
