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
    ({"model": {"pretrained": "yes"}}, "true or false"),
    ({"synth": {"opacity": [0.9, 0.1]}}, "low <= high"),
    ({"model": {"patch_sizes": [3]}}, "power of two"),
])
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config("prn-edge", overrides)


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
