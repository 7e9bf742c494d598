"""Test-only: EfficientNet-Lite0 completed to its ImageNet classifier, to prove the bundled weights load right."""
import torch
from torch import nn

from prn_edge.model.backbones import EfficientNetLite0, _MBConv, _lite0_weights


class Lite0Classifier(EfficientNetLite0):
    def __init__(self):
        super().__init__()
        cin = 112
        for expand, kernel, stride, cout, repeats in ((6, 5, 2, 192, 4), (6, 3, 1, 320, 1)):
            for r in range(repeats):
                self._blocks.append(_MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def logits(self, x):
        x = self.act(self._bn0(self._conv_stem(self._stem_pad(self.normalize(x)))))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def load_classifier():
    m = Lite0Classifier()
    m.load_state_dict(torch.load(_lite0_weights(), map_location="cpu", weights_only=True))
    return m.eval()
