"""Artefacts are written so that a line can trust what it finds: only after parity, readable by another user,
never through a fixed temp name, and never reading weights from outside their folder."""
import os
import stat

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from prn_edge.artefact import MetadataError, read_metadata
from prn_edge.artefact.files import FILE_MODE
from prn_edge.cli import main


def test_failed_parity_leaves_nothing_at_the_output_path(tiny_ckpt, tmp_path, monkeypatch, photos):
    import prn_edge.verify as parity

    folder = tmp_path / "imgs"
    folder.mkdir()
    from prn_edge.data.images import write_image

    write_image(folder / "a.png", photos[0])
    real = parity.check_parity
    monkeypatch.setattr(parity, "check_parity", lambda *a, **k: {**real(*a, **k), "ok": False})
    out = tmp_path / "m.onnx"
    assert main(["export", str(tiny_ckpt), "-o", str(out), "--parity", str(folder)]) == 1
    assert list(tmp_path.glob("*.onnx")) == [] and list(tmp_path.glob(".*")) == []
    monkeypatch.setattr(parity, "check_parity", real)
    assert main(["export", str(tiny_ckpt), "-o", str(out), "--parity", str(folder)]) == 0
    assert out.is_file() and read_metadata(out)["kind"] == "prn_edge.onnx"
    assert stat.S_IMODE(out.stat().st_mode) == FILE_MODE and FILE_MODE & 0o044  # group/others may read it


def test_checkpoint_save_follows_no_fixed_temp_name(tmp_path):
    from prn_edge.config import make_config
    from prn_edge.model.prn import build_prn
    from prn_edge.model.checkpoint import read_checkpoint, save_checkpoint

    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    out = tmp_path / "m.pt"
    os.symlink(victim, tmp_path / "m.pt.tmp")  # the old fixed temp name: a link planted there must not be written
    cfg = make_config("prn-tiny")
    model, _ = build_prn(cfg.model, num_images=8)
    save_checkpoint(out, model, cfg, {"category": "x"})
    assert victim.read_text() == "untouched" and read_checkpoint(out)["meta"]["category"] == "x"


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd"])
def test_external_data_outside_the_model_folder_is_refused(tiny_ckpt, tmp_path, location):
    from prn_edge.export.onnx_export import export_onnx

    good = tmp_path / "model" / "m.onnx"
    export_onnx(tiny_ckpt, good)
    m = onnx.load(str(good))
    t = helper.make_tensor("stolen", TensorProto.FLOAT, [4], np.zeros(4, np.float32))
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value=location)
    m.graph.initializer.append(t)
    bad = tmp_path / "model" / "bad.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(MetadataError, match="outside the model's folder"):
        read_metadata(bad)
    m.graph.initializer[-1].external_data[0].value = "weights.bin"  # beside the model: fine
    onnx.save(m, str(bad))
    assert read_metadata(bad)["kind"] == "prn_edge.onnx"
