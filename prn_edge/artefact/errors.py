"""Errors of the artefact layer: an artefact (ONNX metadata, engine or calibration-run manifest) that cannot be
read or trusted. Each stage turns them into its own error (EngineError, BuildError) where it has to."""
from __future__ import annotations

from ..errors import PrnEdgeError


class ArtefactError(PrnEdgeError):
    """Base of the artefact layer's errors; the message names the file or value and the fix."""


class SpecError(ArtefactError):
    """An input spec cannot be made as asked (e.g. an area resize by a factor that is not an integer)."""


class MetadataError(ArtefactError):
    """An artefact carries no (or unreadable) prn_edge metadata."""


class ManifestError(ArtefactError):
    """A manifest (engine or calibration run) is unreadable, of another kind, or written by a newer prn_edge."""
