import pytest

from prn_edge.config import VARIANTS, load_config_file, make_config, parse_override
from prn_edge.errors import ConfigError


def test_every_variant_is_valid():
    for name in VARIANTS:
        assert make_config(name).variant == name


def test_overrides_merge_into_the_variant():
    cfg = make_config("prn-tiny", {"train": {"steps": 7}, "model": {"patch_sizes": [2]}})
    assert cfg.train.steps == 7 and cfg.model.patch_sizes == (2,) and cfg.model.backbone == "tiny"
    assert parse_override("train.lr=0.5") == {"train": {"lr": 0.5}}


@pytest.mark.parametrize("overrides, message", [
    ({"model": {"backbon": "x"}}, "unknown key model.backbon; allowed"),
    ({"model": {"backbone": "vgg"}}, "choose one of"),
    ({"train": {"steps": "many"}}, "expected a number"),
    ({"train": {"steps": 1.5}}, "expected an integer"),
    ({"model": {"image_size": 100}}, "multiple of 32"),
    ({"model": {"image_size": [256, 100]}}, r"model.image_size=\[256, 100\]: the width 100 must be a multiple of 32"),
    ({"model": {"image_size": [4096, 256]}}, r"the height 4096 must be a multiple of 32 from 64 to 2048"),
    ({"model": {"image_size": [256]}}, r"give one side \(a square, e.g. 256\) or \[height, width\]"),
    ({"model": {"image_size": [256, "wide"]}}, r"model.image_size\[1\]: expected a number, got 'wide'"),
    ({"model": {"image_size": [64, 128], "topk": 10000}}, r"model.topk=10000: 0 \(1% of the map\) or from 1 to 3839 "
                                                          r"pixels \(TensorRT's TopK takes K < 3840"),
    ({"model": {"pretrained": "yes"}}, "true or false"),
    ({"synth": {"opacity": [0.9, 0.1]}}, "low <= high"),
    ({"model": {"patch_sizes": [3]}}, "power of two"),
    ({"model": {"decoder_weight": 1.5}}, r"model.decoder_weight=1.5: from 0 \(the distance map alone\) to 1"),
    ({"model": {"decoder_weight": "half"}}, "model.decoder_weight: expected a number"),
    ({"model": {"map_decoder": "gate"}}, r"model.map_decoder='gate' is not allowed; choose one of \['auto', "
                                         r"'weighted', 'gated'\]"),
    ({"model": {"map_decoder": "gated", "distance_fusion": "max"}},
     r"map_decoder=gated gates the decoder by the distance in the \"logit\" fusion's map; distance_fusion is 'max'"),
    ({"model": {"map_contrast": 5}}, r"model.map_contrast=5: from 0 \(the map as fused\) to 2, or \"auto\""),
    ({"model": {"map_contrast": "high"}}, r"model.map_contrast='high': a number from 0 \(the map as fused\) to 2"),
    ({"model": {"map_contrast": True}}, r"model.map_contrast: expected a number, got True"),
    ({"model": {"map_contrast": 1, "distance_fusion": "mean"}},
     r"model.map_contrast=1 acts on the \"logit\" fusion's map; distance_fusion is 'mean'"),
    ({"model": {"input_policy": "crop"}}, r"model.input_policy='crop' is not allowed; choose one of "
                                          r"\['stretch', 'letterbox', 'tiles'\]"),
    ({"model": {"input_policy": "tiles", "prototype_mode": "image"}}, "whole-image prototypes.*prototype_mode=patch"),
])
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config("prn-edge", overrides)


def test_image_size_is_one_side_or_height_and_width(tmp_path):
    square = make_config("prn-edge", {"model": {"image_size": 256}}).model
    assert square.image_size == 256 and square.hw == (256, 256) and square.size_text == "256"
    assert make_config("prn-edge").model.image_size == "auto"  # the default: chosen from the training images
    wide = make_config("prn-edge", parse_override("model.image_size=[256, 640]")).model
    assert wide.image_size == (256, 640) and wide.hw == (256, 640) and wide.size_text == "[256, 640]"
    # [S, S] is the square S: one form in checkpoints, the one they have always had
    assert make_config("prn-edge", {"model": {"image_size": [128, 128]}}).model.image_size == 128
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model:\n  image_size: [640, 256]\n")
    cfg = make_config("prn-tiny", load_config_file(cfg_file))
    assert cfg.model.hw == (640, 256)
    # the config a checkpoint stores (a tuple) builds the same config again
    again = make_config("prn-tiny", {k: v for k, v in cfg.to_dict().items() if k != "variant"})
    assert again.to_dict() == cfg.to_dict()


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("steps")


def test_model_and_train_numbers_must_be_finite_and_list_elements_typed():
    from prn_edge.config import make_config
    from prn_edge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.lr: expected a finite number, got nan"):
        make_config("prn-edge", {"train": {"lr": float("nan")}})
    with pytest.raises(ConfigError, match=r"model.patch_sizes\[0\]: expected a number, got 'a'"):
        make_config("prn-edge", {"model": {"patch_sizes": ["a"]}})


def test_tiles_refuses_a_foreground_mask_at_the_model_input(tmp_path):
    mask = tmp_path / "fg.png"
    mask.write_bytes(b"")
    with pytest.raises(ConfigError, match="synth.foreground_mask.*input_policy=tiles"):
        make_config("prn-tiny", {"model": {"input_policy": "tiles"}, "synth": {"foreground_mask": str(mask)}})
    assert make_config("prn-tiny", {"model": {"input_policy": "tiles"}}).model.input_policy == "tiles"


def test_topk_zero_pools_one_percent_of_the_map_within_tensorrts_limit():
    def k(size, topk=0):
        return make_config("prn-edge", {"model": {"image_size": size, "topk": topk}}).model.score_k
    assert make_config("prn-edge").model.topk == 0
    assert k(256) == 655 and k([256, 640]) == 1638  # 1% of 65,536 and of 163,840 pixels
    assert k(2048) == 3839  # 41,943 would be 1%: TensorRT's TopK takes K < 3840
    assert k(256, topk=100) == 100 and k(2048, topk=3839) == 3839  # given: kept
    for bad in (-1, 3840):
        with pytest.raises(ConfigError, match=f"model.topk={bad}: 0"):
            make_config("prn-edge", {"model": {"topk": bad}})
    # training turns 0 into the k of the size it chose, which the checkpoint records
    m = make_config("prn-edge", {"model": {"image_size": "auto"}}).model
    m.resolve_image_size(2.5)
    assert m.resolve_topk() == "model.topk 0 -> 1638 (the image score pools 1% of the 640x256 map)"
    assert m.topk == 1638 and m.resolve_topk() is None


def test_map_auto_follows_the_real_shots_and_a_choice_is_kept():
    """"auto" (the default) gates the decoder by the distance and contrasts the map without real defect shots, and
    keeps the score's map with them; a choice given is kept; the other fusions have the plain map."""
    cfg = make_config("prn-edge", {})
    m = cfg.model
    assert m.map_decoder == "auto" and m.map_contrast == "auto" and not m.map_gated and m.contrast == 0.0
    note = m.resolve_map(real_shots=0)
    assert m.map_decoder == "gated" and m.map_gated and m.map_contrast == 0.5 and m.contrast == 0.5
    assert "no real defect shots" in note and m.resolve_map(real_shots=0) is None  # chosen once
    shot = make_config("prn-edge", {}).model
    assert "20 real defect shots" in shot.resolve_map(real_shots=20)
    assert shot.map_decoder == "weighted" and shot.map_contrast == 0.0 and not shot.map_gated
    given = make_config("prn-edge", {"model": {"map_decoder": "weighted", "map_contrast": 0.5}}).model
    assert given.resolve_map(0) is None and not given.map_gated and given.contrast == 0.5
    half = make_config("prn-edge", {"model": {"map_contrast": 2}}).model  # one given, the other auto
    half.resolve_map(0)
    assert half.map_gated and half.contrast == 2.0
    other = make_config("prn-edge", {"model": {"distance_fusion": "mean"}}).model
    assert "logit fusion only" in other.resolve_map(0)
    assert other.map_decoder == "weighted" and other.map_contrast == 0.0
    # the choice survives a config made again from it (a checkpoint's)
    again = make_config("prn-edge", {"model": {"map_decoder": m.map_decoder, "map_contrast": m.map_contrast}}).model
    assert again.map_gated and again.contrast == 0.5
