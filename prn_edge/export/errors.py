"""The export stage's error."""
from __future__ import annotations

from ..errors import PrnEdgeError


class ExportError(PrnEdgeError):
    """An export, lint or parity check failed; the message names the file, node or value and the fix."""
