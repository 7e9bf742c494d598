"""Train and evaluate for real, end to end through the CLI, on a tiny demo dataset (prn-tiny, 64 px)."""
import json

import numpy as np
import pytest
import torch

from prn_edge.cli import main
from prn_edge.data.demo import make_dataset
from prn_edge.errors import DataError
from prn_edge.evaluate.checkpoint_eval import evaluate_checkpoint
from prn_edge.evaluate.validation import StepSelection
from prn_edge.model.checkpoint import read_checkpoint
from prn_edge.artefact import normalize_scores


def _gravel(tmp_path_factory, name: str, seed: int, n_shots: int):
    """A tiny demo gravel category (64 px) with n_shots real defect shots over its seen types."""
    root = tmp_path_factory.mktemp(name)
    make_dataset(root, seed=seed, categories=["gravel"], n_train=24, n_test_good=6, n_test_defect=3, n_shots=n_shots,
                 size=64, progress=False)
    return root / "gravel"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return _gravel(tmp_path_factory, "demo", seed=3, n_shots=4)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny.pt"
    rc = main(["train", "--variant", "prn-tiny", "--data", str(tiny_data), "--out", str(out), "--quiet",
               "--set", "train.steps=20", "--set", "train.val_every=10"])
    assert rc == 0
    return out


def test_checkpoint_records_what_reproduces_and_audits_the_run(trained, tiny_data):
    state = read_checkpoint(trained)
    meta = state["meta"]
    assert state["variant"] == "prn-tiny" and state["config"]["train"]["steps"] == 20
    assert meta["category"] == "gravel" and len(meta["train_images_sha256"]) == 64
    assert meta["backbone"]["source"] == "random"  # prn-tiny asks for random weights explicitly
    assert set(meta["seen_types"]) == {"scratch", "stain"}
    assert len(meta["shots"]) == 4 and all("defects" in s for s in meta["shots"])
    assert 0.0 <= meta["image_threshold"] <= 1.0 and meta["score_spread"] > 0
    assert meta["best_step"] in (10, 20) and [h["step"] for h in meta["history"]][0] == 10
    assert normalize_scores(meta["image_threshold"], meta) == pytest.approx(0.5)
    assert trained.with_suffix(".last.pt").is_file()


def test_eval_writes_metrics_tables_overlays_and_mvtec_tiffs(trained, tiny_data, tmp_path):
    import tifffile

    js = tmp_path / "res.json"
    rc = main(["eval", str(trained), "--data", str(tiny_data), "--json", str(js), "--overlays", str(tmp_path / "ov"),
               "--save-maps", str(tmp_path / "maps"), "--quiet"])
    assert rc == 0
    res = json.loads(js.read_text())
    assert res["n_test"] == 6 + 5 * 3
    assert set(res["per_type"]) == {"scratch", "stain", "crack", "hole", "contamination"}
    assert res["per_type"]["crack"]["seen"] is False and res["per_type"]["stain"]["seen"] is True
    for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap"):
        assert 0.0 <= res["overall"][k] <= 1.0
    md = js.with_suffix(".md").read_text()
    assert "| crack | unseen |" in md
    d = res["decisions"]  # the line's verdicts at the checkpoint's threshold, in the table too, not only the JSON
    assert f"{d['true_rejects']} of {5 * 3} defective parts rejected, {d['missed']} missed; " \
           f"{d['false_rejects']} of 6 good parts rejected" in md
    assert len(list((tmp_path / "ov").glob("*.png"))) > 0
    tiffs = sorted((tmp_path / "maps" / "gravel" / "test").rglob("*.tiff"))
    assert len(tiffs) == res["n_test"]
    m = tifffile.imread(tiffs[0])
    assert m.dtype == np.float32 and m.shape == (64, 64)


def test_eval_of_test_defects_without_masks_counts_them_for_images_only(trained, tiny_data, tmp_path):
    import shutil

    data = shutil.copytree(tiny_data, tmp_path / "gravel")
    next((data / "ground_truth" / "crack").glob("000_mask.*")).unlink()
    js = tmp_path / "res.json"
    assert main(["eval", str(trained), "--data", str(data), "--json", str(js), "--quiet"]) == 0
    res = json.loads(js.read_text())
    assert res["n_test"] == 6 + 5 * 3 and res["per_type"]["crack"]["n"] == 3
    assert res["overall"]["n_anomalous_without_mask"] == 1 and res["per_type"]["crack"]["pixel_auroc"] is not None
    assert "1 defect images have no mask" in js.with_suffix(".md").read_text()


def test_resume_continues_from_the_last_step(tiny_data, tmp_path, capsys):
    out = tmp_path / "r.pt"
    args = ["train", "--variant", "prn-tiny", "--data", str(tiny_data), "--out", str(out), "--quiet",
            "--set", "train.val_every=5", "--set", "model.topk=0"]
    assert main(args + ["--set", "train.steps=10"]) == 0
    assert read_checkpoint(out)["config"]["model"]["topk"] == 41  # 0 chose 1% of the 64x64 map, recorded
    said = capsys.readouterr().out.strip().splitlines()  # a sentence for people (the log goes to stderr)
    assert len(said) == 1, said
    assert said[0].startswith(f"{out}: step ") and "of 10 kept" in said[0]
    assert "synthetic image AUROC" in said[0]
    # same config, more steps is a different config: resume must refuse it rather than mix runs
    assert main(args + ["--set", "train.steps=15", "--resume"]) == 2
    assert "(train.steps: 10 in the run, 15 now)" in capsys.readouterr().err
    # a run written before model.distance_features measured per scale: not resumed as the default (both) now
    state = torch.load(out.with_suffix(".last.pt"), weights_only=True)
    del state["config"]["model"]["distance_features"]
    torch.save(state, tmp_path / "old.last.pt")
    old = [str(tmp_path / "old.pt") if a == str(out) else a for a in args]
    assert main(old + ["--set", "train.steps=10", "--resume"]) == 2
    assert "(model.distance_features: 'per_scale' in the run, 'both' now)" in capsys.readouterr().err
    assert main(args + ["--set", "train.steps=10", "--resume", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)  # --json: stdout is the JSON alone
    assert res["checkpoint"] == str(out) and res["steps"] == 10
    state = read_checkpoint(out.with_suffix(".last.pt"))
    assert state["step"] == 10 and [h["step"] for h in state["history"]] == [5, 10]


def test_shots_from_test_are_excluded_from_metrics(tiny_data, tmp_path):
    out = tmp_path / "s.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(tiny_data), "--out", str(out), "--quiet",
                 "--set", "train.steps=5", "--set", "train.val_every=5", "--shots-from-test", "1"]) == 0
    meta = read_checkpoint(out)["meta"]
    assert len(meta["excluded_from_test"]) == 5  # one per defect type
    js = tmp_path / "e.json"
    assert main(["eval", str(out), "--data", str(tiny_data), "--json", str(js), "--quiet"]) == 0
    res = json.loads(js.read_text())
    assert res["n_test"] == 6 + 5 * 2
    assert sorted(res["excluded_from_test"]) == sorted(meta["excluded_from_test"])


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    assert main(["train", "--variant", "prn-tiny", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "nope" in err and "Traceback" not in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert main(["eval", str(bad), "--data", str(tmp_path)]) == 2
    assert "bad.pt" in capsys.readouterr().err


def test_train_refuses_a_config_the_memory_cannot_hold_before_loading_images(tiny_data, tmp_path, capsys,
                                                                              monkeypatch):
    from prn_edge.model import memory
    from prn_edge.train import trainer

    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)
    monkeypatch.setattr(trainer, "load_normals", lambda *a, **k: pytest.fail("images loaded before the memory check"))
    out = tmp_path / "m.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(tiny_data), "--out", str(out), "--quiet"]) == 2
    said = capsys.readouterr().err.strip().splitlines()  # the log (what loading decided), then the error
    errors = [line for line in said if "error" in line]
    assert len(errors) == 1 and errors[0] == said[-1]
    err = errors[0]
    assert err.startswith("prn-edge train: error: model.image_size=64 with model.num_prototypes=auto needs about")
    assert "for training at train.batch_size=4 on 24 normal images" in err
    assert not out.exists() and not out.with_suffix(".last.pt").exists()


def test_info_json(capsys):
    assert main(["info", "--variant", "prn-tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["variant"] == "prn-tiny" and info["gflops"] > 0 and info["params_head"] > 0


def test_info_of_a_checkpoint_and_of_its_artefact(trained, tmp_path, capsys):
    from prn_edge.artefact.files import sha256_file

    meta = read_checkpoint(trained)["meta"]
    assert main(["info", str(trained), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "training checkpoint" and info["category"] == "gravel" and info["variant"] == "prn-tiny"
    assert info["validation"] == meta["validation"] and info["image_threshold"] == round(meta["image_threshold"], 4)
    assert info["training"].startswith(f"{meta['best_step']} of 20 steps")
    assert info["image_score"] == "mean of the top 10 map probabilities (model.topk)"  # prn-tiny's k
    both = ("4096 centres per scale, strides 8+16, and 4096 of those features joined, the mean of the two "
            "(model.distance_features both)")  # the default
    assert info["map"].endswith(f"; distance to {both}, corrected within 16 px of the border")
    assert ("warning" in info) == (meta["validation"] == "synthetic-only")
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(trained), "-o", str(onnx_path), "--input-format", "uint8"]) == 0
    capsys.readouterr()
    assert main(["info", str(onnx_path)]) == 0
    text = capsys.readouterr().out
    assert "kind: ONNX model" in text and "precision: fp32" in text and "uint8 NHWC" in text
    assert "image_score: mean of the top 10 map probabilities" in text
    assert f"distance: {both}" in text
    assert f"checkpoint_sha256: {sha256_file(trained)[:12]}" in text  # ties the artefact to its checkpoint
    assert main(["info", str(onnx_path), "--variant", "prn-tiny"]) == 2
    assert main(["info", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == 2 and "is a folder" in capsys.readouterr().err
    assert main(["info", str(trained.with_suffix(".last.pt")), "--json"]) == 0  # where --resume goes on from
    resume = json.loads(capsys.readouterr().out)
    assert resume["kind"].startswith("training resume state at step 20 of 20") and "image_threshold" not in resume
    assert info["sha256"] == sha256_file(trained)  # --json: whole hashes, to compare with others


@pytest.fixture(scope="module")
def more_shots(tmp_path_factory):
    return _gravel(tmp_path_factory, "shots", seed=4, n_shots=8)


def test_real_shots_are_held_out_and_choose_the_step_and_thresholds(more_shots, tmp_path):
    out = tmp_path / "v.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(more_shots), "--out", str(out), "--quiet",
                 "--set", "train.steps=20", "--set", "train.val_every=10"]) == 0
    meta = read_checkpoint(out)["meta"]
    assert meta["validation"] == "real+synthetic"
    held = [p.split("/")[-2] for p in meta["validation_shots"]]
    assert sorted(held) == ["scratch", "stain"]  # 4 shots per type: one of each held out (0.3 x 4, rounded)
    assert len(meta["shots"]) == 6 and not set(meta["shots"]) & set(meta["validation_shots"])
    best = next(h for h in meta["history"] if h["step"] == meta["best_step"])
    assert best["source"] == "real" and set(best) >= {"real", "synthetic"}
    # the step kept is the one the selection rule keeps over the run's history (latest within the real set's noise)
    assert meta["best_step"] == StepSelection(meta["history"]).kept
    assert best["real"]["n_anomalous"] == 2 and best["real"]["n_normal"] >= 2
    # the configured fusion ("logit") and the decoder's score ("max") compete on the held-out real defects and the
    # better is kept (a tie keeps the configured one); the distance is never dropped; the thresholds are those of
    # the chosen map on the real defects
    choice = meta["fusion_choice"]
    assert set(choice) == {"chosen", "logit", "max"}
    assert choice["chosen"] == max(("logit", "max"),
                                   key=lambda m: (round(choice[m]["selection_metric"], 6), m == "logit"))
    for m in ("logit", "max"):
        v = choice[m]
        assert v["selection_metric"] == pytest.approx((v["image_auroc"] + v["pixel_auroc"] + v["pixel_ap"]) / 3)
    assert read_checkpoint(out)["config"]["model"]["distance_fusion"] == choice["chosen"]
    model_cfg = read_checkpoint(out)["config"]["model"]
    assert model_cfg["map_decoder"] == "weighted" and model_cfg["map_contrast"] == 0.0  # real shots: the plain map
    assert meta["image_threshold"] == pytest.approx(choice[choice["chosen"]]["image_threshold"])
    if choice["chosen"] == "logit":  # as validated during training
        assert meta["image_threshold"] == best["real"]["image_threshold"]
    js = tmp_path / "v.json"
    assert main(["eval", str(out), "--data", str(more_shots), "--json", str(js), "--quiet"]) == 0
    gap = json.loads(js.read_text())["validation_gap"]
    assert gap["validation"] == "real+synthetic" and set(gap["val_image_auroc"]) == {"real", "synthetic"}
    assert gap["gap"] == pytest.approx(gap["test_image_auroc"] - gap["val_image_auroc"]["real"])


def test_without_real_shots_validation_says_synthetic_only_and_eval_shows_the_gap(tiny_data, tmp_path):
    out = tmp_path / "z.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(tiny_data), "--out", str(out), "--quiet",
                 "--set", "train.steps=10", "--set", "train.val_every=10", "--set", "train.num_shots=0"]) == 0
    meta = read_checkpoint(out)["meta"]
    assert meta["validation"] == "synthetic-only" and meta["shots"] == [] and meta["validation_shots"] == []
    js = tmp_path / "z.json"
    assert main(["eval", str(out), "--data", str(tiny_data), "--json", str(js), "--quiet"]) == 0
    res = json.loads(js.read_text())
    assert res["validation_gap"]["validation"] == "synthetic-only"
    assert "generated anomalies only" in res["validation_gap"]["summary"]
    assert "generated anomalies only" in js.with_suffix(".md").read_text()
    from prn_edge.describe import describe_file

    # zero-shot ("auto", the default) the output map gates the decoder by the training-free distance and is
    # contrasted around each image's mean; the score is the plain fusion; the checkpoint and the artefact say so
    model_cfg = read_checkpoint(out)["config"]["model"]
    assert model_cfg["map_decoder"] == "gated" and model_cfg["map_contrast"] == 0.5
    assert main(["export", str(out), "-o", str(tmp_path / "z.onnx")]) == 0
    assert ("decoder weight 0.5, in the map gated by the distance, the map's contrast 0.5 around each image's mean;"
            in describe_file(out)["map"])
    said = describe_file(tmp_path / "z.onnx")  # the artefact records it
    assert said["map_decoder"] == ("gated (decoder weight 0.5, gated by the distance in the map; the image score is "
                                   "not gated)")
    assert said["map_contrast"].startswith("0.5 (each image's map pushed away")
    assert said["border_correction"].startswith("32 px")  # (the configured width; 16 px at this 64 px input)
    assert "corrected within 16 px of the border" in describe_file(out)["map"]
    # given, a choice is kept: the plain map, or another contrast
    plain = tmp_path / "p.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(tiny_data), "--out", str(plain), "--quiet",
                 "--set", "train.steps=10", "--set", "train.val_every=10", "--set", "train.num_shots=0",
                 "--set", "model.map_decoder=weighted", "--set", "model.map_contrast=0",
                 "--set", "model.border_correction=0"]) == 0
    assert main(["export", str(plain), "-o", str(tmp_path / "p.onnx")]) == 0
    assert "gated" not in describe_file(plain)["map"] and "contrast" not in describe_file(plain)["map"]
    assert "border" not in describe_file(plain)["map"]
    assert "map_contrast" not in describe_file(tmp_path / "p.onnx")
    assert "border_correction" not in describe_file(tmp_path / "p.onnx")
    assert describe_file(tmp_path / "p.onnx")["map_decoder"] == "weighted (decoder weight 0.5)"
    contrasted = tmp_path / "c.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(tiny_data), "--out", str(contrasted), "--quiet",
                 "--set", "train.steps=10", "--set", "train.val_every=10", "--set", "train.num_shots=0",
                 "--set", "model.map_decoder=weighted", "--set", "model.map_contrast=1.5"]) == 0
    assert main(["export", str(contrasted), "-o", str(tmp_path / "c.onnx")]) == 0
    assert "the map's contrast 1.5 around each image's mean" in describe_file(contrasted)["map"]
    assert describe_file(tmp_path / "c.onnx")["map_contrast"].startswith("1.5 (each image's map pushed away")


def test_odd_sizes_train_letterboxed_and_maps_come_back_at_each_image_size(tmp_path):
    # Real data: grey and colour images of different sizes and aspect ratios, JPEG and PNG, masks at image size.
    import cv2
    import skimage.data

    from prn_edge.data.images import write_image

    root = tmp_path / "odd"
    coffee = skimage.data.coffee()
    photos = [np.ascontiguousarray(coffee[20 * i:20 * i + 96, 25 * i:25 * i + 96]) for i in range(18)]
    sizes = [(60, 90), (96, 40), (70, 70), (50, 96)]
    for i, img in enumerate(photos[:14]):
        h, w = sizes[i % 4]
        sub = "train/good" if i < 10 else "test/good"
        ext = ".jpg" if i % 2 else ".png"
        write_image(root / sub / f"{i:02d}{ext}", cv2.resize(img, (w, h)) if i % 3 else cv2.cvtColor(
            cv2.resize(img, (w, h)), cv2.COLOR_RGB2GRAY))
    for i, img in enumerate(photos[14:18]):
        h, w = sizes[i]
        img = cv2.resize(img, (w, h)).copy()
        mask = np.zeros((h, w), np.uint8)
        mask[h // 3:h // 2, w // 3:w // 2] = 255
        img[mask > 0] = 255
        write_image(root / "test" / "spot" / f"{i:02d}.png", img)
        write_image(root / "ground_truth" / "spot" / f"{i:02d}_mask.png", mask)
    out = tmp_path / "odd.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(root), "--out", str(out), "--quiet",
                 "--set", "train.steps=10", "--set", "train.val_every=10", "--set",
                 "model.input_policy=letterbox"]) == 0
    assert read_checkpoint(out)["config"]["model"]["input_policy"] == "letterbox"
    import tifffile

    assert main(["eval", str(out), "--data", str(root), "--json", str(tmp_path / "o.json"), "--quiet",
                 "--save-maps", str(tmp_path / "maps")]) == 0
    for i in range(4):
        m = tifffile.imread(tmp_path / "maps" / "odd" / "test" / "spot" / f"{i:02d}.tiff")
        assert m.shape == sizes[i]  # metrics and maps at the image's own resolution
    assert json.loads((tmp_path / "o.json").read_text())["overall"]["pixel_auroc"] is not None


def test_eval_refuses_training_normals_other_than_the_checkpoints(trained, tiny_data, tmp_path):
    """In the generic layout good/ is split by seed: images added after training move the split, and training
    images would be scored as test normals (the review measured image AUROC 66.7 -> 82.2 from that alone)."""
    import shutil

    generic = tmp_path / "generic"
    for i, p in enumerate(sorted((tiny_data / "train" / "good").iterdir()) + sorted((tiny_data / "test" / "good").iterdir())):
        (generic / "good").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, generic / "good" / f"g{i:02d}{p.suffix}")
    for p in sorted((tiny_data / "test").glob("*/*")):
        if p.parent.name != "good":
            (generic / "defect" / p.parent.name).mkdir(parents=True, exist_ok=True)
            (generic / "masks" / p.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, generic / "defect" / p.parent.name / p.name)
            mask = next((tiny_data / "ground_truth" / p.parent.name).glob(p.stem + "_mask.*"))
            shutil.copy(mask, generic / "masks" / p.parent.name / mask.name)
    ckpt = tmp_path / "g.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(generic), "--out", str(ckpt), "--quiet",
                 "--set", "train.steps=2", "--set", "train.val_every=2", "--set", "train.num_shots=0"]) == 0
    assert main(["eval", str(ckpt), "--data", str(generic), "--quiet"]) == 0  # as trained
    for i in range(5):  # the user drops more good parts into the folder
        shutil.copy(generic / "good" / "g00.png", generic / "good" / f"more{i}.png")
    with pytest.raises(DataError, match="split moves .* training images can be in the test set.*--force-data"):
        evaluate_checkpoint(ckpt, generic, progress=False, log=lambda m: None)
    logs = []
    evaluate_checkpoint(ckpt, generic, progress=False, log=logs.append, force_data=True)
    assert any(m.startswith("WARNING") and "--force-data" in m for m in logs)
    copy = tmp_path / "copy"  # the MVTec layout: another copy with other training normals
    shutil.copytree(tiny_data, copy)
    (copy / "train" / "good" / sorted((copy / "train" / "good").iterdir())[0].name).unlink()
    with pytest.raises(DataError, match="another category or another copy"):
        evaluate_checkpoint(trained, copy, progress=False, log=lambda m: None)


def test_a_gated_or_contrasted_map_becomes_plain_when_the_real_shots_choose_max(more_shots, tmp_path, monkeypatch):
    """The gate belongs to the "logit" fusion's map: when held-out real defects choose "max", the checkpoint's map is
    "weighted" (a gated "max" config would be refused when the checkpoint is loaded)."""
    from prn_edge.model.checkpoint import load_model
    from prn_edge.train import trainer

    real_validate = trainer.validate

    def favour_max(model, *args):
        v = real_validate(model, *args)
        return {**v, "image_auroc": 1.0, "pixel_auroc": 1.0, "pixel_ap": 1.0} if model.cfg.distance_fusion == "max" \
            else v

    monkeypatch.setattr(trainer, "validate", favour_max)
    out = tmp_path / "g.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(more_shots), "--out", str(out), "--quiet",
                 "--set", "train.steps=10", "--set", "train.val_every=10", "--set", "model.map_decoder=gated",
                 "--set", "model.map_contrast=1"]) == 0
    model_cfg = read_checkpoint(out)["config"]["model"]
    assert model_cfg["distance_fusion"] == "max" and model_cfg["map_decoder"] == "weighted"
    assert model_cfg["map_contrast"] == 0.0  # a contrast of the "logit" fusion's map too
    assert read_checkpoint(out)["meta"]["fusion_choice"]["map_was"] == {"map_decoder": "gated", "map_contrast": 1.0}
    _, cfg, _ = load_model(out)
    assert not cfg.model.map_gated


def test_eval_does_not_read_the_training_shots(trained, tiny_data, tmp_path):
    """The shots are training's; the checkpoint names its seen types, so a shot mask broken since (or a shots folder
    emptied) does not stop an evaluation, and seen / unseen stay as trained."""
    import shutil

    data = shutil.copytree(tiny_data, tmp_path / "gravel")
    for mask in (data / "defects").rglob("*_mask.*"):
        mask.write_bytes(b"broken")
    js = tmp_path / "res.json"
    assert main(["eval", str(trained), "--data", str(data), "--json", str(js), "--quiet"]) == 0
    res = json.loads(js.read_text())
    assert res["per_type"]["stain"]["seen"] is True and res["per_type"]["crack"]["seen"] is False


def test_a_zero_shot_checkpoint_calls_every_type_unseen_even_beside_a_shots_folder(tiny_data, tmp_path):
    """A zero-shot checkpoint records no seen types; eval must not take the category's shots folder's types as
    seen (an empty list is a record, not a missing one)."""
    import shutil

    data = shutil.copytree(tiny_data, tmp_path / "gravel")
    meta = json.loads((data / "meta.json").read_text())
    meta.pop("seen", None)  # a user's category: the seen types come from the shots, when there are any
    (data / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "zs.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(data), "--out", str(out), "--quiet",
                 "--set", "train.steps=5", "--set", "train.val_every=5", "--set", "train.num_shots=0"]) == 0
    assert read_checkpoint(out)["meta"]["seen_types"] == []
    js = tmp_path / "e.json"
    assert main(["eval", str(out), "--data", str(data), "--json", str(js), "--quiet"]) == 0
    res = json.loads(js.read_text())
    assert {t: v["seen"] for t, v in res["per_type"].items()} == dict.fromkeys(res["per_type"], False)
