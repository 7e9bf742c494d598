"""What `prn-edge build` is asked to do: build_engine's arguments, validated once (a BuildError names the fix)
and normalized, before any file is read or TensorRT is imported."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..artefact import engine_manifest_path
from ..errors import BuildError

PRECISIONS = ("fp32", "fp16", "int8", "best")
HARDWARE_COMPAT = ("none", "ampere_plus", "same_compute_capability")
DEFAULT_BATCH_PROFILE = (1, 4, 8)
ENGINE_SUFFIXES = (".engine", ".plan")


@dataclass(frozen=True)
class BuildRequest:
    onnx_path: Path
    out: Path
    precision: str
    workspace_mb: int
    timing_cache: Optional[Path]
    batch_profile: Optional[Sequence[int]]  # checked: a (min, opt, max) tuple
    dla_core: Optional[int]
    version_compatible: bool
    hardware_compat: Optional[str]  # checked: one of HARDWARE_COMPAT
    calibration: Optional[Path]
    implicit_int8: bool
    allow_failed_gate: bool
    device: int
    log: Callable[[str], None]

    def checked(self) -> "BuildRequest":
        """The request validated (a BuildError names the fix) and normalized."""
        precision, out, onnx_path = self.precision, self.out, self.onnx_path
        if precision not in PRECISIONS:
            raise BuildError(f"precision={precision!r}: choose one of {PRECISIONS}")
        if out.suffix not in ENGINE_SUFFIXES:
            raise BuildError(f"engine path {out} should end in {' or '.join(ENGINE_SUFFIXES)} (its manifest goes "
                             f"beside it as {engine_manifest_path(out).name})")
        if out.resolve() == onnx_path.resolve():
            raise BuildError("the engine path is the ONNX path")
        if not onnx_path.is_file():
            raise BuildError(f"{onnx_path} does not exist; export one with `prn-edge export CKPT --out {onnx_path}`")
        if not isinstance(self.workspace_mb, int) or self.workspace_mb < 16:
            raise BuildError(f"workspace_mb={self.workspace_mb!r}: give an integer >= 16 (MiB); 256 suits Jetson, "
                             "1024 dGPUs")
        bp = None if self.batch_profile is None else tuple(self.batch_profile)
        if bp is not None and (len(bp) != 3 or not all(isinstance(b, int) for b in bp)
                               or not 1 <= bp[0] <= bp[1] <= bp[2]):
            raise BuildError(f"batch_profile={self.batch_profile!r}: give (min, opt, max) with 1 <= min <= opt <= max")
        if self.dla_core is not None and (not isinstance(self.dla_core, int) or self.dla_core < 0):
            raise BuildError(f"dla_core={self.dla_core!r}: give a DLA core number (0 or 1 on AGX Orin/Xavier)")
        hw = "none" if self.hardware_compat in (None, "", "none") else str(self.hardware_compat).lower()
        if hw not in HARDWARE_COMPAT:
            raise BuildError(f"hardware_compat={self.hardware_compat!r}: choose one of {HARDWARE_COMPAT}")
        if self.implicit_int8 and precision not in ("int8", "best"):
            raise BuildError(f"implicit_int8 calibrates INT8 layers: use precision 'int8' or 'best', not "
                             f"{precision!r}")
        if self.implicit_int8 and self.calibration is None:
            raise BuildError("implicit INT8 needs a calibration run for its images: calibration='calibration/RUN' "
                             "(made by `prn-edge calibrate`)")
        return dataclasses.replace(self, batch_profile=bp, hardware_compat=hw)
