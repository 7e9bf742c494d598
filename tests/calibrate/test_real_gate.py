"""The calibration gate judges INT8 where training chose the thresholds: the real defect shots the checkpoint held
out (issue 8's rule), with the generated anomalies reported beside; without real shots, the generated ones."""
import json

import pytest

from prn_edge.calibrate.run import CalibrationOptions, _checkpoint_shots, calibrate
from prn_edge.data.dataset import load_category
from prn_edge.errors import ConfigError
from prn_edge.model.checkpoint import load_model


def test_the_gate_judges_the_real_shots_training_held_out(trained_with_real_shots, tmp_path):
    ckpt, data = trained_with_real_shots
    _, _, meta = load_model(ckpt)
    assert len(meta["validation_shots"]) == 4  # 2 of each seen type held out by training
    report = calibrate(ckpt, data, "real", root=tmp_path, log=lambda m: None,
                       options=CalibrationOptions(size=8, defects=2, max_attempts=1))
    manifest = json.loads((tmp_path / "real" / "manifest.json").read_text())
    v = manifest["validation"]
    # the same held-out shots as training (train.num_shots=14 read from the checkpoint, split by its seed)
    assert v["gate"] == "real" and sorted(v["real_defects"]) == sorted(meta["validation_shots"])
    m = report["attempts"][0]["metrics"]
    assert m["gate_set"] == "real" and set(m["sets"]) == {"real", "synthetic"}
    real, synthetic = m["sets"]["real"], m["sets"]["synthetic"]
    assert real["anomalies"] == 4 and real["images"] == len(v["normals"]) + 4
    assert synthetic["anomalies"] == v["generated_anomalies"] == len(v["normals"])
    # the gate's numbers are the real set's, the synthetic ones are reported apart
    for k in ("delta", "decision_agreement", "decision_agreement_fp32_threshold", "map_correlation"):
        assert m[k] == real[k]
    # calibration images come from the training shots only, never from the held-out ones
    calib = {f["path"] for f in manifest["calibration_files"]}
    assert len(calib) == 10 and not calib & set(meta["validation_shots"])
    assert calib & set(meta["shots"])
    table = (tmp_path / "real" / "report.md").read_text()
    assert "| real (" in table and "| synthetic (" in table and "(reported)" in table


def test_without_real_shots_the_gate_judges_generated_anomalies(trained, tmp_path):
    ckpt, data = trained
    _, _, meta = load_model(ckpt)
    assert meta["validation_shots"] == []
    report = calibrate(ckpt, data, "synth", root=tmp_path, log=lambda m: None,
                       options=CalibrationOptions(size=8, max_attempts=1))
    assert report["validation"]["gate"] == "synthetic" and report["validation"]["real_defects"] == []
    m = report["attempts"][0]["metrics"]
    assert m["gate_set"] == "synthetic" and list(m["sets"]) == ["synthetic"]
    assert m["decision_agreement"] == m["sets"]["synthetic"]["decision_agreement"]


def test_real_shots_other_than_the_checkpoints_are_refused_unless_forced(trained_with_real_shots):
    ckpt, data = trained_with_real_shots
    _, cfg, meta = load_model(ckpt)
    cat = load_category(data, num_shots=cfg.train.num_shots, seed=meta["data_seed"])
    train_shots, val_shots = _checkpoint_shots(cat, cfg, meta, ckpt, CalibrationOptions(), print)
    assert sorted(str(s.image.resolve()) for s in val_shots) == sorted(meta["validation_shots"])
    other = {**meta, "shots": meta["shots"][1:]}  # trained on a shot this data does not have where it was
    with pytest.raises(ConfigError, match="not the ones .* trained on.*--force-data"):
        _checkpoint_shots(cat, cfg, other, ckpt, CalibrationOptions(), print)
    logs = []
    _, forced = _checkpoint_shots(cat, cfg, other, ckpt, CalibrationOptions(force_data=True), logs.append)
    assert forced == [] and any("WARNING" in m and "generated anomalies only" in m for m in logs)
    # the data loader's own default (10 shots) is not what this checkpoint trained with: another split
    default = load_category(data, seed=meta["data_seed"])
    with pytest.raises(ConfigError, match="not the ones"):
        _checkpoint_shots(default, cfg, meta, ckpt, CalibrationOptions(), print)


def test_shots_kept_outside_the_category_gate_on_generated_anomalies_with_a_warning(trained_with_real_shots):
    """Trained with --defects from another folder: the category has no defects/ to mistake for them."""
    import dataclasses

    ckpt, data = trained_with_real_shots
    _, cfg, meta = load_model(ckpt)
    cat = dataclasses.replace(load_category(data, num_shots=cfg.train.num_shots, seed=meta["data_seed"]), shots=[])
    logs = []
    assert _checkpoint_shots(cat, cfg, meta, ckpt, CalibrationOptions(), logs.append) == ([], [])
    assert any("WARNING" in m and "not in" in m and "generated anomalies only" in m for m in logs)
