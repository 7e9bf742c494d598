"""Input policy tiles end to end: a prn-tiny whose input (64x64) is a tile cut at native resolution trains on
parts of odd sizes, bigger and smaller than the tile, with real shots; training crops are never resized; eval and
validation give maps at each image's own resolution; the export takes tiles (no Resize in the graph), and the line
tiles a camera region with it."""
import json

import numpy as np
import pytest

from prn_edge.cli import main
from prn_edge.data.fit import defect_tile, random_tile
from prn_edge.data.images import write_image

SIZES = [(70, 150), (97, 131), (50, 90), (40, 41), (64, 64)]  # (height, width): larger, smaller and equal to 64


def _parts(root):
    """An MVTec-layout category of gravel parts of several sizes; defects are 3-px bright scratches."""
    import cv2
    import skimage.data

    gravel = skimage.data.gravel()
    rng = np.random.default_rng(0)

    def part(i: int) -> np.ndarray:
        h, w = SIZES[i % len(SIZES)]
        y, x = rng.integers(0, gravel.shape[0] - h), rng.integers(0, gravel.shape[1] - w)
        g = gravel[y:y + h, x:x + w].astype(np.float32)[..., None] * np.array([1.0, 0.9, 0.75], np.float32)
        return np.clip(g, 0, 255).astype(np.uint8)

    def scratched(i: int) -> tuple[np.ndarray, np.ndarray]:
        img = part(i)
        h, w = img.shape[:2]
        mask = np.zeros((h, w), np.uint8)
        cv2.line(mask, (w // 5, h // 4), (4 * w // 5, 3 * h // 4), 255, 3)
        img[mask > 0] = (250, 245, 235)
        return img, mask

    for i in range(20):
        write_image(root / "train" / "good" / f"{i:03d}.png", part(i))
    for i in range(5):
        write_image(root / "test" / "good" / f"{i:03d}.png", part(i))
        img, mask = scratched(i)
        write_image(root / "test" / "scratch" / f"{i:03d}.png", img)
        write_image(root / "ground_truth" / "scratch" / f"{i:03d}_mask.png", mask)
    for i in range(4):
        img, mask = scratched(i + 1)
        write_image(root / "defects" / "scratch" / f"{i:03d}.png", img)
        write_image(root / "defects" / "scratch" / f"{i:03d}_mask.png", mask)
    (root / "meta.json").write_text(json.dumps({"foreground": "full"}))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiles") / "parts"
    _parts(root)
    return root


@pytest.fixture(scope="module")
def trained(parts):
    ckpt = parts.parent / "tiles.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(parts), "--out", str(ckpt), "--quiet",
                 "--set", "model.input_policy=tiles", "--set", "train.steps=10", "--set", "train.val_every=10"]) == 0
    return ckpt


def test_training_crops_are_cut_never_resized():
    """A known pixel pattern survives a crop exactly; a short side is padded black; masks are cut alike."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (50, 300, 3), dtype=np.uint8)
    mask = np.zeros((50, 300), np.float32)
    mask[20:23, 200:260] = 1
    for _ in range(20):
        tile, m, region = random_tile(img, (64, 64), rng, mask)
        assert tile.shape == (64, 64, 3) and m.shape == (64, 64)
        rows = np.flatnonzero(region.any(axis=1))
        assert (rows[0], len(rows)) == (7, 50) and not tile[:7].any() and not tile[57:].any()
        x = int(np.flatnonzero([np.array_equal(tile[7:57], img[:, c:c + 64]) for c in range(300 - 63)])[0])
        assert np.array_equal(m[7:57], mask[:, x:x + 64])  # the mask cut with the image
    shot, shot_mask, _ = defect_tile(img, mask, (64, 64), rng)
    assert shot_mask.sum() > 0 and shot.shape == (64, 64, 3)


def test_tiles_train_and_eval_give_maps_at_each_images_own_size(trained, parts, tmp_path):
    import tifffile

    from prn_edge.model.checkpoint import read_checkpoint

    state = read_checkpoint(trained)
    assert state["config"]["model"]["input_policy"] == "tiles"
    assert state["meta"]["validation"] == "real+synthetic"
    assert main(["eval", str(trained), "--data", str(parts), "--json", str(tmp_path / "e.json"), "--quiet",
                 "--save-maps", str(tmp_path / "maps")]) == 0
    for i in range(5):
        h, w = SIZES[i]
        assert tifffile.imread(tmp_path / "maps" / "parts" / "test" / "scratch" / f"{i:03d}.tiff").shape == (h, w)
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["n_test"] == 10 and res["overall"]["pixel_auroc"] is not None


def _preprocessing_ops(graph) -> list[str]:
    """Op types between the graph input and the encoder's first Conv: the frame preprocessing."""
    reached, ops = {graph.input[0].name}, []
    for node in graph.node:  # topologically sorted
        if any(i in reached for i in node.input):
            if node.op_type == "Conv":
                continue
            ops.append(node.op_type)
            reached.update(node.output)
    return ops


def test_a_tiles_export_takes_tiles_and_the_line_tiles_regions_as_eval_does(trained, parts, tmp_path, capsys):
    import onnx

    from prn_edge.artefact import read_metadata
    from prn_edge.data.images import read_image
    from prn_edge.line import LineConfigError
    from prn_edge.line.engine import engine_input
    from prn_edge.line.tiles import Preprocessor
    from prn_edge.model.checkpoint import load_model
    from prn_edge.model.inference import predict_tiled
    from prn_edge.runtime import EngineError, open_engine

    onnx_path = tmp_path / "tiles.onnx"
    assert main(["export", str(trained), "-o", str(tmp_path / "bad.onnx"), "--input-format", "uint8",
                 "--input-size", "97x131"]) == 2
    assert "takes 64x64 tiles cut at native resolution" in capsys.readouterr().err
    assert main(["export", str(trained), "-o", str(onnx_path), "--input-format", "uint8", "--channel-order", "bgr",
                 "--batch", "dynamic", "--parity", str(parts / "test"), "--parity-images", "4"]) == 0
    parity = json.loads(capsys.readouterr().out)["parity"]
    assert parity["ok"] and parity["images"] > 4  # the test images' tiles, not the images resized
    assert not {"Resize", "AveragePool", "Pad"} & set(_preprocessing_ops(onnx.load(str(onnx_path)).graph))
    meta = read_metadata(onnx_path)
    spec = meta["input_spec"]
    assert meta["format_version"] == 3 and spec.fit == "tiles" and (spec.height, spec.width) == (64, 64)

    with pytest.raises(EngineError, match="64x64 tiles cut at native resolution.*not 131x97 frames"):
        open_engine(trained, input_hw=(97, 131))

    image = read_image(parts / "test" / "scratch" / "001.png")  # 97 x 131
    model = load_model(trained)[0]
    (want_map,), want_scores = predict_tiled(model, [image])
    with open_engine(onnx_path, threads=2) as engine:
        with pytest.raises(LineConfigError, match="tiles cut at native resolution.*region.tiles: true"):
            Preprocessor(image.shape, engine_input(engine), resize=True)
        prep = Preprocessor(image.shape, engine_input(engine), tiles=True)
        r = engine.infer(prep.prepare(image))
        score, _, _, amap = prep.combine(r.scores, r.normalized_scores, r.decisions, r.maps)
    assert amap.shape == image.shape[:2]
    assert abs(score - float(want_scores[0])) < 1e-4 and np.abs(amap - want_map).max() < 1e-4


def test_the_synth_preview_shows_tiles_as_training_takes_them(parts, tmp_path):
    from prn_edge.data.images import read_image

    out = tmp_path / "grid.png"
    assert main(["synth", "--data", str(parts), "--preview", str(out), "-n", "4", "--variant", "prn-tiny",
                 "--set", "model.input_policy=tiles"]) == 0
    assert read_image(out).shape[1] == 2 * 64  # 2 columns of 64-px tiles: cut, not resized


def test_a_tiles_checkpoint_calibrates_to_int8_with_its_gate_on_whole_images(trained, parts, tmp_path):
    """Calibration takes tiles (calibration set, prototype refit) and the gate judges whole validation images: each
    map stitched from its tiles at the image's own size, its score the highest tile's, as training validated."""
    import onnx

    from prn_edge.calibrate.run import CalibrationOptions, calibrate
    from prn_edge.model.checkpoint import read_checkpoint

    report = calibrate(trained, parts, "t", root=tmp_path, log=lambda m: None,
                       options=CalibrationOptions(flavour="cpu", size=8, max_attempts=1))
    meta = read_checkpoint(trained)["meta"]
    a = report["attempts"][0]["metrics"]
    held_out = len(meta["validation_shots"])
    assert held_out >= 1 and report["validation"]["gate"] == "real"
    normals = len(report["validation"]["normals"])
    # whole images, not tiles: the real set is the held-out normals and shots, the synthetic set each normal twice
    assert a["sets"]["real"]["images"] == normals + held_out and a["sets"]["real"]["anomalies"] == held_out
    assert a["sets"]["synthetic"]["images"] == 2 * normals
    # FP32 through ONNX Runtime, tiles stitched, scores the same as training's validation of the same images
    best = next(h for h in meta["history"] if h["step"] == meta["best_step"])
    for name in ("real", "synthetic"):
        assert a["sets"][name]["fp32"]["image_auroc"] == pytest.approx(best[name]["image_auroc"], abs=1e-6)
        assert a["sets"][name]["fp32"]["pixel_auroc"] == pytest.approx(best[name]["pixel_auroc"], abs=2e-3)
    q = onnx.load(str(tmp_path / "t" / report["artefacts"]["int8"]))
    assert [n.op_type for n in q.graph.node].count("QuantizeLinear") > 5
    assert 0.0 <= a["expected_agreement"] <= 1.0 and a["score_noise"] >= 0.0
