"""The artefact contract, at the bottom of prn_edge: what export writes and every later stage reads.

- `spec`: the input an artefact takes (InputSpec) and its graph's input/output names;
- `metadata`: the codec of the `prn_edge.` keys in ONNX metadata (carried into engine manifests);
- `decision`: score normalization and the decision rule, one implementation for every backend and the line;
- `keep_float`: the nodes kept in float at any precision, recorded at export;
- `openvino_ir`: the same metadata in an OpenVINO IR's rt_info;
- `manifest`: the versioned manifests of engines and calibration runs;
- `files`: content hashes and atomic writes; `host`: Jetson detection.

It imports the standard library, numpy, prn_edge.errors and prn_edge.input_policy only (onnx inside the functions
that read a file), so any stage, and any machine, can use it.
"""
from __future__ import annotations

from .decision import DECISION_RULE, SCORE_NORMALIZATION, decide, normalize_scores
from .errors import ArtefactError, ManifestError, MetadataError, SpecError
from .files import sha256_file, write_atomic, write_json
from .host import jetson_info
from .keep_float import KeepFloat, keep_float_for, read_keep_float
from .manifest import (CALIBRATION_RUN, ENGINE, MANIFEST_VERSION, RUN_MANIFEST, engine_manifest_path,
                       make_engine_manifest, new_manifest, read_calibration_manifest, read_engine_manifest,
                       read_manifest, write_manifest)
from .metadata import (build_metadata, decode_metadata, encode_metadata, metadata_props, read_metadata,
                       set_metadata, write_metadata)
from .openvino_ir import read_ir_metadata
from .spec import (CHANNEL_ORDERS, INPUT_NAME_FLOAT, INPUT_NAME_UINT8, OUTPUT_MAP, OUTPUT_SCORE, InputSpec,
                   choose_resize)

__all__ = [
    "write_json",
    "ArtefactError", "MetadataError", "ManifestError", "SpecError",
    "InputSpec", "choose_resize", "CHANNEL_ORDERS", "INPUT_NAME_FLOAT", "INPUT_NAME_UINT8", "OUTPUT_MAP",
    "OUTPUT_SCORE",
    "build_metadata", "encode_metadata", "decode_metadata", "read_metadata", "metadata_props", "set_metadata",
    "write_metadata", "read_ir_metadata",
    "normalize_scores", "decide", "SCORE_NORMALIZATION", "DECISION_RULE",
    "KeepFloat", "keep_float_for", "read_keep_float",
    "MANIFEST_VERSION", "ENGINE", "CALIBRATION_RUN", "RUN_MANIFEST", "new_manifest", "read_manifest",
    "write_manifest", "engine_manifest_path", "make_engine_manifest", "read_engine_manifest",
    "read_calibration_manifest",
    "sha256_file", "write_atomic", "jetson_info",
]
