"""The metadata codec: what an exported artefact says about itself, under `prn_edge.` keys of the ONNX
`metadata_props` (carried unchanged into engine manifests).

Every value is a string; structured values (the input spec, the backbone record, thresholds that may be null, the
keep-in-float list) are JSON. Torch-free, and onnx is imported only to read a file: the runtime reads these on
machines that only have onnxruntime or TensorRT.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .. import FORMAT_VERSION
from .decision import DECISION_RULE, SCORE_NORMALIZATION
from .errors import MetadataError
from .keep_float import KeepFloat
from .spec import OUTPUT_MAP, OUTPUT_SCORE, InputSpec

PREFIX = "prn_edge."
KIND = "prn_edge.onnx"
# Artefact formats: 1 is the package-wide format (prn_edge/__init__.py), with a square model input (the input
# spec's `model_size`); 2 adds a non-square one (`model_height`, `model_width`). An artefact is written in the
# lowest format that holds it: a square one stays format 1, which every earlier prn_edge reads, and a non-square
# one is format 2, which they refuse by its number instead of misreading it. Format 3 is an artefact of input
# policy "tiles" (square or not): it takes tiles cut at native resolution, which an earlier line would resize
# whole regions into. This prn_edge reads all three.
ONNX_FORMAT_VERSION = FORMAT_VERSION
NON_SQUARE_FORMAT_VERSION = 2
TILES_FORMAT_VERSION = 3
READABLE_FORMATS = (ONNX_FORMAT_VERSION, NON_SQUARE_FORMAT_VERSION, TILES_FORMAT_VERSION)

# Keys that hold JSON; every other key holds a plain string.
_JSON_KEYS = {"input", "outputs", "model", "backbone", "image_threshold", "pixel_threshold", "score_spread",
              "format_version", "opset", "keep_float", "cascade_margin"}
REQUIRED_KEYS = ("kind", "format_version", "toolkit_version", "variant", "input", "image_threshold",
                 "score_spread")


def build_metadata(*, toolkit_version: str, variant: str, ckpt_meta: dict, input_spec: InputSpec,
                   model: dict, checkpoint_sha256: Optional[str], opset: Optional[int],
                   exporter: str, keep_float: Optional[KeepFloat] = None) -> dict[str, Any]:
    """The metadata dict (unprefixed keys, Python values) shared by ONNX artefacts and the torch backend.
    keep_float: the graph's keep-in-float record (ONNX exports; the torch backend has no graph)."""
    meta = {
        "kind": KIND,
        "format_version": format_version(input_spec),
        "toolkit_version": toolkit_version,
        "variant": variant,
        "category": str(ckpt_meta.get("category", "")),
        "input": input_spec.to_dict(),
        "outputs": {
            OUTPUT_MAP: "float32 (N, 1, H, W) anomaly probability per pixel, model resolution (the input spec's "
                        "model height and width)",
            OUTPUT_SCORE: "float32 (N,) image score: mean of the top-k map probabilities",
        },
        "model": model,
        "image_threshold": _num(ckpt_meta.get("image_threshold")),
        "pixel_threshold": _num(ckpt_meta.get("pixel_threshold")),
        "score_spread": _num(ckpt_meta.get("score_spread")),
        "score_normalization": SCORE_NORMALIZATION,
        "decision": DECISION_RULE,
        "train_images_sha256": str(ckpt_meta.get("train_images_sha256") or ""),
        "prototypes_sha256": str(ckpt_meta.get("prototypes_sha256") or ""),
        "checkpoint_sha256": checkpoint_sha256 or "",
        "backbone": ckpt_meta.get("backbone") or {},
        "opset": opset,
        "exporter": exporter,
    }
    if keep_float is not None:
        meta["keep_float"] = keep_float.to_dict()
    return meta


def format_version(spec: InputSpec) -> int:
    """The lowest artefact format that describes an artefact taking `spec` (see READABLE_FORMATS)."""
    if spec.fit == "tiles":
        return TILES_FORMAT_VERSION
    return ONNX_FORMAT_VERSION if spec.square else NON_SQUARE_FORMAT_VERSION


def _num(v: Any) -> Optional[float]:
    return None if v is None else float(v)


def encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """Prefixed string key/values for ONNX metadata_props."""
    out = {}
    for k, v in meta.items():
        out[PREFIX + k] = json.dumps(v, sort_keys=True) if k in _JSON_KEYS else str(v)
    return out


def decode_metadata(props: dict[str, str], source: str) -> dict[str, Any]:
    """Inverse of encode_metadata; raises MetadataError naming `source` when prn_edge keys are missing."""
    meta: dict[str, Any] = {}
    for k, v in props.items():
        if not k.startswith(PREFIX):
            continue
        key = k[len(PREFIX):]
        if key in _JSON_KEYS:
            try:
                meta[key] = json.loads(v)
            except ValueError:
                raise MetadataError(f"{source}: metadata {k} is not valid JSON ({v[:80]!r}); re-export the model "
                                    "with `prn-edge export`") from None
        else:
            meta[key] = v
    if meta.get("kind") != KIND:
        raise MetadataError(
            f"{source} carries no prn_edge metadata (no '{PREFIX}kind' = '{KIND}' entry): it was not written by "
            "prn_edge.export. Export it from a checkpoint with `prn-edge export CKPT --out MODEL.onnx` "
            "(prn_edge.export.export_onnx)")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise MetadataError(f"{source}: prn_edge metadata is incomplete (missing {missing}); re-export it")
    if meta["format_version"] not in READABLE_FORMATS:
        raise MetadataError(
            f"{source} has prn_edge artefact format {meta['format_version']}, this prn_edge reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}; re-export it with this version (toolkit "
            f"{meta.get('toolkit_version', '?')} wrote it)")
    if meta.get("image_threshold") is None or meta.get("score_spread") is None:
        raise MetadataError(f"{source}: no image_threshold/score_spread in its metadata; export from a checkpoint "
                            "written by `prn-edge train` (the best checkpoint carries the thresholds)")
    try:
        meta["input_spec"] = InputSpec.from_dict(meta["input"])
    except MetadataError as e:
        raise MetadataError(f"{source}: {e}") from None
    return meta


def read_metadata(onnx_path: str | Path) -> dict[str, Any]:
    """prn_edge metadata of an exported ONNX (weights are not needed, only the header is parsed).

    Returns the decoded dict (plus "input_spec" as an InputSpec). Raises MetadataError for a file that is
    missing, not ONNX, truncated, or has no prn_edge metadata.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise MetadataError(f"{path} does not exist; export one with `prn-edge export CKPT --out {path}`")
    from .onnx_header import WireError, read_header  # the wire format itself: no onnx on the line appliance

    try:
        props, external, has_graph = read_header(path.read_bytes())
        if not has_graph:
            raise WireError("no graph")
    except WireError as e:  # truncated protobuf, a different file type
        raise MetadataError(
            f"{path} is not a readable ONNX model ({e}). It may be truncated or corrupt: export it again with "
            "`prn-edge export`, or copy it again") from None
    _check_external_data(external, path)
    return decode_metadata(props, str(path))


def metadata_props(model) -> dict[str, str]:
    """All metadata_props of an ONNX ModelProto (prn_edge keys and any others) as a plain dict."""
    return {p.key: p.value for p in model.metadata_props}


def set_metadata(model, props: dict[str, str]) -> None:
    """Set string props on an ONNX ModelProto: the other props keep their place, the given ones follow, sorted."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for k, v in keep + sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def with_metadata(onnx_bytes: bytes, meta: dict[str, Any]) -> bytes:
    """The serialized model with unprefixed prn_edge values (e.g. a new threshold) encoded into its metadata,
    rewritten on the wire (no onnx needed: the line appliance re-tunes thresholds without it)."""
    from .onnx_header import replace_metadata

    return replace_metadata(onnx_bytes, encode_metadata(meta))


def write_metadata(model, meta: dict[str, Any]) -> None:
    """Encode unprefixed prn_edge values (e.g. new thresholds) into an ONNX ModelProto's metadata."""
    set_metadata(model, encode_metadata(meta))


def _check_external_data(external: list[tuple[str, str]], path: Path) -> None:
    """Refuse weights stored outside the model's own folder (an absolute path or '..' in an external-data
    location reads any file the process can; CVE-2024-27318 was onnx's own version of this).
    external: (tensor name, location) of every tensor stored outside the file."""
    folder = path.resolve().parent
    for name, location in external:
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or folder not in target.parents:
            raise MetadataError(f"{path}: tensor {name!r} keeps its data at {location!r}, outside the model's "
                                f"folder {folder}; refused. Keep external data files beside the model")
