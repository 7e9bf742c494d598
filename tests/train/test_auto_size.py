"""model.image_size "auto": the model input follows the training images' aspect ratio, chosen when training starts
and recorded in the checkpoint; a stretched model that squeezes its images says so."""
import pytest

from prn_edge.config import make_config
from prn_edge.errors import ConfigError
from prn_edge.input_policy import auto_image_size
from prn_edge.model.checkpoint import read_checkpoint
from prn_edge.train.trainer import train
from tests.test_non_square_chain import _strips


@pytest.mark.parametrize("aspect, policy, expected", [
    (2.52, "stretch", (640, 256)),  # KolektorSDD: 500 x 1250 commutators, tall
    (1 / 2.52, "letterbox", (256, 640)),  # the same, lying
    (1.13, "stretch", 256),  # Magnetic Tile Defect: mixed, near square by the median
    (1 / 1.3, "stretch", (256, 320)),
    (2.52, "tiles", 256),  # a tile is cut at native resolution: its size is not the image's
    (10.0, "stretch", (1024, 256)),  # capped at 4x the short side
])
def test_auto_size_follows_the_aspect_ratio(aspect, policy, expected):
    assert auto_image_size(aspect, policy) == expected


def test_a_large_auto_side_keeps_the_orientation():
    assert auto_image_size(2.0, "stretch", side=1536, largest=2048) == (2048, 1536)
    assert auto_image_size(0.3, "stretch", side=1024, largest=2048) == (1024, 2048)


def test_auto_is_a_word_the_config_checks():
    cfg = make_config("prn-edge", {"model": {"image_size": "auto"}})
    with pytest.raises(ConfigError, match="chosen from the training images"):
        cfg.model.hw
    assert "auto -> [640, 256]" in cfg.model.resolve_image_size(2.5) and cfg.model.hw == (640, 256)
    assert cfg.model.resolve_image_size(1.0) is None  # chosen once; a given size stays
    with pytest.raises(ConfigError, match="did you mean 'auto'"):
        make_config("prn-edge", {"model": {"image_size": "autp"}})
    assert make_config("prn-edge", {"model": {"image_size": "Auto"}}).model.image_size == "auto"
    with pytest.raises(ConfigError, match="auto_side"):
        make_config("prn-edge", {"model": {"image_size": "auto", "auto_side": 100}})


def test_training_chooses_the_size_from_the_images_and_records_it(tmp_path):
    root = tmp_path / "strips"
    _strips(root)  # 60 x 210 strips: height / width 0.29
    overrides = {"train": {"steps": 2, "val_every": 2, "num_shots": 0}, "model": {"input_policy": "letterbox"}}
    logs: list[str] = []
    cfg = make_config("prn-tiny", {**overrides, "model": {"image_size": "auto", "auto_side": 64,
                                                          "input_policy": "letterbox"}})
    train(cfg, root, tmp_path / "auto.pt", progress=False, log=logs.append)
    assert read_checkpoint(tmp_path / "auto.pt")["config"]["model"]["image_size"] == (64, 224)
    assert cfg.model.image_size == "auto"  # the caller's config as given: a second category chooses its own
    assert any("auto -> [64, 224]" in m for m in logs)
    assert not any("squeezes" in m for m in logs)
    # a resumed run chooses the same size again, so its config matches the interrupted one's
    again = make_config("prn-tiny", {**overrides, "model": {"image_size": "auto", "auto_side": 64,
                                                            "input_policy": "letterbox"}})
    train(again, root, tmp_path / "auto.pt", resume=True, progress=False, log=logs.append)
    assert read_checkpoint(tmp_path / "auto.pt")["config"]["model"]["image_size"] == (64, 224)
    assert any("resumed from" in m for m in logs)

    logs.clear()  # the same strips stretched into a square: the log says what that does to them
    cfg = make_config("prn-tiny", {**overrides, "model": {"image_size": 64, "input_policy": "stretch"}})
    train(cfg, root, tmp_path / "square.pt", progress=False, log=logs.append)
    assert any("squeezes them 3.5-fold" in m and "model.image_size=auto" in m for m in logs)
