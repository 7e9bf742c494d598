"""Train and evaluate for real, end to end through the CLI, on a tiny demo dataset (prn-tiny, 64 px)."""
import json

import numpy as np
import pytest

from prn_edge.cli import main
from prn_edge.data.demo import make_dataset
from prn_edge.train.checkpoint import read_checkpoint
from prn_edge.train.trainer import normalize_score


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_dataset(root, seed=3, categories=["gravel"], n_train=24, n_test_good=6, n_test_defect=3, n_shots=4,
                 size=64, progress=False)
    return root / "gravel"


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
    assert normalize_score(meta["image_threshold"], meta) == pytest.approx(0.5)
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
    assert "| crack | unseen |" in js.with_suffix(".md").read_text()
    assert len(list((tmp_path / "ov").glob("*.png"))) > 0
    tiffs = sorted((tmp_path / "maps" / "gravel" / "test").rglob("*.tiff"))
    assert len(tiffs) == res["n_test"]
    m = tifffile.imread(tiffs[0])
    assert m.dtype == np.float32 and m.shape == (64, 64)


def test_resume_continues_from_the_last_step(tiny_data, tmp_path):
    out = tmp_path / "r.pt"
    args = ["train", "--variant", "prn-tiny", "--data", str(tiny_data), "--out", str(out), "--quiet",
            "--set", "train.val_every=5"]
    assert main(args + ["--set", "train.steps=10"]) == 0
    # same config, more steps is a different config: resume must refuse it rather than mix runs
    assert main(args + ["--set", "train.steps=15", "--resume"]) == 2
    assert main(args + ["--set", "train.steps=10", "--resume"]) == 0
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


def test_info_json(capsys):
    assert main(["info", "--variant", "prn-tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["variant"] == "prn-tiny" and info["gflops"] > 0 and info["params_head"] > 0
