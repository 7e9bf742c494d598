"""Logging for the command line and the service: configured once, plain or JSON lines, with timestamps."""
from __future__ import annotations

import json
import logging
import sys
import time

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("plain", "json")


BARE = "prn_edge_bare"  # a record's attribute: the command line's own word to its user (see tell)


def tell(message: str, level: int = logging.ERROR) -> None:
    """The command line's own message to its user (`prn-edge run: error: ...`): the message alone in the plain
    format, as it always was, and a JSON record like every other stderr line under --log-format json."""
    logging.getLogger("prn_edge.cli").log(level, message, extra={BARE: True})


class PlainFormatter(logging.Formatter):
    """`time level logger: message`; a message from `tell` stays one bare line."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage() if getattr(record, BARE, False) else super().format(record)


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
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
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
    logging.captureWarnings(True)  # Python warnings as log records too (JSON lines stay JSON lines)


def json_logging() -> bool:
    """Whether stderr carries JSON lines (configure_logging(fmt="json")): then nothing else may write there in
    another form (a terminal status line, progress bars)."""
    return any(getattr(h, "_prn_edge", False) and isinstance(h.formatter, JsonFormatter)
               for h in logging.getLogger().handlers)
