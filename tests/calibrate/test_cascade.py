"""The cascade backend on a real calibration run: INT8 (ONNX Runtime) screens, its FP32 model decides the frames
near the threshold."""
import json
import shutil

import numpy as np
import pytest

from prn_edge.calibrate.run import CalibrationOptions, calibrate
from prn_edge.data.dataset import load_category
from prn_edge.data.images import read_image
from prn_edge.runtime import EngineError, engine_options, open_engine
from prn_edge.runtime.preprocess import rgb_to_frames


@pytest.fixture(scope="module")
def run(trained, tmp_path_factory):
    ckpt, data = trained
    root = tmp_path_factory.mktemp("cascade")
    calibrate(ckpt, data, "c", root=root, options=CalibrationOptions(size=8, max_attempts=1), log=lambda m: None)
    return root / "c", data


@pytest.fixture(scope="module")
def frames(run):
    _, data = run
    cat = load_category(data, num_shots=0)
    images = [read_image(p) for p in cat.train_good[:12]] + [read_image(s.image) for s in cat.test]
    with open_engine(run[0] / "model.fp32.onnx") as ref:
        return rgb_to_frames(images, ref.input_spec)


def _results(run_dir, frames, **opts):
    with open_engine(run_dir / "model.int8.onnx", allow_failed_gate=True) as fast, \
            open_engine(run_dir / "model.fp32.onnx") as ref:
        a, b = fast.infer(frames), ref.infer(frames)
        threshold = float(fast.metadata["image_threshold"])
    with open_engine(run_dir / "model.int8.onnx", backend="cascade", allow_failed_gate=True, **opts) as cascade:
        return a, b, cascade.infer(frames), cascade.last_rerun, threshold, cascade


def test_frames_near_the_threshold_take_the_reference_result(run, frames):
    fast, ref, _, _, threshold, _ = _results(run[0], frames, margin=0.0)
    distance = np.abs(fast.scores.astype(np.float64) - threshold)
    margin = float(np.median(distance))  # about half the frames inside the band
    _, _, out, rerun, _, engine = _results(run[0], frames, margin=margin)
    near = distance < margin
    assert 0 < rerun == near.sum() < len(frames)
    assert np.array_equal(out.scores[near], ref.scores[near]) and np.array_equal(out.scores[~near], fast.scores[~near])
    assert np.array_equal(out.decisions[near], ref.decisions[near])  # by the reference's own threshold
    assert np.array_equal(out.decisions[~near], fast.decisions[~near])
    assert np.array_equal(out.maps[near], ref.maps[near]) and np.array_equal(out.maps[~near], fast.maps[~near])
    assert np.array_equal(out.normalized_scores[near], ref.normalized_scores[near])
    assert engine.describe()["margin"] == margin and engine.describe()["reference"]["backend"] == "onnxruntime"
    # the two take the cores in turns: neither ONNX Runtime session spins for work after its run
    assert engine.describe()["reference"]["spinning"] is False and engine.describe()["fast"]["spinning"] is False
    assert engine.metadata["cascade"]["reference"] == "model.fp32.onnx"


def test_margin_zero_is_the_fast_artefact_and_a_wide_one_the_reference(run, frames):
    fast, ref, out, rerun, _, _ = _results(run[0], frames, margin=0.0)
    assert rerun == 0 and np.array_equal(out.scores, fast.scores) and np.array_equal(out.decisions, fast.decisions)
    fast, ref, out, rerun, _, _ = _results(run[0], frames, margin=0.999)
    assert rerun == len(frames) and np.array_equal(out.scores, ref.scores)
    assert np.array_equal(out.decisions, ref.decisions)


def test_the_margin_comes_from_the_calibration_run(run, frames):
    with open_engine(run[0] / "model.int8.onnx", allow_failed_gate=True) as fast:
        recorded = fast.metadata["cascade_margin"]
    _, _, _, _, _, engine = _results(run[0], frames)
    assert engine.margin == recorded


def test_bad_cascades_are_refused_with_what_to_do(run, tmp_path):
    run_dir = run[0]
    if json.loads((run_dir / "manifest.json").read_text())["passed"] is False:  # the fast artefact's gate holds
        with pytest.raises(EngineError, match="FAILED its accuracy gate"):
            open_engine(run_dir / "model.int8.onnx", backend="cascade")
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run_dir / "model.int8.onnx", lone / "model.int8.onnx")
    with pytest.raises(EngineError, match="reference artefact .* does not exist; give reference="):
        open_engine(lone / "model.int8.onnx", backend="cascade", allow_failed_gate=True)
    with pytest.raises(EngineError, match="is its own reference"):
        open_engine(run_dir / "model.fp32.onnx", backend="cascade", reference=str(run_dir / "model.fp32.onnx"))
    # an FP32 model as the fast one carries no margin of a calibration run
    shutil.copy(run_dir / "model.fp32.onnx", lone / "model.fp32.onnx")
    shutil.copy(run_dir / "model.fp32.onnx", lone / "other.onnx")
    with pytest.raises(EngineError, match="carries no cascade_margin .* give margin="):
        open_engine(lone / "other.onnx", backend="cascade")
    for bad in (-0.1, 1.0, "0.1", True):
        with pytest.raises(EngineError, match="margin="):
            engine_options("cascade", margin=bad)
    with pytest.raises(EngineError, match="unknown option 'device'"):
        engine_options("cascade", device="CPU")
    with pytest.raises(EngineError, match="spinning='no': give true or false"):
        engine_options("onnxruntime", spinning="no")
    with pytest.raises(EngineError, match="single artefacts"):
        engine_options("cascade", fast_backend="cascade")
