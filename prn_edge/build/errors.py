"""The build step's exception (kept here until prn_edge.errors grows a BuildError of its own)."""
from __future__ import annotations

from ..errors import PrnEdgeError


class BuildError(PrnEdgeError):
    """An engine cannot be built here or from this input; the message says why and what to do."""
