"""Re-tuning the image threshold on a line's own good parts: scores come from the artefact itself, the copy carries
the new threshold and its provenance, the original is untouched."""
import json

import numpy as np
import pytest
from PIL import Image

from prn_edge.calibrate.threshold import retune_threshold
from prn_edge.cli import main
from prn_edge.data.images import read_image
from prn_edge.errors import ConfigError, DataError
from prn_edge.artefact import read_metadata
from prn_edge.export.onnx_export import export_onnx
from prn_edge.runtime import open_engine
from prn_edge.runtime.preprocess import rgb_to_frames


@pytest.fixture(scope="module")
def line_parts(trained, tmp_path_factory):
    ckpt, data = trained
    tmp = tmp_path_factory.mktemp("thr")
    export_onnx(ckpt, tmp / "m.onnx", batch=None, input_format="uint8")
    good, bad = tmp / "good", tmp / "bad"
    good.mkdir(), bad.mkdir()
    # "the line": the category's good test parts, brighter than in training (another lighting), and the same
    # parts with a dark blotch
    for i, p in enumerate(sorted((data / "train" / "good").glob("*.png"))[:12]):
        img = np.clip(read_image(p).astype(np.int16) + 25, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(good / f"{i:02d}.png")
        img[16:40, 16:40] = 20
        Image.fromarray(img).save(bad / f"{i:02d}.png")
    return tmp, good, bad


def _decisions(path, folder):
    with open_engine(path) as eng:
        frames = rgb_to_frames([read_image(p) for p in sorted(folder.glob("*.png"))], eng.input_spec)
        r = eng.infer(frames)
    return r.scores, r.decisions


def test_retuned_threshold_passes_the_line_good_parts(line_parts):
    tmp, good, bad = line_parts
    before = read_metadata(tmp / "m.onnx")
    report = retune_threshold(tmp / "m.onnx", good, tmp / "line.onnx", margin=0.1)
    after = read_metadata(tmp / "line.onnx")
    assert read_metadata(tmp / "m.onnx")["image_threshold"] == before["image_threshold"]  # original untouched
    assert after["image_threshold"] == pytest.approx(report["threshold"])
    scores, decisions = _decisions(tmp / "line.onnx", good)
    assert report["threshold"] == pytest.approx(scores.max() + 0.1 * before["score_spread"], rel=1e-4)
    assert not decisions.any() and report["false_rejects"]["new"] == 0
    src = json.loads(after["threshold_source"])
    assert src["good_images"] == 12 and src["previous_threshold"] == pytest.approx(before["image_threshold"])


def test_with_defects_the_threshold_separates_them_when_it_can(line_parts):
    tmp, good, bad = line_parts
    r = retune_threshold(tmp / "m.onnx", good, tmp / "line2.onnx", defects=bad)
    g, d = r["good_scores"], r["defect_scores"]
    if d["min"] > g["max"]:
        assert r["threshold"] == pytest.approx((g["max"] + d["min"]) / 2) and r["missed_defects"]["new"] == 0
    else:
        assert "quantile" in r["rule"]
    assert r["false_rejects"]["new"] == 0


def test_bad_inputs_are_refused(line_parts, tmp_path):
    tmp, good, bad = line_parts
    with pytest.raises(DataError, match="no images"):
        retune_threshold(tmp / "m.onnx", tmp_path, tmp_path / "o.onnx")
    with pytest.raises(ConfigError, match="new file"):
        retune_threshold(tmp / "m.onnx", good, tmp / "m.onnx")
    with pytest.raises(ConfigError, match="exported .onnx"):
        retune_threshold(tmp / "m.pt", good, tmp_path / "o.onnx")
    assert main(["threshold", str(tmp / "m.onnx"), "--good", str(good), "-o", str(tmp_path / "cli.onnx")]) == 0
    assert (tmp_path / "cli.onnx").is_file() and not list(tmp_path.glob(".*.tmp"))


def test_unfit_inputs_do_not_make_a_threshold(line_parts, tmp_path):
    tmp, good, bad = line_parts
    # one 1x1 black frame made the old tool accept almost every defect
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tiny / "x.png")
    with pytest.raises(DataError, match="at least 10 good parts"):
        retune_threshold(tmp / "m.onnx", tiny, tmp_path / "o.onnx")
    for i in range(12):
        Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tiny / f"{i}.png")
    with pytest.raises(DataError, match=r"is 1x1, unlike the 64x64 frames"):
        retune_threshold(tmp / "m.onnx", tiny, tmp_path / "o.onnx")
    assert main(["threshold", str(tmp / "m.onnx"), "--good", str(tiny), "-o", str(tmp_path / "o.onnx")]) == 2
    assert not (tmp_path / "o.onnx").exists()


def test_a_threshold_that_lets_more_defects_through_needs_force(line_parts, tmp_path):
    tmp, good, bad = line_parts
    # "good" parts that are really the defective ones: the new threshold lands above the defects
    with pytest.raises(ConfigError, match=r"would let through 12 of 12 given defects.*pass --force"):
        retune_threshold(tmp / "m.onnx", bad, tmp_path / "o.onnx", defects=bad, quantile=1.0, margin=0.5)
    assert not (tmp_path / "o.onnx").exists()
    r = retune_threshold(tmp / "m.onnx", bad, tmp_path / "o.onnx", defects=bad, margin=0.5, force=True)
    assert r["missed_defects"]["new"] > r["missed_defects"]["previous"]
    png = tmp_path / "o.threshold.png"
    assert r["histogram"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
