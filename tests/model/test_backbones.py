import os

import cv2
import pytest
import skimage.data
import torch

from prn_edge.errors import WeightsError
from prn_edge.model.backbones import BACKBONES, STRIDES, create_backbone, load_weights
from pathlib import Path


def _imagenet_top5(model, rgb):
    x = torch.from_numpy(cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return model.logits(x).softmax(1)[0].topk(5).indices.tolist()


def test_bundled_lite0_weights_classify_real_photos():
    # Proves the bundled weights load into our own graph with the right padding and normalization:
    # a wrong padding or mean/std drops these out of the top 5.
    from tests.helpers.lite0_classifier import load_classifier

    m = load_classifier()
    assert _imagenet_top5(m, skimage.data.chelsea())[0] in (281, 282, 285)  # tabby / tiger cat / Egyptian cat
    assert 967 in _imagenet_top5(m, skimage.data.coffee())[:2]  # espresso


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "wide_resnet50_2", "tiny"])
def test_features_have_declared_strides_and_channels(name):
    model = BACKBONES[name].build().eval()
    with torch.no_grad():
        feats = model(torch.rand(2, 3, 64, 64))
    assert [f.shape[1] for f in feats] == list(model.channels)
    assert [64 // f.shape[-1] for f in feats] == list(STRIDES)
    assert all(f.shape[0] == 2 for f in feats)


def test_encoder_is_frozen_and_batchnorm_does_not_drift():
    model, info = create_backbone("efficientnet_lite0", pretrained=True)
    assert info["sha256"] and info["source"].endswith(".pth")
    assert not any(p.requires_grad for p in model.parameters())
    before = model._bn0.running_mean.clone()
    model.train()  # a caller asking for training mode must not unfreeze BatchNorm
    assert not model.training
    model(torch.rand(2, 3, 64, 64) * 3)
    assert torch.equal(before, model._bn0.running_mean)


def test_random_weights_only_when_asked_and_recorded():
    _, info = create_backbone("tiny", pretrained=False)
    assert info["source"] == "random" and info["sha256"] is None
    with pytest.raises(WeightsError, match="--backbone-weights"):
        create_backbone("resnet18", pretrained=True)


def test_resnet18_loads_a_local_torchvision_style_state_dict(tmp_path):
    ref = BACKBONES["resnet18"].build()
    state = ref.state_dict()
    state["fc.weight"] = torch.zeros(1000, 512)  # torchvision files carry layer4/fc too: ignored
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model, info = create_backbone("resnet18", pretrained=True, weights=path)
    assert info["source"] == str(path) and len(info["sha256"]) == 64
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ref.eval()(x)[3], model(x)[3])


def test_weights_errors_name_file_and_fix(tmp_path):
    model = BACKBONES["resnet18"].build()
    with pytest.raises(WeightsError, match="do not exist"):
        load_weights(model, tmp_path / "nope.pth", "resnet18")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x04 definitely not a torch file")
    with pytest.raises(WeightsError, match="corrupt.pth"):
        load_weights(model, corrupt, "resnet18")
    wrong = tmp_path / "lite.pth"
    torch.save(BACKBONES["efficientnet_lite0"].build().state_dict(), wrong)
    with pytest.raises(WeightsError, match="not a resnet18 state dict"):
        load_weights(model, wrong, "resnet18")
    wide = tmp_path / "wide.pth"
    sd = BACKBONES["resnet18"].build().state_dict()
    sd["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    torch.save(sd, wide)
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_weights(model, wide, "resnet18")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/prn_edge_pwned",))


def test_pickled_code_in_weights_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, path)
    with pytest.raises(WeightsError):
        load_weights(BACKBONES["tiny"].build(), path, "tiny")
    assert not Path("/tmp/prn_edge_pwned").exists()


def test_config_accepts_exactly_the_backbones_the_registry_builds():
    from prn_edge.config import BACKBONE_NAMES

    assert sorted(BACKBONE_NAMES) == sorted(BACKBONES)
