"""Checkpoint -> ONNX artefacts, ONNX -> OpenVINO IR, and a TensorRT lint. The artefact format itself (input spec,
metadata, decision rule) is prn_edge.artefact; the parity check against the checkpoint is prn_edge.verify.

Attributes are imported lazily: `import prn_edge.export` pulls in neither torch nor onnx.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "export_onnx": "onnx_export", "build_onnx": "onnx_export", "make_input_spec": "onnx_export",
    "ExportError": "errors",
    "lint_for_tensorrt": "lint", "check_tensorrt_compatible": "lint", "LintIssue": "lint",
    "fold_static": "graph", "op_histogram": "graph",
    "export_openvino": "openvino_export",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
