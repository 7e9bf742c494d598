"""Registries of a line's parts: frame sources and reject outputs (engines are prn_edge.runtime's).

A part is one module: its options dataclass (the YAML section: every default and check, once) beside its
implementation, and one registration call at the end of the module; the module's name goes into BUILTIN. The
config reader and the factory only look parts up here, so adding a camera type or an output is one new file
and one line in BUILTIN:

    # prn_edge/line/outputs/mqtt.py
    @dataclass
    class MqttOptions:
        kind: str = "mqtt"
        name: str = "mqtt"
        broker: str = "127.0.0.1"

        def check(self, key: str) -> None: ...             # optional; raise LineConfigError naming `key`

    class MqttOutput(RejectOutput): ...

    registry.output("mqtt", MqttOptions, lambda o, ctx: MqttOutput(**registry.kwargs(o)))
"""
from __future__ import annotations

import dataclasses
import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable

# Built-in parts, in the order error messages list them.
BUILTIN = (
    "prn_edge.line.sources.genicam",
    "prn_edge.line.sources.files",
    "prn_edge.line.sources.conveyor",
    "prn_edge.line.outputs.csvlog",
    "prn_edge.line.outputs.modbus",
    "prn_edge.line.outputs.camera_io",
    "prn_edge.line.outputs.gpio",
)


@dataclass(frozen=True)
class Kind:
    name: str
    options: type  # dataclass: the YAML section
    build: Callable[[Any, dict], Any]  # (options, context) -> the part; context: e.g. {"source": the line's source}
    paths: tuple[str, ...] = ()  # options that are paths, taken from the config file's folder when relative
    needs: tuple[str, ...] = ()  # options that must be given
    module: str = ""  # where it is registered (listing order: BUILTIN's, then others)


_SOURCES: dict[str, Kind] = {}
_OUTPUTS: dict[str, Kind] = {}
_loaded = False


def source(name: str, options: type, build: Callable[[Any, dict], Any], paths: tuple = (), needs: tuple = ()) -> None:
    _SOURCES[name] = Kind(name, options, build, tuple(paths), tuple(needs), sys._getframe(1).f_globals["__name__"])


def output(name: str, options: type, build: Callable[[Any, dict], Any], paths: tuple = (), needs: tuple = ()) -> None:
    _OUTPUTS[name] = Kind(name, options, build, tuple(paths), tuple(needs), sys._getframe(1).f_globals["__name__"])


def _ordered(kinds: dict[str, Kind]) -> dict[str, Kind]:
    rank = {m: i for i, m in enumerate(BUILTIN)}
    order = sorted(enumerate(kinds.values()), key=lambda ik: (rank.get(ik[1].module, len(rank)), ik[0]))
    return {k.name: k for _, k in order}


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(module)


def sources() -> dict[str, Kind]:
    _load()
    return _ordered(_SOURCES)


def outputs() -> dict[str, Kind]:
    _load()
    return _ordered(_OUTPUTS)


def kwargs(options: Any, drop: tuple = ("kind",)) -> dict:
    """An options dataclass as keyword arguments for its implementation (never positional: no drift)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name not in drop}
