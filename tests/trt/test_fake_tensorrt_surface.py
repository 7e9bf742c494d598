"""The fake TensorRT says no where real TensorRT would: its surface per version is the snapshot of the real API
(tests/helpers/trt_api), and it enforces the rules prn_edge relies on (host code in version-compatible engines,
no precision flags or calibrators in 11.x, static shapes on DLA). No TensorRT, CUDA or GPU is used."""
import pytest

from tests.helpers import trt_api
from tests.helpers.fake_tensorrt import make_fake_tensorrt, serialize_engine

VERSIONS = {"8.5": "8.5.2", "8.6": "8.6.1", "10.3": "10.3.0", "10.16": "10.16.1", "11.4": "11.4.1"}
CLASSES = ("Builder", "IBuilderConfig", "INetworkDefinition", "ILayer", "ITensor", "OnnxParser", "Runtime",
           "ICudaEngine", "IExecutionContext", "IOptimizationProfile", "ITimingCache", "Logger")


@pytest.fixture(params=list(VERSIONS), ids=list(VERSIONS))
def fake(request):
    return make_fake_tensorrt(VERSIONS[request.param])


def test_every_family_has_a_snapshot_that_says_how_it_was_made():
    for family in trt_api.FAMILIES:
        s = trt_api.load(family)
        assert s.data["faithfulness"] and s.data["source"]["method"] in ("import", "source")
        assert s.data["source"].get("sha256") or s.data["source"].get("commit")
        assert len(s.classes) > 100 and len(s.enums) > 40, family
    assert trt_api.family_for("10.8.0") == "10.3" and trt_api.family_for("11.1.0") == "11.4"
    assert trt_api.family_for("8.5.2") == "8.5" and trt_api.family_for("10.16.1.11") == "10.16"


def test_the_module_holds_exactly_the_snapshots_names(fake):
    surface = fake.__fake__.surface
    public = {n for n in dir(fake) if not n.startswith("_")}
    assert public == surface.module_names()
    with pytest.raises(AttributeError):
        fake.NoSuchThing  # noqa: B018


def test_classes_and_enums_hold_exactly_their_members(fake):
    surface = fake.__fake__.surface
    for cls in CLASSES:
        obj = getattr(fake, cls)
        for name in surface.members(cls):
            assert hasattr(obj, name), f"{cls}.{name}"
        public = {n for n in dir(obj) if not n.startswith("_")}
        assert public == set(surface.members(cls)), cls
        with pytest.raises(AttributeError):
            getattr(obj, "no_such_member")
    for enum in ("BuilderFlag", "DeviceType", "MemoryPoolType", "NetworkDefinitionCreationFlag", "DataType"):
        assert list(getattr(fake, enum).__members__) == surface.enums[enum]["members"]
        with pytest.raises(AttributeError):
            getattr(fake, enum).NO_SUCH_MEMBER  # noqa: B018


def test_objects_take_no_attribute_real_tensorrt_lacks(fake):
    config = fake.Builder(fake.Logger(fake.Logger.WARNING)).create_builder_config()
    with pytest.raises(AttributeError, match="has no attribute 'workspace'"):
        config.workspace = 1 << 20
    with pytest.raises(AttributeError, match="read-only"):
        config.num_optimization_profiles = 3
    with pytest.raises(TypeError, match="DeviceType"):
        config.default_device_type = "DLA"
    with pytest.raises(TypeError, match="BuilderFlag"):
        config.set_flag(1)
    config.DLA_core = 1
    assert config.DLA_core == 1


def test_unmodeled_real_api_exists_but_says_it_is_not_modeled():
    trt = make_fake_tensorrt("10.3.0")
    builder = trt.Builder(trt.Logger())
    assert hasattr(trt, "Refitter") and hasattr(builder, "is_network_supported")
    with pytest.raises(NotImplementedError, match="does not model Builder.is_network_supported"):
        builder.is_network_supported(None, None)
    with pytest.raises(NotImplementedError, match="Refitter"):
        trt.Refitter(None, None)


@pytest.mark.parametrize("version", ["11.1.0", "11.4.1"])
def test_tensorrt_11_has_no_precision_flags_calibrators_or_layer_precision(version):
    trt = make_fake_tensorrt(version)
    for flag in ("FP16", "INT8", "BF16", "FP8", "PREFER_PRECISION_CONSTRAINTS", "OBEY_PRECISION_CONSTRAINTS"):
        assert not hasattr(trt.BuilderFlag, flag)
    assert not any(n.startswith("IInt8") for n in dir(trt))
    assert not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    builder = trt.Builder(trt.Logger())
    config = builder.create_builder_config()
    assert not hasattr(config, "int8_calibrator") and not hasattr(config, "set_calibration_profile")
    assert not hasattr(builder, "platform_has_fast_fp16")
    with pytest.raises(AttributeError):
        config.int8_calibrator = object()
    layer = trt.ILayer.__new__(trt.ILayer)
    with pytest.raises(AttributeError):
        layer.precision = trt.float32
    assert not hasattr(layer, "set_output_type")


def test_what_each_version_adds():
    has = {f: trt_api.load(f).has for f in trt_api.FAMILIES}
    assert not has["8.5"]("Runtime.engine_host_code_allowed") and has["8.6"]("Runtime.engine_host_code_allowed")
    assert not has["8.5"]("BuilderFlag.VERSION_COMPATIBLE") and has["8.6"]("BuilderFlag.VERSION_COMPATIBLE")
    assert not has["8.5"]("HardwareCompatibilityLevel") and has["8.6"]("HardwareCompatibilityLevel.AMPERE_PLUS")
    assert [f for f in trt_api.FAMILIES if has[f]("HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY")] == \
        ["10.16", "11.4"]
    assert [f for f in trt_api.FAMILIES if has[f]("NetworkDefinitionCreationFlag.STRONGLY_TYPED")] == \
        ["10.3", "10.16", "11.4"]
    assert [f for f in trt_api.FAMILIES if has[f]("ICudaEngine.get_profile_shape")] == ["8.5", "8.6"]
    assert all(has[f]("IExecutionContext.execute_async_v3") and has[f]("ICudaEngine.get_tensor_profile_shape")
               for f in trt_api.FAMILIES)
    assert [f for f in trt_api.FAMILIES if has[f]("int64")] == ["10.3", "10.16", "11.4"]


# ---------------------------------------------------------------------------------------------- runtime rules
def _runtime(version):
    trt = make_fake_tensorrt(version)
    return trt, trt.Runtime(trt.Logger())


def test_version_compatible_engine_with_host_code_needs_engine_host_code_allowed(onnx_models):
    onnx_bytes = onnx_models["b1"].read_bytes()
    lean = serialize_engine(onnx_bytes, None, fake_tensorrt="10.3.0", flags=["VERSION_COMPATIBLE"])
    trt, runtime = _runtime("10.3.0")
    assert runtime.engine_host_code_allowed is False
    assert runtime.deserialize_cuda_engine(lean) is None
    assert "engine_host_code_allowed" in trt.__fake__.log[-1]
    runtime.engine_host_code_allowed = True
    assert runtime.deserialize_cuda_engine(lean) is not None
    excluded = serialize_engine(onnx_bytes, None, fake_tensorrt="10.3.0",
                                flags=["EXCLUDE_LEAN_RUNTIME", "VERSION_COMPATIBLE"])
    assert _runtime("10.3.0")[1].deserialize_cuda_engine(excluded) is not None  # no host code: no permission needed
    trt85, runtime85 = _runtime("8.5.2")
    with pytest.raises(AttributeError):
        runtime85.engine_host_code_allowed = True


def test_engines_of_another_version_are_refused_unless_version_compatible(onnx_models):
    onnx_bytes = onnx_models["b1"].read_bytes()
    plain = serialize_engine(onnx_bytes, None, fake_tensorrt="10.3.0", flags=[])
    assert _runtime("10.16.1")[1].deserialize_cuda_engine(plain) is None
    compatible = serialize_engine(onnx_bytes, None, fake_tensorrt="10.3.0",
                                  flags=["VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"])
    assert _runtime("10.16.1")[1].deserialize_cuda_engine(compatible) is not None
    assert _runtime("11.4.1")[1].deserialize_cuda_engine(compatible) is None  # another major
    assert _runtime("10.3.0")[1].deserialize_cuda_engine(plain) is not None


def test_dla_builds_need_static_shapes(onnx_models):
    trt = make_fake_tensorrt("10.3.0", dla_cores=2)
    logger = trt.Logger()
    builder = trt.Builder(logger)

    def build(shapes):
        network = builder.create_network(0)
        assert trt.OnnxParser(network, logger).parse(onnx_models["dyn"].read_bytes())
        config = builder.create_builder_config()
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = 0
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        profile = builder.create_optimization_profile()
        profile.set_shape("image", *[(b, 3, 64, 64) for b in shapes])
        config.add_optimization_profile(profile)
        return builder.build_serialized_network(network, config)

    assert build((1, 4, 8)) is None and "DLA requires static shapes" in trt.__fake__.log[-1]
    assert build((4, 4, 4)) is not None
