"""One versioned JSON manifest format for the artefacts written beside others: engine manifests (NAME.json beside
NAME.engine, written by `prn-edge build`) and calibration-run manifests (calibration/<run>/manifest.json, written
by `prn-edge calibrate`).

Every manifest carries `manifest_version`; a reader refuses a version newer than its own (a newer prn_edge wrote
it, and its fields may mean something else), and takes manifests without one as version 1, which is what they
were. Each kind keeps its own fields: engines are told apart by their `kind` and their own `format_version`,
calibration runs by their `calibration_files`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import ManifestError
from .files import write_atomic

MANIFEST_VERSION = 1  # bump when a manifest's layout changes so that older readers must refuse it


@dataclass(frozen=True)
class ManifestKind:
    what: str  # how messages call it
    kind: Optional[str]  # the "kind" field it carries (None: calibration runs, which never had one)
    format_version: Optional[int]  # the kind's own layout version, when it has one
    required: tuple[str, ...]  # list fields every manifest of this kind has
    writer: str  # the command that writes it
    fix: str  # what to do about an unreadable one


ENGINE = ManifestKind("engine manifest", "prn_edge.tensorrt_engine", 1, (), "`prn-edge build`", "rebuild the engine")
CALIBRATION_RUN = ManifestKind("calibration run manifest", None, None, ("calibration_files",), "`prn-edge calibrate`",
                               "run the calibration again")
RUN_MANIFEST = "manifest.json"  # the manifest's name inside a calibration run folder


def new_manifest(kind: ManifestKind, **fields: Any) -> dict:
    """A manifest of `kind`: its kind and versions first, then `fields`."""
    head: dict[str, Any] = {}
    if kind.kind is not None:
        head["kind"] = kind.kind
    if kind.format_version is not None:
        head["format_version"] = kind.format_version
    head["manifest_version"] = MANIFEST_VERSION
    return {**head, **fields}


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def encode_manifest(manifest: dict) -> bytes:
    """Indented JSON; numpy values as numbers and lists, anything else unknown as its str()."""
    return json.dumps(manifest, indent=2, default=_jsonable).encode()


def write_manifest(path: str | Path, manifest: dict) -> None:
    write_atomic(path, encode_manifest(manifest))


def read_manifest(path: str | Path, kind: ManifestKind) -> dict:
    """The manifest at `path`, checked to be of `kind` and of a version this prn_edge reads; ManifestError if not.
    (Callers say what it means for the file to be missing: they know what it should sit beside.)"""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ManifestError(f"{kind.what} {path} is not readable JSON ({e}); {kind.fix}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path} is not a prn_edge {kind.what} (not a JSON object); {kind.fix}")
    if kind.kind is not None and manifest.get("kind") != kind.kind:
        raise ManifestError(f"{path} is not a prn_edge {kind.what} (no kind '{kind.kind}'); {kind.fix}")
    version = manifest.get("manifest_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ManifestError(f"{path}: manifest_version {version!r} is not a version number; {kind.fix}")
    if version > MANIFEST_VERSION:
        raise ManifestError(f"{path} has manifest version {version}, newer than this prn_edge reads (up to "
                            f"{MANIFEST_VERSION}): a newer prn_edge (toolkit {manifest.get('toolkit_version', '?')}) "
                            f"wrote it. Upgrade prn_edge here, or {kind.fix} with this version")
    if kind.format_version is not None and manifest.get("format_version") != kind.format_version:
        raise ManifestError(f"{path} has manifest format {manifest.get('format_version')}, this prn_edge reads "
                            f"{kind.format_version}; {kind.fix} with this version")
    for field in kind.required:
        if not isinstance(manifest.get(field), list):
            raise ManifestError(f"{path} lists no {field}; it was not written by {kind.writer}")
    return manifest


# ---------------------------------------------------------------------------------------------- engines
def engine_manifest_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def make_engine_manifest(*, tensorrt_version: str, compute_capability: str, gpu_name: str,
                         onnx_metadata: dict[str, str], onnx_sha256: str, engine_sha256: str, precision: str = "fp32",
                         version_compatible: bool = False, hardware_compatibility: str = "none",
                         max_batch: Optional[int] = None, **extra: Any) -> dict:
    """The manifest a build step writes beside NAME.engine (as NAME.json). onnx_metadata: the ONNX's
    metadata_props as a plain dict of strings, carried over unchanged (the runtime decodes them)."""
    return new_manifest(ENGINE, tensorrt_version=str(tensorrt_version), compute_capability=str(compute_capability),
                        gpu_name=gpu_name, precision=precision, version_compatible=bool(version_compatible),
                        hardware_compatibility=hardware_compatibility, max_batch=max_batch, onnx_sha256=onnx_sha256,
                        engine_sha256=engine_sha256, metadata=dict(onnx_metadata), **extra)


def read_engine_manifest(engine_path: str | Path) -> dict:
    path = engine_manifest_path(engine_path)
    if not path.is_file():
        raise ManifestError(f"{engine_path} has no manifest {path.name} beside it; engines are built together with "
                            "their manifest (`prn-edge build MODEL.onnx`): rebuild it, or copy the .json along")
    return read_manifest(path, ENGINE)


# ---------------------------------------------------------------------------------------------- calibration runs
def read_calibration_manifest(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / RUN_MANIFEST).is_file():
        raise ManifestError(f"{run_dir} is not a calibration run (no {RUN_MANIFEST}); make one with "
                            "`prn-edge calibrate CKPT --data DATA --run NAME --flavour tensorrt`")
    return read_manifest(run_dir / RUN_MANIFEST, CALIBRATION_RUN)
