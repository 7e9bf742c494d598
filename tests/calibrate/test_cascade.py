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
    assert engine.describe()["reference_artefact"].startswith("model.fp32.onnx@")  # which file decided, for records


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


def test_the_reference_is_warm_before_the_first_borderline_part(run):
    with open_engine(run[0] / "model.int8.onnx", backend="cascade", allow_failed_gate=True) as engine:
        assert engine.reference.last_timings["compute"] > 0  # it ran once at activation


def test_a_reference_from_another_checkpoint_is_refused(run, trained_with_real_shots, tmp_path):
    """The review pointed a cascade at another category's FP32 model: it opened, and decided the borderline parts
    with the wrong model (agreement below INT8 alone)."""
    from prn_edge.export.onnx_export import export_onnx

    other = tmp_path / "other.onnx"
    export_onnx(trained_with_real_shots[0], other)
    with pytest.raises(EngineError, match="exported from another checkpoint .* same calibration run"):
        open_engine(run[0] / "model.int8.onnx", backend="cascade", reference=str(other), allow_failed_gate=True)


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
    with pytest.raises(EngineError, match="carries no cascade_margin .* give the margin .engine.options.margin in a line config"):
        open_engine(lone / "other.onnx", backend="cascade")
    for bad in (-0.1, 1.0, "0.1", True):
        with pytest.raises(EngineError, match=r"margin=.*must be in \[0, 1\)"):
            engine_options("cascade", margin=bad)
    with pytest.raises(EngineError, match="unknown option 'device'"):
        engine_options("cascade", device="CPU")
    with pytest.raises(EngineError, match="unknown option 'margn' .did you mean 'margin'."):
        engine_options("cascade", margn=0.05)
    with pytest.raises(EngineError, match="spinning='no': give true or false"):
        engine_options("onnxruntime", spinning="no")
    with pytest.raises(EngineError, match="single artefacts"):
        engine_options("cascade", fast_backend="cascade")


@pytest.mark.parametrize("margin, share", [(0.0, 0.0), (0.999, 1.0)])
def test_bench_reports_the_share_of_frames_the_reference_decided(run, tmp_path, margin, share):
    from prn_edge.cli import main

    out = tmp_path / "b.json"
    assert main(["bench", str(run[0] / "model.fp32.onnx"), f"{run[0] / 'model.int8.onnx'}@cascade?margin={margin}",
                 "--iters", "4", "--rounds", "1", "--quiet", "--allow-failed-gate", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["results"][1]
    assert row["backend"] == "cascade" and row["reference_share"] == share
    assert f"FP32 decided {100 * share:.0f}% of frames" in row["precision"]


def test_the_line_counts_the_parts_the_reference_decided(run, frames):
    """An integrator sees how many parts took the FP32 model (metrics, run summary), not only INT8's label."""
    from prn_edge.line.monitor import LineMetrics
    from prn_edge.line.swap import EngineSlot

    fast, _, _, _, threshold, _ = _results(run[0], frames, margin=0.0)
    margin = float(np.median(np.abs(fast.scores.astype(np.float64) - threshold)))
    metrics = LineMetrics("l")
    with open_engine(run[0] / "model.int8.onnx", backend="cascade", margin=margin, allow_failed_gate=True) as eng:
        slot = EngineSlot(eng, metrics, "l")
        counted = 0
        for i in range(len(frames)):
            slot.run(frames[i:i + 1])
            counted += eng.last_rerun
    assert 0 < counted < len(frames)
    assert metrics.summary()["reference_decisions"] == counted
