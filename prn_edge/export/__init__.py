"""Checkpoint -> ONNX artefacts, their metadata, a TensorRT lint and a parity check.

Attributes are imported lazily so that `prn_edge.export.metadata` (used by the runtime) never pulls in torch.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "export_onnx": "onnx_export", "build_onnx": "onnx_export", "make_input_spec": "onnx_export",
    "read_metadata": "metadata", "InputSpec": "metadata", "ExportError": "metadata", "MetadataError": "metadata",
    "lint_for_tensorrt": "lint", "check_tensorrt_compatible": "lint", "LintIssue": "lint",
    "check_parity": "parity", "fold_static": "graph", "op_histogram": "graph",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
