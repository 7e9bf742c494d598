"""Parts, verdicts and decisions: what travels from capture to actuation.

Every part gets a sequence number at capture and exactly one final Decision. A decision is either the model's
verdict (cause "model") or the configured fail-safe verdict with the cause that forced it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .sources.base import Frame

GOOD, REJECT, RECHECK = "good", "reject", "recheck"
VERDICTS = (GOOD, REJECT, RECHECK)
MODEL = "model"
# Why a part was decided fail-safe; each is counted separately.
FAIL_SAFE_CAUSES = ("missing_frame", "camera_timeout", "corrupt_frame", "queue_full", "over_budget",
                    "engine_error", "bad_result", "late_verdict", "shutdown")
STAGES = ("capture_to_queue", "queue_wait", "preprocess", "inference", "postprocess", "actuation")


@dataclass(frozen=True)
class Decision:
    seq: int
    verdict: str  # good | reject | recheck
    cause: str  # "model", or the fail-safe cause
    t_decided: float  # time.monotonic()
    score: float = math.nan
    normalized: float = math.nan

    @property
    def fail_safe(self) -> bool:
        return self.cause != MODEL

    @property
    def rejects(self) -> bool:
        """Whether the part leaves the good stream (reject and recheck both divert it)."""
        return self.verdict != GOOD


@dataclass(eq=False)
class Part:
    """One part on its way from the camera to the ejector."""

    seq: int
    t_capture: float
    t_ready: float  # a model verdict must be in by then to be used
    t_fire: float  # when the actuation command goes out (eject time minus actuator lead)
    frame: Optional[Frame] = None
    frame_id: Optional[int] = None
    times: dict = field(default_factory=dict)  # stage -> seconds
    t_enqueued: float = 0.0
    decision: Optional[Decision] = None
    amap: Optional[np.ndarray] = None  # stitched anomaly map, kept until the part is final (evidence)
    t_released: Optional[float] = None  # the scheduler handed the final decision to the outputs (<= t_fire)
    t_fired: Optional[float] = None  # the first output's eject call started (the actuation itself)
    position: Optional[float] = None  # encoder count at capture (encoder-timed lines)
    eject_position: Optional[float] = None  # ... and at the ejector
    t_valid: Optional[float] = None  # a command not delivered by then is stale (t_fire + the line's stale_after_s)
    artefact: str = ""  # the engine artefact whose verdict this is ("" for fail-safe decisions without a call)
    commands: dict = field(default_factory=dict)  # output name -> delivered | late | stale | failed | none | unknown

    @property
    def label(self) -> Optional[int]:
        return None if self.frame is None else self.frame.label

    @property
    def defect(self) -> Optional[str]:
        return None if self.frame is None else self.frame.defect

    @property
    def origin(self) -> str:
        return "" if self.frame is None else self.frame.origin

    @property
    def part_id(self) -> Optional[int]:
        return None if self.frame is None else self.frame.part_id


def model_verdict(defective: bool, normalized: float, band: Sequence[float]) -> str:
    """The artefact's decision, turned into 'recheck' when the normalized score lies in the uncertain band.

    normalized = 0.5 at the artefact's threshold; band = (low, high) means low <= normalized < high -> recheck.
    """
    if band and band[0] <= normalized < band[1]:
        return RECHECK
    return REJECT if defective else GOOD
