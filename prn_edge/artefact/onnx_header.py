"""What the artefact layer needs from an .onnx file, read from the protobuf wire format directly: the
metadata_props and where tensors keep external data. No onnx import (the line appliance does not install it)
and no weights parsed: length-delimited fields are skipped by their length.

Field numbers from onnx.proto (stable since IR version 3): ModelProto.graph 7, .metadata_props 14;
GraphProto.node 1, .initializer 5; NodeProto.attribute 5; AttributeProto.t 5; TensorProto.name 8,
.external_data 13, .data_location 14 (1 = EXTERNAL); StringStringEntryProto.key 1, .value 2.
"""
from __future__ import annotations

from typing import Iterator

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WireError(ValueError):
    """Not a protobuf message (or cut short)."""


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise WireError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, int value or memoryview of the bytes) for each field of one message."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == _VARINT:
            value, i = _varint(buf, i)
            yield number, wire, value
        elif wire == _LEN:
            size, i = _varint(buf, i)
            if i + size > n:
                raise WireError("length-delimited field runs past the end")
            yield number, wire, buf[i:i + size]
            i += size
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            if i + size > n:
                raise WireError("fixed-size field runs past the end")
            yield number, wire, buf[i:i + size]
            i += size
        else:
            raise WireError(f"wire type {wire} is not protobuf 3")


def _entry(buf: memoryview) -> tuple[str, str]:
    key = value = ""
    for number, wire, v in fields(buf):
        if wire == _LEN and number == 1:
            key = bytes(v).decode("utf-8", "replace")
        elif wire == _LEN and number == 2:
            value = bytes(v).decode("utf-8", "replace")
    return key, value


def read_header(data: bytes) -> tuple[dict[str, str], list[tuple[str, str]], bool]:
    """(metadata_props, [(tensor name, external-data location)] for tensors stored outside, whether a graph was
    found). Raises WireError for bytes that are not a ModelProto."""
    buf = memoryview(data)
    props: dict[str, str] = {}
    external: list[tuple[str, str]] = []
    graph = None
    for number, wire, v in fields(buf):
        if number == 14 and wire == _LEN:
            k, val = _entry(v)
            props[k] = val
        elif number == 7 and wire == _LEN:
            graph = v
    if graph is not None:
        for number, wire, v in fields(graph):
            if number == 5 and wire == _LEN:  # initializer
                external += _external(v)
            elif number == 1 and wire == _LEN:  # node -> attribute -> t
                for an, aw, attr in fields(v):
                    if an == 5 and aw == _LEN:
                        for tn, tw, tensor in fields(attr):
                            if tn == 5 and tw == _LEN:
                                external += _external(tensor)
    return props, external, graph is not None


def op_types(data: bytes) -> set[str]:
    """The operator types of the main graph's nodes (NodeProto.op_type, field 4)."""
    ops: set[str] = set()
    for number, wire, graph in fields(memoryview(data)):
        if number == 7 and wire == _LEN:
            for gn, gw, node in fields(graph):
                if gn == 1 and gw == _LEN:
                    ops.update(bytes(v).decode() for n, w, v in fields(node) if n == 4 and w == _LEN)
    return ops


def _external(tensor: memoryview) -> list[tuple[str, str]]:
    name, location, stored_outside = "", "", False
    for number, wire, v in fields(tensor):
        if number == 8 and wire == _LEN:
            name = bytes(v).decode("utf-8", "replace")
        elif number == 14 and wire == _VARINT:
            stored_outside = v == 1
        elif number == 13 and wire == _LEN:
            k, val = _entry(v)
            if k == "location":
                location = val
    return [(name, location)] if stored_outside else []


def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(payload)) + payload


def replace_metadata(data: bytes, props: dict[str, str]) -> bytes:
    """The same ModelProto with metadata_props set to: the existing entries not named in `props` (in their
    order), then `props` sorted by key. Every other field is copied byte for byte."""
    buf = memoryview(data)
    kept, existing = bytearray(), []
    i, n = 0, len(buf)
    while i < n:
        start = i
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, i = _varint(buf, i)
        elif wire == _LEN:
            size, i = _varint(buf, i)
            if number == 14:
                existing.append(_entry(buf[i:i + size]))
            i += size
        elif wire in (_I64, _I32):
            i += 8 if wire == _I64 else 4
        else:
            raise WireError(f"wire type {wire} is not protobuf 3")
        if i > n:
            raise WireError("field runs past the end")
        if number != 14:
            kept += buf[start:i]
    entries = [(k, v) for k, v in existing if k not in props] + sorted(props.items())
    for k, v in entries:
        kept += _len_field(14, _len_field(1, k.encode()) + _len_field(2, v.encode()))
    return bytes(kept)
