"""What each TensorRT version has, in one table: the builder and the runner ask here instead of comparing
version numbers where they use a feature.

Sources: TensorRT release notes and API docs; the migration guide "tensorrt-10x-to-11x" (BuilderFlag.FP16/INT8,
the precision-constraint flags, IBuilderConfig.int8_calibrator and the IInt8*Calibrator classes removed: networks
are always strongly typed); "Version Compatibility" and HardwareCompatibilityLevel from 8.6; "Working with DLA"
(no DLA in 11.0-11.3, 11.4.0 on Windows on ARM only, back on Jetson AGX Orin with 11.4.1 + JetPack 7.2.2).
tests/trt/test_capability.py holds every row that names API against the snapshots of the real bindings
(tests/helpers/trt_api), so a wrong row fails there.
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_TENSORRT = (8, 5)  # JetPack 5.1: the name-based I/O API (set_tensor_address, execute_async_v3)


@dataclass(frozen=True)
class Capabilities:
    version: tuple[int, int, int]
    precision_flags: bool  # BuilderFlag.FP16 / INT8 and PREFER_PRECISION_CONSTRAINTS (weakly typed builds)
    implicit_int8: bool  # IInt8EntropyCalibrator2, IBuilderConfig.int8_calibrator / set_calibration_profile
    explicit_batch_flag: bool  # create_network needs the EXPLICIT_BATCH flag (ignored from 10.0)
    version_compatible: bool  # BuilderFlag.VERSION_COMPATIBLE, Runtime.engine_host_code_allowed
    hardware_levels: tuple[str, ...]  # HardwareCompatibilityLevel members other than NONE, lower case
    dla: bool  # builds for DLA cores (where the device has them)
    # 10.12+: weak typing and the precision flags are deprecated (release notes 10.12.0); strongly typed networks
    # are asked for with NetworkDefinitionCreationFlag.STRONGLY_TYPED and are what the builder prefers there
    weak_typing_deprecated: bool = False

    @property
    def strongly_typed(self) -> bool:
        """Only strongly typed builds exist: precision comes from the ONNX's tensor types, never from builder
        flags (11+). On 10.12-10.x they are preferred (precision.plan_precision) but opt-in."""
        return not self.precision_flags

    @property
    def lint_family(self) -> str:
        """The ONNX parser generation prn_edge.export.lint checks against."""
        return "8.5" if self.version[0] < 10 else ("10" if self.version[0] == 10 else "11")


# (first version, what changes there), oldest first: a version has what every row up to it says.
TABLE: list[tuple[tuple[int, int, int], dict]] = [
    ((8, 5, 0), dict(precision_flags=True, implicit_int8=True, explicit_batch_flag=True, version_compatible=False,
                     hardware_levels=(), dla=True)),
    ((8, 6, 0), dict(version_compatible=True, hardware_levels=("ampere_plus",))),
    ((10, 0, 0), dict(explicit_batch_flag=False)),
    ((10, 9, 0), dict(hardware_levels=("ampere_plus", "same_compute_capability"))),
    ((10, 12, 0), dict(weak_typing_deprecated=True)),
    ((11, 0, 0), dict(precision_flags=False, implicit_int8=False, dla=False)),
    ((11, 4, 1), dict(dla=True)),
]


def version_tuple(version: str, n: int = 3) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0); '8.6' -> (8, 6, 0); suffixes like '1b' count their digits."""
    parts = []
    for p in str(version).split(".")[:n]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (n - len(parts)))


def capabilities(version: str) -> Capabilities:
    """The capabilities of TensorRT `version` (older than MIN_TENSORRT: those of the oldest row; callers refuse
    such versions first)."""
    v = version_tuple(version)
    fields: dict = {}
    for first, changes in TABLE:
        if v >= first or not fields:
            fields.update(changes)
    return Capabilities(version=v, **fields)  # type: ignore[arg-type]

