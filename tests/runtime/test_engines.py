import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from prn_edge.artefact import read_metadata
from prn_edge.export.onnx_export import export_onnx
from prn_edge.runtime import STAGES, Engine, EngineError, InferResult, backend_for, open_engine
from prn_edge.runtime.preprocess import rgb_to_frames

TOL = 1e-4


@pytest.fixture(scope="module")
def artefacts(tiny_ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    paths = {
        "float1": d / "float_b1.onnx",
        "bgr_dyn": d / "bgr_dyn.onnx",
        "mono_cam": d / "mono_cam.onnx",
    }
    export_onnx(tiny_ckpt, paths["float1"], batch=1)
    export_onnx(tiny_ckpt, paths["bgr_dyn"], batch=None, input_format="uint8", channel_order="bgr")
    export_onnx(tiny_ckpt, paths["mono_cam"], batch=2, input_format="uint8", channel_order="mono",
                input_hw=(100, 90))
    return paths


def test_importing_the_runtime_loads_no_heavy_library():
    code = textwrap.dedent("""
        import sys
        import prn_edge.runtime, prn_edge.runtime.base, prn_edge.runtime.preprocess, prn_edge.artefact
        from prn_edge.runtime import open_engine, Engine, InferResult, EngineError
        heavy = sorted(m for m in ("torch", "onnxruntime", "tensorrt", "cv2", "onnx", "openvino") if m in sys.modules)
        print(",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_backend_is_chosen_by_suffix(tmp_path):
    assert backend_for("m.onnx") == "onnxruntime" and backend_for("m.pt") == "torch"
    assert backend_for("m.engine") == "tensorrt" and backend_for("m.plan") == "tensorrt"
    assert backend_for("m.xml") == "openvino"
    with pytest.raises(EngineError, match=r"\.tflite"):
        backend_for("m.tflite")
    with pytest.raises(EngineError, match="does not exist"):
        open_engine(tmp_path / "nothing.onnx")


def _frames(photos, spec, n):
    return rgb_to_frames(photos[:n], spec)


def test_non_square_engines_agree_on_frames_of_another_size(tmp_path):
    # a 64x128 letterbox model on 90x170 BGR frames: converted inside the uint8 graph, on the host for the float
    # artefact and for the checkpoint; all three decide alike
    from tests.helpers.prn_artefacts import make_checkpoint, real_images

    ckpt = make_checkpoint(tmp_path / "wide.pt", overrides={"model": {"image_size": [64, 128],
                                                                      "input_policy": "letterbox"}})
    export_onnx(ckpt, tmp_path / "float.onnx", batch=None)
    export_onnx(ckpt, tmp_path / "cam.onnx", batch=None, input_format="uint8", channel_order="bgr", input_hw=(90, 170))
    results = []
    for path, opts in ((tmp_path / "cam.onnx", {}), (tmp_path / "float.onnx", {"input_hw": (90, 170)}),
                       (ckpt, {"input_hw": (90, 170)})):
        with open_engine(path, channel_order="bgr", threads=2, **opts) as engine:
            spec = engine.input_spec
            assert (spec.height, spec.width, spec.model_hw, spec.fit) == (90, 170, (64, 128), "letterbox")
            results.append(engine.infer(rgb_to_frames(real_images(4, (180, 340)), spec)))
    for r in results:
        assert r.maps.shape == (4, 64, 128)
        assert np.abs(r.maps - results[0].maps).max() <= TOL and np.abs(r.scores - results[0].scores).max() <= TOL
        assert np.array_equal(r.decisions, results[0].decisions)


def test_onnxruntime_and_torch_backends_agree(artefacts, tiny_ckpt, photos):
    with open_engine(artefacts["bgr_dyn"], threads=2) as ort_engine:
        assert ort_engine.backend == "onnxruntime" and ort_engine.active
        assert ort_engine.active_providers == ["CPUExecutionProvider"]
        spec = ort_engine.input_spec
        assert (spec.height, spec.width, spec.channels, spec.channel_order) == (64, 64, 3, "bgr")
        frames = _frames(photos, spec, 6)
        a = ort_engine.infer(frames)
    with open_engine(tiny_ckpt, channel_order="bgr", threads=2) as torch_engine:
        assert torch_engine.backend == "torch"
        b = torch_engine.infer(frames)
    assert isinstance(a, InferResult) and len(a) == 6
    assert a.maps.shape == (6, 64, 64) and a.maps.dtype == np.float32
    assert a.scores.dtype == np.float32 and a.normalized_scores.dtype == np.float32 and a.decisions.dtype == bool
    assert np.abs(a.maps - b.maps).max() <= TOL and np.abs(a.scores - b.scores).max() <= TOL
    assert np.array_equal(a.decisions, b.decisions)
    assert 0 < a.decisions.sum() < 6  # mixed decisions on real photos
    meta = ort_engine.metadata
    thr, spread = meta["image_threshold"], meta["score_spread"]
    assert np.array_equal(a.decisions, a.scores >= thr)
    want = np.clip((a.scores.astype(np.float64) - thr) / spread + 0.5, 0, 1)
    assert np.allclose(a.normalized_scores, want, atol=1e-6)
    assert torch_engine.metadata["image_threshold"] == thr  # same thresholds travel with both


def test_float_artefact_is_fed_by_host_preprocessing(artefacts, tiny_ckpt, photos):
    """A float ONNX gets BGR frames of another size converted on the host, exactly like the uint8 graph would."""
    with open_engine(artefacts["float1"], channel_order="mono", input_hw=(100, 90), threads=2) as e:
        assert e.input_spec.resize == "separable" and e.input_spec.batch == 1
        frames = _frames(photos, e.input_spec, 3)
        a = e.infer(frames)  # 3 frames through a batch-1 artefact
        assert e.last_timings["preprocess"] > 0
    with open_engine(artefacts["mono_cam"], threads=2) as e:  # in-graph preprocessing, static batch 2
        b = e.infer(frames)  # 3 frames: two runs, the last one padded
    with open_engine(tiny_ckpt, channel_order="mono", input_hw=(100, 90)) as e:
        c = e.infer(frames)
    assert a.maps.shape == b.maps.shape == c.maps.shape == (3, 64, 64)
    assert np.abs(a.maps - c.maps).max() <= TOL and np.abs(b.maps - c.maps).max() <= TOL
    assert np.array_equal(a.decisions, c.decisions) and np.array_equal(b.decisions, c.decisions)


def test_lifecycle_and_timings(artefacts, photos, monkeypatch):
    import prn_edge.runtime.onnxruntime_backend as ort_backend

    def no_host_preprocessing(*a, **k):
        raise AssertionError("a uint8 artefact preprocesses in its graph, not on the host")

    monkeypatch.setattr(ort_backend, "frames_to_model_input", no_host_preprocessing)
    engine = open_engine(artefacts["bgr_dyn"], providers="cpu", threads=1)
    assert isinstance(engine, Engine) and not engine.active
    assert engine.metadata["category"] == "photos"  # readable before activation
    frames = _frames(photos, engine.input_spec, 2)
    with pytest.raises(EngineError, match="not active"):
        engine.infer(frames)
    with engine:
        engine.infer(frames)
        t = engine.last_timings
        assert tuple(t) == STAGES and all(v >= 0 for v in t.values())
        assert t["compute"] > 0 and t["h2d"] == t["d2h"] == 0.0  # no device copies on the CPU provider
    assert not engine.active
    with pytest.raises(EngineError, match="not active"):
        engine.infer(frames)
    engine.activate()  # re-activation loads again
    assert engine.infer(frames).maps.shape == (2, 64, 64)
    engine.close()
    engine.close()  # idempotent


def test_a_torch_engine_builds_its_model_on_activation_not_before(tiny_ckpt, monkeypatch):
    """The Engine contract: metadata and input spec before activation, heavy work (the model) on activation."""
    import prn_edge.model.checkpoint as checkpoint

    built = []
    real_build = checkpoint.build_prn
    monkeypatch.setattr(checkpoint, "build_prn", lambda *a, **k: built.append(1) or real_build(*a, **k))
    engine = open_engine(tiny_ckpt, channel_order="bgr")
    assert built == [] and not engine.active
    assert engine.metadata["image_threshold"] is not None and engine.metadata["model"]["num_prototypes"] > 0
    assert engine.input_spec.channel_order == "bgr" and engine.input_spec.height == 64
    with engine:
        assert built == [1] and engine.metadata["model"]["gflops_per_image"] > 0
        assert engine.infer(np.zeros((2, 64, 64, 3), np.uint8)).maps.shape == (2, 64, 64)
    engine.activate()  # re-activation builds it again
    assert built == [1, 1]
    engine.close()


def test_frames_that_do_not_fit_are_refused(artefacts, photos):
    with open_engine(artefacts["bgr_dyn"], threads=1) as e:
        good = _frames(photos, e.input_spec, 2)
        with pytest.raises(EngineError, match=r"dtype float32.*8-bit"):
            e.infer(good.astype(np.float32) / 255)
        with pytest.raises(EngineError, match=r"frames are 80x64 but bgr_dyn\.onnx takes 64x64.*--input-size 80x64"):
            e.infer(np.zeros((1, 80, 64, 3), np.uint8))
        with pytest.raises(EngineError, match=r"1 channel\(s\) but bgr_dyn\.onnx takes 3"):
            e.infer(good[..., :1])
        with pytest.raises(EngineError, match=r"frame\[None\]"):
            e.infer(good[0])
        with pytest.raises(EngineError, match="N = 0"):
            e.infer(good[:0])
        with pytest.raises(EngineError, match="numpy array"):
            e.infer(good.tolist())
        assert e.infer(np.asfortranarray(good)).maps.shape == (2, 64, 64)  # non-contiguous is fine
    with open_engine(artefacts["mono_cam"], threads=1) as e:
        mono = _frames(photos, e.input_spec, 2)
        assert e.infer(mono[..., 0]).maps.shape == (2, 64, 64)  # (N, H, W) stacks of mono frames too
        with pytest.raises(EngineError, match="3 channel"):
            e.infer(np.repeat(mono, 3, axis=-1))


def test_uint8_artefact_refuses_another_camera_format(artefacts):
    with pytest.raises(EngineError, match=r"takes bgr frames of 64x64 \(fixed at export\)"):
        open_engine(artefacts["bgr_dyn"], channel_order="rgb")
    with pytest.raises(EngineError, match="'NoSuchExecutionProvider' is not one of cpu, cuda, tensorrt"):
        open_engine(artefacts["bgr_dyn"], providers=["NoSuchExecutionProvider"])


def test_broken_artefacts_are_clear_errors(artefacts, tmp_path, tiny_ckpt):
    good = artefacts["float1"].read_bytes()
    cut = tmp_path / "truncated.onnx"
    cut.write_bytes(good[: len(good) // 3])
    with pytest.raises(EngineError, match=r"truncated\.onnx.*(truncated|corrupt|metadata)"):
        open_engine(cut)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 not a protobuf at all" * 50)
    with pytest.raises(EngineError, match=r"junk\.onnx.*(export it again|prn-edge export)"):
        open_engine(junk)
    foreign = tmp_path / "foreign.onnx"
    m = onnx.load(str(artefacts["float1"]))
    del m.metadata_props[:]
    onnx.save(m, str(foreign))
    with pytest.raises(EngineError, match=r"foreign\.onnx carries no prn_edge metadata.*prn-edge export"):
        open_engine(foreign)
    # metadata intact, graph damaged: caught when ONNX Runtime loads it
    broken = tmp_path / "broken_graph.onnx"
    m = onnx.load(str(artefacts["float1"]))
    m.graph.node[3].input[0] = "no_such_tensor"
    onnx.save(m, str(broken))
    assert read_metadata(broken)["kind"] == "prn_edge.onnx"
    with pytest.raises(EngineError, match=r"cannot load .*broken_graph\.onnx.*export it again"):
        open_engine(broken).activate()
    not_ckpt = tmp_path / "weights.pt"
    not_ckpt.write_bytes(b"garbage")
    with pytest.raises(EngineError, match=r"weights\.pt"):
        open_engine(not_ckpt)


@pytest.mark.parametrize("fit", ["stretch", "letterbox"])
def test_images_become_frames_as_training_fits_them(fit):
    """Thresholds, INT8 calibration and `predict` feed engines through rgb_to_frames: an image of another size is
    fitted as training fits it (its input policy, input_policy.resample), not by another resize (it was cv2's, and
    a letterbox model got its calibration images stretched)."""
    from prn_edge.artefact import InputSpec
    from prn_edge.data.fit import fit_image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 100, 3), dtype=np.uint8)
    spec = InputSpec("frames", "uint8", "NHWC", None, 64, 128, 3, "rgb", 64, 128, fit=fit)
    frames = rgb_to_frames([img], spec)
    assert frames.shape == (1, 64, 128, 3)
    assert np.array_equal(frames[0], fit_image(img, (64, 128), fit)[0])
    if fit == "letterbox":
        assert (frames[0, :, :20] == 0).all()  # padded black at the sides, as training pads
    camera = InputSpec("frames", "uint8", "NHWC", None, 120, 150, 1, "mono", 64, 128, resize="separable", fit=fit)
    frames = rgb_to_frames([img], camera)  # frames of the camera's size: stretched to it, the graph fits them
    assert frames.shape == (1, 120, 150, 1)
