"""One exception hierarchy for the toolkit. Every message says what was wrong and what to do."""


class PrnEdgeError(Exception):
    """Base of every error prn_edge raises on purpose; the CLI prints these without a traceback."""


class ConfigError(PrnEdgeError, ValueError):
    """A configuration value or option is invalid."""


class DataError(PrnEdgeError):
    """A dataset folder, image or mask is missing, unreadable or inconsistent."""


class CheckpointError(PrnEdgeError):
    """A checkpoint is corrupt, foreign or from an incompatible version."""


class WeightsError(PrnEdgeError):
    """Backbone weights are missing or do not match the architecture."""


class BuildError(PrnEdgeError):
    """A TensorRT engine cannot be built here or from this input."""
