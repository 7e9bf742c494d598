import os

import pytest
import torch

from prn_edge import FORMAT_VERSION
from prn_edge.config import make_config
from prn_edge.errors import CheckpointError
from prn_edge.model.prn import build_prn
from prn_edge.model.checkpoint import load_model, read_checkpoint, save_checkpoint


@pytest.fixture()
def ckpt(tmp_path):
    cfg = make_config("prn-tiny", {"model": {"prototype_mode": "image"}})
    model, info = build_prn(cfg.model, num_images=30)
    model.fit_prototypes(torch.rand(30, 3, 64, 64))
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, cfg, {"image_threshold": 0.3, "backbone": info})
    return path, model.eval()


def test_roundtrip_gives_identical_predictions_with_weights_only(ckpt):
    path, model = ckpt
    loaded, cfg, meta = load_model(path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.predict(x)[0], model.predict(x)[0])
    assert cfg.variant == "prn-tiny" and cfg.model.prototype_mode == "image"
    assert meta["image_threshold"] == 0.3
    assert not path.with_name(path.name + ".tmp").exists()


def test_truncated_checkpoint(ckpt):
    path, _ = ckpt
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a complete zip archive .cut short") as e:
        load_model(path)
    assert "miniz" not in str(e.value) and len(str(e.value)) < 300  # one clause, not torch's paragraph
    path.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match="neither a torch zip archive nor a weights-only pickle"):
        load_model(path)


def test_a_pickle_with_code_is_refused_and_not_run(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save({"kind": "x", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refuses .a pickle that would run code.*nothing in it was run"):
        load_model(tmp_path / "evil.pt")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("name", ["model.onnx", "model.int8.xml", "brick.engine"])
def test_an_exported_artefact_given_as_checkpoint_says_which_file_to_give(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x08\x07 an exported model")
    with pytest.raises(CheckpointError, match="exported artefact .* takes the .pt file"):
        load_model(tmp_path / name)


def test_foreign_torch_file(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not a prn_edge checkpoint"):
        load_model(path)


def test_incompatible_format_version(ckpt):
    path, _ = ckpt
    state = read_checkpoint(path)
    state["format_version"] = FORMAT_VERSION + 1
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="format"):
        load_model(path)


def test_checkpoint_whose_tensors_do_not_fit_its_config(ckpt):
    path, _ = ckpt
    state = read_checkpoint(path)
    state["config"]["model"]["dim"] = 32
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(path)


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(CheckpointError, match="prn-edge train"):
        load_model(tmp_path / "none.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/prn_edge_ckpt_pwned",))


def test_code_in_a_checkpoint_is_never_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"kind": "prn_edge.checkpoint", "x": _Evil()}, path)
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not os.path.exists("/tmp/prn_edge_ckpt_pwned")


def test_predict_shows_progress_over_the_images_only_when_asked(tiny_ckpt, photos, capsys):
    """eval printed nothing for minutes while a real test set ran through the model (new-user review)."""
    from prn_edge.model.inference import predict

    model, _, _ = load_model(tiny_ckpt)
    images = [p[:64, :64] for p in photos[:3]]
    maps, scores = predict(model, images, batch=2, progress=True)
    err = capsys.readouterr().err
    assert maps.shape == (3, 64, 64) and "predict" in err and "/3 " in err  # a bar over the 3 images
    again, _ = predict(model, images, batch=2)
    assert capsys.readouterr().err == "" and (again == maps).all()
