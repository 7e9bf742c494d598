"""What prn_edge keeps in a Triton model repository beside the model, so that a client decides as the artefact does.

Triton's model metadata does not return an ONNX's `metadata_props` (and a TensorRT plan has none), so the
decision metadata travels twice:

- in the model's `config.pbtxt` `parameters`: the artefact's own `prn_edge.` keys (image_threshold, score_spread,
  the input spec, provenance hashes) plus `prn_edge.model_version`, `prn_edge.artefact` and
  `prn_edge.artefact_sha256`. A client reads them over the network (ModelConfig); they describe the version the
  config was written for, the newest, which is the only one served (version_policy latest 1).
- in the sidecar `prn_edge.json` beside `config.pbtxt`: those parameters for every version ever written, for a
  client or a person with the repository at hand.

Both hold the metadata codec's string key/values (prn_edge.artefact.metadata): decode_metadata reads either.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .errors import MetadataError
from .manifest import ManifestKind, read_manifest
from .metadata import PREFIX

SIDECAR = "prn_edge.json"
TRITON_MODEL = ManifestKind("Triton model sidecar", "prn_edge.triton_model", 1, (), "`prn-edge triton-repo`",
                            "write the model again with `prn-edge triton-repo`")
VERSION_KEY = PREFIX + "model_version"
ARTEFACT_KEY = PREFIX + "artefact"
ARTEFACT_SHA_KEY = PREFIX + "artefact_sha256"


def version_parameters(props: dict[str, str], version: int, artefact: str, sha256: str,
                       extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The parameters that describe one model version: the artefact's prn_edge props, where they came from, and
    `extra` provenance (e.g. an engine's TensorRT version), all as strings under the `prn_edge.` prefix."""
    out = {k: v for k, v in props.items() if k.startswith(PREFIX)}
    out.update({PREFIX + k: str(v) for k, v in (extra or {}).items()})
    out.update({VERSION_KEY: str(version), ARTEFACT_KEY: artefact, ARTEFACT_SHA_KEY: sha256})
    return out


def described_version(params: dict[str, str]) -> Optional[str]:
    """The model version a set of parameters describes (None: not written by prn_edge)."""
    return params.get(VERSION_KEY)


def sidecar_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / SIDECAR


def read_sidecar(model_dir: str | Path) -> dict:
    """The sidecar of a model directory, checked (ManifestError when it is unreadable or of a newer prn_edge)."""
    return read_manifest(sidecar_path(model_dir), TRITON_MODEL)


def sidecar_parameters(sidecar: dict, version: str | int, source: str) -> dict[str, str]:
    """The parameters one version was written with; MetadataError when the sidecar does not record it."""
    versions = sidecar.get("versions") or {}
    if str(version) not in versions:
        raise MetadataError(f"{source} records versions {sorted(versions, key=int)}, not version {version}; "
                            "write that version with `prn-edge triton-repo --add`, or ask for one it records")
    return dict(versions[str(version)]["parameters"])
