"""Reject outputs: CSV/log, Modbus TCP to a PLC, a camera's digital output (GenICam), GPIO (libgpiod)."""
from .base import WHEN, OutputSet, OutputWorker, RejectOutput
from .csvlog import CsvOutput, LogOutput, read_decisions
from .modbus import ModbusOutput

__all__ = ["WHEN", "OutputSet", "OutputWorker", "RejectOutput", "CsvOutput", "LogOutput", "read_decisions",
           "ModbusOutput"]
