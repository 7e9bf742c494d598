"""The capability table (prn_edge/trt/capability.py) against the snapshots of the real bindings (tests/helpers/
trt_api): each row that names API agrees with what every snapshotted version has. DLA cannot be read off a
snapshot (DeviceType.DLA exists everywhere, also where no platform runs it): its rows come from NVIDIA's notes."""
import pytest

from prn_edge.trt.capability import MIN_TENSORRT, capabilities
from tests.helpers import trt_api


@pytest.mark.parametrize("family", trt_api.FAMILIES)
def test_each_row_matches_the_real_api(family):
    s = trt_api.load(family)
    caps = capabilities(s.version)
    assert caps.precision_flags == s.has("BuilderFlag.FP16") == s.has("BuilderFlag.INT8") \
        == s.has("BuilderFlag.PREFER_PRECISION_CONSTRAINTS")
    assert caps.implicit_int8 == s.has("IInt8EntropyCalibrator2") == s.has("IBuilderConfig.int8_calibrator") \
        == s.has("IBuilderConfig.set_calibration_profile")
    assert caps.version_compatible == s.has("BuilderFlag.VERSION_COMPATIBLE") \
        == s.has("Runtime.engine_host_code_allowed")
    levels = (s.enums.get("HardwareCompatibilityLevel") or {}).get("members", [])
    assert set(caps.hardware_levels) == {m.lower() for m in levels} - {"none"}
    if caps.explicit_batch_flag:
        assert s.has("NetworkDefinitionCreationFlag.EXPLICIT_BATCH")


def test_versions_between_the_snapshots():
    assert capabilities("10.8.0").hardware_levels == ("ampere_plus",)
    assert capabilities("10.9.0").hardware_levels == ("ampere_plus", "same_compute_capability")
    assert not capabilities("10.0.1").explicit_batch_flag and capabilities("8.6.2").explicit_batch_flag
    assert [capabilities(v).dla for v in ("10.3.0", "11.0.0", "11.3.9", "11.4.0", "11.4.1")] == \
        [True, False, False, False, True]
    assert capabilities("11.1").strongly_typed and not capabilities("10.16.1.11").strongly_typed
    assert capabilities("8.5.2").lint_family == "8.5" and capabilities("10.3").lint_family == "10"
    assert capabilities(".".join(map(str, MIN_TENSORRT))).version == (8, 5, 0)
