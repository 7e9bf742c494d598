"""`prn-edge predict`: image files of any size through an artefact, fitted as training fits its images, decided by
the artefact's rule, maps back at each image's size, CSV / JSON / pictures written."""
import csv
import json

import cv2
import numpy as np
import pytest
import torch

from prn_edge.artefact import decide, read_metadata
from prn_edge.data.fit import fit_image
from prn_edge.errors import DataError
from prn_edge.export.onnx_export import export_onnx
from prn_edge.runtime.predict import image_files, predict_images
from tests.helpers.prn_artefacts import make_checkpoint, real_images


def _write(folder, name, img):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert cv2.imwrite(str(path), img if img.ndim == 2 else img[..., ::-1])
    return path


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """Colour and grey images of sizes no model takes: one axis enlarged, the other shrunk."""
    root = tmp_path_factory.mktemp("odd") / "parts"
    imgs = real_images(4, (150, 70)) + real_images(2, (41, 97))
    paths = []
    for i, img in enumerate(imgs):
        grey = i % 3 == 2
        paths.append(_write(root / ("a" if i < 3 else "b"), f"{i}.png",
                            cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if grey else img))
    return root, paths


def _reference(ckpt, paths):
    """Training's view: each image read, fitted by data.fit.fit_image at the model's input policy, the checkpoint's
    PRN on it."""
    from prn_edge.data.images import read_image
    from prn_edge.model.checkpoint import load_model

    model, cfg, _ = load_model(ckpt)
    fitted = [fit_image(read_image(p), cfg.model.hw, cfg.model.input_policy) for p in paths]
    x = torch.from_numpy(np.stack([f for f, _ in fitted])).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        maps, scores = model.predict(x)
    maps = maps.numpy().reshape(len(paths), *cfg.model.hw)
    return [w.unfit(m) for (_, w), m in zip(fitted, maps)], scores.numpy().astype(np.float64)


def test_odd_sizes_are_scored_as_training_fits_them_on_onnx_and_torch(tiny_ckpt, odd_images, tmp_path):
    root, paths = odd_images
    onnx_path = tmp_path / "cam.onnx"
    export_onnx(tiny_ckpt, onnx_path, batch=None, input_format="uint8", channel_order="bgr")
    ref_maps, ref_scores = _reference(tiny_ckpt, paths)
    meta = read_metadata(onnx_path)
    for artefact in (onnx_path, tiny_ckpt):
        r = predict_images(artefact, [root], tmp_path / artefact.stem, progress=False, overlays=3)
        rows = r["predictions"]
        assert [row["file"] for row in rows] == [str(p.relative_to(root)) for p in paths]
        scores = np.array([row["score"] for row in rows])
        # fitted by training's resampling: OpenCV's INTER_AREA / linear differs by far more than this
        assert np.abs(scores - ref_scores).max() < 2e-4, artefact
        assert [row["verdict"] == "reject" for row in rows] == list(decide(ref_scores, meta))
        assert [(row["height"], row["width"]) for row in rows] == [m.shape for m in ref_maps]
        assert r["rejected"] + r["passed"] == len(paths) == 6


def test_outputs_csv_json_and_pictures_rejects_first(tiny_ckpt, odd_images, tmp_path):
    root, paths = odd_images
    out = tmp_path / "pred"
    r = predict_images(tiny_ckpt, [root / "a", paths[4]], out, progress=False, overlays=2)
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["file"] for row in rows] == ["a/0.png", "a/1.png", "a/2.png", "b/4.png"]
    assert json.loads((out / "predictions.json").read_text())["predictions"] == r["predictions"]
    pictures = sorted((out / "overlays").iterdir())
    assert len(pictures) == 2 and [str(p) for p in pictures] == sorted(r["overlays"])
    ranked = sorted(r["predictions"], key=lambda row: (row["verdict"] != "reject", -row["score"]))[:2]
    assert sorted(p.name for p in pictures) == sorted(f"{row['verdict']}_{row['file'][:-4].replace('/', '_')}.png"
                                                      for row in ranked)
    # [image | heat map | map >= pixel threshold] at the image's own height (no ground-truth panel)
    img = cv2.imread(str(pictures[0]))
    assert img.shape[1] > 2 * img.shape[0] * 70 / 150
    assert predict_images(tiny_ckpt, [paths[0]], tmp_path / "none", progress=False, overlays=0)["overlays"] == []
    # an output folder inside the input folder: its pictures are not taken as parts on the next run
    inner = root / "a" / "pred"
    first = predict_images(tiny_ckpt, [root / "a"], inner, progress=False, overlays=2)
    again = predict_images(tiny_ckpt, [root / "a"], inner, progress=False, overlays=2)
    assert first["images"] == again["images"] == 3 and any(inner.rglob("*.png"))
    import shutil
    shutil.rmtree(inner)


def test_a_letterbox_model_maps_back_without_its_padding(tmp_path):
    ckpt = make_checkpoint(tmp_path / "wide.pt", overrides={"model": {"image_size": [64, 128],
                                                                      "input_policy": "letterbox"}})
    path = _write(tmp_path / "imgs", "long.png", real_images(1, (40, 200))[0])
    ref_maps, ref_scores = _reference(ckpt, [path])
    export_onnx(ckpt, tmp_path / "wide.onnx", batch=None, input_format="uint8", channel_order="rgb")
    from prn_edge.runtime.predict import predict_files
    from prn_edge.runtime import open_engine

    with open_engine(tmp_path / "wide.onnx") as engine:
        (p, img, amap), = predict_files(engine, [path], keep_maps=True)
    assert amap.shape == (40, 200) == ref_maps[0].shape
    assert np.abs(amap - ref_maps[0]).max() < 2e-3 and abs(p.score - ref_scores[0]) < 2e-4


def test_a_tiles_model_scores_the_highest_tile_at_native_resolution(tmp_path):
    from prn_edge.model.checkpoint import load_model
    from prn_edge.runtime import open_engine
    from prn_edge.runtime.predict import predict_files
    from prn_edge.tiling import predict_in_tiles

    ckpt = make_checkpoint(tmp_path / "tiles.pt", overrides={"model": {"input_policy": "tiles"}})
    image = real_images(1, (131, 97))[0]
    path = _write(tmp_path / "imgs", "big.png", image)
    model, cfg, _ = load_model(ckpt)

    def run(tiles):
        x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            m, s = model.predict(x)
        return m.numpy().reshape(len(tiles), *cfg.model.hw), s.numpy()

    ref_maps, ref_scores = predict_in_tiles(run, [image], cfg.model.hw)
    with open_engine(ckpt) as engine:
        (p, _, amap), = predict_files(engine, [path], keep_maps=True)
    assert amap.shape == (131, 97) and np.abs(amap - ref_maps[0]).max() < 1e-4
    assert abs(p.score - float(ref_scores[0])) < 1e-5


def test_bad_inputs_are_named(tmp_path, tiny_ckpt):
    with pytest.raises(DataError, match="does not exist"):
        image_files([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        image_files([tmp_path / "empty"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not an image"):
        image_files([tmp_path / "notes.txt"])
    raw = tmp_path / "Imgs"  # a raw Magnetic Tile Defect folder: each mask beside its image under the same name
    img = real_images(1, 64)[0]
    _write(raw, "exp0.jpg", img)
    _write(raw, "exp0.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(DataError, match="share a name"):
        image_files([raw])
    _write(tmp_path / "masks_too" / "masks", "m.png", img)  # a masks/ folder below is skipped, as elsewhere
    _write(tmp_path / "masks_too", "p.png", img)
    assert [p.name for p in image_files([tmp_path / "masks_too"])] == ["p.png"]


def test_cli_prints_a_table_or_json(tiny_ckpt, odd_images, tmp_path, capsys):
    from prn_edge.cli import main

    root, _ = odd_images
    assert main(["predict", str(tiny_ckpt), str(root), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 6 and len(report["predictions"]) == 6
    assert main(["predict", str(tiny_ckpt), str(root), "-o", str(tmp_path / "o"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "6 images:" in out and "| a/0.png |" in out and (tmp_path / "o" / "predictions.csv").is_file()
    assert main(["predict", str(tiny_ckpt), str(tmp_path / "missing")]) != 0
    assert "does not exist" in capsys.readouterr().err
